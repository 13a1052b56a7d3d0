package crdt

// Reference models and random operation histories shared by the property
// tests (lattice_test.go) and the convergence simulation
// (convergence_test.go).
//
// Every CRDT type has a deliberately simple reference model built from
// plain Go maps: no runs, no index, no compaction. A reference is kept next
// to every replica state and every delta; the history driver applies each
// mutation to both and checks that the observable values agree.

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"pgregory.net/rapid"

	"github.com/statemesh/statemesh/internal/hlc"
)

// tb is what both *testing.T and *rapid.T provide.
type tb interface {
	Helper()
	Fatalf(format string, args ...any)
}

// src draws the random choices of a history: rapid in property tests (so
// failures shrink), a seeded math/rand/v2 generator in the simulation.
type src interface {
	intn(label string, n int) int
}

type rapidSrc struct{ t *rapid.T }

func (s rapidSrc) intn(label string, n int) int { return rapid.IntRange(0, n-1).Draw(s.t, label) }

type randSrc struct{ r *rand.Rand }

func (s randSrc) intn(_ string, n int) int { return s.r.IntN(n) }

func pick[E any](s src, label string, xs []E) E { return xs[s.intn(label, len(xs))] }

// Small alphabets make collisions (re-adds, concurrent writes of one key)
// common.
var (
	elemPool  = []string{"", "a", "b", "c\x00"}
	valuePool = []string{"", "x", "y"}
	keyPool   = []string{"", "k", "l"}
	nodePool  = []string{"a", "b", "node-c", "é"}
)

// genReplicas returns n distinct replica ids. Node names may repeat (two
// incarnations of one node); incarnations never do.
func genReplicas(s src, n int) []ReplicaID {
	ids := make([]ReplicaID, n)
	for i := range ids {
		ids[i] = ReplicaID{
			Node:        pick(s, "node", nodePool),
			Incarnation: uint64(i) + pick(s, "incarnation", []uint64{1, 1 << 40}),
		}
	}
	return ids
}

// refModel is a reference state (or delta).
type refModel interface {
	clone() refModel
	join(o refModel)
}

// spec describes one CRDT type to the history drivers.
type spec struct {
	typ    Type
	newRef func() refModel
	// mutate draws a mutation by replica r, applies it to v and rf, and
	// returns the implementation's delta and the reference delta. It fails
	// t if the mutator's error does not match the reference's prediction;
	// on an expected error it returns it, and neither v nor rf changed.
	mutate func(t tb, s src, r ReplicaID, peers []ReplicaID, v Value, rf refModel) (Value, refModel, error)
	// check fails t unless v's observable values are those of rf.
	check func(t tb, v Value, rf refModel)
	// restrict returns the part of the reference delta rf that the
	// extracted delta e (a part of the delta rf models) carries.
	restrict func(rf refModel, e Value) refModel
}

func (sp *spec) String() string { return sp.typ.String() }

var specs = []*spec{
	gcounterSpec, pncounterSpec, gsetSpec, orsetSpec, lwwSpec,
	mvSpec, flagSpec, ewflagSpec, ormapSpec, voteSpec,
}

func bottom(t Type) Value {
	v, err := New(t)
	if err != nil {
		panic(err)
	}
	return v
}

// ---------------------------------------------------------------- GCounter

type gcEvent struct {
	r ReplicaID
	i int
}

// gcRef is the set of increments seen: value = sum of amounts.
type gcRef struct{ ev map[gcEvent]uint64 }

func newGCRef() *gcRef { return &gcRef{ev: map[gcEvent]uint64{}} }

func (g *gcRef) clone() refModel { return &gcRef{ev: maps.Clone(g.ev)} }
func (g *gcRef) join(o refModel) { maps.Copy(g.ev, o.(*gcRef).ev) }

func (g *gcRef) total(r ReplicaID) (n uint64) {
	for e, a := range g.ev {
		if e.r == r {
			n += a
		}
	}
	return n
}

func (g *gcRef) of(r ReplicaID) *gcRef {
	out := newGCRef()
	for e, a := range g.ev {
		if e.r == r {
			out.ev[e] = a
		}
	}
	return out
}

func (g *gcRef) replicas() map[ReplicaID]bool {
	out := map[ReplicaID]bool{}
	for e := range g.ev {
		out[e.r] = true
	}
	return out
}

var gcAmounts = []uint64{0, 1, 2, 7, 1 << 62, math.MaxUint64/2 + 1, math.MaxUint64}

