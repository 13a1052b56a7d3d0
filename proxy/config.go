package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"google.golang.org/grpc"

	"github.com/statemesh/statemesh/consensus"
	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/internal/hlc"
	"github.com/statemesh/statemesh/mesh"
)

// ESHost is what the proxy needs of the Raft side (event-sourced and value
// entities). *consensus.Host satisfies it; tests use an in-memory fake
// with the same contract (expected sequence numbers and versions, request
// ids applied at most once, handlers by entity type).
type ESHost interface {
	Command(ctx context.Context, e consensus.Entity, payload, requestID []byte) (consensus.Reply, error)
	GetValue(ctx context.Context, e consensus.Entity) (v consensus.Value, found bool, err error)
	PutValue(ctx context.Context, e consensus.Entity, state []byte, expected uint64) (uint64, error)
	DeleteValue(ctx context.Context, e consensus.Entity, expected uint64) (uint64, error)
}

// CRDTStore is what the proxy needs of the mesh's replicated CRDT store.
// *mesh.Node satisfies it; tests use an in-memory fake.
type CRDTStore interface {
	Update(ctx context.Context, k mesh.Key, t crdt.Type, fn mesh.Mutator, o mesh.Options) (crdt.Value, error)
	Get(ctx context.Context, k mesh.Key, o mesh.Options) (crdt.Value, error)
	Delete(ctx context.Context, k mesh.Key, o mesh.Options) error
	// Replica is this node's replica id (the dots and counter entries of
	// the function's deltas are this node's).
	Replica() crdt.ReplicaID
	// Clock stamps LWW register writes.
	Clock() *hlc.Clock
	// Watch signals the key's changes (the channel may skip states) until
	// the returned function is called; the channel is closed then, or
	// when the store stops. The proxy watches an entity while a streamed
	// command is open on it.
	Watch(ctx context.Context, k mesh.Key) (<-chan crdt.Value, func(), error)
}

var (
	_ ESHost    = (*consensus.Host)(nil)
	_ CRDTStore = (*mesh.Node)(nil)
)

// Protocol version this proxy speaks (function.proto).
const (
	ProtocolMajorVersion = 1
	ProtocolMinorVersion = 0
)

// Config configures a Proxy. Start from DefaultConfig.
type Config struct {
	// FunctionAddr is the user function's gRPC address, "host:port"
	// (required).
	FunctionAddr string
	// DialOptions are used to dial the function. Default: insecure
	// credentials (the function is a sidecar on the same host or pod).
	DialOptions []grpc.DialOption
	// Consensus runs event-sourced and value entities. It may be nil at
	// New (node starts the consensus Host after discovery, with
	// Proxy.Handlers) and be given with Proxy.SetBackends before Serve;
	// Serve refuses a spec with such entities while it is nil.
	Consensus ESHost
	// Mesh stores CRDT entities (same lifecycle as Consensus).
	Mesh CRDTStore
	// MaxRequestBytes bounds one external request (gRPC message or HTTP
	// body) and one reply from the function. Default 4 MiB, gRPC's own
	// default receive limit.
	MaxRequestBytes int
	// CommandTimeout bounds one command when the caller's context has no
	// earlier deadline (HTTP clients usually send none). Default 10s:
	// longer than consensus' default OpTimeout, so that consensus' own
	// retries finish first.
	CommandTimeout time.Duration
	// PassivationTimeout: an entity stream idle this long is closed, unless
	// the entity's spec sets its own passivation_timeout_ms. Default 30s.
	PassivationTimeout time.Duration
	// DiscoveryTimeout bounds one Discover call. Default 5s.
	DiscoveryTimeout time.Duration
	// DiscoveryRetry is the first delay between failed Discover attempts;
	// it doubles up to DiscoveryMaxRetry. New retries until the function
	// answers or its context ends. Defaults 100ms and 2s.
	DiscoveryRetry    time.Duration
	DiscoveryMaxRetry time.Duration
	// ValueRetries bounds how often a value entity's command is re-run
	// after its write met a newer version. Default 3.
	ValueRetries int
	// MaxForwardDepth bounds chains of forwards and side effects (a
	// function forwarding to itself must not loop forever). Default 8.
	MaxForwardDepth int
	// ProxyName is sent to the function in ProxyInfo. Default "statemesh".
	ProxyName string
	// Logger receives the proxy's logs. Default: discard.
	Logger *slog.Logger
}

// DefaultConfig returns a Config with every default set and FunctionAddr
// empty.
func DefaultConfig() Config {
	return Config{
		MaxRequestBytes:    4 << 20,
		CommandTimeout:     10 * time.Second,
		PassivationTimeout: 30 * time.Second,
		DiscoveryTimeout:   5 * time.Second,
		DiscoveryRetry:     100 * time.Millisecond,
		DiscoveryMaxRetry:  2 * time.Second,
		ValueRetries:       3,
		MaxForwardDepth:    8,
		ProxyName:          "statemesh",
	}
}

// withDefaults fills zero fields with their defaults.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = d.MaxRequestBytes
	}
	if c.CommandTimeout == 0 {
		c.CommandTimeout = d.CommandTimeout
	}
	if c.PassivationTimeout == 0 {
		c.PassivationTimeout = d.PassivationTimeout
	}
	if c.DiscoveryTimeout == 0 {
		c.DiscoveryTimeout = d.DiscoveryTimeout
	}
	if c.DiscoveryRetry == 0 {
		c.DiscoveryRetry = d.DiscoveryRetry
	}
	if c.DiscoveryMaxRetry == 0 {
		c.DiscoveryMaxRetry = d.DiscoveryMaxRetry
	}
	if c.ValueRetries == 0 {
		c.ValueRetries = d.ValueRetries
	}
	if c.MaxForwardDepth == 0 {
		c.MaxForwardDepth = d.MaxForwardDepth
	}
	if c.ProxyName == "" {
		c.ProxyName = d.ProxyName
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

// Validate reports the first invalid field (after defaults are applied).
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.FunctionAddr == "":
		return errors.New("proxy: FunctionAddr is required")
	case c.MaxRequestBytes < 0 || c.MaxRequestBytes > 1<<30:
		return fmt.Errorf("proxy: MaxRequestBytes %d out of range (1..1 GiB)", c.MaxRequestBytes)
	case c.CommandTimeout < 0, c.PassivationTimeout < 0, c.DiscoveryTimeout < 0,
		c.DiscoveryRetry < 0, c.DiscoveryMaxRetry < 0:
		return errors.New("proxy: durations must not be negative")
	case c.DiscoveryMaxRetry < c.DiscoveryRetry:
		return fmt.Errorf("proxy: DiscoveryMaxRetry %v is below DiscoveryRetry %v", c.DiscoveryMaxRetry, c.DiscoveryRetry)
	case c.ValueRetries < 0 || c.MaxForwardDepth < 0:
		return errors.New("proxy: ValueRetries and MaxForwardDepth must not be negative")
	}
	return nil
}
