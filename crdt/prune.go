package crdt

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
)

// Pruning (the term of Akka Distributed Data) folds the contributions of a
// replica that is gone for good into another replica, so that state stops
// carrying an entry, a dot or a ballot for every replica that ever wrote,
// while the value users read stays the same:
//
//   - GCounter, PNCounter: the removed replica's entries are added to the
//     owner's entries.
//   - ORSet, MVRegister, EWFlag, ORMap: every live dot of the removed
//     replica is renamed: replaced by a fresh dot of the owner (the same
//     element, value or flag), and the removed replica leaves the causal
//     context. The marker keeps the renaming (old dot, new dot), so that
//     a replica which has not seen the pruning translates its own state
//     the same way before it joins: a dot it holds takes its new name,
//     and a dot it has seen removed marks the new name removed too. So a
//     remove made concurrently with the pruning still removes what it
//     observed (without the renaming, the fresh dot would look like a
//     concurrent add and win: the jepsen set workload caught an element
//     coming back that way after a crash pruned the old incarnation).
//   - Vote: the removed replica's ballot is dropped: it leaves the
//     electorate, as Vote.Remove does.
//   - GSet, Flag and LWWRegister hold no per-replica state that grows
//     (an LWWRegister names one replica to break ties), and have nothing
//     to prune.
//
// A pruned value keeps a marker per pruned replica. Joins union the
// markers and translate (causal types: renamed dots move, the others go)
// or drop (counters, votes) whatever contributions of a marked replica
// either side still carries, so a replica that has not yet seen the
// pruning, or a stale copy, cannot bring those contributions back (they
// are counted in the owner's now). The join stays a join: translating
// and dropping a marked replica's contributions commute with the causal
// and counter joins.
//
// Pruning is correct only under two conditions that this package cannot
// check and its caller (the mesh) must ensure: exactly one replica, the
// owner, prunes a given removed replica, and at that moment the owner's
// state holds every contribution of the removed replica that exists
// anywhere. Markers go with Forget, once no replica holds anything of the
// pruned replica but markers; from then on the caller forgets the
// replica in every value it receives.

// markers maps each pruned replica to when it was pruned (Unix nanoseconds
// on the pruning node's clock). nil when there are none.
type markers map[ReplicaID]int64

func (m markers) has(r ReplicaID) bool { _, ok := m[r]; return ok }

func (m markers) clone() markers {
	if len(m) == 0 {
		return nil
	}
	return maps.Clone(m)
}

// union adds o's markers to *m (for a replica in both, the later time
// wins) and reports whether *m changed.
func (m *markers) union(o markers) (changed bool) {
	for r, at := range o {
		if cur, ok := (*m)[r]; ok && cur >= at {
			continue
		}
		if *m == nil {
			*m = markers{}
		}
		(*m)[r] = at
		changed = true
	}
	return changed
}

// newer returns o's markers that m lacks or holds with an earlier time.
func (m markers) newer(o markers) markers {
	var out markers
	for r, at := range o {
		if cur, ok := m[r]; !ok || cur < at {
			if out == nil {
				out = markers{}
			}
			out[r] = at
		}
	}
	return out
}

// sorted returns the marked replicas in order.
func (m markers) sorted() []ReplicaID { return slices.SortedFunc(maps.Keys(m), ReplicaID.Compare) }

// renaming records the live dots of a pruned replica that its owner
// re-minted as its own: for each pair, the dot (removed, from) became
// (into, to). Pairs are in ascending order of from. Never modified once
// built: values share it.
type renaming struct {
	into  ReplicaID
	pairs []renamePair
}

type renamePair struct{ from, to uint64 }

// lookup returns the new sequence number of the removed replica's dot
// seq, if it was renamed.
func (rn *renaming) lookup(seq uint64) (uint64, bool) {
	if rn == nil {
		return 0, false
	}
	i, ok := slices.BinarySearchFunc(rn.pairs, seq, func(p renamePair, seq uint64) int { return cmp.Compare(p.from, seq) })
	if !ok {
		return 0, false
	}
	return rn.pairs[i].to, true
}

func (rn *renaming) equal(o *renaming) bool {
	if rn == nil || o == nil {
		return rn == o
	}
	return rn.into == o.into && slices.Equal(rn.pairs, o.pairs)
}

// renames maps a pruned replica to the renaming of its live dots, for the
// pruned replicas that had any in the value. nil when there are none.
type renames map[ReplicaID]*renaming