var gcounterSpec = &spec{
	typ:    TypeGCounter,
	newRef: func() refModel { return newGCRef() },
	mutate: func(t tb, s src, r ReplicaID, _ []ReplicaID, v Value, rf refModel) (Value, refModel, error) {
		t.Helper()
		c, g := v.(*GCounter), rf.(*gcRef)
		n := pick(s, "amount", gcAmounts)
		tot := g.total(r)
		wantErr := tot > math.MaxUint64-n
		d, err := c.Increment(r, n)
		if err != nil {
			if !wantErr || !errors.Is(err, ErrInvalidArg) || d != nil {
				t.Fatalf("Increment(%v, %d) at %d: unexpected error %v (delta %v)", r, n, tot, err, d)
			}
			return nil, nil, err
		}
		if wantErr {
			t.Fatalf("Increment(%v, %d) at %d: no overflow error", r, n, tot)
		}
		if n == 0 {
			return d, newGCRef(), nil
		}
		k := 0
		for e := range g.ev {
			if e.r == r {
				k++
			}
		}
		g.ev[gcEvent{r, k}] = n
		return d, g.of(r), nil
	},
	check: func(t tb, v Value, rf refModel) {
		t.Helper()
		c, g := v.(*GCounter), rf.(*gcRef)
		var sum uint64
		for _, a := range g.ev {
			sum += a
		}
		if c.Value() != sum {
			t.Fatalf("GCounter value %d, reference %d", c.Value(), sum)
		}
		reps := g.replicas()
		for r := range reps {
			if c.Entry(r) != g.total(r) {
				t.Fatalf("GCounter entry of %v is %d, reference %d", r, c.Entry(r), g.total(r))
			}
		}
		if len(c.Entries()) != len(reps) {
			t.Fatalf("GCounter has %d entries, reference %d", len(c.Entries()), len(reps))
		}
	},
	restrict: func(rf refModel, e Value) refModel {
		g, out := rf.(*gcRef), newGCRef()
		for _, en := range e.(*GCounter).es {
			r := en.r
			out.join(g.of(r))
		}
		return out
	},
}

// --------------------------------------------------------------- PNCounter

// pnRef is the set of increments and decrements seen: value = their sum.
type pnRef struct{ ev map[gcEvent]int64 }

func newPNRef() *pnRef { return &pnRef{ev: map[gcEvent]int64{}} }

func (p *pnRef) clone() refModel { return &pnRef{ev: maps.Clone(p.ev)} }
func (p *pnRef) join(o refModel) { maps.Copy(p.ev, o.(*pnRef).ev) }

func magnitude(a int64) uint64 {
	if a >= 0 {
		return uint64(a)
	}
	return uint64(-(a + 1)) + 1
}

// part returns r's events of the sign of a (the delta of one increment
// carries only its side's entry).
func (p *pnRef) part(r ReplicaID, positive bool) *pnRef {
	out := newPNRef()
	for e, a := range p.ev {
		if e.r == r && (a > 0) == positive {
			out.ev[e] = a
		}
	}
	return out
}

func (p *pnRef) sideTotal(r ReplicaID, positive bool) (n uint64) {
	for _, a := range p.part(r, positive).ev {
		n += magnitude(a)
	}
	return n
}

var pnAmounts = []int64{0, 1, -1, 3, -5, math.MaxInt64, math.MinInt64, 1 << 62}

var pncounterSpec = &spec{
	typ:    TypePNCounter,
	newRef: func() refModel { return newPNRef() },
	mutate: func(t tb, s src, r ReplicaID, _ []ReplicaID, v Value, rf refModel) (Value, refModel, error) {
		t.Helper()
		c, p := v.(*PNCounter), rf.(*pnRef)
		a := pick(s, "amount", pnAmounts)
		wantErr := a != 0 && p.sideTotal(r, a > 0) > math.MaxUint64-magnitude(a)
		d, err := c.Increment(r, a)
		if err != nil {
			if !wantErr || !errors.Is(err, ErrInvalidArg) || d != nil {
				t.Fatalf("Increment(%v, %d): unexpected error %v", r, a, err)
			}
			return nil, nil, err
		}
		if wantErr {
			t.Fatalf("Increment(%v, %d): no overflow error", r, a)
		}
		if a == 0 {
			return d, newPNRef(), nil
		}
		k := 0
		for e := range p.ev {
			if e.r == r {
				k++
			}
		}
		p.ev[gcEvent{r, k}] = a
		return d, p.part(r, a > 0), nil
	},
	check: func(t tb, v Value, rf refModel) {
		t.Helper()
		var sum int64
		for _, a := range rf.(*pnRef).ev {
			sum += a
		}
		if got := v.(*PNCounter).Value(); got != sum {
			t.Fatalf("PNCounter value %d, reference %d", got, sum)
		}
	},
	restrict: func(rf refModel, e Value) refModel {
		p, out, pe := rf.(*pnRef), newPNRef(), e.(*PNCounter)
		for _, en := range pe.p.es {
			out.join(p.part(en.r, true))
		}
		for _, en := range pe.n.es {
			out.join(p.part(en.r, false))
		}
		return out
	},
}

// -------------------------------------------------------------------- GSet

type gsetRef struct{ m map[string]bool }

func newGSetRef() *gsetRef { return &gsetRef{m: map[string]bool{}} }

func (g *gsetRef) clone() refModel { return &gsetRef{m: maps.Clone(g.m)} }
func (g *gsetRef) join(o refModel) { maps.Copy(g.m, o.(*gsetRef).m) }

