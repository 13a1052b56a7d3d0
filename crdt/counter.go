package crdt

import (
	"fmt"
	"maps"
	"math"
)

// GCounter is a grow-only counter: one monotonic entry per replica.
type GCounter struct {
	m      map[ReplicaID]uint64
	pruned markers // see Prune; nil inside a PNCounter, which keeps its own
}

// NewGCounter returns a zero counter.
func NewGCounter() *GCounter { return &GCounter{m: map[ReplicaID]uint64{}} }

func (c *GCounter) Type() Type { return TypeGCounter }

// Increment adds n to r's entry and returns the delta. It fails, changing
// nothing, if r's entry would overflow.
func (c *GCounter) Increment(r ReplicaID, n uint64) (*GCounter, error) {
	d := NewGCounter()
	if c.pruned.has(r) {
		return nil, fmt.Errorf("%w: replica %s was pruned from this counter", ErrInvalidArg, r)
	}
	if n == 0 {
		return d, nil
	}
	cur := c.m[r]
	if cur > math.MaxUint64-n {
		return nil, fmt.Errorf("%w: counter entry of %s overflows", ErrInvalidArg, r)
	}
	c.m[r] = cur + n
	d.m[r] = cur + n
	return d, nil
}

// Value returns the sum of all entries (modulo 2^64).
func (c *GCounter) Value() uint64 {
	var s uint64
	for _, v := range c.m {
		s += v
	}
	return s
}

// Entry returns r's entry.
func (c *GCounter) Entry(r ReplicaID) uint64 { return c.m[r] }

// Entries returns a copy of all entries.
func (c *GCounter) Entries() map[ReplicaID]uint64 { return maps.Clone(c.m) }

func (c *GCounter) Clone() Value { return c.clone() }

func (c *GCounter) clone() *GCounter { return &GCounter{m: maps.Clone(c.m), pruned: c.pruned.clone()} }

func (c *GCounter) Equal(o Value) bool {
	oc, ok := o.(*GCounter)
	return ok && maps.Equal(c.m, oc.m) && maps.Equal(c.pruned, oc.pruned)
}

func (c *GCounter) IsBottom() bool { return len(c.m) == 0 && len(c.pruned) == 0 }
func (c *GCounter) Size() int      { return len(c.m) }

func (c *GCounter) join(o Value) bool {
	oc := o.(*GCounter)
	grew := c.pruned.union(oc.pruned)
	if grew {
		c.forget(c.pruned.has)
	}
	return c.joinEntries(oc, c.pruned) || grew
}

// forget deletes the entries of the replicas for which in is true.
func (c *GCounter) forget(in func(ReplicaID) bool) {
	maps.DeleteFunc(c.m, func(r ReplicaID, _ uint64) bool { return in(r) })
}

// joinEntries joins o's entries, but those of replicas in skip, into c.
func (c *GCounter) joinEntries(o *GCounter, skip markers) bool {
	grew := false
	for r, v := range o.m {
		if v > c.m[r] && !skip.has(r) {
			c.m[r] = v
			grew = true
		}
	}
	return grew
}

func (c *GCounter) extract(o Value) Value {
	oc := o.(*GCounter)
	d := c.extractEntries(oc, c.pruned)
	d.pruned = c.pruned.newer(oc.pruned)
	return d
}

// extractEntries returns o's entries, but those of replicas in skip, that
// are above c's.
func (c *GCounter) extractEntries(o *GCounter, skip markers) *GCounter {
	d := NewGCounter()
	for r, v := range o.m {
		if v > c.m[r] && !skip.has(r) {
			d.m[r] = v
		}
	}
	return d
}

// PNCounter is a counter that can go up and down: two GCounters.
type PNCounter struct {
	p, n   *GCounter
	pruned markers // see Prune
}

// NewPNCounter returns a zero counter.
func NewPNCounter() *PNCounter { return &PNCounter{p: NewGCounter(), n: NewGCounter()} }

func (c *PNCounter) Type() Type { return TypePNCounter }

// Increment adds delta (which may be negative) on behalf of r and returns
// the delta state.
func (c *PNCounter) Increment(r ReplicaID, delta int64) (*PNCounter, error) {
	d := NewPNCounter()
	if c.pruned.has(r) {
		return nil, fmt.Errorf("%w: replica %s was pruned from this counter", ErrInvalidArg, r)
	}
	var err error
	switch {
	case delta > 0:
		d.p, err = c.p.Increment(r, uint64(delta))
	case delta < 0:
		d.n, err = c.n.Increment(r, uint64(-(delta+1))+1)
	}
	if err != nil {
		return nil, err
	}
	return d, nil
}

// Value returns increments minus decrements (modulo 2^64, as int64).
func (c *PNCounter) Value() int64 { return int64(c.p.Value() - c.n.Value()) }

func (c *PNCounter) Clone() Value {
	return &PNCounter{p: c.p.clone(), n: c.n.clone(), pruned: c.pruned.clone()}
}

func (c *PNCounter) Equal(o Value) bool {
	oc, ok := o.(*PNCounter)
	return ok && c.p.Equal(oc.p) && c.n.Equal(oc.n) && maps.Equal(c.pruned, oc.pruned)
}

func (c *PNCounter) IsBottom() bool { return c.p.IsBottom() && c.n.IsBottom() && len(c.pruned) == 0 }
func (c *PNCounter) Size() int      { return c.p.Size() + c.n.Size() }

func (c *PNCounter) join(o Value) bool {
	oc := o.(*PNCounter)
	grew := c.pruned.union(oc.pruned)
	if grew {
		c.p.forget(c.pruned.has)
		c.n.forget(c.pruned.has)
	}
	a := c.p.joinEntries(oc.p, c.pruned)
	b := c.n.joinEntries(oc.n, c.pruned)
	return a || b || grew
}

func (c *PNCounter) extract(o Value) Value {
	oc := o.(*PNCounter)
	return &PNCounter{
		p:      c.p.extractEntries(oc.p, c.pruned),
		n:      c.n.extractEntries(oc.n, c.pruned),
		pruned: c.pruned.newer(oc.pruned),
	}
}