func (r renames) clone() renames {
	if len(r) == 0 {
		return nil
	}
	return maps.Clone(r) // the renamings themselves are immutable
}

func (r renames) equal(o renames) bool { return maps.EqualFunc(r, o, (*renaming).equal) }

// renamer is implemented by the causal types, whose markers can carry
// renamings.
type renamer interface {
	renames() *renames
}

// prunable is implemented by the types that hold per-replica state.
type prunable interface {
	Value
	// prune folds removed into into (both valid, distinct, removed not
	// yet marked) and returns the delta.
	prune(removed, into ReplicaID, at int64) (Value, error)
	// holds reports whether the value holds a contribution of r.
	holds(r ReplicaID) bool
	// holdsAny reports whether the value holds a contribution of a
	// replica for which in is true.
	holdsAny(in func(ReplicaID) bool) bool
	// forget drops the contributions of the replicas for which in is
	// true (not the markers).
	forget(in func(ReplicaID) bool)
	// marks returns the value's markers, to read or replace.
	marks() *markers
}

// Prune folds the contributions of replica removed to v into replica into,
// marks removed as pruned, and returns the delta (which carries the marker
// and what into gained). into must be the replica calling: Prune mints dots
// of into for causal types. v's value (Value, Elements, Values, Enabled)
// is unchanged, except that a Vote loses removed's ballot.
//
// Pruning a replica v has already pruned, or a type with nothing to prune,
// returns a bottom delta. On error v is unchanged.
func Prune(v Value, removed, into ReplicaID, at int64) (Value, error) {
	if err := ValidateReplica(removed); err != nil {
		return nil, err
	}
	if err := ValidateReplica(into); err != nil {
		return nil, err
	}
	if removed == into {
		return nil, fmt.Errorf("%w: cannot prune replica %s into itself", ErrInvalidArg, removed)
	}
	p, ok := v.(prunable)
	if !ok || p.marks().has(removed) {
		return New(v.Type())
	}
	if p.marks().has(into) {
		return nil, fmt.Errorf("%w: cannot prune into replica %s, which was pruned", ErrInvalidArg, into)
	}
	return p.prune(removed, into, at)
}

// Holds reports whether v holds a contribution of replica r: a counter
// entry, a dot (live or in the causal context) or a ballot. Values of
// types with nothing to prune hold none.
func Holds(v Value, r ReplicaID) bool {
	p, ok := v.(prunable)
	return ok && p.holds(r)
}

// Pruned returns the replicas v carries pruning markers for, with the time
// each was pruned (nil if none).
func Pruned(v Value) map[ReplicaID]int64 {
	if p, ok := v.(prunable); ok {
		return p.marks().clone()
	}
	return nil
}

// Forget drops v's contributions of the replicas in rs, and its markers
// for them, and reports whether v changed. It is not a lattice operation:
// the mesh forgets a pruned replica only once no member holds anything of
// it but markers, and from then on applies Forget to every value it
// receives, so that the markers themselves need not live forever.
func Forget(v Value, rs map[ReplicaID]bool) bool {
	p, ok := v.(prunable)
	if !ok || !Mentions(v, rs) {
		return false
	}
	p.forget(func(r ReplicaID) bool { return rs[r] })
	maps.DeleteFunc(*p.marks(), func(r ReplicaID, _ int64) bool { return rs[r] })
	if len(*p.marks()) == 0 {
		*p.marks() = nil
	}
	return true
}

// Mentions reports whether v holds a contribution of, or a marker for, a
// replica in rs.
func Mentions(v Value, rs map[ReplicaID]bool) bool {
	if len(rs) == 0 { // the common case, on the engine's receive path
		return false
	}
	p, ok := v.(prunable)
	if !ok {
		return false
	}
	for r := range *p.marks() {
		if rs[r] {
			return true
		}
	}
	return p.holdsAny(func(r ReplicaID) bool { return rs[r] })
}

// A GCounter folds removed's entry into into's.
func (c *GCounter) prune(removed, into ReplicaID, at int64) (Value, error) {
	d := NewGCounter()
	if err := c.fold(d, removed, into); err != nil {
		return nil, err
	}
	c.pruned.union(markers{removed: at})
	d.pruned = markers{removed: at}
	return d, nil
}

