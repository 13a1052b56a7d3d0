package crdt

// Property tests: rapid draws operation histories over 2-4 replicas for
// every type, checks each replica against its reference model after every
// step, checks the mutator/delta law and the inflation report of every
// join, and finally checks the lattice laws, Extract's laws and the wire
// round trip on states and deltas drawn from the history.

import (
	"bytes"
	"testing"

	"pgregory.net/rapid"
)

// pooled is a state or delta seen during a history, with its reference
// and its encoding when it was taken (to catch later aliasing).
type pooled struct {
	v    Value
	ref  refModel
	enc  []byte
	what string
}

type history struct {
	t      *rapid.T
	s      src
	sp     *spec
	ids    []ReplicaID
	states []Value
	refs   []refModel
	pool   []pooled
}

func (h *history) keep(v Value, rf refModel, what string) {
	h.pool = append(h.pool, pooled{v: v, ref: rf, enc: Encode(v), what: what})
}

func mustJoin(t tb, x, y Value) bool {
	t.Helper()
	ch, err := Join(x, y)
	if err != nil {
		t.Fatalf("Join(%s, %s): %v", x.Type(), y.Type(), err)
	}
	return ch
}

func joined(t tb, x, y Value) Value {
	t.Helper()
	z := x.Clone()
	mustJoin(t, z, y)
	return z
}

// checkedJoin joins y into x and checks that Join reports inflation
// exactly when x changed, that y is untouched and that x stays well formed.
func checkedJoin(t tb, x, y Value) bool {
	t.Helper()
	before, yBefore := x.Clone(), y.Clone()
	// Joins must not depend on map iteration order: join into a few
	// copies too and compare.
	var copies []Value
	for range 3 {
		c := x.Clone()
		mustJoin(t, c, yBefore)
		copies = append(copies, c)
	}
	ch := mustJoin(t, x, y)
	for _, c := range copies {
		if !c.Equal(x) {
			t.Fatalf("joining y into copies of x gives different states")
		}
	}
	if ch == before.Equal(x) {
		t.Fatalf("Join reported inflation=%v, but the state changed=%v", ch, !before.Equal(x))
	}
	if !yBefore.Equal(y) {
		t.Fatalf("Join modified its argument")
	}
	checkInvariants(t, x)
	if leq, _ := Leq(y, x); !leq {
		t.Fatalf("after x ⊔= y, y ⋢ x")
	}
	if leq, _ := Leq(before, x); !leq {
		t.Fatalf("after x ⊔= y, old x ⋢ x")
	}
	return ch
}

func (h *history) mutate(i int) {
	t := h.t
	before := h.states[i].Clone()
	d, dr, err := h.sp.mutate(t, h.s, h.ids[i], h.ids, h.states[i], h.refs[i])
	if err != nil {
		if !before.Equal(h.states[i]) {
			t.Fatalf("failed mutator (%v) changed the state", err)
		}
		return
	}
	if d == nil || d.Type() != h.sp.typ {
		t.Fatalf("mutator returned delta %v", d)
	}
	checkInvariants(t, d)
	// X ⊔ d = m(X)
	if x := joined(t, before, d); !x.Equal(h.states[i]) {
		t.Fatalf("X ⊔ d != m(X)")
	}
	if leq, _ := Leq(d, h.states[i]); !leq {
		t.Fatalf("delta not below the mutated state")
	}
	h.sp.check(t, d, dr)
	h.keep(d, dr, "delta")
	h.keep(h.states[i].Clone(), h.refs[i].clone(), "state")
}

func (h *history) join(i int, y Value, yr refModel) {
	checkedJoin(h.t, h.states[i], y)
	h.refs[i].join(yr)
}

// newHistory starts a history of 2-4 replicas at bottom.
func newHistory(t *rapid.T, sp *spec) (*history, rapidSrc, int) {
	s := rapidSrc{t}
	n := rapid.IntRange(2, 4).Draw(t, "replicas")
	h := &history{t: t, s: s, sp: sp, ids: genReplicas(s, n)}
	for range n {
		h.states = append(h.states, bottom(sp.typ))
		h.refs = append(h.refs, sp.newRef())
	}
	return h, s, n
}

