package crdt

import (
	"maps"
	"slices"
)

// causal is a dot store paired with its causal context. ORSet and ORMap use
// it with a dotMap store and an index; MVRegister and EWFlag with a dotFun
// and a dotSet.
//
// A value nested in an ORMap is a view: its ctx is the map's shared context
// and it has no index (the top-level map keeps one for all nested dots).
type causal struct {
	s   store    // nil when empty
	ctx *Context // never nil
	// idx maps every dot held anywhere in s (which must be a dotMap) to the
	// top-level key holding it. It lets a small delta find the entries it
	// removes without scanning the whole map. nil for views and for
	// non-map stores.
	// Local mutators build it (index) and joins keep it current; clones
	// drop it, so copies made to be read, sent or joined once never pay
	// for it. Without it, joins and extraction scan the whole map.
	idx     map[Dot]string
	indexed bool // top-level ORSet or ORMap: keep idx
	// order caches the sorted keys of a dotMap store for encoding; nil
	// when unknown. Whatever adds or removes a top-level key drops it
	// (replaceEntry, Clear). Never modified once built, so clones share
	// it.
	order []string
	// pruned marks the replicas pruned from a top-level value (see
	// Prune); nil for views and when there are none. renamed holds the
	// renamings of the marked replicas that had live dots.
	pruned  markers
	renamed renames
}

func newCausal(indexed bool) causal {
	return causal{ctx: NewContext(), indexed: indexed}
}

func (c *causal) isBottom() bool {
	return (c.s == nil || c.s.empty()) && c.ctx.IsEmpty() && len(c.pruned) == 0
}

func (c *causal) clone() causal {
	out := causal{ctx: c.ctx.Clone(), indexed: c.indexed, order: c.order, pruned: c.pruned.clone(), renamed: c.renamed.clone()}
	if c.s != nil {
		out.s = c.s.clone()
	}
	return out
}

func (c *causal) equal(o *causal) bool {
	if (c.s == nil || c.s.empty()) != (o.s == nil || o.s.empty()) {
		return false
	}
	if c.s != nil && !c.s.empty() && !c.s.equal(o.s) {
		return false
	}
	return c.ctx.Equal(o.ctx) && maps.Equal(c.pruned, o.pruned) && c.renamed.equal(o.renamed)
}

// index returns the dot index, building it if c keeps one; nil otherwise.
func (c *causal) index() map[Dot]string {
	if !c.indexed {
		return nil
	}
	if c.idx == nil {
		c.idx = map[Dot]string{}
		if m, ok := c.s.(dotMap); ok {
			for k, s := range m {
				s.eachDot(func(d Dot) { c.idx[d] = k })
			}
		}
	}
	return c.idx
}

// entries returns the store as a dotMap (creating it if empty).
func (c *causal) entries() dotMap {
	if c.s == nil {
		c.s = dotMap{}
	}
	return c.s.(dotMap)
}

// setEntry replaces the entry at key k, keeping the index up to date.
func (c *causal) setEntry(k string, s store) {
	var old []Dot
	if c.idx != nil {
		if m, ok := c.s.(dotMap); ok {
			old = dotsOf(m[k])
		}
	}
	c.replaceEntry(k, old, s)
}

// replaceEntry sets the entry at key k to s, given the dots the entry held
// before (which the caller captured: stores are updated in place, so the
// old entry may already be gone).
func (c *causal) replaceEntry(k string, oldDots []Dot, s store) {
	_, had := c.entries()[k]
	c.replaceEntryAt(k, had, oldDots, s)
}

