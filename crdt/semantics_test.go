package crdt

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/statemesh/statemesh/internal/hlc"
)

var (
	ra = ReplicaID{"a", 1}
	rb = ReplicaID{"b", 1}
	rc = ReplicaID{"c", 1}
)

func must[V any](t *testing.T) func(V, error) V {
	return func(v V, err error) V {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func join(t *testing.T, x Value, ys ...Value) bool {
	t.Helper()
	ch := false
	for _, y := range ys {
		c, err := Join(x, y)
		if err != nil {
			t.Fatal(err)
		}
		ch = ch || c
		checkInvariants(t, x)
	}
	return ch
}

func elems(s *ORSet) []string {
	var out []string
	for _, e := range s.Elements() {
		out = append(out, string(e))
	}
	return out
}

func TestORSetAddWins(t *testing.T) {
	x, y := NewORSet(), NewORSet()
	join(t, y, x.Add(ra, []byte("e")))
	// concurrently: y removes e, x adds it again
	rm := y.Remove([]byte("e"))
	add := x.Add(ra, []byte("e"))
	join(t, x, rm)
	join(t, y, add)
	if !x.Equal(y) || !x.Contains([]byte("e")) {
		t.Fatalf("add-wins: x %q, y %q", elems(x), elems(y))
	}
	// a concurrent add by another replica also survives a remove that did
	// not see it
	z := NewORSet()
	join(t, z, x)
	rm = z.Remove([]byte("e"))
	addB := y.Add(rb, []byte("e"))
	join(t, z, addB)
	join(t, y, rm)
	if !z.Contains([]byte("e")) || !y.Contains([]byte("e")) || !z.Equal(y) {
		t.Fatalf("concurrent add by b lost: z %q y %q", elems(z), elems(y))
	}
}

func TestORSetRemoveThenReAdd(t *testing.T) {
	x, y := NewORSet(), NewORSet()
	join(t, y, x.Add(ra, []byte("e")), x.Add(ra, []byte("f")))
	rm := y.Remove([]byte("e"))
	if y.Contains([]byte("e")) || !slices.Equal(elems(y), []string{"f"}) {
		t.Fatalf("after remove: %q", elems(y))
	}
	if d := y.Remove([]byte("e")); !d.IsBottom() {
		t.Fatalf("removing an absent element gave a non-bottom delta")
	}
	join(t, x, rm)
	if x.Contains([]byte("e")) {
		t.Fatalf("observed remove not applied: %q", elems(x))
	}
	re := x.Add(rb, []byte("e"))
	join(t, y, re)
	if !x.Equal(y) || !slices.Equal(elems(y), []string{"e", "f"}) {
		t.Fatalf("re-add: x %q y %q", elems(x), elems(y))
	}
	// a re-delivered remove changes nothing
	if ch := join(t, y, rm); ch {
		t.Fatalf("re-delivered remove inflated the state")
	}
	// clear removes everything observed
	cl := y.Clear()
	join(t, x, cl)
	if x.Len() != 0 || y.Len() != 0 || !x.Equal(y) {
		t.Fatalf("clear: x %q y %q", elems(x), elems(y))
	}
}

// A join in which the receiver's only entries disappear while the other
// side brings new ones must keep the new ones, whatever order the map is
// walked in (this once lost them half of the time).
func TestORSetJoinEmptiesThenAdds(t *testing.T) {
	for i := 0; i < 64; i++ {
		a, b, c := NewORSet(), NewORSet(), NewORSet()
		join(t, a, b.Add(rb, []byte("A")))
		a.Remove([]byte("A"))
		join(t, c, a.Add(ra, []byte("A"))) // a holds A with a new dot only
		join(t, b, c.Remove([]byte("A")))  // b saw that dot removed
		b.Add(rb, []byte("B"))
		x := a.Clone()
		join(t, x, b)
		y := b.Clone()
		join(t, y, a)
		if !x.Equal(y) || !slices.Equal(elems(x.(*ORSet)), []string{"B"}) {
			t.Fatalf("a ⊔ b = %q, b ⊔ a = %q", elems(x.(*ORSet)), elems(y.(*ORSet)))
		}
	}
}

func TestLWWRegisterTieBreak(t *testing.T) {
	ts := hlc.Timestamp{WallNanos: 100, Logical: 3}
	x, y := NewLWWRegister(), NewLWWRegister()
	dx := x.Set(ra, ts, []byte("from a"))
	dy := y.Set(rb, ts, []byte("from b"))
	join(t, x, dy)
	join(t, y, dx)
	vx, _ := x.Get()
	vy, _ := y.Get()
	if !x.Equal(y) || string(vx) != "from b" || string(vy) != "from b" {
		t.Fatalf("tie break: x %q y %q, want the write of b (greater replica id)", vx, vy)
	}
	if _, r := x.Timestamp(); r != rb {
		t.Fatalf("winner %v", r)
	}
	// same node, higher incarnation wins a tie too
	a2 := ReplicaID{"a", 2}
	z := NewLWWRegister()
	join(t, z, z.Set(a2, ts, []byte("a#2")), dx)
	if v, _ := z.Get(); string(v) != "a#2" {
		t.Fatalf("incarnation tie break: %q", v)
	}
	// a later timestamp beats a greater replica id
	later := x.Set(ra, hlc.Timestamp{WallNanos: 101}, []byte("later"))
	join(t, y, later)
	if v, _ := y.Get(); string(v) != "later" {
		t.Fatalf("later write lost: %q", v)
	}
}

func TestLWWRegisterSetBehindWinsLocally(t *testing.T) {
	x := NewLWWRegister()
	if _, ok := x.Get(); ok {
		t.Fatalf("new register is set")
	}
	remote := NewLWWRegister()
	join(t, x, remote.Set(rb, hlc.Timestamp{WallNanos: 1000, Logical: 7}, []byte("remote")))
	d := x.Set(ra, hlc.Timestamp{WallNanos: 10}, []byte("local"))
	v, ok := x.Get()
	if !ok || string(v) != "local" {
		t.Fatalf("local write behind the current one lost locally: %q", v)
	}
	ts, r := d.Timestamp()
	if want := (hlc.Timestamp{WallNanos: 1000, Logical: 8}); ts != want || r != ra {
		t.Fatalf("delta timestamp %v by %v, want %v by %v", ts, r, want, ra)
	}
	// and it wins everywhere
	y := NewLWWRegister()
	join(t, y, remote, d)
	if v, _ := y.Get(); string(v) != "local" {
		t.Fatalf("remote replica has %q", v)
	}
	// at the logical limit the wall clock moves on
	z := NewLWWRegister()
	z.Set(rb, hlc.Timestamp{WallNanos: 5, Logical: math.MaxUint32}, nil)
	dz := z.Set(ra, hlc.Timestamp{WallNanos: 5}, []byte("next"))
	if ts, _ := dz.Timestamp(); ts != (hlc.Timestamp{WallNanos: 6}) {
		t.Fatalf("timestamp after the logical limit: %v", ts)
	}
	// equal timestamps: a local write with the same timestamp is bumped too
	w := NewLWWRegister()
	w.Set(rc, hlc.Timestamp{WallNanos: 5}, []byte("c"))
	w.Set(ra, hlc.Timestamp{WallNanos: 5}, []byte("a"))
	if v, _ := w.Get(); string(v) != "a" {
		t.Fatalf("same-timestamp local write by a smaller id lost: %q", v)
	}
	// the value returned by Get is a copy
	v, _ = w.Get()
	v[0] = 'z'
	if v2, _ := w.Get(); string(v2) != "a" {
		t.Fatalf("Get aliases the register's value")
	}
}

func mvValues(m *MVRegister) []string {
	var out []string
	for _, v := range m.Values() {
		out = append(out, string(v))
	}
	return out
}

func TestMVRegisterConcurrentValues(t *testing.T) {
	x, y, z := NewMVRegister(), NewMVRegister(), NewMVRegister()
	dx := x.Assign(ra, []byte("1"))
	dy := y.Assign(rb, []byte("2"))
	dz := z.Assign(rc, []byte("2"))
	join(t, x, dy, dz)
	join(t, y, dx, dz)
	if !x.Equal(y) || !slices.Equal(mvValues(x), []string{"1", "2"}) {
		t.Fatalf("concurrent values: x %q y %q", mvValues(x), mvValues(y))
	}
	if x.Size() != 3 {
		t.Fatalf("Size %d, want 3 concurrent writes", x.Size())
	}
	// a later write covers all it observed
	d := y.Assign(rb, []byte("3"))
	join(t, x, d)
	if !slices.Equal(mvValues(x), []string{"3"}) || !x.Equal(y) {
		t.Fatalf("later write: %q", mvValues(x))
	}
	// z has not seen the others: its next write is concurrent with "3"
	join(t, x, z.Assign(rc, []byte("4")))
	if !slices.Equal(mvValues(x), []string{"3", "4"}) {
		t.Fatalf("write concurrent with the cover: %q", mvValues(x))
	}
	cl := x.Clear()
	join(t, y, cl)
	if len(x.Values()) != 0 || len(y.Values()) != 0 {
		t.Fatalf("clear: %q %q", mvValues(x), mvValues(y))
	}
}

func TestEWFlagEnableWins(t *testing.T) {
	x, y := NewEWFlag(), NewEWFlag()
	join(t, y, x.Enable(ra))
	dis := y.Disable()
	en := x.Enable(ra)
	join(t, x, dis)
	join(t, y, en)
	if !x.Enabled() || !y.Enabled() || !x.Equal(y) {
		t.Fatalf("enable-wins: x %v y %v", x.Enabled(), y.Enabled())
	}
	// an observed disable wins
	join(t, x, y.Disable())
	if x.Enabled() || y.Enabled() {
		t.Fatalf("observed disable lost")
	}
	if d := x.Disable(); !d.IsBottom() {
		t.Fatalf("disable of a disabled flag is not bottom")
	}
}

func TestFlagMonotonic(t *testing.T) {
	x, y := NewFlag(), NewFlag()
	if x.Enabled() || !x.IsBottom() {
		t.Fatalf("new flag enabled")
	}
	d := x.Enable()
	if !x.Enabled() || d.IsBottom() {
		t.Fatalf("Enable")
	}
	if d2 := x.Enable(); !d2.IsBottom() {
		t.Fatalf("second Enable gave a non-bottom delta")
	}
	if join(t, x, NewFlag()) || !x.Enabled() {
		t.Fatalf("joining a disabled flag changed an enabled one")
	}
	if !join(t, y, d) || !y.Enabled() || join(t, y, d) {
		t.Fatalf("join of the enable delta")
	}
}

func assignMV(r ReplicaID, v string) func(Value) (Value, error) {
	return func(x Value) (Value, error) { return x.(*MVRegister).Assign(r, []byte(v)), nil }
}

func addSet(r ReplicaID, es ...string) func(Value) (Value, error) {
	return func(x Value) (Value, error) {
		s := x.(*ORSet)
		d := NewORSet()
		for _, e := range es {
			if _, err := Join(d, s.Add(r, []byte(e))); err != nil {
				return nil, err
			}
		}
		return d, nil
	}
}

func TestORMapUpdateWinsOverRemove(t *testing.T) {
	mustM := must[*ORMap](t)
	x, y := NewORMap(), NewORMap()
	join(t, y, mustM(x.Update(ra, []byte("k"), TypeORSet, addSet(ra, "1", "2"))))
	// concurrently: x removes k, y adds "3" to k
	rm := x.Remove([]byte("k"), TypeORSet)
	up := mustM(y.Update(rb, []byte("k"), TypeORSet, addSet(rb, "3")))
	join(t, x, up)
	join(t, y, rm)
	if !x.Equal(y) {
		t.Fatalf("replicas differ")
	}
	v := x.Get([]byte("k"), TypeORSet)
	if v == nil {
		t.Fatalf("update lost to a concurrent remove")
	}
	if got := elems(v.(*ORSet)); !slices.Equal(got, []string{"3"}) {
		t.Fatalf("entry keeps %q, want only the update's part [3]", got)
	}
	// an observed remove wins
	join(t, y, x.Remove([]byte("k"), TypeORSet))
	if y.Len() != 0 || y.Get([]byte("k"), TypeORSet) != nil {
		t.Fatalf("observed remove: %v", y.Keys())
	}
	if d := y.Remove([]byte("k"), TypeORSet); !d.IsBottom() {
		t.Fatalf("removing an absent key is not bottom")
	}
}

func TestORMapConcurrentTypes(t *testing.T) {
	mustM := must[*ORMap](t)
	x, y := NewORMap(), NewORMap()
	dx := mustM(x.Update(ra, []byte("k"), TypeMVRegister, assignMV(ra, "v")))
	dy := mustM(y.Update(rb, []byte("k"), TypeORSet, addSet(rb, "e")))
	join(t, x, dy)
	join(t, y, dx)
	if !x.Equal(y) {
		t.Fatalf("replicas differ")
	}
	want := []MapKey{{[]byte("k"), TypeORSet}, {[]byte("k"), TypeMVRegister}}
	if got := x.Keys(); len(got) != 2 || !bytes.Equal(got[0].Key, want[0].Key) || got[0].Type != want[0].Type || got[1].Type != want[1].Type {
		t.Fatalf("keys %v, want %v", got, want)
	}
	if v := x.Get([]byte("k"), TypeMVRegister); v == nil || !slices.Equal(mvValues(v.(*MVRegister)), []string{"v"}) {
		t.Fatalf("MVRegister entry %v", v)
	}
	if v := x.Get([]byte("k"), TypeORSet); v == nil || !slices.Equal(elems(v.(*ORSet)), []string{"e"}) {
		t.Fatalf("ORSet entry %v", v)
	}
	// removing one type leaves the other
	join(t, y, x.Remove([]byte("k"), TypeORSet))
	if keys := y.Keys(); len(keys) != 1 || keys[0].Type != TypeMVRegister {
		t.Fatalf("after removing the ORSet entry: %v", keys)
	}
}

func TestORMapNestedAndErrors(t *testing.T) {
	mustM := must[*ORMap](t)
	x, y := NewORMap(), NewORMap()
	inner := func(v Value) (Value, error) {
		return v.(*ORMap).Update(ra, []byte("in"), TypeEWFlag, func(f Value) (Value, error) {
			return f.(*EWFlag).Enable(ra), nil
		})
	}
	join(t, y, mustM(x.Update(ra, []byte("out"), TypeORMap, inner)))
	nv := y.Get([]byte("out"), TypeORMap)
	if nv == nil {
		t.Fatalf("nested map missing")
	}
	f := nv.(*ORMap).Get([]byte("in"), TypeEWFlag)
	if f == nil || !f.(*EWFlag).Enabled() {
		t.Fatalf("nested flag: %v", f)
	}
	// Get returns a copy: changing it changes nothing in the map
	f.(*EWFlag).Disable()
	nv.(*ORMap).Remove([]byte("in"), TypeEWFlag)
	if g := y.Get([]byte("out"), TypeORMap).(*ORMap).Get([]byte("in"), TypeEWFlag); g == nil || !g.(*EWFlag).Enabled() {
		t.Fatalf("mutating a Get copy changed the map")
	}
	// disabling the only flag empties the nested map, which leaves the map
	join(t, x, mustM(y.Update(rb, []byte("out"), TypeORMap, func(v Value) (Value, error) {
		return v.(*ORMap).Update(rb, []byte("in"), TypeEWFlag, func(f Value) (Value, error) {
			return f.(*EWFlag).Disable(), nil
		})
	})))
	if x.Len() != 0 || y.Len() != 0 {
		t.Fatalf("empty nested entries remain: %v %v", x.Keys(), y.Keys())
	}

	for _, typ := range []Type{TypeGCounter, TypePNCounter, TypeGSet, TypeLWWRegister, TypeFlag, TypeVote, Type(0), Type(200)} {
		if _, err := x.Update(ra, []byte("k"), typ, assignMV(ra, "v")); !errors.Is(err, ErrInvalidArg) {
			t.Errorf("Update with %s: %v, want ErrInvalidArg", typ, err)
		}
	}
	boom := errors.New("boom")
	if _, err := x.Update(ra, []byte("k"), TypeMVRegister, func(Value) (Value, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Errorf("fn error: %v", err)
	}
	if _, err := x.Update(ra, []byte("k"), TypeMVRegister, func(Value) (Value, error) { return NewORSet(), nil }); !errors.Is(err, ErrTypeMismatch) {
		t.Errorf("wrong delta type: %v", err)
	}
	if _, err := x.Update(ra, []byte("k"), TypeMVRegister, func(Value) (Value, error) { return nil, nil }); !errors.Is(err, ErrTypeMismatch) {
		t.Errorf("nil delta: %v", err)
	}
	// an fn that mutates then fails leaves its mutation applied
	_, err := x.Update(ra, []byte("k"), TypeMVRegister, func(v Value) (Value, error) {
		v.(*MVRegister).Assign(ra, []byte("kept"))
		return nil, boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("fn error: %v", err)
	}
	if v := x.Get([]byte("k"), TypeMVRegister); v == nil || !slices.Equal(mvValues(v.(*MVRegister)), []string{"kept"}) {
		t.Fatalf("mutation before the error: %v", v)
	}
	checkInvariants(t, x)
}

func TestVoteRemovedVoter(t *testing.T) {
	mustV := must[*Vote](t)
	x, y := NewVote(), NewVote()
	join(t, y, mustV(x.Set(ra, true)), mustV(x.Set(ra, false)))
	join(t, x, mustV(y.Set(rb, true)))
	if x.Voters() != 2 || x.VotesFor() != 1 {
		t.Fatalf("voters %d for %d", x.Voters(), x.VotesFor())
	}
	// y removes a while a concurrently casts a later vote
	rm := y.Remove(ra)
	later := mustV(x.Set(ra, true))
	join(t, x, rm)
	join(t, y, later)
	if !x.Equal(y) {
		t.Fatalf("replicas differ")
	}
	for _, v := range []*Vote{x, y} {
		if _, ok := v.VoteOf(ra); ok {
			t.Fatalf("removed replica still votes")
		}
		if v.Voters() != 1 || v.VotesFor() != 1 {
			t.Fatalf("voters %d for %d, want 1 and 1 (b only)", v.Voters(), v.VotesFor())
		}
	}
	// a removed replica cannot vote again
	if d, err := x.Set(ra, true); !errors.Is(err, ErrInvalidArg) || d != nil {
		t.Fatalf("removed replica voted: %v %v", d, err)
	}
	if d := x.Remove(ra); !d.IsBottom() {
		t.Fatalf("second removal not bottom")
	}
	// removing a replica that never voted keeps it out for good
	join(t, x, y.Remove(rc))
	if _, err := x.Set(rc, true); !errors.Is(err, ErrInvalidArg) {
		t.Fatalf("replica removed before voting could vote: %v", err)
	}
	if x.Voters() != 1 {
		t.Fatalf("voters %d", x.Voters())
	}
	if v, ok := x.VoteOf(rb); !ok || !v {
		t.Fatalf("VoteOf(b) = %v %v", v, ok)
	}
}

func TestPNCounterMinInt64(t *testing.T) {
	mustP := must[*PNCounter](t)
	x, y := NewPNCounter(), NewPNCounter()
	d := mustP(x.Increment(ra, math.MinInt64))
	if x.Value() != math.MinInt64 {
		t.Fatalf("value %d", x.Value())
	}
	join(t, y, d)
	if y.Value() != math.MinInt64 || !x.Equal(y) {
		t.Fatalf("replica value %d", y.Value())
	}
	join(t, y, mustP(x.Increment(rb, math.MaxInt64)), mustP(x.Increment(rb, 1)))
	if y.Value() != 0 || x.Value() != 0 {
		t.Fatalf("after +MaxInt64+1: %d %d", x.Value(), y.Value())
	}
	// a's decrement side is at 2^63: another 2^63 overflows it
	before := x.Clone()
	if d, err := x.Increment(ra, math.MinInt64); !errors.Is(err, ErrInvalidArg) || d != nil {
		t.Fatalf("overflowing decrement: %v %v", d, err)
	}
	if !before.Equal(x) {
		t.Fatalf("failed decrement changed the counter")
	}
	mustP(x.Increment(ra, -(1 << 62)))
	mustP(x.Increment(ra, -(1<<62 - 1))) // decrement side at 2^64-1
	if _, err := x.Increment(ra, -1); !errors.Is(err, ErrInvalidArg) {
		t.Fatalf("decrement side past 2^64-1: %v", err)
	}
	if d := mustP(x.Increment(ra, 0)); !d.IsBottom() {
		t.Fatalf("zero increment not bottom")
	}
}

func TestGCounterOverflow(t *testing.T) {
	mustG := must[*GCounter](t)
	x := NewGCounter()
	mustG(x.Increment(ra, math.MaxUint64-1))
	mustG(x.Increment(rb, 5))
	before := x.Clone()
	for _, n := range []uint64{2, math.MaxUint64} {
		if d, err := x.Increment(ra, n); !errors.Is(err, ErrInvalidArg) || d != nil {
			t.Fatalf("Increment(%d): %v %v", n, d, err)
		}
		if !before.Equal(x) {
			t.Fatalf("failed increment changed the counter")
		}
	}
	d := mustG(x.Increment(ra, 1))
	if x.Entry(ra) != math.MaxUint64 || d.Entry(ra) != math.MaxUint64 {
		t.Fatalf("entry %d", x.Entry(ra))
	}
	// the value wraps modulo 2^64
	if x.Value() != 4 {
		t.Fatalf("value %d, want (2^64-1+5) mod 2^64 = 4", x.Value())
	}
	if d := mustG(x.Increment(rb, 0)); !d.IsBottom() {
		t.Fatalf("zero increment not bottom")
	}
}

func TestTypeMismatch(t *testing.T) {
	for _, a := range specs {
		for _, b := range specs {
			if a == b {
				continue
			}
			x, y := bottom(a.typ), bottom(b.typ)
			if a.typ == TypeGCounter {
				must[*GCounter](t)(x.(*GCounter).Increment(ra, 1))
			}
			before := x.Clone()
			if ch, err := Join(x, y); !errors.Is(err, ErrTypeMismatch) || ch {
				t.Errorf("Join(%s, %s) = %v, %v", a.typ, b.typ, ch, err)
			}
			if !before.Equal(x) {
				t.Errorf("failed Join changed the receiver")
			}
			if e, err := Extract(x, y); !errors.Is(err, ErrTypeMismatch) || e != nil {
				t.Errorf("Extract(%s, %s) = %v, %v", a.typ, b.typ, e, err)
			}
			if _, err := Leq(x, y); !errors.Is(err, ErrTypeMismatch) {
				t.Errorf("Leq(%s, %s): %v", a.typ, b.typ, err)
			}
			if x.Equal(y) || y.Equal(x) {
				t.Errorf("%s Equal %s", a.typ, b.typ)
			}
		}
	}
}

func TestTypes(t *testing.T) {
	for _, sp := range specs {
		v, err := New(sp.typ)
		if err != nil || v.Type() != sp.typ || !v.IsBottom() || v.Size() != 0 {
			t.Errorf("New(%s) = %v, %v", sp.typ, v, err)
		}
		if !sp.typ.Valid() || sp.typ.String() == "" {
			t.Errorf("type %d", sp.typ)
		}
		if Nestable(sp.typ) != slices.Contains(nestable, sp.typ) {
			t.Errorf("Nestable(%s)", sp.typ)
		}
	}
	for _, typ := range []Type{0, 11, 255} {
		if _, err := New(typ); !errors.Is(err, ErrUnknownType) {
			t.Errorf("New(%d): %v", typ, err)
		}
		if typ.Valid() || typ.String() != fmt.Sprintf("Type(%d)", uint8(typ)) {
			t.Errorf("Type(%d) valid or named %q", typ, typ.String())
		}
	}
	if err := ValidateReplica(ReplicaID{}); !errors.Is(err, ErrInvalidArg) {
		t.Errorf("empty node name: %v", err)
	}
	if err := ValidateReplica(ReplicaID{Node: "\xff"}); !errors.Is(err, ErrInvalidArg) {
		t.Errorf("invalid UTF-8: %v", err)
	}
	if err := ValidateReplica(ReplicaID{Node: string(make([]byte, 256))}); !errors.Is(err, ErrInvalidArg) {
		t.Errorf("long node name: %v", err)
	}
	if err := ValidateReplica(ReplicaID{Node: "é", Incarnation: math.MaxUint64}); err != nil {
		t.Errorf("valid replica: %v", err)
	}
}
