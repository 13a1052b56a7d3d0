package crdt

import (
	"maps"
	"math"
	"math/bits"
	"slices"
)

// span is a run of consecutive sequence numbers lo..hi, inclusive.
type span struct{ lo, hi uint64 }

// runs is a sorted list of spans that neither overlap nor touch.
type runs []span

func (rs runs) contains(seq uint64) bool {
	switch len(rs) {
	case 0:
		return false
	case 1:
		// One run (a version-vector entry, with no cloud): the common
		// case, decided without a search.
		return rs[0].lo <= seq && seq <= rs[0].hi
	}
	i, ok := slices.BinarySearchFunc(rs, seq, func(s span, q uint64) int {
		switch {
		case s.hi < q:
			return -1
		case s.lo > q:
			return 1
		}
		return 0
	})
	return ok && i < len(rs)
}

func (rs runs) count() uint64 {
	var n uint64
	for _, s := range rs {
		n += s.hi - s.lo + 1
	}
	return n
}

// unionRuns merges two run lists.
func unionRuns(a, b runs) runs {
	out := make(runs, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		var s span
		if j >= len(b) || (i < len(a) && a[i].lo <= b[j].lo) {
			s = a[i]
			i++
		} else {
			s = b[j]
			j++
		}
		if n := len(out); n > 0 && (out[n-1].hi == math.MaxUint64 || s.lo <= out[n-1].hi+1) {
			out[n-1].hi = max(out[n-1].hi, s.hi)
			continue
		}
		out = append(out, s)
	}
	return out
}

// minusRuns returns the sequence numbers in a that are not in b.
func minusRuns(a, b runs) runs {
	var out runs
	j := 0
	for _, s := range a {
		lo := s.lo
		for j < len(b) && b[j].hi < lo {
			j++
		}
		k := j
		covered := false // s.hi is covered; s.hi+1 may overflow
		for k < len(b) && b[k].lo <= s.hi {
			if b[k].lo > lo {
				out = append(out, span{lo, b[k].lo - 1})
			}
			if b[k].hi >= s.hi {
				covered = true
				break
			}
			lo = b[k].hi + 1
			k++
		}
		if !covered && lo <= s.hi {
			out = append(out, span{lo, s.hi})
		}
	}
	return out
}

// intersectRuns returns the sequence numbers in both a and b.
func intersectRuns(a, b runs) runs {
	var out runs
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		lo, hi := max(a[i].lo, b[j].lo), min(a[i].hi, b[j].hi)
		if lo <= hi {
			out = append(out, span{lo, hi})
		}
		if a[i].hi < b[j].hi {
			i++
		} else {
			j++
		}
	}
	return out
}

// Context is a causal context: the set of dots a replica has seen. Per
// replica it is kept as runs of consecutive sequence numbers; the run that
// starts at 1 is the classic version-vector entry and the other runs are
// the dot cloud, so a context is exact without growing with every event.
//
// The zero value is not usable; use NewContext. A context owns its runs:
// no two contexts share a runs slice, so Add may extend one in place.
type Context struct {
	m map[replica]runs
}

// NewContext returns an empty context.
func NewContext() *Context { return &Context{m: map[replica]runs{}} }

// Contains reports whether d is in the context.
func (c *Context) Contains(d Dot) bool { return c.m[d.Replica].contains(d.Seq) }

// Max returns the highest sequence number of r in the context, or 0.
func (c *Context) Max(r ReplicaID) uint64 { return c.max(intern(r)) }

func (c *Context) max(r replica) uint64 {
	rs := c.m[r]
	if len(rs) == 0 {
		return 0
	}
	return rs[len(rs)-1].hi
}

// VV returns the version-vector part of the context: for each replica the
// largest n such that dots 1..n are all present.
func (c *Context) VV() map[ReplicaID]uint64 {
	vv := map[ReplicaID]uint64{}
	for r, rs := range c.m {
		if len(rs) > 0 && rs[0].lo == 1 {
			vv[r.ID()] = rs[0].hi
		}
	}
	return vv
}

