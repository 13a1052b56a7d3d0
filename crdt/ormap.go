package crdt

import (
	"bytes"
	"fmt"
	"slices"
)

// ORMap is an observed-remove map from byte-string keys to nested causal
// CRDTs (ORSet, MVRegister, EWFlag, ORMap) that share the map's causal
// context (Almeida et al., section 7.3). Removing a key removes the dots it
// observed, so an update concurrent with a remove wins, and the entry keeps
// only what the update added.
//
// An entry is identified by its key and its type: if two replicas
// concurrently create one key with different types, both entries exist
// side by side (Riak's maps do the same). An entry whose nested value
// becomes empty (for example a set whose last element is removed) is gone
// from the map.
type ORMap struct{ c causal }

// MapKey names one ORMap entry.
type MapKey struct {
	Key  []byte
	Type Type
}

// NewORMap returns an empty map.
func NewORMap() *ORMap { return &ORMap{c: newCausal(true)} }

func (m *ORMap) Type() Type { return TypeORMap }

// Nestable reports whether values of type t can live in an ORMap.
func Nestable(t Type) bool {
	switch t {
	case TypeORSet, TypeMVRegister, TypeEWFlag, TypeORMap:
		return true
	}
	return false
}

func entryKey(t Type, key []byte) string { return string(append([]byte{byte(t)}, key...)) }

func splitEntryKey(k string) (Type, string) { return Type(k[0]), k[1:] }

// view builds a nested value of type t over store s that shares m's
// context.
func (m *ORMap) view(t Type, s store) Value { return nestedValue(t, causal{s: s, ctx: m.c.ctx}) }

// nestedValue returns c as a value of the nestable type t.
func nestedValue(t Type, c causal) Value {
	switch t {
	case TypeORSet:
		return &ORSet{c: c}
	case TypeMVRegister:
		return &MVRegister{c: c}
	case TypeEWFlag:
		return &EWFlag{c: c}
	case TypeORMap:
		return &ORMap{c: c}
	}
	panic("crdt: a type that does not nest") // callers check Nestable
}

func causalOf(v Value) *causal {
	switch x := v.(type) {
	case *ORSet:
		return &x.c
	case *MVRegister:
		return &x.c
	case *EWFlag:
		return &x.c
	case *ORMap:
		return &x.c
	}
	return nil
}

// Update applies fn to the entry (key, t), creating it if absent, and
// returns the map delta. fn receives the nested value, calls its mutators
// and returns the delta they produced (joined, if it called several); it
// must not keep the value. The nested value shares the map's context, so
// its dots are the map's.
//
// fn should check its arguments before mutating: if it returns an error,
// Update returns that error, and mutations fn already made stay applied.
func (m *ORMap) Update(r ReplicaID, key []byte, t Type, fn func(v Value) (Value, error)) (*ORMap, error) {
	if !Nestable(t) {
		return nil, fmt.Errorf("%w: %s cannot be an ORMap value", ErrInvalidArg, t)
	}
	if m.c.pruned.has(r) {
		return nil, fmt.Errorf("%w: replica %s was pruned from this map", ErrInvalidArg, r)
	}
	m.c.index()
	k := entryKey(t, key)
	var cur store
	if em, ok := m.c.s.(dotMap); ok {
		cur = em[k]
	}
	old := m.c.indexedDots(cur)
	v := m.view(t, cur)
	d, err := fn(v)
	ns := causalOf(v).s
	if ns != nil && ns.empty() {
		ns = nil
	}
	m.c.replaceEntry(k, old, ns)
	if err != nil {
		return nil, err
	}
	if d == nil || d.Type() != t {
		return nil, fmt.Errorf("%w: update of a %s entry returned a %v delta", ErrTypeMismatch, t, d)
	}
	dc := causalOf(d)
	delta := &ORMap{c: causal{ctx: dc.ctx.Clone(), indexed: true}}
	if dc.s != nil && !dc.s.empty() {
		delta.c.setEntry(k, dc.s.clone())
	}
	return delta, nil
}

// Remove deletes the entry (key, t) and returns the delta (bottom if
// absent). Updates concurrent with the remove survive it.
func (m *ORMap) Remove(key []byte, t Type) *ORMap {
	m.c.index()
	em, _ := m.c.s.(dotMap)
	k := entryKey(t, key)
	old, ok := em[k]
	if !ok {
		return NewORMap()
	}
	m.c.setEntry(k, nil)
	return &ORMap{c: causal{ctx: contextOf(dotsOf(old)), indexed: true}}
}

// Get returns a copy of the entry (key, t), or nil if absent. The copy is a
// standalone value whose context holds just its own dots; mutate entries
// through Update.
func (m *ORMap) Get(key []byte, t Type) Value {
	em, _ := m.c.s.(dotMap)
	s, ok := em[entryKey(t, key)]
	if !ok {
		return nil
	}
	c := causal{s: s.clone(), ctx: contextOf(dotsOf(s))}
	c.indexed = t == TypeORSet || t == TypeORMap
	return nestedValue(t, c)
}

// Keys returns the entries' keys, ordered by key then type.
func (m *ORMap) Keys() []MapKey {
	em, _ := m.c.s.(dotMap)
	out := make([]MapKey, 0, len(em))
	for k := range em {
		t, key := splitEntryKey(k)
		out = append(out, MapKey{Key: []byte(key), Type: t})
	}
	slices.SortFunc(out, func(a, b MapKey) int {
		if c := bytes.Compare(a.Key, b.Key); c != 0 {
			return c
		}
		return int(a.Type) - int(b.Type)
	})
	return out
}

// Len returns the number of entries.
func (m *ORMap) Len() int { em, _ := m.c.s.(dotMap); return len(em) }

func (m *ORMap) Clone() Value       { return &ORMap{c: m.c.clone()} }
func (m *ORMap) Equal(o Value) bool { om, ok := o.(*ORMap); return ok && m.c.equal(&om.c) }
func (m *ORMap) IsBottom() bool     { return m.c.isBottom() }
func (m *ORMap) Size() int          { return m.Len() }
func (m *ORMap) join(o Value) bool  { return m.c.joinCausal(&o.(*ORMap).c) }

func (m *ORMap) extract(o Value) Value {
	return &ORMap{c: m.c.extractCausal(&o.(*ORMap).c, true)}
}