var gsetSpec = &spec{
	typ:    TypeGSet,
	newRef: func() refModel { return newGSetRef() },
	mutate: func(t tb, s src, _ ReplicaID, _ []ReplicaID, v Value, rf refModel) (Value, refModel, error) {
		g, e := rf.(*gsetRef), pick(s, "elem", elemPool)
		d := v.(*GSet).Add([]byte(e))
		dr := newGSetRef()
		if !g.m[e] {
			g.m[e] = true
			dr.m[e] = true
		}
		return d, dr, nil
	},
	check: func(t tb, v Value, rf refModel) {
		t.Helper()
		checkElements(t, "GSet", v.(*GSet).Elements(), rf.(*gsetRef).m)
		for e := range rf.(*gsetRef).m {
			if !v.(*GSet).Contains([]byte(e)) {
				t.Fatalf("GSet does not contain %q", e)
			}
		}
	},
	restrict: func(rf refModel, e Value) refModel {
		out := newGSetRef()
		for k := range e.(*GSet).m {
			out.m[k] = true
		}
		return out
	},
}

func checkElements(t tb, what string, got [][]byte, want map[string]bool) {
	t.Helper()
	w := slices.Sorted(maps.Keys(want))
	if len(got) != len(w) {
		t.Fatalf("%s elements %q, reference %q", what, got, w)
	}
	for i := range got {
		if string(got[i]) != w[i] {
			t.Fatalf("%s elements %q, reference %q", what, got, w)
		}
	}
}

// ------------------------------------------------------------- LWWRegister

type lwwWrite struct {
	ts hlc.Timestamp
	r  ReplicaID
	v  string
}

func (w lwwWrite) after(o lwwWrite) bool {
	if c := w.ts.Compare(o.ts); c != 0 {
		return c > 0
	}
	if c := w.r.Compare(o.r); c != 0 {
		return c > 0
	}
	return w.v > o.v
}

// lwwRef is the set of writes seen; the value is the greatest.
type lwwRef struct{ w map[lwwWrite]bool }

func newLWWRef() *lwwRef { return &lwwRef{w: map[lwwWrite]bool{}} }

func (l *lwwRef) clone() refModel { return &lwwRef{w: maps.Clone(l.w)} }
func (l *lwwRef) join(o refModel) { maps.Copy(l.w, o.(*lwwRef).w) }

func (l *lwwRef) winner() (lwwWrite, bool) {
	var best lwwWrite
	ok := false
	for w := range l.w {
		if !ok || w.after(best) {
			best, ok = w, true
		}
	}
	return best, ok
}

var (
	wallPool    = []int64{0, 1, 2, 5, math.MinInt64}
	logicalPool = []uint32{0, 1, math.MaxUint32}
)

var lwwSpec = &spec{
	typ:    TypeLWWRegister,
	newRef: func() refModel { return newLWWRef() },
	mutate: func(t tb, s src, r ReplicaID, _ []ReplicaID, v Value, rf refModel) (Value, refModel, error) {
		t.Helper()
		l := rf.(*lwwRef)
		ts := hlc.Timestamp{WallNanos: pick(s, "wall", wallPool), Logical: pick(s, "logical", logicalPool)}
		val := pick(s, "value", valuePool)
		eff := ts
		if w, ok := l.winner(); ok && ts.Compare(w.ts) <= 0 {
			eff = w.ts.Next()
		}
		d := v.(*LWWRegister).Set(r, ts, []byte(val))
		w := lwwWrite{eff, r, val}
		l.w[w] = true
		if got, _ := d.Timestamp(); got != eff {
			t.Fatalf("Set at %v returned timestamp %v, want %v", ts, got, eff)
		}
		return d, &lwwRef{w: map[lwwWrite]bool{w: true}}, nil
	},
	check: func(t tb, v Value, rf refModel) {
		t.Helper()
		reg := v.(*LWWRegister)
		got, set := reg.Get()
		w, ok := rf.(*lwwRef).winner()
		if set != ok {
			t.Fatalf("LWWRegister set=%v, reference %v", set, ok)
		}
		ts, r := reg.Timestamp()
		if ok && (string(got) != w.v || ts != w.ts || r != w.r) {
			t.Fatalf("LWWRegister (%q, %v, %v), reference (%q, %v, %v)", got, ts, r, w.v, w.ts, w.r)
		}
	},
	restrict: func(rf refModel, e Value) refModel {
		if e.IsBottom() {
			return newLWWRef()
		}
		return rf.clone()
	},
}

// -------------------------------------------------------------------- Flag

type flagRef struct{ on bool }

func (f *flagRef) clone() refModel { c := *f; return &c }
func (f *flagRef) join(o refModel) { f.on = f.on || o.(*flagRef).on }

var flagSpec = &spec{
	typ:    TypeFlag,
	newRef: func() refModel { return &flagRef{} },
	mutate: func(t tb, s src, _ ReplicaID, _ []ReplicaID, v Value, rf refModel) (Value, refModel, error) {
		f := rf.(*flagRef)
		d := v.(*Flag).Enable()
		dr := &flagRef{on: !f.on}
		f.on = true
		return d, dr, nil
	},
	check: func(t tb, v Value, rf refModel) {
		t.Helper()
		if v.(*Flag).Enabled() != rf.(*flagRef).on {
			t.Fatalf("Flag enabled=%v, reference %v", v.(*Flag).Enabled(), rf.(*flagRef).on)
		}
	},
	restrict: func(rf refModel, e Value) refModel { return &flagRef{on: !e.IsBottom()} },
}

