package mesh

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/protocol/peerpb"
)

// Consistency says how many replicas a write or read involves.
type Consistency uint8

const (
	// Local: this replica only. A write is acknowledged once applied here
	// (and on disk in Sync durability); a read returns this replica's
	// state.
	Local Consistency = iota
	// Majority: a write is acknowledged once ⌊N/2⌋+1 replicas hold it
	// (this one included); a read merges the states of ⌊N/2⌋+1 replicas.
	// N counts every member not known to have left, dead ones included:
	// a minority side of a partition cannot reach a majority.
	Majority
	// All: every member's replica.
	All
)

func (c Consistency) String() string {
	switch c {
	case Majority:
		return "MAJORITY"
	case All:
		return "ALL"
	}
	return "LOCAL"
}

// ParseConsistency reads LOCAL, MAJORITY or ALL (any case).
func ParseConsistency(s string) (Consistency, error) {
	switch strings.ToUpper(s) {
	case "LOCAL", "":
		return Local, nil
	case "MAJORITY":
		return Majority, nil
	case "ALL":
		return All, nil
	}
	return 0, fmt.Errorf("mesh: unknown consistency %q (LOCAL, MAJORITY or ALL)", s)
}

// Options qualify one write or read.
type Options struct {
	Consistency Consistency
	// Timeout bounds the wait for other replicas; default
	// Config.WriteTimeout. A deadline on the context also bounds it.
	Timeout time.Duration
	// DiscardState makes Update return nil instead of a copy of the new
	// state, for callers that do not read it (the copy is a clone of the
	// whole state on every write: a fifth of a counter write's loop time
	// in bench mesh, more for large states).
	DiscardState bool
}

// Mutator changes a CRDT through its delta mutators and returns the delta.
// It runs on the node's loop goroutine: it must be quick, must not keep v,
// and must not call the Node. If it fails, it must fail before mutating.
type Mutator func(v crdt.Value) (delta crdt.Value, err error)

// Update applies fn to key's CRDT of type t (created empty if absent) and
// returns a copy of the new state (nil with o.DiscardState). The write is
// acknowledged according to o.Consistency:
//   - ErrUnavailable: too few replicas are reachable; nothing was applied.
//   - ErrTimeout: applied here, not acknowledged by enough replicas in
//     time; the write stays and spreads by anti-entropy as usual.
func (n *Node) Update(ctx context.Context, k Key, t crdt.Type, fn Mutator, o Options) (crdt.Value, error) {
	if err := checkUserKey(k); err != nil {
		return nil, err
	}
	key := k.engineKey()
	var state crdt.Value
	err := n.write(ctx, key, o, func(remote bool) (*peerpb.WriteRequest, error) {
		d, err := n.eng.Update(key, t, func(v crdt.Value) (crdt.Value, error) { return fn(v) })
		if err != nil {
			return nil, err
		}
		if !o.DiscardState {
			state = n.eng.Get(key)
		}
		if !remote {
			return nil, nil
		}
		return &peerpb.WriteRequest{From: n.cfg.Name, Key: []byte(key), State: crdt.Encode(d)}, nil
	})
	if err != nil && state == nil {
		return nil, err
	}
	return state, err
}

// Delete deletes key on every replica: its state is dropped, the
// deletion wins over every state of the key, earlier or concurrent, and
// the key cannot be written again (ErrDeleted), as CloudState's CRDT
// delete. Consistency applies as for Update. A deleted key costs a
// tombstone (its name) for good.
func (n *Node) Delete(ctx context.Context, k Key, o Options) error {
	if err := checkUserKey(k); err != nil {
		return err
	}
	key := k.engineKey()
	return n.write(ctx, key, o, func(bool) (*peerpb.WriteRequest, error) {
		n.eng.Delete(key)
		return &peerpb.WriteRequest{From: n.cfg.Name, Key: []byte(key), Deleted: true}, nil
	})
}

// write runs apply on the loop when enough replicas are reachable for
// o.Consistency (remote says whether any must be asked), waits for the
// disk in sync durability, then sends the request apply returned to the
// other replicas and waits for enough acknowledgements.
func (n *Node) write(ctx context.Context, key string, o Options, apply func(remote bool) (*peerpb.WriteRequest, error)) error {
	// What the loop sets, in one variable: the closure then holds one
	// pointer (one allocation per write, not one per variable).
	var w struct {
		targets []Member
		need    int
		req     *peerpb.WriteRequest
		err     error
	}
	batch, err := n.doWrite(ctx, func() {
		w.targets, w.need = n.replicasFor(o.Consistency)
		if len(w.targets) < w.need {
			w.err = unavailable(o.Consistency, w.need, len(w.targets))
			return
		}
		w.req, w.err = apply(w.need > 0)
	})
	if err == nil {
		err = w.err
	}
	if err == nil && n.cfg.Durability == Sync && !brokenAckBeforePersist {
		err = n.dur.wait(ctx, batch, n.stopc)
	}
	if err == nil && w.need > 0 {
		err = n.replicate(ctx, w.targets, w.need, o, func(ctx context.Context, m Member) error {
			return n.tr.write(ctx, m, w.req)
		})
	}
	n.met.wrote(o.Consistency, err)
	return err
}

