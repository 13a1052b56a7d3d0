package mesh

import (
	"fmt"
	"strings"
)

// Key names one replicated CRDT: the entity id within a service. Each key
// holds one CRDT type for its whole life.
type Key struct {
	Service string // the user's gRPC service, e.g. "shop.Cart"; no '/'
	ID      string // the entity id, any bytes
}

// Limits on keys.
const (
	MaxServiceBytes = 256
	MaxIDBytes      = 1024
)

func (k Key) String() string { return k.engineKey() }

// Validate checks the key's parts.
func (k Key) Validate() error {
	switch {
	case k.Service == "":
		return fmt.Errorf("%w: empty service", ErrInvalidKey)
	case len(k.Service) > MaxServiceBytes:
		return fmt.Errorf("%w: service name of %d bytes (at most %d)", ErrInvalidKey, len(k.Service), MaxServiceBytes)
	case strings.IndexByte(k.Service, '/') >= 0:
		return fmt.Errorf("%w: service %q contains '/'", ErrInvalidKey, k.Service)
	case len(k.ID) > MaxIDBytes:
		return fmt.Errorf("%w: entity id of %d bytes (at most %d)", ErrInvalidKey, len(k.ID), MaxIDBytes)
	}
	return nil
}

// engineKey is the key's name in the anti-entropy engine and on disk.
func (k Key) engineKey() string { return k.Service + "/" + k.ID }

// parseKey inverts engineKey, validating.
func parseKey(s string) (Key, error) {
	i := strings.IndexByte(s, '/')
	if i < 0 {
		return Key{}, fmt.Errorf("%w: %q has no service", ErrInvalidKey, s)
	}
	k := Key{Service: s[:i], ID: s[i+1:]}
	return k, k.Validate()
}
