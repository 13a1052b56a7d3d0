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
	// filter returns a new store with the dots keep keeps, or nil when
	// none is kept.
	filter(keep dotFilter) store
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

func (s dotSet) filter(keep dotFilter) store {
	var out dotSet
	for i, d := range s {
		if keep.keep(d) {
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

// dotFilter decides which dots a store's filter keeps. Joins filter
// stores by a context millions of times, so the common filters are
// pointer-shaped types (passing one to a store's method allocates
// nothing, where a closure would escape to the heap); keepIf wraps a
// function for the rest.
type dotFilter interface{ keep(d Dot) bool }

// unseenBy keeps the dots its context has not seen.
type unseenBy struct{ ctx *Context }

func (u unseenBy) keep(d Dot) bool { return !u.ctx.Contains(d) }

// seenBy keeps the dots its context has seen.
type seenBy struct{ ctx *Context }

func (s seenBy) keep(d Dot) bool { return s.ctx.Contains(d) }

// keepIf keeps the dots for which it returns true.
type keepIf func(Dot) bool

func (f keepIf) keep(d Dot) bool { return f(d) }

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

func (f dotFun) filter(keep dotFilter) store {
	var out dotFun
	for i, e := range f {
		if keep.keep(e.d) {
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

func (m dotMap) filter(keep dotFilter) store {
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

func dotsOf(s store) []Dot { return appendDots(nil, s) }

// appendDots appends the dots of s to buf.
func appendDots(buf []Dot, s store) []Dot {
	switch x := s.(type) {
	case nil:
	case dotSet:
		buf = append(buf, x...)
	case dotFun:
		for _, e := range x {
			buf = append(buf, e.d)
		}
	default:
		s.eachDot(func(d Dot) { buf = append(buf, d) })
	}
	return buf
}

// holdsDot reports whether store s (nil for none) holds d.
func holdsDot(s store, d Dot) bool {
	switch x := s.(type) {
	case nil:
		return false
	case dotSet:
		return slices.Contains(x, d)
	case dotFun:
		return slices.ContainsFunc(x, func(e funEntry) bool { return e.d == d })
	}
	found := false
	s.eachDot(func(e Dot) { found = found || e == d })
	return found
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
		notInB := unseenBy{cb}
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
		notInA := unseenBy{ca}
		if isSlice(b) && allDots(b, notInA) {
			return b, true
		}
		out := b.filter(notInA)
		return out, out != nil
	}
	switch as := a.(type) {
	case dotSet:
		return joinSlices(a, as, ca, b, b.(dotSet), cb, func(d Dot) Dot { return d })
	case dotFun:
		return joinSlices(a, as, ca, b, b.(dotFun), cb, func(e funEntry) Dot { return e.d })
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

// joinSlices is joinStores for a and b both dot sets or both dot funs (as
// and bs).
func joinSlices[S interface {
	~[]E
	store
}, E any](a store, as S, ca *Context, b store, bs S, cb *Context, dot func(E) Dot) (store, bool) {
	if len(as) == 1 && len(bs) == 1 {
		// One dot each (a register written once since it was last seen):
		// the common case, decided without a merge.
		if out, changed, ok := joinSingle(a, dot(as[0]), ca, b, dot(bs[0]), cb); ok {
			return out, changed
		}
	}
	out, changed := joinSorted(as, ca, bs, cb, dot)
	switch {
	case !changed:
		return a, false // joinSorted returned as
	case len(out) == 0:
		return nil, true
	case sameArray(out, bs):
		return b, true
	}
	return out, true
}

// joinSingle is joinSorted for a and b of one dot each (da and db). It
// decides every case but one where both dots survive (concurrent writes),
// and then reports !ok for the caller to merge.
func joinSingle(a store, da Dot, ca *Context, b store, db Dot, cb *Context) (out store, changed, ok bool) {
	if da == db {
		return a, false, true
	}
	keepA, keepB := !cb.Contains(da), !ca.Contains(db)
	switch {
	case keepA && keepB:
		return nil, false, false
	case keepA:
		return a, false, true
	case keepB:
		return b, true, true // b replaced a: share it, as joinSorted does
	}
	return nil, true, true
}

func isSlice(s store) bool {
	switch s.(type) {
	case dotSet, dotFun:
		return true
	}
	return false
}

// allDots reports whether keep keeps every dot of a dot set or fun.
func allDots(s store, keep dotFilter) bool {
	switch x := s.(type) {
	case dotSet:
		for _, d := range x {
			if !keep.keep(d) {
				return false
			}
		}
	case dotFun:
		for _, e := range x {
			if !keep.keep(e.d) {
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
	// Count first, without allocating: most joins keep a (equal stores
	// need no context look-up) or replace it by b.
	n, keptA, added := mergeSorted(a, ca, b, cb, dot, nil)
	switch {
	case n == 0:
		return nil, true
	case !added && n == len(a):
		return a, false
	case keptA == 0 && n == len(b):
		// b replaced a (a newer write). Share b, so that later joins of
		// the same store find it equal by identity.
		return b, true
	}
	out := make(S, 0, n)
	mergeSorted(a, ca, b, cb, dot, &out)
	return out, true
}

// mergeSorted walks the merge of joinSorted, appending the items kept to
// *out unless out is nil. It returns how many it keeps, how many of them
// come from a, and whether any comes from b only.
func mergeSorted[S ~[]E, E any](a S, ca *Context, b S, cb *Context, dot func(E) Dot, out *S) (n, keptA int, added bool) {
	keep := func(e E) {
		n++
		if out != nil {
			*out = append(*out, e)
		}
	}
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
			keep(a[i])
			keptA++
			i++
			j++
		case c < 0:
			if !cb.Contains(dot(a[i])) {
				keep(a[i])
				keptA++
			}
			i++
		default:
			if !ca.Contains(dot(b[j])) {
				keep(b[j])
				added = true
			}
			j++
		}
	}
	return n, keptA, added
}

func setOrDelete(m dotMap, k string, s store) {
	if s == nil {
		delete(m, k)
	} else {
		m[k] = s
	}
}