// fold moves removed's entry into into's, recording into's new entry in
// d. It fails, changing nothing, if into's entry would overflow.
func (c *GCounter) fold(d *GCounter, removed, into ReplicaID) error {
	n := c.Entry(removed)
	if n == 0 {
		return nil
	}
	if c.Entry(into) > ^uint64(0)-n {
		return fmt.Errorf("%w: counter entry of %s overflows when pruning %s", ErrInvalidArg, into, removed)
	}
	c.forget(func(r ReplicaID) bool { return r == removed })
	c.set(into, c.Entry(into)+n)
	d.set(into, c.Entry(into))
	return nil
}

func (c *GCounter) holds(r ReplicaID) bool { _, ok := c.find(r); return ok }
func (c *GCounter) holdsAny(in func(ReplicaID) bool) bool {
	return slices.ContainsFunc(c.es, func(e gEntry) bool { return in(e.r) })
}
func (c *GCounter) marks() *markers { return &c.pruned }

// A PNCounter folds both halves.
func (c *PNCounter) prune(removed, into ReplicaID, at int64) (Value, error) {
	np, nn := c.p.Entry(removed), c.n.Entry(removed)
	if c.p.Entry(into) > ^uint64(0)-np || c.n.Entry(into) > ^uint64(0)-nn {
		return nil, fmt.Errorf("%w: counter entry of %s overflows when pruning %s", ErrInvalidArg, into, removed)
	}
	d := NewPNCounter()
	_ = c.p.fold(d.p, removed, into) // cannot fail: checked above
	_ = c.n.fold(d.n, removed, into)
	c.pruned.union(markers{removed: at})
	d.pruned = markers{removed: at}
	return d, nil
}

func (c *PNCounter) holds(r ReplicaID) bool { return c.p.holds(r) || c.n.holds(r) }
func (c *PNCounter) holdsAny(in func(ReplicaID) bool) bool {
	return c.p.holdsAny(in) || c.n.holdsAny(in)
}
func (c *PNCounter) forget(in func(ReplicaID) bool) { c.p.forget(in); c.n.forget(in) }
func (c *PNCounter) marks() *markers                { return &c.pruned }

// A Vote drops removed's ballot.
func (v *Vote) prune(removed, _ ReplicaID, at int64) (Value, error) {
	delete(v.m, removed)
	v.pruned.union(markers{removed: at})
	return &Vote{m: map[ReplicaID]ballot{}, pruned: markers{removed: at}}, nil
}

func (v *Vote) holds(r ReplicaID) bool { _, ok := v.m[r]; return ok }
func (v *Vote) holdsAny(in func(ReplicaID) bool) bool {
	for r := range v.m {
		if in(r) {
			return true
		}
	}
	return false
}
func (v *Vote) forget(in func(ReplicaID) bool) {
	maps.DeleteFunc(v.m, func(r ReplicaID, _ ballot) bool { return in(r) })
}
func (v *Vote) marks() *markers { return &v.pruned }

func (s *ORSet) prune(removed, into ReplicaID, at int64) (Value, error) {
	return &ORSet{c: s.c.prune(removed, into, at)}, nil
}
func (s *ORSet) holds(r ReplicaID) bool                { return s.c.ctx.has(r) }
func (s *ORSet) holdsAny(in func(ReplicaID) bool) bool { return s.c.ctx.holdsAny(in) }
func (s *ORSet) forget(in func(ReplicaID) bool)        { s.c.forget(in) }
func (s *ORSet) marks() *markers                       { return &s.c.pruned }
func (s *ORSet) renames() *renames                     { return &s.c.renamed }

func (m *MVRegister) prune(removed, into ReplicaID, at int64) (Value, error) {
	return &MVRegister{c: m.c.prune(removed, into, at)}, nil
}
func (m *MVRegister) holds(r ReplicaID) bool                { return m.c.ctx.has(r) }
func (m *MVRegister) holdsAny(in func(ReplicaID) bool) bool { return m.c.ctx.holdsAny(in) }
func (m *MVRegister) forget(in func(ReplicaID) bool)        { m.c.forget(in) }
func (m *MVRegister) marks() *markers                       { return &m.c.pruned }
func (m *MVRegister) renames() *renames                     { return &m.c.renamed }

func (f *EWFlag) prune(removed, into ReplicaID, at int64) (Value, error) {
	return &EWFlag{c: f.c.prune(removed, into, at)}, nil
}
func (f *EWFlag) holds(r ReplicaID) bool                { return f.c.ctx.has(r) }
func (f *EWFlag) holdsAny(in func(ReplicaID) bool) bool { return f.c.ctx.holdsAny(in) }
func (f *EWFlag) forget(in func(ReplicaID) bool)        { f.c.forget(in) }
func (f *EWFlag) marks() *markers                       { return &f.c.pruned }
func (f *EWFlag) renames() *renames                     { return &f.c.renamed }