// next returns a fresh dot for r: one past everything r has seen.
func (c *Context) next(r ReplicaID) Dot {
	ir := intern(r)
	return Dot{ir, c.max(ir) + 1}
}

// Add inserts d and reports whether it was new.
func (c *Context) Add(d Dot) bool {
	rs := c.m[d.Replica]
	if n := len(rs); n > 0 && d.Seq > rs[n-1].hi {
		// Past the last run, the common case (a fresh dot, or dots added
		// in order): extend or append in place, as c owns its runs.
		if d.Seq == rs[n-1].hi+1 {
			rs[n-1].hi = d.Seq
		} else {
			c.m[d.Replica] = append(rs, span{d.Seq, d.Seq})
		}
		return true
	}
	if rs.contains(d.Seq) {
		return false
	}
	c.m[d.Replica] = unionRuns(rs, runs{{d.Seq, d.Seq}})
	return true
}

// Union adds every dot of o to c and reports whether c grew.
func (c *Context) Union(o *Context) bool {
	grew := false
	for r, ors := range o.m {
		rs := c.m[r]
		if len(minusRuns(ors, rs)) == 0 {
			continue
		}
		c.m[r] = unionRuns(rs, ors)
		grew = true
	}
	return grew
}

// Minus returns the dots of c that are not in o.
func (c *Context) Minus(o *Context) *Context { return c.perReplica(o, minusRuns) }

// Intersect returns the dots in both c and o.
func (c *Context) Intersect(o *Context) *Context { return c.perReplica(o, intersectRuns) }

// perReplica combines, for every replica of c, its runs with o's.
func (c *Context) perReplica(o *Context, combine func(a, b runs) runs) *Context {
	out := NewContext()
	for r, rs := range c.m {
		if d := combine(rs, o.m[r]); len(d) > 0 {
			out.m[r] = d
		}
	}
	return out
}

// Count returns the number of dots in the context, or 2^64-1 if there
// are more.
func (c *Context) Count() uint64 {
	var n uint64
	for _, rs := range c.m {
		var carry uint64
		if n, carry = bits.Add64(n, rs.count(), 0); carry != 0 {
			return math.MaxUint64
		}
	}
	return n
}

// Runs returns the number of runs the context is stored as.
func (c *Context) Runs() int {
	n := 0
	for _, rs := range c.m {
		n += len(rs)
	}
	return n
}

// IsEmpty reports whether the context holds no dot.
func (c *Context) IsEmpty() bool { return len(c.m) == 0 }

// ForEach calls fn for every dot until fn returns false. The number of dots
// can be large; callers check Count first.
func (c *Context) ForEach(fn func(Dot) bool) {
	for _, r := range c.replicas() {
		for _, s := range c.m[r] {
			for q := s.lo; ; q++ {
				if !fn(Dot{r, q}) {
					return
				}
				if q == s.hi {
					break
				}
			}
		}
	}
}

// replicas returns the context's replicas in order.
func (c *Context) replicas() []replica {
	rs := slices.Collect(maps.Keys(c.m))
	slices.SortFunc(rs, replica.compare)
	return rs
}

// Clone returns a deep copy.
func (c *Context) Clone() *Context {
	out := &Context{m: make(map[replica]runs, len(c.m))}
	for r, rs := range c.m {
		out.m[r] = slices.Clone(rs)
	}
	return out
}

// Equal reports whether c and o hold the same dots.
func (c *Context) Equal(o *Context) bool {
	return maps.EqualFunc(c.m, o.m, func(a, b runs) bool { return slices.Equal(a, b) })
}

// addDots returns a context holding exactly the given dots.
func contextOf(dots []Dot) *Context {
	c := NewContext()
	for _, d := range dots {
		c.Add(d)
	}
	return c
}
