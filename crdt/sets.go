package crdt

import (
	"bytes"
	"slices"
)

// ORSet is an add-wins observed-remove set of opaque byte strings
// (Almeida et al., the "AWSet"). Each element carries the dots of the adds
// that produced it; a remove covers the dots it observed, so an add
// concurrent with a remove survives it. The causal context replaces
// tombstones.
type ORSet struct{ c causal }

// NewORSet returns an empty set.
func NewORSet() *ORSet { return &ORSet{c: newCausal(true)} }

func (s *ORSet) Type() Type { return TypeORSet }

// Add inserts e on behalf of r and returns the delta. A replica pruned
// from the set (see Prune) can no longer write: its add is a no-op, as
// every replica that has seen the pruning would drop it.
func (s *ORSet) Add(r ReplicaID, e []byte) *ORSet {
	if s.c.pruned.has(r) {
		return NewORSet()
	}
	s.c.index()
	k := string(e)
	var old store
	if m, ok := s.c.s.(dotMap); ok {
		old = m[k]
	}
	d := s.c.ctx.next(r)
	s.c.ctx.Add(d)
	ds := dotSet{d} // shared by the state and the delta, as in MVRegister.Assign
	s.c.setEntry(k, ds)
	delta := &ORSet{c: causal{s: dotMap{k: ds}, ctx: contextOf(append(dotsOf(old), d)), indexed: true}}
	return delta
}

// Remove deletes e and returns the delta (bottom if e was absent).
func (s *ORSet) Remove(e []byte) *ORSet {
	s.c.index()
	k := string(e)
	m, _ := s.c.s.(dotMap)
	old, ok := m[k]
	if !ok {
		return NewORSet()
	}
	s.c.setEntry(k, nil)
	return &ORSet{c: causal{ctx: contextOf(dotsOf(old)), indexed: true}}
}

// Clear removes every element and returns the delta.
func (s *ORSet) Clear() *ORSet {
	var all []Dot
	if s.c.s != nil {
		all = dotsOf(s.c.s)
	}
	s.c.s, s.c.order = nil, nil
	if s.c.idx != nil {
		clear(s.c.idx)
	}
	return &ORSet{c: causal{ctx: contextOf(all), indexed: true}}
}

// Contains reports whether e is in the set.
func (s *ORSet) Contains(e []byte) bool {
	m, _ := s.c.s.(dotMap)
	_, ok := m[string(e)]
	return ok
}

// Elements returns the elements in byte order.
func (s *ORSet) Elements() [][]byte {
	m, _ := s.c.s.(dotMap)
	return sortedKeys(m)
}

// Len returns the number of elements.
func (s *ORSet) Len() int { m, _ := s.c.s.(dotMap); return len(m) }

// Context returns a copy of the set's causal context.
func (s *ORSet) Context() *Context { return s.c.ctx.Clone() }

func (s *ORSet) Clone() Value       { return &ORSet{c: s.c.clone()} }
func (s *ORSet) Equal(o Value) bool { os, ok := o.(*ORSet); return ok && s.c.equal(&os.c) }
func (s *ORSet) IsBottom() bool     { return s.c.isBottom() }
func (s *ORSet) Size() int          { return s.Len() }
func (s *ORSet) join(o Value) bool  { return s.c.joinCausal(&o.(*ORSet).c) }

func (s *ORSet) extract(o Value) Value {
	return &ORSet{c: s.c.extractCausal(&o.(*ORSet).c, true)}
}

// MVRegister is a multi-value register: a write replaces every value it
// observed, and concurrent writes are all kept until a later write covers
// them.
type MVRegister struct{ c causal }

// NewMVRegister returns an unset register.
func NewMVRegister() *MVRegister { return &MVRegister{c: newCausal(false)} }

func (m *MVRegister) Type() Type { return TypeMVRegister }

// Assign writes v on behalf of r and returns the delta (a no-op for a
// replica pruned from the register, as for ORSet.Add).
func (m *MVRegister) Assign(r ReplicaID, v []byte) *MVRegister {
	if m.c.pruned.has(r) {
		return NewMVRegister()
	}
	old := dotsOf(m.c.s)
	d := m.c.ctx.next(r)
	m.c.ctx.Add(d)
	// The state and the delta share the new value (dot funs are never
	// modified): joins of its copies then find them equal by identity.
	f := dotFun{{d, bytes.Clone(v)}}
	m.c.s = f
	return &MVRegister{c: causal{s: f, ctx: contextOf(append(old, d))}}
}

// Clear removes every value it observes and returns the delta.
func (m *MVRegister) Clear() *MVRegister {
	old := dotsOf(m.c.s)
	m.c.s = nil
	return &MVRegister{c: causal{ctx: contextOf(old)}}
}

// Values returns the distinct concurrent values in byte order.
func (m *MVRegister) Values() [][]byte {
	f, _ := m.c.s.(dotFun)
	var out [][]byte
	for _, e := range f {
		out = append(out, bytes.Clone(e.v))
	}
	slices.SortFunc(out, bytes.Compare)
	return slices.CompactFunc(out, bytes.Equal)
}

func (m *MVRegister) Clone() Value       { return &MVRegister{c: m.c.clone()} }
func (m *MVRegister) Equal(o Value) bool { om, ok := o.(*MVRegister); return ok && m.c.equal(&om.c) }
func (m *MVRegister) IsBottom() bool     { return m.c.isBottom() }
func (m *MVRegister) Size() int          { return dotCount(m.c.s) }
func (m *MVRegister) join(o Value) bool  { return m.c.joinCausal(&o.(*MVRegister).c) }

func (m *MVRegister) extract(o Value) Value {
	return &MVRegister{c: m.c.extractCausal(&o.(*MVRegister).c, false)}
}

// EWFlag is an enable-wins flag: it can be enabled and disabled any number
// of times, and an enable concurrent with a disable wins.
type EWFlag struct{ c causal }

// NewEWFlag returns a disabled flag.
func NewEWFlag() *EWFlag { return &EWFlag{c: newCausal(false)} }

func (f *EWFlag) Type() Type { return TypeEWFlag }

// Enable sets the flag on behalf of r and returns the delta (a no-op for
// a replica pruned from the flag, as for ORSet.Add).
func (f *EWFlag) Enable(r ReplicaID) *EWFlag {
	if f.c.pruned.has(r) {
		return NewEWFlag()
	}
	old := dotsOf(f.c.s)
	d := f.c.ctx.next(r)
	f.c.ctx.Add(d)
	f.c.s = dotSet{d}
	return &EWFlag{c: causal{s: dotSet{d}, ctx: contextOf(append(old, d))}}
}

// Disable clears the flag and returns the delta.
func (f *EWFlag) Disable() *EWFlag {
	old := dotsOf(f.c.s)
	f.c.s = nil
	return &EWFlag{c: causal{ctx: contextOf(old)}}
}

// Enabled reports whether the flag is set.
func (f *EWFlag) Enabled() bool { return f.c.s != nil && !f.c.s.empty() }

func (f *EWFlag) Clone() Value       { return &EWFlag{c: f.c.clone()} }
func (f *EWFlag) Equal(o Value) bool { of, ok := o.(*EWFlag); return ok && f.c.equal(&of.c) }
func (f *EWFlag) IsBottom() bool     { return f.c.isBottom() }
func (f *EWFlag) Size() int          { return dotCount(f.c.s) }
func (f *EWFlag) join(o Value) bool  { return f.c.joinCausal(&o.(*EWFlag).c) }

func (f *EWFlag) extract(o Value) Value {
	return &EWFlag{c: f.c.extractCausal(&o.(*EWFlag).c, false)}
}
