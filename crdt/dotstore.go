package crdt

import (
	"bytes"
	"maps"
	"slices"
)

// store is a dot store (Almeida et al., section 6): the payload of a causal
// CRDT. Three kinds nest into each other:
//
//	dotSet  a set of dots (EWFlag; the value of one ORSet element)
//	dotFun  dot -> immutable value (MVRegister)
//	dotMap  key -> store (ORSet: element -> dotSet; ORMap: typed key -> store)
//
// A store never holds a dot twice, and every dot it holds is in the causal
// context it is paired with. An empty store is represented by nil where a
// store is optional.
type store interface {
	empty() bool
	eachDot(fn func(Dot))
	clone() store
	equal(o store) bool
	// filter returns a new store with the dots for which keep is true, or
	// nil when none is kept.
	filter(keep func(Dot) bool) store
	size() int
}

// dotSet is a sorted set of distinct dots.
type dotSet []Dot

func (s dotSet) empty() bool { return len(s) == 0 }

func (s dotSet) eachDot(fn func(Dot)) {
	for _, d := range s {
		fn(d)
	}
}

// clone shares s: dot sets are never modified once built.
func (s dotSet) clone() store { return s }

func (s dotSet) equal(o store) bool {
	os, ok := o.(dotSet)
	return ok && slices.Equal(s, os)
}

func setsEqual(a, b dotSet) bool { return slices.Equal(a, b) }

func (s dotSet) filter(keep func(Dot) bool) store {
	var out dotSet
	for i, d := range s {
		if keep(d) {
			if out != nil {
				out = append(out, d)
			}
		} else if out == nil {
			out = append(dotSet{}, s[:i]...)
		}
	}
	switch {
	case out == nil:
		return s // everything kept: share the immutable set
	case len(out) == 0:
		return nil
	}
	return out
}

func (s dotSet) size() int { return 1 }

func (s dotSet) has(d Dot) bool {
	_, ok := slices.BinarySearchFunc(s, d, Dot.Compare)
	return ok
}

// dotFun maps dots to immutable values (a dot names one write), as a
// slice sorted by dot: registers hold one value or a few. Value bytes are
// never modified after a write, so copies share them.
type dotFun []funEntry

type funEntry struct {
	d Dot
	v []byte
}

func (f dotFun) empty() bool { return len(f) == 0 }

func (f dotFun) eachDot(fn func(Dot)) {
	for _, e := range f {
		fn(e.d)
	}
}

// clone shares f: dot funs are never modified once built.
func (f dotFun) clone() store { return f }

func (f dotFun) equal(o store) bool {
	of, ok := o.(dotFun)
	return ok && funsEqual(f, of)
}

func funsEqual(a, b dotFun) bool {
	return slices.EqualFunc(a, b, func(x, y funEntry) bool { return x.d == y.d && bytes.Equal(x.v, y.v) })
}

func (f dotFun) filter(keep func(Dot) bool) store {
	var out dotFun
	for i, e := range f {
		if keep(e.d) {
			if out != nil {
				out = append(out, e)
			}
		} else if out == nil {
			out = append(dotFun{}, f[:i]...)
		}
	}
	switch {
	case out == nil:
		return f // everything kept: share the immutable fun
	case len(out) == 0:
		return nil
	}
	return out
}

func (f dotFun) size() int { return len(f) }

func (f dotFun) find(d Dot) (int, bool) {
	return slices.BinarySearchFunc(f, d, func(e funEntry, d Dot) int { return e.d.Compare(d) })
}

// dotMap maps keys to non-empty stores.
type dotMap map[string]store

func (m dotMap) empty() bool { return len(m) == 0 }

func (m dotMap) eachDot(fn func(Dot)) {
	for _, s := range m {
		s.eachDot(fn)
	}
}

func (m dotMap) clone() store { return m.cloneMap() }

func (m dotMap) cloneMap() dotMap {
	out := make(dotMap, len(m))
	for k, s := range m {
		out[k] = s.clone()
	}
	return out
}

func (m dotMap) equal(o store) bool {
	om, ok := o.(dotMap)
	return ok && maps.EqualFunc(m, om, store.equal)
}

func (m dotMap) filter(keep func(Dot) bool) store {
	out := dotMap{}
	for k, s := range m {
		if f := s.filter(keep); f != nil {
			out[k] = f
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func (m dotMap) size() int { return len(m) }

// dotCount returns how many dots s holds (0 for nil).
func dotCount(s store) int {
	if s == nil {
		return 0
	}
	n := 0
	s.eachDot(func(Dot) { n++ })
	return n
}

func dotsOf(s store) []Dot {
	var out []Dot
	if s != nil {
		s.eachDot(func(d Dot) { out = append(out, d) })
	}
	return out
}

// joinStores is the causal join of store a with context ca and store b with
// context cb (Almeida et al., section 6.1): a dot survives if both stores
// hold it, or one holds it and the other's context has not seen it. It
// returns the joined store (nil if empty; a is reused where possible and b
// is never aliased) and whether it differs from a. The contexts are not
// changed; the caller joins them afterwards.
func joinStores(a store, ca *Context, b store, cb *Context) (store, bool) {
	if b == nil {
		if a == nil {
			return nil, false
		}
		n := dotCount(a)
		out := a.filter(func(d Dot) bool { return !cb.Contains(d) })
		return out, dotCount(out) != n
	}
	if a == nil {
		out := b.filter(func(d Dot) bool { return !ca.Contains(d) })
		return out, out != nil
	}
	switch as := a.(type) {
	case dotSet:
		bs := b.(dotSet)
		if setsEqual(as, bs) {
			return as, false
		}
		var out dotSet
		for _, d := range as {
			if bs.has(d) || !cb.Contains(d) {
				out = append(out, d)
			}
		}
		added := false
		for _, d := range bs {
			if !as.has(d) && !ca.Contains(d) {
				out = append(out, d)
				added = true
			}
		}
		if added {
			slices.SortFunc(out, Dot.Compare)
		}
		if len(out) == 0 {
			return nil, true
		}
		if !added && len(out) == len(as) {
			return as, false
		}
		return out, true
	case dotFun:
		bf := b.(dotFun)
		if funsEqual(as, bf) {
			return as, false
		}
		var out dotFun
		for _, e := range as {
			if _, ok := bf.find(e.d); ok || !cb.Contains(e.d) {
				out = append(out, e)
			}
		}
		added := false
		for _, e := range bf {
			if _, ok := as.find(e.d); !ok && !ca.Contains(e.d) {
				out = append(out, e)
				added = true
			}
		}
		if added {
			slices.SortFunc(out, func(x, y funEntry) int { return x.d.Compare(y.d) })
		}
		if len(out) == 0 {
			return nil, true
		}
		if !added && len(out) == len(as) {
			return as, false
		}
		return out, true
	case dotMap:
		bm := b.(dotMap)
		changed := false
		for k, bv := range bm {
			nv, ch := joinStores(as[k], ca, bv, cb)
			if ch {
				changed = true
				setOrDelete(as, k, nv)
			}
		}
		for k, av := range as {
			if _, ok := bm[k]; ok {
				continue
			}
			nv, ch := joinStores(av, ca, nil, cb)
			if ch {
				changed = true
				setOrDelete(as, k, nv)
			}
		}
		if len(as) == 0 {
			return nil, true
		}
		return as, changed
	}
	panic("crdt: unknown dot store") // unreachable: stores are built only by this package
}

func setOrDelete(m dotMap, k string, s store) {
	if s == nil {
		delete(m, k)
	} else {
		m[k] = s
	}
}