// -------------------------------------------------------------------- Vote

type voteCast struct {
	r       ReplicaID
	version uint64
	vote    bool
}

// voteRef is the set of votes cast and of removals seen.
type voteRef struct {
	casts   map[voteCast]bool
	removed map[ReplicaID]bool
}

func newVoteRef() *voteRef {
	return &voteRef{casts: map[voteCast]bool{}, removed: map[ReplicaID]bool{}}
}

func (v *voteRef) clone() refModel {
	return &voteRef{casts: maps.Clone(v.casts), removed: maps.Clone(v.removed)}
}

func (v *voteRef) join(o refModel) {
	ov := o.(*voteRef)
	maps.Copy(v.casts, ov.casts)
	maps.Copy(v.removed, ov.removed)
}

// latest returns r's latest cast.
func (v *voteRef) latest(r ReplicaID) (voteCast, bool) {
	var best voteCast
	ok := false
	for c := range v.casts {
		if c.r == r && (!ok || c.version > best.version) {
			best, ok = c, true
		}
	}
	return best, ok
}

func (v *voteRef) about(r ReplicaID) *voteRef {
	out := newVoteRef()
	for c := range v.casts {
		if c.r == r {
			out.casts[c] = true
		}
	}
	if v.removed[r] {
		out.removed[r] = true
	}
	return out
}

var voteSpec = &spec{
	typ:    TypeVote,
	newRef: func() refModel { return newVoteRef() },
	mutate: func(t tb, s src, r ReplicaID, peers []ReplicaID, v Value, rf refModel) (Value, refModel, error) {
		t.Helper()
		vt, ref := v.(*Vote), rf.(*voteRef)
		if s.intn("vote-op", 4) == 0 {
			target := pick(s, "target", peers)
			d := vt.Remove(target)
			if ref.removed[target] {
				return d, newVoteRef(), nil
			}
			ref.removed[target] = true
			out := newVoteRef()
			out.removed[target] = true
			return d, out, nil
		}
		b := s.intn("ballot", 2) == 1
		d, err := vt.Set(r, b)
		if ref.removed[r] {
			if err == nil || !errors.Is(err, ErrInvalidArg) {
				t.Fatalf("Set by removed %v: error %v", r, err)
			}
			return nil, nil, err
		}
		if err != nil {
			t.Fatalf("Set(%v, %v): %v", r, b, err)
		}
		last, _ := ref.latest(r)
		c := voteCast{r, last.version + 1, b}
		ref.casts[c] = true
		out := newVoteRef()
		out.casts[c] = true
		return d, out, nil
	},
	check: func(t tb, v Value, rf refModel) {
		t.Helper()
		vt, ref := v.(*Vote), rf.(*voteRef)
		reps := map[ReplicaID]bool{}
		for c := range ref.casts {
			reps[c.r] = true
		}
		maps.Copy(reps, ref.removed)
		voters, votesFor := 0, 0
		for r := range reps {
			c, cast := ref.latest(r)
			isVoter := cast && !ref.removed[r]
			if isVoter {
				voters++
				if c.vote {
					votesFor++
				}
			}
			got, ok := vt.VoteOf(r)
			if ok != isVoter || (ok && got != c.vote) {
				t.Fatalf("VoteOf(%v) = %v, %v; reference %v, %v", r, got, ok, c.vote, isVoter)
			}
		}
		if vt.Voters() != voters || vt.VotesFor() != votesFor {
			t.Fatalf("Vote voters %d for %d, reference %d for %d", vt.Voters(), vt.VotesFor(), voters, votesFor)
		}
		if vt.Size() != len(reps) {
			t.Fatalf("Vote size %d, reference %d", vt.Size(), len(reps))
		}
	},
	restrict: func(rf refModel, e Value) refModel {
		out := newVoteRef()
		for r := range e.(*Vote).m {
			out.join(rf.(*voteRef).about(r))
		}
		return out
	},
}

// ----------------------------------------------------------------- causal

// leaf is what one dot stands for: a write at a path of ORMap entries
// (each segment is a type byte, a length byte and the key; "" at the top
// level). val is the ORSet element or MVRegister value ("" for EWFlag).
type leaf struct{ path, val string }

func seg(t Type, key string) string { return string([]byte{byte(t), byte(len(key))}) + key }

// causalRef models every causal type at once: the adds ever seen (dot ->
// leaf) and the dots ever removed. A dot is live if added and not removed;
// the causal context is every dot mentioned.
type causalRef struct {
	adds    map[Dot]leaf
	removed map[Dot]bool
}

func newCausalRef() *causalRef { return &causalRef{adds: map[Dot]leaf{}, removed: map[Dot]bool{}} }