// replaceEntryAt is replaceEntry for a caller that knows whether key k
// had an entry (joins look every key up once).
func (c *causal) replaceEntryAt(k string, had bool, oldDots []Dot, s store) {
	m := c.entries()
	if had != (s != nil) {
		c.order = nil
	}
	if c.idx != nil {
		// A register's new value usually keeps some of its old dots (a
		// value written concurrently): those stay in the index as they
		// are. Only small entries are compared dot by dot.
		small := isSlice(s) && len(oldDots) <= 16
		for _, d := range oldDots {
			if !small || !holdsDot(s, d) {
				delete(c.idx, d)
			}
		}
		index := func(d Dot) {
			if !small || !slices.Contains(oldDots, d) {
				c.idx[d] = k
			}
		}
		switch x := s.(type) { // slices without a closure passed on: it would escape
		case nil:
		case dotSet:
			for _, d := range x {
				index(d)
			}
		case dotFun:
			for _, e := range x {
				index(e.d)
			}
		default:
			for _, d := range dotsOf(s) {
				index(d)
			}
		}
	}
	setOrDelete(m, k, s)
	if len(m) == 0 {
		c.s = nil
	}
}

// indexedDots returns the dots of s if c keeps an index (for replaceEntry).
func (c *causal) indexedDots(s store) []Dot { return c.appendIndexedDots(nil, s) }

// appendIndexedDots is indexedDots appending to buf.
func (c *causal) appendIndexedDots(buf []Dot, s store) []Dot {
	if c.idx == nil {
		return nil
	}
	return appendDots(buf, s)
}

// joinCausal joins o into c in place and reports whether c inflated.
func (c *causal) joinCausal(o *causal) bool {
	changed := false
	if len(c.pruned)+len(o.pruned) > 0 {
		// Both sides translate what they hold of a replica either has
		// pruned, as the pruning did.
		if changed = c.unionMarks(o); changed {
			c.translate(c.pruned, c.renamed)
		}
		o = o.translated(c.pruned, c.renamed)
	}
	if _, ok := c.s.(dotMap); ok || (c.s == nil && isMap(o.s)) {
		if c.joinEntries(o) {
			changed = true
		}
		if m, _ := c.s.(dotMap); len(m) == 0 {
			c.s = nil
		}
	} else {
		ns, ch := joinStores(c.s, c.ctx, o.s, o.ctx)
		c.s = ns
		changed = changed || ch
	}
	if c.ctx.Union(o.ctx) {
		changed = true
	}
	return changed
}

func isMap(s store) bool { _, ok := s.(dotMap); return ok }

// joinEntries is joinCausal's join of the entries of two dotMap stores
// (c's may be nil). It reports whether c's changed.
//
// Every key of either side is joined, except keys of c only whose entries
// hold no dot of o's context (o removes nothing of them). A small o is
// walked, and the keys of c only that it can remove are found with the
// index (removedKeys); an o about as large as c (a state, or a delta-group
// of many keys) is joined in one walk of c, which finds them on the way,
// and then a walk of o if it has keys c has not.
func (c *causal) joinEntries(o *causal) bool {
	om, _ := o.s.(dotMap)
	m, _ := c.s.(dotMap)
	changed := false
	var buf []Dot // the old dots of one entry, reused from key to key
	join := func(k string, cur, ov store) {
		var old []Dot
		if isMap(cur) {
			old = c.appendIndexedDots(buf[:0], cur) // nested maps are joined in place
		}
		nv, ch := joinStores(cur, c.ctx, ov, o.ctx)
		if ch {
			changed = true
			if !isMap(cur) {
				old = c.appendIndexedDots(buf[:0], cur) // dot sets and funs are immutable
			}
			c.replaceEntryAt(k, cur != nil, old, nv)
			buf = old
		}
	}
	// replaceEntry drops c.s when the map empties and entries() makes a
	// new one, so the map is looked up afresh after a change.
	if len(m) > 0 && 2*len(om) >= len(m) {
		inO := 0
		for k, cur := range m { // entries are replaced or deleted, not added
			if ov, ok := om[k]; ok {
				inO++
				join(k, cur, ov)
			} else if holdsAny(cur, o.ctx) {
				join(k, cur, nil)
			}
		}
		if inO < len(om) {
			for k, ov := range om {
				if _, ok := c.entries()[k]; !ok {
					// New to c (or deleted by the walk above: joining it
					// again changes nothing).
					join(k, nil, ov)
				}
			}
		}
		return changed
	}
	before, present := len(m), 0
	for k, ov := range om {
		cur := c.entries()[k]
		if cur != nil {
			present++
		}
		join(k, cur, ov)
	}
	if present < before { // some of c's keys are not in o: o may remove them
		for _, k := range c.removedKeys(o, om) {
			join(k, c.entries()[k], nil)
		}
	}
	return changed
}

