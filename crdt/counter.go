package crdt

import (
	"fmt"
	"maps"
	"math"
	"slices"
)

// gEntry is one replica's entry of a GCounter.
type gEntry struct {
	r ReplicaID
	n uint64 // never zero
}

// GCounter is a grow-only counter: one monotonic entry per replica.
//
// The entries are a slice sorted by replica (ReplicaID.Compare), not a
// map: a counter holds one entry per replica that ever incremented it, a
// handful, so a search is a few comparisons, a join or an extract is a
// merge of two sorted slices, a clone is one allocation, and the
// canonical encoding (sorted by replica) needs no sort. Slices are never
// shared between counters.
type GCounter struct {
	es     []gEntry
	pruned markers // see Prune; nil inside a PNCounter, which keeps its own
}

// NewGCounter returns a zero counter.
func NewGCounter() *GCounter { return &GCounter{} }

// gcounterOne is a counter allocated together with its one entry: the
// delta of an increment, the commonest counter on the wire.
type gcounterOne struct {
	c GCounter
	e [1]gEntry
}

// oneEntry returns a counter holding only e, in one allocation.
func oneEntry(e gEntry) *GCounter {
	x := &gcounterOne{e: [1]gEntry{e}}
	x.c.es = x.e[:]
	return &x.c
}

func (c *GCounter) Type() Type { return TypeGCounter }

// find returns the index of r's entry, or where it would be inserted.
func (c *GCounter) find(r ReplicaID) (int, bool) {
	return slices.BinarySearchFunc(c.es, r, func(e gEntry, r ReplicaID) int { return e.r.Compare(r) })
}

// set makes r's entry n (n > 0).
func (c *GCounter) set(r ReplicaID, n uint64) {
	i, ok := c.find(r)
	if ok {
		c.es[i].n = n
		return
	}
	c.es = slices.Insert(c.es, i, gEntry{r, n})
}

// Increment adds n to r's entry and returns the delta. It fails, changing
// nothing, if r's entry would overflow.
func (c *GCounter) Increment(r ReplicaID, n uint64) (*GCounter, error) {
	if c.pruned.has(r) {
		return nil, fmt.Errorf("%w: replica %s was pruned from this counter", ErrInvalidArg, r)
	}
	if n == 0 {
		return NewGCounter(), nil
	}
	cur := c.Entry(r)
	if cur > math.MaxUint64-n {
		return nil, fmt.Errorf("%w: counter entry of %s overflows", ErrInvalidArg, r)
	}
	c.set(r, cur+n)
	return oneEntry(gEntry{r, cur + n}), nil
}

// Value returns the sum of all entries (modulo 2^64).
func (c *GCounter) Value() uint64 {
	var s uint64
	for _, e := range c.es {
		s += e.n
	}
	return s
}

// Entry returns r's entry.
func (c *GCounter) Entry(r ReplicaID) uint64 {
	if i, ok := c.find(r); ok {
		return c.es[i].n
	}
	return 0
}

// Entries returns a copy of all entries.
func (c *GCounter) Entries() map[ReplicaID]uint64 {
	m := make(map[ReplicaID]uint64, len(c.es))
	for _, e := range c.es {
		m[e.r] = e.n
	}
	return m
}

func (c *GCounter) Clone() Value { return c.clone() }

func (c *GCounter) clone() *GCounter {
	var d *GCounter
	if len(c.es) == 1 {
		d = oneEntry(c.es[0])
	} else {
		d = &GCounter{es: slices.Clone(c.es)}
	}
	d.pruned = c.pruned.clone()
	return d
}

func (c *GCounter) Equal(o Value) bool {
	oc, ok := o.(*GCounter)
	return ok && slices.Equal(c.es, oc.es) && maps.Equal(c.pruned, oc.pruned)
}

func (c *GCounter) IsBottom() bool { return len(c.es) == 0 && len(c.pruned) == 0 }
func (c *GCounter) Size() int      { return len(c.es) }

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
	c.es = slices.DeleteFunc(c.es, func(e gEntry) bool { return in(e.r) })
}

// joinEntries joins o's entries, but those of replicas in skip, into c:
// in place when c has an entry for each of them (the usual case: a
// counter's replicas are known early), else by merging into a new slice.
func (c *GCounter) joinEntries(o *GCounter, skip markers) bool {
	grew, missing := false, 0
	i := 0
	for _, oe := range o.es {
		for i < len(c.es) && c.es[i].r.Compare(oe.r) < 0 {
			i++
		}
		switch {
		case i < len(c.es) && c.es[i].r == oe.r:
			if oe.n > c.es[i].n && !skip.has(oe.r) {
				c.es[i].n = oe.n
				grew = true
			}
		case !skip.has(oe.r):
			missing++
		}
	}
	if missing == 0 {
		return grew
	}
	out := make([]gEntry, 0, len(c.es)+missing)
	i = 0
	for _, oe := range o.es {
		for i < len(c.es) && c.es[i].r.Compare(oe.r) < 0 {
			out = append(out, c.es[i])
			i++
		}
		if (i == len(c.es) || c.es[i].r != oe.r) && !skip.has(oe.r) {
			out = append(out, oe)
		}
	}
	c.es = append(out, c.es[i:]...)
	return true
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
	i := 0
	for _, oe := range o.es {
		for i < len(c.es) && c.es[i].r.Compare(oe.r) < 0 {
			i++
		}
		var cur uint64
		if i < len(c.es) && c.es[i].r == oe.r {
			cur = c.es[i].n
		}
		if oe.n > cur && !skip.has(oe.r) {
			d.es = append(d.es, oe)
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