func (c *causalRef) clone() refModel {
	return &causalRef{adds: maps.Clone(c.adds), removed: maps.Clone(c.removed)}
}

func (c *causalRef) join(o refModel) {
	oc := o.(*causalRef)
	maps.Copy(c.adds, oc.adds)
	maps.Copy(c.removed, oc.removed)
}

func (c *causalRef) liveLeaves() map[Dot]leaf {
	out := map[Dot]leaf{}
	for d, l := range c.adds {
		if !c.removed[d] {
			out[d] = l
		}
	}
	return out
}

// under returns the live dots whose path starts with prefix (segments are
// self-delimiting, so a string prefix is a path prefix).
func (c *causalRef) under(prefix string) []Dot {
	var out []Dot
	for d, l := range c.liveLeaves() {
		if strings.HasPrefix(l.path, prefix) {
			out = append(out, d)
		}
	}
	return out
}

// at returns the live dots of exactly the leaf l.
func (c *causalRef) at(l leaf) []Dot {
	var out []Dot
	for d, ll := range c.liveLeaves() {
		if ll == l {
			out = append(out, d)
		}
	}
	return out
}

func (c *causalRef) next(r ReplicaID) Dot {
	var m uint64
	for d := range c.adds {
		if d.Replica.ID() == r {
			m = max(m, d.Seq)
		}
	}
	for d := range c.removed {
		if d.Replica.ID() == r {
			m = max(m, d.Seq)
		}
	}
	return makeDot(r, m+1)
}

// add records a new write by r at l that replaces the dots rm, and
// returns the reference delta.
func (c *causalRef) add(r ReplicaID, l leaf, rm []Dot) *causalRef {
	d := c.next(r)
	out := c.remove(rm)
	c.adds[d] = l
	out.adds[d] = l
	return out
}

func (c *causalRef) remove(rm []Dot) *causalRef {
	out := newCausalRef()
	for _, d := range rm {
		c.removed[d] = true
		out.removed[d] = true
	}
	return out
}

func (c *causalRef) context() *Context {
	ctx := NewContext()
	for d := range c.adds {
		ctx.Add(d)
	}
	for d := range c.removed {
		ctx.Add(d)
	}
	return ctx
}

// restrictCtx keeps the dots of ctx.
func (c *causalRef) restrictCtx(ctx *Context) *causalRef {
	out := newCausalRef()
	for d, l := range c.adds {
		if ctx.Contains(d) {
			out.adds[d] = l
		}
	}
	for d := range c.removed {
		if ctx.Contains(d) {
			out.removed[d] = true
		}
	}
	return out
}

// orsetOp draws an ORSet mutation on s (top level or a view at prefix).
func orsetOp(s src, r ReplicaID, set *ORSet, rf *causalRef, prefix string) (*ORSet, *causalRef) {
	switch s.intn("orset-op", 7) {
	case 0, 1, 2:
		e := pick(s, "elem", elemPool)
		l := leaf{prefix, e}
		dr := rf.add(r, l, rf.at(l))
		return set.Add(r, []byte(e)), dr
	case 3, 4:
		e := pick(s, "elem", elemPool)
		dr := rf.remove(rf.at(leaf{prefix, e}))
		return set.Remove([]byte(e)), dr
	case 5:
		dr := rf.remove(rf.under(prefix))
		return set.Clear(), dr
	default: // several mutators, deltas joined
		d1, r1 := orsetOp(s, r, set, rf, prefix)
		d2, r2 := orsetOp(s, r, set, rf, prefix)
		if _, err := Join(d1, d2); err != nil {
			panic(err)
		}
		r1.join(r2)
		return d1, r1
	}
}

func mvOp(s src, r ReplicaID, m *MVRegister, rf *causalRef, prefix string) (*MVRegister, *causalRef) {
	if s.intn("mv-op", 4) == 0 {
		dr := rf.remove(rf.under(prefix))
		return m.Clear(), dr
	}
	v := pick(s, "value", valuePool)
	dr := rf.add(r, leaf{prefix, v}, rf.under(prefix))
	return m.Assign(r, []byte(v)), dr
}

func ewOp(s src, r ReplicaID, f *EWFlag, rf *causalRef, prefix string) (*EWFlag, *causalRef) {
	if s.intn("ew-op", 3) == 0 {
		dr := rf.remove(rf.under(prefix))
		return f.Disable(), dr
	}
	dr := rf.add(r, leaf{prefix, ""}, rf.under(prefix))
	return f.Enable(r), dr
}

const maxTestDepth = 3

var nestable = []Type{TypeORSet, TypeMVRegister, TypeEWFlag, TypeORMap}