// sortedKeys returns the keys of a dotMap store in order, cached.
func (c *causal) sortedKeys() []string {
	if c.order == nil {
		m, _ := c.s.(dotMap)
		c.order = slices.Sorted(maps.Keys(m))
	}
	return c.order
}

// removedKeys returns the keys of c, not in om, that hold a dot o's
// context covers: the only entries that o can remove. With an index and a
// small overlap it looks the overlapping dots up; otherwise it scans.
func (c *causal) removedKeys(o *causal, om dotMap) []string {
	m, _ := c.s.(dotMap)
	if len(m) == 0 {
		return nil
	}
	var keys []string
	overlap := o.ctx.Intersect(c.ctx)
	if overlap.IsEmpty() {
		return nil // o has seen none of c's dots: it removes nothing
	}
	if idx := c.idx; idx != nil {
		if overlap.Count() <= uint64(len(idx)) {
			seen := map[string]bool{}
			overlap.ForEach(func(d Dot) bool {
				if k, ok := idx[d]; ok && !seen[k] {
					if _, inO := om[k]; !inO {
						seen[k] = true
						keys = append(keys, k)
					}
				}
				return true
			})
			return keys
		}
	}
	for k, s := range m {
		if _, inO := om[k]; !inO && holdsAny(s, o.ctx) {
			keys = append(keys, k)
		}
	}
	return keys
}

// holdsAny reports whether store s holds a dot of ctx.
func holdsAny(s store, ctx *Context) bool {
	switch x := s.(type) {
	case dotFun:
		for _, e := range x {
			if ctx.Contains(e.d) {
				return true
			}
		}
		return false
	case dotSet:
		for _, d := range x {
			if ctx.Contains(d) {
				return true
			}
		}
		return false
	}
	found := false
	s.eachDot(func(d Dot) { found = found || ctx.Contains(d) })
	return found
}

// extractCausal returns the part of o that is new to c: o's stored dots
// that c's context has not seen, and the context dots of o that are either
// new to c or remove a dot c still holds.
func (c *causal) extractCausal(o *causal, indexed bool) causal {
	newMarks, newRenames := c.newerMarks(o)
	o = o.translated(c.pruned, c.renamed) // o holds nothing of what it marked itself
	fresh := o.ctx.Minus(c.ctx)
	out := causal{ctx: fresh, pruned: newMarks, renamed: newRenames}
	if o.s != nil && !fresh.IsEmpty() { // o's dots are in o.ctx: none is fresh if fresh is empty
		out.s = o.s.filter(seenBy{fresh})
	}
	// Dots that o has seen, c still holds, and o does not hold: o removed
	// them. With c's index, a dot's key is known, and o can hold the dot
	// at that key only (a dot names one write, to one key).
	om, _ := o.s.(dotMap)
	removedAt := func(d Dot, k string) {
		if !holdsDot(om[k], d) {
			out.ctx.Add(d)
		}
	}
	if idx := c.idx; idx != nil {
		overlap := o.ctx.Intersect(c.ctx)
		if overlap.Count() <= uint64(len(idx)) {
			overlap.ForEach(func(d Dot) bool {
				if k, live := idx[d]; live {
					removedAt(d, k)
				}
				return true
			})
		} else {
			for d, k := range idx {
				if o.ctx.Contains(d) {
					removedAt(d, k)
				}
			}
		}
	} else if c.s != nil {
		var oDots map[Dot]struct{}
		if o.s != nil {
			oDots = make(map[Dot]struct{}, o.s.size()) // about one dot per entry: no rehashing as it fills
			o.s.eachDot(func(d Dot) { oDots[d] = struct{}{} })
		}
		c.s.eachDot(func(d Dot) {
			if _, held := oDots[d]; !held && o.ctx.Contains(d) {
				out.ctx.Add(d)
			}
		})
	}
	out.indexed = indexed
	return out
}