func runHistory(t *rapid.T, sp *spec) {
	h, s, n := newHistory(t, sp)
	h.keep(bottom(sp.typ), sp.newRef(), "bottom")
	steps := rapid.IntRange(1, 40).Draw(t, "steps")
	for range steps {
		i := s.intn("replica", n)
		switch s.intn("action", 10) {
		case 0, 1, 2, 3, 4:
			h.mutate(i)
		case 5, 6: // full state of another replica, not a copy
			j := s.intn("from", n)
			h.join(i, h.states[j], h.refs[j].clone())
		case 7:
			p := pick(s, "pooled", h.pool)
			h.join(i, p.v, p.ref)
		case 8: // as a delta-sync node: join only the new part
			p := pick(s, "pooled", h.pool)
			e := checkExtract(t, h.states[i], p.v)
			er := sp.restrict(p.ref, e)
			sp.check(t, e, er)
			h.join(i, e, er)
		case 9:
			h.keep(h.states[i].Clone(), h.refs[i].clone(), "state")
		}
		checkInvariants(t, h.states[i])
		sp.check(t, h.states[i], h.refs[i])
	}
	for i := range h.states {
		h.keep(h.states[i].Clone(), h.refs[i].clone(), "state")
	}
	for range 6 {
		a, b, c := pick(s, "a", h.pool), pick(s, "b", h.pool), pick(s, "c", h.pool)
		checkLaws(t, sp, a, b, c)
	}
	// more pairs, for the join alone: its report and the reference
	for range 24 {
		a, b := pick(s, "a", h.pool), pick(s, "b", h.pool)
		x := a.v.Clone()
		checkedJoin(t, x, b.v)
		r := a.ref.clone()
		r.join(b.ref)
		sp.check(t, x, r)
	}
	for _, p := range h.pool {
		if !bytes.Equal(Encode(p.v), p.enc) {
			t.Fatalf("a %s changed after it was taken (aliasing)", p.what)
		}
	}
}

// checkLaws checks the lattice laws, Extract's laws and the wire form on
// three values of one history.
func checkLaws(t tb, sp *spec, a, b, c pooled) {
	t.Helper()
	for _, p := range []pooled{a, b, c} {
		checkRoundTrip(t, p.v)
	}
	// idempotent
	if aa := a.v.Clone(); mustJoin(t, aa, a.v) || !aa.Equal(a.v) {
		t.Fatalf("a ⊔ a != a")
	}
	// bottom is the identity
	if !joined(t, a.v, bottom(sp.typ)).Equal(a.v) || !joined(t, bottom(sp.typ), a.v).Equal(a.v) {
		t.Fatalf("a ⊔ ⊥ != a")
	}
	// commutative, and the two orders encode to the same bytes
	ab, ba := joined(t, a.v, b.v), joined(t, b.v, a.v)
	if !ab.Equal(ba) {
		t.Fatalf("a ⊔ b != b ⊔ a")
	}
	if !bytes.Equal(Encode(ab), Encode(ba)) {
		t.Fatalf("a ⊔ b and b ⊔ a are Equal but encode differently")
	}
	checkInvariants(t, ab)
	checkInvariants(t, ba)
	if a.ref != nil && b.ref != nil { // values without a reference (pruning deltas) skip this
		abRef := a.ref.clone()
		abRef.join(b.ref)
		sp.check(t, ab, abRef)
	}
	// associative
	l, r := joined(t, ab, c.v), joined(t, a.v, joined(t, b.v, c.v))
	if !l.Equal(r) {
		t.Fatalf("(a ⊔ b) ⊔ c != a ⊔ (b ⊔ c)")
	}
	if !bytes.Equal(Encode(l), Encode(r)) {
		t.Fatalf("(a ⊔ b) ⊔ c and a ⊔ (b ⊔ c) encode differently")
	}
	// the inflation report, on arbitrary pairs
	checkedJoin(t, a.v.Clone(), b.v)
	checkedJoin(t, ab.Clone(), c.v)
	// Extract, both ways and against joins
	checkExtract(t, a.v, b.v)
	checkExtract(t, b.v, a.v)
	checkExtract(t, ab, c.v)
	checkExtract(t, c.v, ab)
	checkExtract(t, a.v, a.v)
	checkExtract(t, bottom(sp.typ), a.v)
}

