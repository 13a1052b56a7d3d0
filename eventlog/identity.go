package eventlog

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/encoding/protowire"
)

// Identity is who a data directory belongs to and how it was last stopped.
// It is stored under the meta key "identity".
type Identity struct {
	// Node is the node's name; a data directory belongs to one node.
	Node string
	// Incarnation is the replica incarnation of the node's CRDT state
	// (crdt.ReplicaID.Incarnation); never zero.
	Incarnation uint64
	// Boots is the number of starts so far, this one included; it numbers
	// the node's anti-entropy sessions.
	Boots uint64
	// Clean: in a record, the node stopped cleanly after its last run (the
	// last state flush was followed by MarkClean). In what Boot returns,
	// whether the previous run stopped cleanly (false for a new directory).
	Clean bool
	// Previous, in what Boot returns only (it is not stored): the
	// incarnation that a new one replaced after an unclean stop (0 for a
	// new directory or a clean stop). No replica will write as it again.
	Previous uint64
}

// Identity record encoding: one version byte, then protobuf wire fields.
const (
	identityVersion = 1

	fieldNode        protowire.Number = 1 // bytes: UTF-8 node name
	fieldIncarnation protowire.Number = 2 // varint, non-zero
	fieldBoots       protowire.Number = 3 // varint, non-zero
	fieldClean       protowire.Number = 4 // varint, 0 or 1

	// maxNodeName bounds a node name (as crdt does for replica names).
	maxNodeName = 255
)

// identityKey is the Badger key of the identity record.
var identityKey = tableKey(tableMeta, "identity")

// encodeIdentity returns the record form of id.
func encodeIdentity(id Identity) []byte {
	b := make([]byte, 0, 32+len(id.Node))
	b = append(b, identityVersion)
	b = protowire.AppendTag(b, fieldNode, protowire.BytesType)
	b = protowire.AppendString(b, id.Node)
	b = protowire.AppendTag(b, fieldIncarnation, protowire.VarintType)
	b = protowire.AppendVarint(b, id.Incarnation)
	b = protowire.AppendTag(b, fieldBoots, protowire.VarintType)
	b = protowire.AppendVarint(b, id.Boots)
	b = protowire.AppendTag(b, fieldClean, protowire.VarintType)
	b = protowire.AppendVarint(b, protowire.EncodeBool(id.Clean))
	return b
}

// decodeIdentity parses and validates an identity record stored under key
// (named in errors). Unknown fields are skipped (a newer version of this
// package may add some); known fields must appear once with their wire
// type, and node, incarnation and boots are required. Every failure wraps
// ErrCorrupt.
func decodeIdentity(key string, b []byte) (Identity, error) {
	bad := func(format string, a ...any) (Identity, error) {
		return Identity{}, fmt.Errorf("%w: key %q: identity: %s", ErrCorrupt, key, fmt.Sprintf(format, a...))
	}
	if len(b) == 0 {
		return bad("empty record")
	}
	if b[0] != identityVersion {
		return bad("unsupported version %d", b[0])
	}
	b = b[1:]
	var id Identity
	var seen [fieldClean + 1]bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return bad("%v", protowire.ParseError(n))
		}
		b = b[n:]
		if num > fieldClean || num < fieldNode {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return bad("field %d: %v", num, protowire.ParseError(n))
			}
			b = b[n:]
			continue
		}
		if seen[num] {
			return bad("field %d repeated", num)
		}
		seen[num] = true
		want := protowire.VarintType
		if num == fieldNode {
			want = protowire.BytesType
		}
		if typ != want {
			return bad("field %d has wire type %d, want %d", num, typ, want)
		}
		if num == fieldNode {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return bad("node: %v", protowire.ParseError(n))
			}
			id.Node, b = string(v), b[n:]
			continue
		}
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return bad("field %d: %v", num, protowire.ParseError(n))
		}
		b = b[n:]
		switch num {
		case fieldIncarnation:
			id.Incarnation = v
		case fieldBoots:
			id.Boots = v
		case fieldClean:
			if v > 1 {
				return bad("clean is %d, want 0 or 1", v)
			}
			id.Clean = v == 1
		}
	}
	switch {
	case !seen[fieldNode] || !seen[fieldIncarnation] || !seen[fieldBoots]:
		return bad("missing field (node %v, incarnation %v, boots %v)",
			seen[fieldNode], seen[fieldIncarnation], seen[fieldBoots])
	case checkNode(id.Node) != nil:
		return bad("%v", checkNode(id.Node))
	case id.Incarnation == 0:
		return bad("incarnation is 0")
	case id.Boots == 0:
		return bad("boots is 0")
	}
	return id, nil
}

// checkNode validates a node name.
func checkNode(node string) error {
	if node == "" || len(node) > maxNodeName || !utf8.ValidString(node) {
		return fmt.Errorf("node name must be 1..%d bytes of UTF-8, got %q", maxNodeName, node)
	}
	return nil
}