func ormapOp(t tb, s src, r ReplicaID, m *ORMap, rf *causalRef, prefix string, depth int) (*ORMap, *causalRef) {
	t.Helper()
	key := pick(s, "key", keyPool)
	types := nestable
	if depth >= maxTestDepth {
		types = nestable[:3]
	}
	typ := pick(s, "type", types)
	p := prefix + seg(typ, key)
	if s.intn("ormap-op", 4) == 0 {
		dr := rf.remove(rf.under(p))
		return m.Remove([]byte(key), typ), dr
	}
	var dr *causalRef
	d, err := m.Update(r, []byte(key), typ, func(v Value) (Value, error) {
		if v.Type() != typ {
			t.Fatalf("Update(%s) passed a %s", typ, v.Type())
		}
		switch x := v.(type) {
		case *ORSet:
			var d Value
			d, dr = orsetOp(s, r, x, rf, p)
			return d, nil
		case *MVRegister:
			var d Value
			d, dr = mvOp(s, r, x, rf, p)
			return d, nil
		case *EWFlag:
			var d Value
			d, dr = ewOp(s, r, x, rf, p)
			return d, nil
		case *ORMap:
			var d Value
			d, dr = ormapOp(t, s, r, x, rf, p, depth+1)
			return d, nil
		}
		t.Fatalf("Update passed %T", v)
		return nil, nil
	})
	if err != nil {
		t.Fatalf("Update(%q, %s): %v", key, typ, err)
	}
	return d, dr
}

func causalMutate(t tb, s src, r ReplicaID, _ []ReplicaID, v Value, rf refModel) (Value, refModel, error) {
	t.Helper()
	c := rf.(*causalRef)
	switch x := v.(type) {
	case *ORSet:
		d, dr := orsetOp(s, r, x, c, "")
		return d, dr, nil
	case *MVRegister:
		d, dr := mvOp(s, r, x, c, "")
		return d, dr, nil
	case *EWFlag:
		d, dr := ewOp(s, r, x, c, "")
		return d, dr, nil
	case *ORMap:
		d, dr := ormapOp(t, s, r, x, c, "", 1)
		return d, dr, nil
	}
	t.Fatalf("causalMutate of %T", v)
	return nil, nil, nil
}

func causalCheck(t tb, v Value, rf refModel) {
	t.Helper()
	c := rf.(*causalRef)
	cs := causalOf(v)
	if !cs.ctx.Equal(c.context()) {
		t.Fatalf("%s context %v, reference %v", v.Type(), ctxString(cs.ctx), ctxString(c.context()))
	}
	live := c.liveLeaves()
	held := dotsOf(cs.s)
	if len(held) != len(live) {
		t.Fatalf("%s holds dots %v, reference live %v", v.Type(), held, slices.Collect(maps.Keys(live)))
	}
	for _, d := range held {
		if _, ok := live[d]; !ok {
			t.Fatalf("%s holds dot %v, which the reference has not live", v.Type(), d)
		}
	}
	checkNested(t, v, c, "")
	if s, ok := v.(*ORSet); ok {
		if !s.Context().Equal(c.context()) {
			t.Fatalf("ORSet.Context() differs from the reference")
		}
	}
}

// checkNested compares a (possibly nested) causal value with the live
// leaves of c under prefix.
func checkNested(t tb, v Value, c *causalRef, prefix string) {
	t.Helper()
	live := c.liveLeaves()
	switch x := v.(type) {
	case *ORSet:
		want := map[string]bool{}
		for _, l := range live {
			if l.path == prefix {
				want[l.val] = true
			}
		}
		checkElements(t, "ORSet at "+fmt.Sprintf("%q", prefix), x.Elements(), want)
		if x.Len() != len(want) || x.Size() != len(want) {
			t.Fatalf("ORSet Len %d, reference %d", x.Len(), len(want))
		}
		for e := range want {
			if !x.Contains([]byte(e)) {
				t.Fatalf("ORSet does not contain %q", e)
			}
		}
	case *MVRegister:
		want := map[string]bool{}
		n := 0
		for _, l := range live {
			if l.path == prefix {
				want[l.val] = true
				n++
			}
		}
		checkElements(t, "MVRegister values", x.Values(), want)
		if x.Size() != n {
			t.Fatalf("MVRegister size %d, reference %d", x.Size(), n)
		}
	case *EWFlag:
		want := false
		for _, l := range live {
			if l.path == prefix {
				want = true
			}
		}
		if x.Enabled() != want {
			t.Fatalf("EWFlag at %q enabled=%v, reference %v", prefix, x.Enabled(), want)
		}
	case *ORMap:
		type entry struct {
			t   Type
			key string
		}
		want := map[entry]bool{}
		for _, l := range live {
			if len(l.path) > len(prefix) && strings.HasPrefix(l.path, prefix) {
				rest := l.path[len(prefix):]
				n := int(rest[1])
				want[entry{Type(rest[0]), rest[2 : 2+n]}] = true
			}
		}
		keys := x.Keys()
		if len(keys) != len(want) || x.Len() != len(want) || x.Size() != len(want) {
			t.Fatalf("ORMap at %q keys %v, reference %v", prefix, keys, want)
		}
		for i, k := range keys {
			if !want[entry{k.Type, string(k.Key)}] {
				t.Fatalf("ORMap at %q has key %q/%s, not in the reference %v", prefix, k.Key, k.Type, want)
			}
			if i > 0 {
				p := keys[i-1]
				if c := bytes.Compare(p.Key, k.Key); c > 0 || (c == 0 && p.Type >= k.Type) {
					t.Fatalf("ORMap keys out of order: %v", keys)
				}
			}
			nv := x.Get(k.Key, k.Type)
			if nv == nil || nv.Type() != k.Type {
				t.Fatalf("ORMap Get(%q, %s) = %v", k.Key, k.Type, nv)
			}
			if nv.IsBottom() {
				t.Fatalf("ORMap entry %q/%s is bottom", k.Key, k.Type)
			}
			checkInvariants(t, nv)
			checkNested(t, nv, c, prefix+seg(k.Type, string(k.Key)))
		}
		for _, k := range keyPool {
			for _, typ := range nestable {
				if !want[entry{typ, k}] && x.Get([]byte(k), typ) != nil {
					t.Fatalf("ORMap Get(%q, %s) of an absent entry is not nil", k, typ)
				}
			}
		}
	}
}

