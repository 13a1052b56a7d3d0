package crdt

import (
	"math"
	"math/bits"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/statemesh/statemesh/protocol/crdtpb"
)

// Sequence numbers are modelled as 17 cells: 1..8, the gap 9..2^64-9 and
// 2^64-8..2^64-1, so that runs reach the top of the range (where lo-1 and
// hi+1 overflow) and span it.
const nCells = 17

func cell(i int) span {
	switch {
	case i < 8:
		return span{uint64(i) + 1, uint64(i) + 1}
	case i == 8:
		return span{9, math.MaxUint64 - 8}
	}
	v := math.MaxUint64 - uint64(16-i)
	return span{v, v}
}

// canon returns the canonical runs of a set of cells.
func canon(mask uint32) runs {
	var out runs
	for i := range nCells {
		if mask&(1<<i) == 0 {
			continue
		}
		c := cell(i)
		if n := len(out); n > 0 && mask&(1<<(i-1)) != 0 {
			out[n-1].hi = c.hi
			continue
		}
		out = append(out, c)
	}
	return out
}

func cellsCount(mask uint32) uint64 {
	var n uint64
	for i := range nCells {
		if mask&(1<<i) != 0 {
			c := cell(i)
			n += c.hi - c.lo + 1
		}
	}
	return n
}

func probes() []uint64 {
	var ps []uint64
	for i := range nCells {
		c := cell(i)
		ps = append(ps, c.lo, c.hi)
	}
	return append(ps, 0, 1<<63)
}

func TestRunsAlgebra(t *testing.T) {
	gen := rapid.Uint32Range(0, 1<<nCells-1)
	rapid.Check(t, func(t *rapid.T) {
		am, bm := gen.Draw(t, "a"), gen.Draw(t, "b")
		a, b := canon(am), canon(bm)
		for _, c := range []struct {
			name string
			got  runs
			want uint32
		}{
			{"union", unionRuns(a, b), am | bm},
			{"minus", minusRuns(a, b), am &^ bm},
			{"intersect", intersectRuns(a, b), am & bm},
		} {
			if want := canon(c.want); !slices.Equal(c.got, want) && !(len(c.got) == 0 && len(want) == 0) {
				t.Fatalf("%s(%v, %v) = %v, want %v", c.name, a, b, c.got, want)
			}
		}
		for _, p := range probes() {
			in := false
			for i := range nCells {
				if c := cell(i); am&(1<<i) != 0 && p >= c.lo && p <= c.hi {
					in = true
				}
			}
			if a.contains(p) != in {
				t.Fatalf("%v contains %d = %v", a, p, !in)
			}
		}
		if a.count() != cellsCount(am) {
			t.Fatalf("count %v = %d, want %d", a, a.count(), cellsCount(am))
		}

		// the same through Context, with a second replica alongside
		r1, r2 := ReplicaID{"a", 1}, ReplicaID{"b", 1}
		mk := func(m uint32) *Context {
			c := NewContext()
			if rs := canon(m); len(rs) > 0 {
				c.m[intern(r1)] = rs
				c.m[intern(r2)] = runs{{1, 3}}
			}
			return c
		}
		ca, cb := mk(am), mk(bm)
		u := ca.Clone()
		grew := u.Union(cb)
		want := mk(am | bm)
		if !u.Equal(want) {
			t.Fatalf("Union: %v, want %v", ctxString(u), ctxString(want))
		}
		if grew != !ca.Equal(want) {
			t.Fatalf("Union of %v into %v reported grew=%v", ctxString(cb), ctxString(ca), grew)
		}
		checkContext(t, u)
		if m := ca.Minus(cb); !slices.Equal(m.m[intern(r1)], canon(am&^bm)) {
			t.Fatalf("Minus: %v", ctxString(m))
		}
		checkContext(t, ca.Minus(cb))
		checkContext(t, ca.Intersect(cb))
		if i := ca.Intersect(cb); !slices.Equal(i.m[intern(r1)], canon(am&bm)) {
			t.Fatalf("Intersect: %v", ctxString(i))
		}
		// Count saturates rather than wrapping
		n1, carry := bits.Add64(cellsCount(am), 3, 0)
		if am == 0 {
			n1, carry = 0, 0
		}
		if carry != 0 {
			n1 = math.MaxUint64
		}
		if ca.Count() != n1 {
			t.Fatalf("Count of %v = %d, want %d", ctxString(ca), ca.Count(), n1)
		}
		if ca.IsEmpty() != (am == 0) {
			t.Fatalf("IsEmpty")
		}
		wantMax := uint64(0)
		if rs := canon(am); len(rs) > 0 {
			wantMax = rs[len(rs)-1].hi
		}
		if ca.Max(r1) != wantMax {
			t.Fatalf("Max %d, want %d", ca.Max(r1), wantMax)
		}
	})
}