func (m *ORMap) prune(removed, into ReplicaID, at int64) (Value, error) {
	return &ORMap{c: m.c.prune(removed, into, at)}, nil
}
func (m *ORMap) holds(r ReplicaID) bool                { return m.c.ctx.has(r) }
func (m *ORMap) holdsAny(in func(ReplicaID) bool) bool { return m.c.ctx.holdsAny(in) }
func (m *ORMap) forget(in func(ReplicaID) bool)        { m.c.forget(in) }
func (m *ORMap) marks() *markers                       { return &m.c.pruned }
func (m *ORMap) renames() *renames                     { return &m.c.renamed }

// prune replaces every live dot of removed by a fresh dot of into, drops
// removed from the context, marks it and returns the delta: the fresh dots
// with what they hold, their context, and the marker. (Every dot a store
// holds is in the context, so a replica absent from the context holds no
// live dot either.)
func (c *causal) prune(removed, into ReplicaID, at int64) causal {
	var fresh []Dot
	rn := &renaming{into: into}
	next := func(old Dot) Dot {
		d := c.ctx.next(into)
		c.ctx.Add(d)
		fresh = append(fresh, d)
		rn.pairs = append(rn.pairs, renamePair{old.Seq, d.Seq})
		return d
	}
	out, added := retag(c.s, intern(removed), next)
	if added != nil {
		c.s = out
		c.idx, c.order = nil, nil // rebuilt when next needed
	}
	delete(c.ctx.m, intern(removed))
	c.pruned.union(markers{removed: at})
	d := causal{s: added, ctx: contextOf(fresh), pruned: markers{removed: at}, indexed: c.indexed}
	if len(rn.pairs) > 0 {
		// retag visits dots in key order, not sequence order.
		slices.SortFunc(rn.pairs, func(a, b renamePair) int { return cmp.Compare(a.from, b.from) })
		if c.renamed == nil {
			c.renamed = renames{}
		}
		c.renamed[removed] = rn
		d.renamed = renames{removed: rn}
	}
	return d
}

// newerMarks returns o's markers that c lacks or holds with an earlier
// time, and their renamings.
func (c *causal) newerMarks(o *causal) (markers, renames) {
	newer := c.pruned.newer(o.pruned)
	var ren renames
	for r := range newer {
		if rn := o.renamed[r]; rn != nil {
			if ren == nil {
				ren = renames{}
			}
			ren[r] = rn
		}
	}
	return newer, ren
}

// unionMarks adds o's markers, and the renamings that come with them, to
// c's, and reports whether c's changed. For a replica both mark, the
// later marker wins, with its renaming.
func (c *causal) unionMarks(o *causal) bool {
	newer, ren := c.newerMarks(o)
	if len(newer) == 0 {
		return false
	}
	c.pruned.union(newer)
	for r := range newer {
		if rn := ren[r]; rn != nil {
			if c.renamed == nil {
				c.renamed = renames{}
			}
			c.renamed[r] = rn
		} else {
			delete(c.renamed, r)
		}
	}
	return true
}

// translate applies the markers m, with their renamings ren, to c in
// place, as the pruning did to the owner's copy: a renamed dot of a
// marked replica takes its new name in the store (unless c's context
// holds the new name already: then c has seen it removed), and in the
// context if c's context holds the old one (c saw it, live or removed);
// the marked replica's other dots go (the owner held every dot of it
// that existed when it pruned, and had seen those removed); then the
// marked replica leaves the context. Renamings can chain (a replica
// pruned into one that was pruned later), so the passes repeat until no
// marked replica is left; a cycle, which no honest pruning makes, ends in
// a drop.
func (c *causal) translate(m markers, ren renames) {
	if len(m) == 0 || !c.ctx.holdsAny(m.has) {
		return
	}
	for range len(m) + 1 {
		progress := false
		for _, id := range m.sorted() {
			r := intern(id)
			if c.ctx.m[r] == nil {
				continue
			}
			progress = true
			rn := ren[id]
			var into replica
			if rn != nil {
				into = intern(rn.into)
			}
			if c.s != nil {
				// A dot whose new name c's context already holds is gone
				// under that name (c saw a remove of it, made by a
				// replica that had seen the pruning): it goes here too.
				s := c.s.filter(keepIf(func(d Dot) bool {
					if d.Replica != r {
						return true
					}
					to, ok := rn.lookup(d.Seq)
					return ok && !c.ctx.Contains(Dot{into, to})
				}))
				if rn != nil {
					s, _ = retag(s, r, func(old Dot) Dot {
						to, _ := rn.lookup(old.Seq)
						return Dot{into, to}
					})
				}
				c.s = s
				c.idx, c.order = nil, nil
			}
			if rn != nil {
				for _, p := range rn.pairs {
					if c.ctx.Contains(Dot{r, p.from}) {
						c.ctx.Add(Dot{into, p.to})
					}
				}
			}
			delete(c.ctx.m, r)
		}
		if !progress {
			return
		}
	}
	c.drop(m.has)
}