func causalRestrict(rf refModel, e Value) refModel {
	return rf.(*causalRef).restrictCtx(causalOf(e).ctx)
}

var (
	orsetSpec  = &spec{TypeORSet, func() refModel { return newCausalRef() }, causalMutate, causalCheck, causalRestrict}
	mvSpec     = &spec{TypeMVRegister, func() refModel { return newCausalRef() }, causalMutate, causalCheck, causalRestrict}
	ewflagSpec = &spec{TypeEWFlag, func() refModel { return newCausalRef() }, causalMutate, causalCheck, causalRestrict}
	ormapSpec  = &spec{TypeORMap, func() refModel { return newCausalRef() }, causalMutate, causalCheck, causalRestrict}
)

func ctxString(c *Context) string {
	var b strings.Builder
	for _, r := range c.replicas() {
		fmt.Fprintf(&b, "%v%v ", r, c.m[r])
	}
	return b.String()
}

// ------------------------------------------------------------- invariants

// checkInvariants fails t unless v is well formed: contexts are sorted,
// disjoint, non-touching runs from 1 on; every stored dot is in the
// context and held once; no store is empty; entries have the store kind of
// their type; the dot index of ORSet and ORMap matches the store exactly;
// and counters and ballots are in the form Decode accepts.
func checkInvariants(t tb, v Value) {
	t.Helper()
	if p, ok := v.(prunable); ok {
		for r := range *p.marks() {
			if p.holds(r) {
				t.Fatalf("%s holds contributions of %v, which it marks pruned", v.Type(), r)
			}
		}
	}
	if x, ok := v.(*PNCounter); ok && (x.p.pruned != nil || x.n.pruned != nil) {
		t.Fatalf("a PNCounter's halves carry markers of their own")
	}
	switch x := v.(type) {
	case *GCounter:
		checkCounter(t, x)
	case *PNCounter:
		checkCounter(t, x.p)
		checkCounter(t, x.n)
	case *Vote:
		for r, b := range x.m {
			if b.version == 0 && !b.removed {
				t.Fatalf("ballot of %v has version 0", r)
			}
		}
	case *LWWRegister:
		if !x.set && (x.value != nil || x.ts != (hlc.Timestamp{}) || x.replica != ReplicaID{}) {
			t.Fatalf("unset LWWRegister holds %+v", x)
		}
	case *ORSet, *MVRegister, *EWFlag, *ORMap:
		c := causalOf(v)
		checkContext(t, c.ctx)
		seen := map[Dot]bool{}
		kind := v.Type()
		if c.s != nil {
			checkStore(t, kind, c.s, c.ctx, seen)
		}
		indexed := kind == TypeORSet || kind == TypeORMap
		// The sorted-key cache, when present, is exactly the store's keys.
		if c.order != nil {
			m, _ := c.s.(dotMap)
			if want := slices.Sorted(maps.Keys(m)); !slices.Equal(c.order, want) {
				t.Fatalf("%s: cached key order %q, store keys %q", kind, c.order, want)
			}
		}
		// The index is built lazily: a top-level set or map keeps one,
		// and once built it must match the store exactly.
		if indexed != c.indexed || (!indexed && c.idx != nil) {
			t.Fatalf("%s: indexed=%v index present=%v", kind, c.indexed, c.idx != nil)
		}
		if indexed && c.idx != nil {
			want := map[Dot]string{}
			if m, ok := c.s.(dotMap); ok {
				for k, s := range m {
					s.eachDot(func(d Dot) { want[d] = k })
				}
			}
			if !maps.Equal(want, c.idx) {
				t.Fatalf("%s: index %v, store dots %v", kind, c.idx, want)
			}
		}
	}
}

func checkCounter(t tb, c *GCounter) {
	t.Helper()
	for i, e := range c.es {
		if e.n == 0 {
			t.Fatalf("zero counter entry for %v", e.r)
		}
		if i > 0 && c.es[i-1].r.Compare(e.r) >= 0 {
			t.Fatalf("counter entries out of order or repeated: %v then %v", c.es[i-1].r, e.r)
		}
	}
}