// Boot is called once at node start, after Open and before the node writes
// anything. It reads the stored identity and decides this run's:
//
//   - none stored (a new directory): a fresh random incarnation, Boots 1;
//   - stored by node after a clean stop: the same incarnation, Boots+1;
//   - stored by node after anything else (a crash, or Boot without
//     MarkClean): a fresh random incarnation, because writes of the
//     previous run may be lost and its dots must never be reissued; Boots+1;
//   - stored by another node: ErrWrongNode (a data directory belongs to one
//     node), and nothing is written.
//
// It stores the result as not clean, synced, and returns it with Clean
// reporting whether the previous run stopped cleanly (false for a new
// directory), and fresh reporting whether the incarnation is new (a new
// directory or an unclean stop). A corrupt record is ErrCorrupt.
func (db *DB) Boot(node string) (id Identity, fresh bool, err error) {
	if err := checkNode(node); err != nil {
		return Identity{}, false, fmt.Errorf("eventlog: boot: %w", err)
	}
	if err := db.enter(); err != nil {
		return Identity{}, false, err
	}
	defer db.exit()
	db.idMu.Lock()
	defer db.idMu.Unlock()

	var prevClean bool
	err = db.bdb.Update(func(txn *badger.Txn) error {
		old, found, err := getIdentity(txn)
		if err != nil {
			return err
		}
		switch {
		case !found:
			id = Identity{Node: node, Boots: 1}
		case old.Node != node:
			return fmt.Errorf("%w: it belongs to node %q, not %q", ErrWrongNode, old.Node, node)
		case old.Boots == math.MaxUint64:
			return fmt.Errorf("%w: key %q: identity: boots overflow", ErrCorrupt, identityKey)
		default:
			id = Identity{Node: node, Incarnation: old.Incarnation, Boots: old.Boots + 1}
			prevClean = old.Clean
		}
		if !prevClean {
			id.Previous = id.Incarnation
			if id.Incarnation, err = newIncarnation(old.Incarnation); err != nil {
				return err
			}
			fresh = true
		}
		return txn.Set(identityKey, encodeIdentity(id))
	})
	if err != nil {
		if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrWrongNode) {
			return Identity{}, false, err
		}
		return Identity{}, false, fmt.Errorf("eventlog: boot: %w", err)
	}
	if err := db.sync(); err != nil {
		return Identity{}, false, err
	}
	db.markedClean.Store(false)
	id.Clean = prevClean
	return id, fresh, nil
}

// MarkClean records a clean stop, synced. Call it after the last state
// flush, just before Close; the next Boot then keeps the incarnation. A
// later write through CRDTStore.Apply un-marks the stop again (synced), so
// a node that keeps writing after MarkClean and then crashes still gets a
// new incarnation. It fails if Boot was never called on this directory.
func (db *DB) MarkClean() error {
	if err := db.enter(); err != nil {
		return err
	}
	defer db.exit()
	db.idMu.Lock()
	defer db.idMu.Unlock()
	if err := db.setClean(true); err != nil {
		return err
	}
	db.markedClean.Store(true)
	return nil
}

// unmarkClean stores Clean=false, synced, if MarkClean was the last
// identity change. The caller has entered.
func (db *DB) unmarkClean() error {
	db.idMu.Lock()
	defer db.idMu.Unlock()
	if !db.markedClean.Load() {
		return nil
	}
	if err := db.setClean(false); err != nil {
		return err
	}
	db.markedClean.Store(false)
	return nil
}

// setClean rewrites the identity's Clean field and syncs. The caller holds
// idMu.
func (db *DB) setClean(clean bool) error {
	err := db.bdb.Update(func(txn *badger.Txn) error {
		id, found, err := getIdentity(txn)
		switch {
		case err != nil:
			return err
		case !found:
			return errors.New("eventlog: no identity stored (Boot first)")
		}
		id.Clean = clean
		return txn.Set(identityKey, encodeIdentity(id))
	})
	if err != nil {
		if errors.Is(err, ErrCorrupt) {
			return err
		}
		return fmt.Errorf("eventlog: mark clean=%v: %w", clean, err)
	}
	return db.sync()
}

// getIdentity reads and decodes the stored identity, if any.
func getIdentity(txn *badger.Txn) (Identity, bool, error) {
	item, err := txn.Get(identityKey)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return Identity{}, false, nil
	}
	if err != nil {
		return Identity{}, false, err
	}
	var id Identity
	err = item.Value(func(v []byte) error {
		id, err = decodeIdentity(string(identityKey), v)
		return err
	})
	if err != nil {
		return Identity{}, false, err
	}
	return id, true, nil
}

// newIncarnation returns a random incarnation, non-zero and not old.
func newIncarnation(old uint64) (uint64, error) {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, fmt.Errorf("eventlog: random incarnation: %w", err)
		}
		if v := binary.LittleEndian.Uint64(b[:]); v != 0 && v != old {
			return v, nil
		}
	}
}