// retag returns s with every dot of r replaced by next(dot), and the
// store of the replacements alone (nil, and s itself, when s holds no dot
// of r). Stores are not modified: dot sets and funs are immutable, and
// maps are copied where they change. Map keys are visited in order, so
// the dots minted do not depend on map iteration.
func retag(s store, r replica, next func(old Dot) Dot) (out, added store) {
	switch x := s.(type) {
	case nil:
		return nil, nil
	case dotSet:
		if !slices.ContainsFunc(x, func(d Dot) bool { return d.Replica == r }) {
			return s, nil
		}
		var keep, fresh dotSet
		for _, d := range x {
			if d.Replica == r {
				fresh = append(fresh, next(d))
			} else {
				keep = append(keep, d)
			}
		}
		all := append(keep, fresh...)
		slices.SortFunc(all, Dot.Compare)
		return all, fresh
	case dotFun:
		if !slices.ContainsFunc(x, func(e funEntry) bool { return e.d.Replica == r }) {
			return s, nil
		}
		var keep, fresh dotFun
		for _, e := range x {
			if e.d.Replica == r {
				fresh = append(fresh, funEntry{next(e.d), e.v})
			} else {
				keep = append(keep, e)
			}
		}
		all := append(keep, fresh...)
		slices.SortFunc(all, func(a, b funEntry) int { return a.d.Compare(b.d) })
		return all, fresh
	case dotMap:
		var outM, addM dotMap
		for _, k := range slices.Sorted(maps.Keys(x)) {
			o, a := retag(x[k], r, next)
			if a == nil {
				continue
			}
			if outM == nil {
				outM, addM = maps.Clone(x), dotMap{}
			}
			outM[k], addM[k] = o, a
		}
		if addM == nil {
			return s, nil
		}
		return outM, addM
	}
	panic("crdt: unknown dot store") // unreachable: stores are built only by this package
}

// forget drops the contributions of the replicas for which in is true,
// and their renamings (Forget drops their markers).
func (c *causal) forget(in func(ReplicaID) bool) {
	c.drop(in)
	maps.DeleteFunc(c.renamed, func(r ReplicaID, _ *renaming) bool { return in(r) })
	if len(c.renamed) == 0 {
		c.renamed = nil
	}
}

// drop removes the contributions of the replicas for which in is true
// from c (in place): their dots from the store and their runs from the
// context. (Every stored dot is in the context, so the context tells
// whether there is anything to drop.)
func (c *causal) drop(in func(ReplicaID) bool) {
	if !c.ctx.holdsAny(in) {
		return
	}
	if c.s != nil {
		c.s = c.s.filter(keepIf(func(d Dot) bool { return !in(d.Replica.ID()) }))
		c.idx, c.order = nil, nil
	}
	maps.DeleteFunc(c.ctx.m, func(r replica, _ runs) bool { return in(r.ID()) })
}

// translated returns o, or a copy of it translated by the markers m and
// renamings ren if it holds contributions of a marked replica.
func (o *causal) translated(m markers, ren renames) *causal {
	if len(m) == 0 || !o.ctx.holdsAny(m.has) {
		return o
	}
	cp := o.clone()
	cp.translate(m, ren)
	return &cp
}

// holdsAny reports whether c has a dot of a replica for which in is true.
func (c *Context) holdsAny(in func(ReplicaID) bool) bool {
	for r := range c.m {
		if in(r.ID()) {
			return true
		}
	}
	return false
}

// has reports whether c has a dot of r.
func (c *Context) has(r ReplicaID) bool { return c.m[intern(r)] != nil }