// Get returns a copy of key's state, or nil if no replica asked holds it
// (or it was deleted).
// With MAJORITY or ALL it first merges the states of that many replicas
// into this one.
func (n *Node) Get(ctx context.Context, k Key, o Options) (crdt.Value, error) {
	if err := k.Validate(); err != nil {
		return nil, err
	}
	key := k.engineKey()
	var (
		targets []Member
		need    int
	)
	if _, err := n.do(ctx, func() { targets, need = n.replicasFor(o.Consistency) }); err != nil {
		return nil, err
	}
	if len(targets) < need {
		return nil, unavailable(o.Consistency, need, len(targets))
	}
	if need > 0 {
		err := n.replicate(ctx, targets, need, o, func(ctx context.Context, m Member) error {
			resp, err := n.tr.read(ctx, m, &peerpb.ReadRequest{From: n.cfg.Name, Key: []byte(key)})
			if err != nil {
				return err
			}
			if resp.Deleted {
				_, err := n.do(ctx, func() { n.eng.Delete(key) })
				return err
			}
			if !resp.Found {
				return nil
			}
			v, err := crdt.Decode(resp.State, n.cfg.Limits.CRDT)
			if err != nil {
				n.met.refused.WithLabelValues("read-reply").Inc()
				return fmt.Errorf("mesh: read reply from %s: %w", m.Name, err)
			}
			var merr error
			if _, err := n.do(ctx, func() { _, merr = n.eng.Merge(key, v) }); err != nil {
				return err
			}
			if errors.Is(merr, ErrDeleted) {
				return nil // deleted here meanwhile: the read finds nothing
			}
			return merr
		})
		if err != nil {
			return nil, err
		}
	}
	var v crdt.Value
	_, err := n.do(ctx, func() { v = n.eng.Get(key) })
	return v, err
}

// Keys lists the keys this replica holds.
func (n *Node) Keys(ctx context.Context) ([]Key, error) {
	var names []string
	if _, err := n.do(ctx, func() { names = n.eng.Keys() }); err != nil {
		return nil, err
	}
	out := make([]Key, 0, len(names))
	for _, s := range names {
		if k, err := parseKey(s); err == nil {
			out = append(out, k)
		}
	}
	return out, nil
}

// Members lists the other members this node knows, dead ones included.
func (n *Node) Members(ctx context.Context) ([]Member, error) {
	var out []Member
	_, err := n.do(ctx, func() {
		for _, m := range n.members {
			out = append(out, *m)
		}
	})
	return out, err
}

// RemovedReplicas lists the replicas removed from the mesh for good
// (RemoveNode, or dead past Config.RemoveDeadAfter).
func (n *Node) RemovedReplicas(ctx context.Context) ([]crdt.ReplicaID, error) {
	var out []crdt.ReplicaID
	_, err := n.do(ctx, func() {
		for r := range n.removed {
			out = append(out, r)
		}
	})
	return out, err
}

// replicasFor returns the reachable other members a consistency level may
// ask, and how many of them must answer. Runs on the loop.
func (n *Node) replicasFor(c Consistency) ([]Member, int) {
	if c == Local {
		return nil, 0
	}
	var alive []Member
	for _, m := range n.members {
		if m.Alive {
			alive = append(alive, *m)
		}
	}
	total := len(n.members) + 1
	if c == All {
		return alive, total - 1
	}
	return alive, total/2 + 1 - 1
}

func unavailable(c Consistency, need, reachable int) error {
	return fmt.Errorf("%w: %s needs %d other replicas, %d reachable", ErrUnavailable, c, need, reachable)
}

// replicate calls call on every target at once and returns when need of
// them succeeded, or fails with ErrTimeout when that became impossible in
// time.
func (n *Node) replicate(ctx context.Context, targets []Member, need int, o Options, call func(context.Context, Member) error) error {
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = n.cfg.WriteTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	results := make(chan error, len(targets))
	for _, m := range targets {
		go func() { results <- call(ctx, m) }()
	}
	ok, failed := 0, 0
	var last error
	for ok < need {
		select {
		case err := <-results:
			if err == nil {
				ok++
				continue
			}
			failed++
			last = err
			if len(targets)-failed < need {
				return fmt.Errorf("%w: %d of %d replicas acknowledged: %w", ErrTimeout, ok, need, last)
			}
		case <-ctx.Done():
			return fmt.Errorf("%w: %d of %d replicas acknowledged after %s", ErrTimeout, ok, need, timeout)
		}
	}
	return nil
}

func resultLabel(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrTimeout):
		return "timeout"
	case errors.Is(err, ErrUnavailable):
		return "unavailable"
	case errors.Is(err, ErrOverloaded):
		return "overloaded"
	}
	return "error"
}

// Watch returns a channel that receives key's state after each change
// (the latest only: a slow reader skips intermediate states; nil when the
// key is deleted), and a function that ends the watch. The channel is
// closed when the watch ends or the node stops.
func (n *Node) Watch(ctx context.Context, k Key) (<-chan crdt.Value, func(), error) {
	if err := k.Validate(); err != nil {
		return nil, nil, err
	}
	key := k.engineKey()
	w := &watcher{ch: make(chan crdt.Value, 1)}
	if _, err := n.do(ctx, func() { n.watchers[key] = append(n.watchers[key], w) }); err != nil {
		return nil, nil, err
	}
	cancel := func() {
		_, _ = n.do(context.Background(), func() {
			ws := n.watchers[key]
			if i := slices.Index(ws, w); i >= 0 {
				n.watchers[key] = slices.Delete(ws, i, i+1)
				close(w.ch)
			}
			if len(n.watchers[key]) == 0 {
				delete(n.watchers, key)
			}
		})
	}
	return w.ch, cancel, nil
}

// watcher receives a key's states; only the loop sends to and closes ch.
type watcher struct{ ch chan crdt.Value }

// offer replaces any state the reader has not taken yet.
func (w *watcher) offer(v crdt.Value) {
	select {
	case <-w.ch:
	default:
	}
	w.ch <- v
}