// checkExtract checks Extract(x, d) and returns it: x ⊔ e = x ⊔ d, e ⊑ d,
// e is bottom iff d ⊑ x, and e is exactly the join of d's irreducibles that
// inflate x (each irreducible of e inflates x; each of d that is not below
// e does not).
func checkExtract(t tb, x, d Value) Value {
	t.Helper()
	xEnc, dEnc := Encode(x), Encode(d)
	e, err := Extract(x, d)
	if err != nil {
		t.Fatalf("Extract: %v", err)
	}
	if e.Type() != x.Type() {
		t.Fatalf("Extract returned a %s", e.Type())
	}
	if !bytes.Equal(Encode(x), xEnc) || !bytes.Equal(Encode(d), dEnc) {
		t.Fatalf("Extract modified an argument")
	}
	checkInvariants(t, e)
	xd := joined(t, x, d)
	if !joined(t, x, e).Equal(xd) {
		t.Fatalf("x ⊔ Extract(x, d) != x ⊔ d")
	}
	if !joined(t, d, e).Equal(d) {
		t.Fatalf("Extract(x, d) ⋢ d")
	}
	if e.IsBottom() != xd.Equal(x) {
		t.Fatalf("Extract(x, d) bottom=%v, but d ⊑ x is %v", e.IsBottom(), xd.Equal(x))
	}
	if leq, err := Leq(d, x); err != nil || leq != e.IsBottom() {
		t.Fatalf("Leq(d, x) = %v, %v; Extract bottom=%v", leq, err, e.IsBottom())
	}
	// e is the join of its irreducibles, each of which inflates x
	acc := bottom(e.Type())
	for _, i := range irreducibles(e) {
		if i.IsBottom() {
			t.Fatalf("bottom irreducible")
		}
		if !mustJoin(t, x.Clone(), i) {
			t.Fatalf("Extract is not minimal: part %x of it is already below x", Encode(i))
		}
		mustJoin(t, acc, i)
	}
	if !acc.Equal(e) {
		t.Fatalf("the irreducibles of e do not join to e")
	}
	// and it keeps every irreducible of d that inflates x
	for _, i := range irreducibles(d) {
		inflates := mustJoin(t, x.Clone(), i)
		inE := !mustJoin(t, e.Clone(), i)
		if inflates != inE {
			t.Fatalf("irreducible %x of d: inflates x=%v, below e=%v", Encode(i), inflates, inE)
		}
	}
	// the result shares nothing with the arguments
	ee := e.Clone()
	mustJoin(t, e, xd)
	if !bytes.Equal(Encode(x), xEnc) || !bytes.Equal(Encode(d), dEnc) {
		t.Fatalf("Extract's result aliases an argument")
	}
	return ee
}

// checkRoundTrip checks that v survives the wire form unchanged.
func checkRoundTrip(t tb, v Value) {
	t.Helper()
	b := Encode(v)
	if n := EncodedSize(v); n != len(b) {
		t.Fatalf("EncodedSize %d, len(Encode) %d", n, len(b))
	}
	if ab := AppendEncode([]byte("prefix"), v); string(ab) != "prefix"+string(b) {
		t.Fatalf("AppendEncode differs from Encode")
	}
	w, err := Decode(b, DefaultLimits)
	if err != nil {
		t.Fatalf("Decode(Encode(%s)): %v", v.Type(), err)
	}
	if !w.Equal(v) || !v.Equal(w) {
		t.Fatalf("Decode(Encode(v)) != v for %s", v.Type())
	}
	checkInvariants(t, w)
	if !bytes.Equal(Encode(w), b) {
		t.Fatalf("re-encoding a decoded %s changed its bytes", v.Type())
	}
	if w.Size() != v.Size() || w.IsBottom() != v.IsBottom() {
		t.Fatalf("decoded %s has Size %d bottom %v, want %d %v", v.Type(), w.Size(), w.IsBottom(), v.Size(), v.IsBottom())
	}
	u, err := FromProto(ToProto(v), DefaultLimits)
	if err != nil || !u.Equal(v) {
		t.Fatalf("FromProto(ToProto(v)) = %v, %v", u, err)
	}
}

func TestLatticeLaws(t *testing.T) {
	for _, sp := range specs {
		t.Run(sp.String(), func(t *testing.T) {
			t.Parallel()
			rapid.Check(t, func(rt *rapid.T) { runHistory(rt, sp) })
		})
	}
}