func TestContextBasics(t *testing.T) {
	c := NewContext()
	if !c.IsEmpty() || c.Count() != 0 || c.Runs() != 0 || len(c.VV()) != 0 {
		t.Fatalf("new context not empty")
	}
	for _, s := range []uint64{1, 2, 3, 7, 5, 6, 10} {
		if !c.Add(makeDot(ra, s)) {
			t.Fatalf("Add(%d) reported not new", s)
		}
	}
	if c.Add(makeDot(ra, 2)) {
		t.Fatalf("re-Add reported new")
	}
	c.Add(makeDot(rb, 4))
	if want := (runs{{1, 3}, {5, 7}, {10, 10}}); !slices.Equal(c.m[intern(ra)], want) {
		t.Fatalf("runs %v, want %v", c.m[intern(ra)], want)
	}
	if vv := c.VV(); len(vv) != 1 || vv[ra] != 3 {
		t.Fatalf("VV %v", vv)
	}
	if c.Count() != 8 || c.Runs() != 4 || c.Max(ra) != 10 || c.Max(rc) != 0 {
		t.Fatalf("Count %d Runs %d Max %d", c.Count(), c.Runs(), c.Max(ra))
	}
	if c.next(ra) != (makeDot(ra, 11)) || c.next(rc) != (makeDot(rc, 1)) {
		t.Fatalf("next")
	}
	var got []Dot
	c.ForEach(func(d Dot) bool { got = append(got, d); return true })
	if len(got) != 8 || got[0] != (makeDot(ra, 1)) || got[7] != (makeDot(rb, 4)) || !slices.IsSortedFunc(got, Dot.Compare) {
		t.Fatalf("ForEach %v", got)
	}
	n := 0
	c.ForEach(func(Dot) bool { n++; return n < 3 })
	if n != 3 {
		t.Fatalf("ForEach did not stop: %d", n)
	}
	cl := c.Clone()
	cl.Add(makeDot(rc, 1))
	if c.Contains(makeDot(rc, 1)) || c.Equal(cl) {
		t.Fatalf("Clone shares state")
	}
	// ForEach at the top of the range terminates
	top := NewContext()
	top.m[intern(ra)] = runs{{math.MaxUint64 - 2, math.MaxUint64}}
	n = 0
	top.ForEach(func(Dot) bool { n++; return n < 10 })
	if n != 3 {
		t.Fatalf("ForEach at the top of the range visited %d dots", n)
	}
}

// A context that covers (nearly) all of two replicas' sequence numbers
// holds more than 2^64 dots. Joins and extracts against such states must
// not take the per-dot path: they would never finish.
func TestHugeContextsStayCheap(t *testing.T) {
	st := &crdtpb.State{
		Replicas: []*crdtpb.Replica{{Node: "a", Incarnation: 1}, {Node: "b", Incarnation: 1}},
		Value: &crdtpb.State_Orset{Orset: &crdtpb.ORSet{
			Context: &crdtpb.Context{Replicas: []*crdtpb.ReplicaRuns{
				{Replica: 0, Runs: []uint64{1, math.MaxUint64}},
				{Replica: 1, Runs: []uint64{1, 1}},
			}},
			Entries: []*crdtpb.ORSetEntry{{Element: []byte("e"), Dots: &crdtpb.Dots{Replica: []uint32{0}, Seq: []uint64{5}}}},
		}},
	}
	v, err := FromProto(st, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if n := causalOf(v).ctx.Count(); n != math.MaxUint64 {
		t.Fatalf("Count = %d, want it saturated at 2^64-1", n)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		x := v.Clone()
		e, _ := Extract(x, v)
		if !e.IsBottom() {
			t.Errorf("Extract(x, x) not bottom")
		}
		rm := x.(*ORSet).Remove([]byte("e"))
		y := v.Clone()
		if ch, _ := Join(y, rm); !ch || y.(*ORSet).Len() != 0 {
			t.Errorf("remove not applied")
		}
		if ch, _ := Join(x, v); ch {
			t.Errorf("re-join of an older state inflated")
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("join/extract against a context of 2^64 dots did not finish")
	}
}

// makeDot returns the dot (r, seq).
func makeDot(r ReplicaID, seq uint64) Dot { return Dot{intern(r), seq} }
