package mesh

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/eventlog"
	"github.com/statemesh/statemesh/protocol/peerpb"
)

// Pruning: once a replica is removed for good (RemoveNode, or
// Config.RemoveDeadAfter), its contributions to CRDT state (counter
// entries, dots, ballots) are folded into one live node's, so that state
// stops growing with every replica that ever wrote (crdt.Prune). The fold
// is safe under two conditions, which a pruning pass establishes:
//
//  1. One node prunes a given replica: the owner, decided once and for
//     all by a PruneClaimer (the node wires it to consensus, so the claim
//     is linearizable). Two owners would count the removed replica twice.
//  2. The owner holds every contribution of the removed replica there is:
//     it waits until every member is alive, asks each (Peer.Holding) for
//     its keys that hold such contributions, or a marker for the replica,
//     and merges their states (Peer.Read) before it prunes.
//
// The owner then prunes every local key that holds the replica, writes
// the pruned keys to disk with fsync before any delta of them leaves the
// node (so an owner that crashes in the middle prunes no key twice: after
// a restart it pulls again, and a key it had pruned comes back with its
// marker), and records the replica in the pruned set (a system GSet, so no
// node runs the pass again). The markers travel with the values: every
// node that receives a pruned state or delta drops what it still holds of
// the replica, so nothing more is needed on the other nodes.
//
// Then the markers go too, so that a pruned replica costs each value
// nothing at all: every node that holds nothing of a pruned replica but
// markers, and buffers no delta that mentions it (such a delta, received
// after the pruning, must be translated by the marker: see crdt.Prune),
// records so in the clean set (a system GSet of (replica, node)).
// Once every member has, each node forgets the replica (deltas.Engine.
// Forget): it drops the markers from its state, locally, and from then on
// drops the replica's contributions and markers from every value it
// receives or loads, so a stale copy (a restored backup, a late message)
// cannot bring them back either. What a node keeps for good is one entry
// per pruned replica in the pruned and clean sets, not one per value.

// PruneClaimer decides which node prunes a removed replica: the first
// claim wins and every later claim returns the winner's name, unless over
// names the winner: then node takes over (for an owner that was removed
// for good before it finished).
type PruneClaimer interface {
	ClaimPrune(ctx context.Context, removed crdt.ReplicaID, node, over string) (owner string, err error)
}

// SetPruneClaimer enables pruning; without a claimer the node prunes
// nothing (no owner could be decided safely).
func (n *Node) SetPruneClaimer(c PruneClaimer) {
	n.claimMu.Lock()
	defer n.claimMu.Unlock()
	n.claimer = c
}

func (n *Node) pruneClaimer() PruneClaimer {
	n.claimMu.Lock()
	defer n.claimMu.Unlock()
	return n.claimer
}

// prunedKey holds the replicas whose contributions their owner has
// pruned, as a GSet of "name#incarnation"; cleanKey the (replica, node)
// pairs of nodes that hold nothing of a pruned replica but markers, as a
// GSet of cleanElement.
var (
	prunedKey       = Key{Service: SystemService, ID: "pruned-replicas"}
	prunedEngineKey = prunedKey.engineKey()
	cleanKey        = Key{Service: SystemService, ID: "pruned-clean"}
	cleanEngineKey  = cleanKey.engineKey()
)

// cleanElement is the replica's element, length-prefixed, then the node.
func cleanElement(r crdt.ReplicaID, node string) []byte {
	re := replicaElement(r)
	return append(binary.AppendUvarint(nil, uint64(len(re))), append(re, node...)...)
}

func parseCleanElement(b []byte) (crdt.ReplicaID, string, bool) {
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)-w) {
		return crdt.ReplicaID{}, "", false
	}
	r, ok := parseReplicaElement(b[w : w+int(n)])
	return r, string(b[w+int(n):]), ok
}

// gsetElements returns the elements of the GSet at key (none if absent).
func (n *Node) gsetElements(key string) [][]byte {
	if s, ok := n.eng.Get(key).(*crdt.GSet); ok {
		return s.Elements()
	}
	return nil
}

// maxHoldingKeys bounds one Holding answer.
const maxHoldingKeys = 1024