func checkContext(t tb, c *Context) {
	t.Helper()
	if c == nil {
		t.Fatalf("nil context")
	}
	for r, rs := range c.m {
		if len(rs) == 0 {
			t.Fatalf("context holds no runs for %v", r)
		}
		for i, s := range rs {
			if s.lo == 0 || s.lo > s.hi || (i > 0 && s.lo <= rs[i-1].hi+1) {
				t.Fatalf("context runs of %v malformed: %v", r, rs)
			}
		}
	}
}

func checkStore(t tb, kind Type, s store, ctx *Context, seen map[Dot]bool) {
	t.Helper()
	if s.empty() {
		t.Fatalf("empty %s store", kind)
	}
	hold := func(d Dot) {
		if !ctx.Contains(d) {
			t.Fatalf("%s store holds %v, not in the context", kind, d)
		}
		if seen[d] {
			t.Fatalf("%s store holds %v twice", kind, d)
		}
		seen[d] = true
	}
	switch kind {
	case TypeEWFlag:
		ds, ok := s.(dotSet)
		if !ok {
			t.Fatalf("EWFlag store is %T", s)
		}
		if !slices.IsSortedFunc(ds, Dot.Compare) {
			t.Fatalf("dot set not sorted: %v", ds)
		}
		ds.eachDot(hold)
	case TypeMVRegister:
		f, ok := s.(dotFun)
		if !ok {
			t.Fatalf("MVRegister store is %T", s)
		}
		// a dot fun is a slice sorted by dot (looked up by binary search)
		if !slices.IsSortedFunc(dotsOf(f), Dot.Compare) {
			t.Fatalf("dot fun not sorted: %v", dotsOf(f))
		}
		f.eachDot(hold)
	case TypeORSet:
		m, ok := s.(dotMap)
		if !ok {
			t.Fatalf("ORSet store is %T", s)
		}
		for _, es := range m {
			checkStore(t, TypeEWFlag, es, ctx, seen)
		}
	case TypeORMap:
		m, ok := s.(dotMap)
		if !ok {
			t.Fatalf("ORMap store is %T", s)
		}
		for k, es := range m {
			if len(k) == 0 || !Nestable(Type(k[0])) {
				t.Fatalf("ORMap entry key %q has no nestable type", k)
			}
			checkStore(t, Type(k[0]), es, ctx, seen)
		}
	}
}

// ---------------------------------------------------------- decomposition

// irreducibles returns the join-irreducible decomposition of v: counter
// entries, set elements, ballots, the register's write, and for causal
// types one value per dot of the context (holding the dot in its place in
// the store if v holds it, else only the dot in the context).
func irreducibles(v Value) []Value {
	var out []Value
	switch x := v.(type) {
	case *GCounter:
		for _, e := range x.es {
			out = append(out, &GCounter{es: []gEntry{e}})
		}
		for r, at := range x.pruned {
			out = append(out, &GCounter{pruned: markers{r: at}})
		}
	case *PNCounter:
		for r, at := range x.pruned {
			out = append(out, &PNCounter{p: NewGCounter(), n: NewGCounter(), pruned: markers{r: at}})
		}
		for _, e := range x.p.es {
			out = append(out, &PNCounter{p: &GCounter{es: []gEntry{e}}, n: NewGCounter()})
		}
		for _, e := range x.n.es {
			out = append(out, &PNCounter{p: NewGCounter(), n: &GCounter{es: []gEntry{e}}})
		}
	case *GSet:
		for e := range x.m {
			out = append(out, &GSet{m: map[string]struct{}{e: {}}})
		}
	case *LWWRegister, *Flag:
		if !v.IsBottom() {
			out = append(out, v.Clone())
		}
	case *Vote:
		for r, b := range x.m {
			out = append(out, &Vote{m: map[ReplicaID]ballot{r: b}})
		}
		for r, at := range x.pruned {
			out = append(out, &Vote{m: map[ReplicaID]ballot{}, pruned: markers{r: at}})
		}
	case *ORSet, *MVRegister, *EWFlag, *ORMap:
		c := causalOf(v)
		for r, at := range c.pruned {
			one := causal{ctx: NewContext(), pruned: markers{r: at}}
			if rn := c.renamed[r]; rn != nil {
				one.renamed = renames{r: rn}
			}
			out = append(out, wrapCausal(v.Type(), one))
		}
		c.ctx.ForEach(func(d Dot) bool {
			one := causal{ctx: contextOf([]Dot{d})}
			if c.s != nil {
				one.s = c.s.filter(keepIf(func(x Dot) bool { return x == d }))
			}
			out = append(out, wrapCausal(v.Type(), one))
			return true
		})
	}
	return out
}

// wrapCausal builds a top-level value of type t (indexing its dots if t
// keeps an index).
func wrapCausal(t Type, c causal) Value {
	switch t {
	case TypeORSet:
		return &ORSet{c: indexed(c)}
	case TypeMVRegister:
		return &MVRegister{c: c}
	case TypeEWFlag:
		return &EWFlag{c: c}
	case TypeORMap:
		return &ORMap{c: indexed(c)}
	}
	panic("wrapCausal of " + t.String())
}
