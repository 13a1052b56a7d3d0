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

// dotMap maps keys to non-empty stores.
type dotMap map[string]store

func (m dotMap) empty() bool { return len(m) == 0 }

func (m dotMap) eachDot(fn func(Dot)) {
	for _, s := range m {
		s.eachDot(fn)
	}
}

func (m dotMap) clone() store { return m.cloneMap() }

// cloneMap copies m. Dot sets and funs are immutable and shared, so only
// nested maps need copying: the map is copied whole (much faster than
// inserting key by key), then nested maps are replaced by their copies.
func (m dotMap) cloneMap() dotMap {
	out := maps.Clone(m)
	for k, s := range out {
		if sm, ok := s.(dotMap); ok {
			out[k] = sm.cloneMap()
		}
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
	// Dot sets and funs are immutable and shared. Where a or b is the
	// result, it is returned as it is: converting the slice to a store
	// again would allocate, once per key of every join.
	if b == nil {
		if a == nil {
			return nil, false
		}
		notInB := func(d Dot) bool { return !cb.Contains(d) }
		if isSlice(a) {
			if allDots(a, notInB) {
				return a, false
			}
			return a.filter(notInB), true
		}
		out := a.filter(notInB)
		return out, dotCount(out) != dotCount(a)
	}
	if a == nil {
		notInA := func(d Dot) bool { return !ca.Contains(d) }
		if isSlice(b) && allDots(b, notInA) {
			return b, true
		}
		out := b.filter(notInA)
		return out, out != nil
	}
	switch as := a.(type) {
	case dotSet:
		bs := b.(dotSet)
		out, changed := joinSorted(as, ca, bs, cb, func(d Dot) Dot { return d })
		switch {
		case !changed:
			return a, false // joinSorted returned as
		case len(out) == 0:
			return nil, true
		case sameArray(out, bs):
			return b, true
		}
		return out, true
	case dotFun:
		bf := b.(dotFun)
		out, changed := joinSorted(as, ca, bf, cb, func(e funEntry) Dot { return e.d })
		switch {
		case !changed:
			return a, false // joinSorted returned as
		case len(out) == 0:
			return nil, true
		case sameArray(out, bf):
			return b, true
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

func isSlice(s store) bool {
	switch s.(type) {
	case dotSet, dotFun:
		return true
	}
	return false
}

// allDots reports whether keep holds for every dot of a dot set or fun.
func allDots(s store, keep func(Dot) bool) bool {
	switch x := s.(type) {
	case dotSet:
		for _, d := range x {
			if !keep(d) {
				return false
			}
		}
	case dotFun:
		for _, e := range x {
			if !keep(e.d) {
				return false
			}
		}
	}
	return true
}

// sameArray reports whether x and y are one slice.
func sameArray[E any](x, y []E) bool {
	return len(x) == len(y) && (len(x) == 0 || &x[0] == &y[0])
}

// joinSorted is joinStores for two dot-sorted stores of distinct dots (a
// dotSet or a dotFun), as one merge of a and b: an item of both is kept
// (a's: a dot names one write, so the values agree), an item of one only
// is kept if the other's context has not seen its dot. It returns a itself
// and false when nothing changes (the common case, tested first without
// allocating), nil and true when nothing is left.
func joinSorted[S ~[]E, E any](a S, ca *Context, b S, cb *Context, dot func(E) Dot) (S, bool) {
	if sameArray(a, b) {
		return a, false // one shared store: the common case of values that travelled by reference
	}
	if slices.EqualFunc(a, b, func(x, y E) bool { return dot(x) == dot(y) }) {
		return a, false
	}
	out := make(S, 0, len(a)+len(b))
	added, keptA := false, 0
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		c := -1
		switch {
		case i == len(a):
			c = 1
		case j < len(b):
			c = dot(a[i]).Compare(dot(b[j]))
		}
		switch {
		case c == 0:
			out = append(out, a[i])
			keptA++
			i++
			j++
		case c < 0:
			if !cb.Contains(dot(a[i])) {
				out = append(out, a[i])
				keptA++
			}
			i++
		default:
			if !ca.Contains(dot(b[j])) {
				out = append(out, b[j])
				added = true
			}
			j++
		}
	}
	switch {
	case len(out) == 0:
		return nil, true
	case !added && len(out) == len(a):
		return a, false
	case keptA == 0 && len(out) == len(b):
		// out is b: b replaced a (a newer write). Share b, so that later
		// joins of the same store find it equal by identity.
		return b, true
	}
	return out, true
}

func setOrDelete(m dotMap, k string, s store) {
	if s == nil {
		delete(m, k)
	} else {
		m[k] = s
	}
}