// prunePass prunes the removed replicas this node owns and has not pruned
// yet. It stops at the first failure; the next pass tries again.
func (n *Node) prunePass() {
	if !n.joined.Load() {
		// Before the join, the member table is empty: every member would
		// seem to agree that a replica can be forgotten.
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*n.cfg.PruneInterval)
	defer cancel()
	go func() {
		select {
		case <-n.stopc:
			cancel()
		case <-ctx.Done():
		}
	}()
	var (
		todo    []crdt.ReplicaID
		members []Member
		down    string
		gone    = map[string]bool{} // names removed for good and not back
	)
	if _, err := n.do(ctx, func() {
		done := map[crdt.ReplicaID]bool{}
		for _, e := range n.gsetElements(prunedEngineKey) {
			if r, ok := parseReplicaElement(e); ok {
				done[r] = true
			}
		}
		n.confirmAndForget(done)
		for r := range n.removed {
			if !done[r] && r != n.replica {
				todo = append(todo, r)
			}
			if _, back := n.members[r.Node]; !back && r.Node != n.cfg.Name {
				gone[r.Node] = true
			}
		}
		for _, m := range n.members {
			members = append(members, *m)
			if !m.Alive {
				down = m.Name
			}
		}
	}); err != nil || len(todo) == 0 {
		return
	}
	c := n.pruneClaimer()
	if c == nil {
		return
	}
	if down != "" {
		// It may hold contributions no one else has.
		n.log.Debug("pruning waits until every member is alive", "down", down)
		return
	}
	for _, r := range todo {
		owner, err := c.ClaimPrune(ctx, r, n.cfg.Name, "")
		if err == nil && owner != n.cfg.Name && gone[owner] {
			// Its owner was removed before it finished. Taking over is
			// safe: the pull brings back the markers of every key it
			// pruned and sent, and what it never sent is gone with it.
			n.log.Info("taking over the pruning of a removed replica from a removed owner",
				"replica", r.String(), "owner", owner)
			owner, err = c.ClaimPrune(ctx, r, n.cfg.Name, owner)
		}
		if err != nil {
			n.log.Warn("could not claim the pruning of a removed replica", "replica", r.String(), "err", err)
			return
		}
		if owner != n.cfg.Name {
			continue // its owner prunes it
		}
		if err := n.pruneReplica(ctx, r, members); err != nil {
			n.met.pruneFailures.Inc()
			n.log.Warn("pruning a removed replica failed; the next pass retries", "replica", r.String(), "err", err)
			return
		}
	}
}

// pruneReplica pulls every member's contributions of r, then prunes r
// from every local key.
func (n *Node) pruneReplica(ctx context.Context, r crdt.ReplicaID, members []Member) error {
	for _, m := range members {
		if err := n.pullHolding(ctx, m, r); err != nil {
			return fmt.Errorf("pulling from %s: %w", m.Name, err)
		}
	}
	var (
		keys int
		perr error
	)
	if _, err := n.do(ctx, func() { keys, perr = n.pruneLocal(r) }); err != nil {
		return err
	}
	if perr != nil {
		return perr
	}
	n.met.pruned.Inc()
	n.log.Info("pruned a removed replica", "replica", r.String(), "keys", keys)
	return nil
}

// pullHolding merges m's state of every key m says holds r.
func (n *Node) pullHolding(ctx context.Context, m Member, r crdt.ReplicaID) error {
	var after []byte
	for {
		resp, err := n.tr.holding(ctx, m, &peerpb.HoldingRequest{
			From: n.cfg.Name, Node: r.Node, Incarnation: r.Incarnation, After: after})
		if err != nil {
			return err
		}
		if len(resp.Keys) > maxHoldingKeys {
			return fmt.Errorf("mesh: %d keys in one Holding answer, limit %d", len(resp.Keys), maxHoldingKeys)
		}
		for _, k := range resp.Keys {
			if string(k) <= string(after) {
				return fmt.Errorf("mesh: Holding answered keys out of order")
			}
			if _, err := parseKey(string(k)); err != nil {
				return err
			}
			if err := n.pullKey(ctx, m, string(k)); err != nil {
				return err
			}
			after = k
		}
		if !resp.More || len(resp.Keys) == 0 {
			return nil
		}
	}
}

// pullKey merges m's state of key into this node's.
func (n *Node) pullKey(ctx context.Context, m Member, key string) error {
	rr, err := n.tr.read(ctx, m, &peerpb.ReadRequest{From: n.cfg.Name, Key: []byte(key)})
	if err != nil {
		return err
	}
	if !rr.Found {
		return nil // deleted or gone since: nothing of r left there
	}
	v, err := crdt.Decode(rr.State, n.cfg.Limits.CRDT)
	if err != nil {
		return fmt.Errorf("state of %q: %w", key, err)
	}
	var merr error
	if _, err := n.do(ctx, func() { _, merr = n.eng.Merge(key, v) }); err != nil {
		return err
	}
	if errors.Is(merr, ErrDeleted) {
		return nil
	}
	return merr
}

// pruneLocal prunes r from every key that holds it, writes those keys to
// disk (fsync) before the loop can send any delta of them, and records r
// as pruned. Runs on the loop.
func (n *Node) pruneLocal(r crdt.ReplicaID) (int, error) {
	at := time.Now().UnixNano()
	types := map[string]crdt.Type{}
	keys := n.eng.Select(func(k string, v crdt.Value) bool {
		if !crdt.Holds(v, r) {
			return false
		}
		types[k] = v.Type()
		return true
	})
	var (
		puts []eventlog.Put
		err  error
	)
	for _, k := range keys {
		if _, err = n.eng.Update(k, types[k], func(v crdt.Value) (crdt.Value, error) {
			return crdt.Prune(v, r, n.replica, at)
		}); err != nil {
			err = fmt.Errorf("pruning %q: %w", k, err)
			break
		}
		puts = append(puts, eventlog.Put{Key: k, Value: n.eng.Encoding(k)})
	}
	if err == nil {
		if _, err = n.eng.Update(prunedEngineKey, crdt.TypeGSet, func(v crdt.Value) (crdt.Value, error) {
			return v.(*crdt.GSet).Add(replicaElement(r)), nil
		}); err == nil {
			puts = append(puts, eventlog.Put{Key: prunedEngineKey, Value: n.eng.Encoding(prunedEngineKey)})
		}
	}
	if len(puts) > 0 {
		if perr := n.db.CRDT().Apply(puts, nil, true); perr != nil {
			// The keys stay dirty: the persister retries.
			n.log.Error("writing pruned keys failed", "keys", len(puts), "err", perr)
			err = errors.Join(err, perr)
		}
	}
	return len(puts), err
}

// holdingKeys returns, in order, up to maxHoldingKeys keys after after
// whose state holds contributions of r or a marker for it, and whether
// more follow. Runs on the loop.
func (n *Node) holdingKeys(r crdt.ReplicaID, after string) ([]string, bool) {
	rs := map[crdt.ReplicaID]bool{r: true}
	keys := n.eng.Select(func(k string, v crdt.Value) bool { return k > after && crdt.Mentions(v, rs) })
	if len(keys) > maxHoldingKeys {
		return keys[:maxHoldingKeys], true
	}
	return keys, false
}

// confirmAndForget records this node in the clean set for every pruned
// replica it holds nothing of but markers, and forgets the pruned
// replicas every member (this node included) has recorded. Runs on the
// loop.
func (n *Node) confirmAndForget(pruned map[crdt.ReplicaID]bool) {
	if len(pruned) == 0 {
		return
	}
	clean := map[crdt.ReplicaID]map[string]bool{}
	for _, e := range n.gsetElements(cleanEngineKey) {
		if r, node, ok := parseCleanElement(e); ok {
			if clean[r] == nil {
				clean[r] = map[string]bool{}
			}
			clean[r][node] = true
		}
	}
	var forget []crdt.ReplicaID
	for r := range pruned {
		if n.eng.Forgot(r) {
			continue
		}
		if !clean[r][n.cfg.Name] {
			holds := func(v crdt.Value) bool { return crdt.Holds(v, r) }
			if len(n.eng.Select(func(_ string, v crdt.Value) bool { return holds(v) })) > 0 {
				continue // the pruned values have not all arrived yet
			}
			if n.eng.BufferHolds(holds) {
				// A delta from before the pruning is still on its way to
				// a peer, which must translate it with the marker (a
				// remove in it still removes the renamed dot).
				continue
			}
			if _, err := n.eng.Update(cleanEngineKey, crdt.TypeGSet, func(v crdt.Value) (crdt.Value, error) {
				return v.(*crdt.GSet).Add(cleanElement(r, n.cfg.Name)), nil
			}); err != nil {
				n.log.Error("could not record a pruned replica as clean", "replica", r.String(), "err", err)
			}
			continue // forgotten in a later pass, once the others agree
		}
		all := true
		for name := range n.members {
			all = all && clean[r][name]
		}
		if all {
			forget = append(forget, r)
		}
	}
	if len(forget) > 0 {
		n.eng.Forget(forget)
		for _, r := range forget {
			n.log.Info("forgot a pruned replica: its markers are gone", "replica", r.String())
		}
	}
}
