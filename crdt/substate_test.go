package crdt

// Arbitrary causal states. Histories reach only some shapes of state; the
// lattice laws must hold for every well-formed one. This test runs a
// history to get a universe of dots (what each dot added, and whether it
// was removed), then builds states that know an arbitrary subset of those
// dots, each either as live (in the store) or as removed (only in the
// context) if it was removed at all. Such states are built through the
// wire form, so the test does not depend on the in-memory representation.

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"

	"github.com/statemesh/statemesh/protocol/crdtpb"
)

// universe runs a history of sp over a few replicas and returns the union
// of every replica's reference.
func universe(t *rapid.T, sp *spec) *causalRef {
	s := rapidSrc{t}
	n := rapid.IntRange(2, 3).Draw(t, "replicas")
	ids := genReplicas(s, n)
	states, refs := make([]Value, n), make([]refModel, n)
	for i := range n {
		states[i], refs[i] = bottom(sp.typ), sp.newRef()
	}
	for range rapid.IntRange(1, 25).Draw(t, "steps") {
		i := s.intn("replica", n)
		if s.intn("join", 4) == 0 {
			j := s.intn("from", n)
			mustJoin(t, states[i], states[j])
			refs[i].join(refs[j])
			continue
		}
		_, _, _ = sp.mutate(t, s, ids[i], ids, states[i], refs[i])
	}
	u := newCausalRef()
	for _, r := range refs {
		u.join(r)
	}
	return u
}

// substate draws a state knowing a subset of u's dots.
func substate(t *rapid.T, typ Type, u *causalRef, label string) (Value, *causalRef) {
	all := slices.SortedFunc(maps.Keys(u.adds), Dot.Compare)
	ref := newCausalRef()
	for _, d := range all {
		forms := 2 // absent, live
		if u.removed[d] {
			forms = 3 // or removed
		}
		switch rapid.IntRange(0, forms-1).Draw(t, label) {
		case 1:
			ref.adds[d] = u.adds[d]
		case 2:
			ref.adds[d] = u.adds[d]
			ref.removed[d] = true
		}
	}
	st := causalProto(typ, ref)
	b, err := proto.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	v, err := Decode(b, DefaultLimits)
	if err != nil {
		t.Fatalf("a well-formed %s substate does not decode: %v", typ, err)
	}
	return v, ref
}

// causalProto builds the wire form of the state ref models.
func causalProto(typ Type, ref *causalRef) *crdtpb.State {
	st := &crdtpb.State{}
	idx := map[ReplicaID]uint32{}
	rep := func(r ReplicaID) uint32 {
		i, ok := idx[r]
		if !ok {
			i = uint32(len(st.Replicas))
			idx[r] = i
			st.Replicas = append(st.Replicas, &crdtpb.Replica{Node: r.Node, Incarnation: r.Incarnation})
		}
		return i
	}
	// context: runs of the sorted dots of each replica
	ctx := &crdtpb.Context{}
	var cur *crdtpb.ReplicaRuns
	var curRep ReplicaID
	for _, d := range slices.SortedFunc(maps.Keys(ref.adds), Dot.Compare) {
		if cur == nil || d.Replica.ID() != curRep {
			cur = &crdtpb.ReplicaRuns{Replica: rep(d.Replica.ID())}
			curRep = d.Replica.ID()
			ctx.Replicas = append(ctx.Replicas, cur)
		}
		if n := len(cur.Runs); n > 0 && cur.Runs[n-1]+1 == d.Seq {
			cur.Runs[n-1] = d.Seq
		} else {
			cur.Runs = append(cur.Runs, d.Seq, d.Seq)
		}
	}
	live := ref.liveLeaves()
	dots := func(prefix string, match func(leaf) bool) *crdtpb.Dots {
		out := &crdtpb.Dots{}
		for _, d := range slices.SortedFunc(maps.Keys(live), Dot.Compare) {
			if l := live[d]; l.path == prefix && match(l) {
				out.Replica = append(out.Replica, rep(d.Replica.ID()))
				out.Seq = append(out.Seq, d.Seq)
			}
		}
		return out
	}
	setEntries := func(prefix string) []*crdtpb.ORSetEntry {
		var out []*crdtpb.ORSetEntry
		seen := map[string]bool{}
		for _, l := range live {
			if l.path == prefix && !seen[l.val] {
				seen[l.val] = true
				out = append(out, &crdtpb.ORSetEntry{Element: []byte(l.val), Dots: dots(prefix, func(x leaf) bool { return x.val == l.val })})
			}
		}
		return out
	}
	mvEntries := func(prefix string) []*crdtpb.MVEntry {
		var out []*crdtpb.MVEntry
		for d, l := range live {
			if l.path == prefix {
				out = append(out, &crdtpb.MVEntry{Replica: rep(d.Replica.ID()), Seq: d.Seq, Value: []byte(l.val)})
			}
		}
		return out
	}
	var mapEntries func(prefix string) []*crdtpb.ORMapEntry
	mapEntries = func(prefix string) []*crdtpb.ORMapEntry {
		var out []*crdtpb.ORMapEntry
		seen := map[string]bool{}
		for _, l := range live {
			if len(l.path) <= len(prefix) || !strings.HasPrefix(l.path, prefix) {
				continue
			}
			rest := l.path[len(prefix):]
			sg := rest[:2+int(rest[1])]
			if seen[sg] {
				continue
			}
			seen[sg] = true
			t, key, p := Type(sg[0]), []byte(sg[2:]), prefix+sg
			e := &crdtpb.ORMapEntry{Key: key, Type: crdtpb.Type(t)}
			switch t {
			case TypeORSet:
				e.Store = &crdtpb.ORMapEntry_Orset{Orset: &crdtpb.ORSetStore{Entries: setEntries(p)}}
			case TypeMVRegister:
				e.Store = &crdtpb.ORMapEntry_Mvregister{Mvregister: &crdtpb.MVStore{Entries: mvEntries(p)}}
			case TypeEWFlag:
				e.Store = &crdtpb.ORMapEntry_Ewflag{Ewflag: dots(p, func(leaf) bool { return true })}
			case TypeORMap:
				e.Store = &crdtpb.ORMapEntry_Ormap{Ormap: &crdtpb.ORMapStore{Entries: mapEntries(p)}}
			}
			out = append(out, e)
		}
		return out
	}
	switch typ {
	case TypeORSet:
		st.Value = &crdtpb.State_Orset{Orset: &crdtpb.ORSet{Context: ctx, Entries: setEntries("")}}
	case TypeMVRegister:
		st.Value = &crdtpb.State_Mvregister{Mvregister: &crdtpb.MVRegister{Context: ctx, Entries: mvEntries("")}}
	case TypeEWFlag:
		st.Value = &crdtpb.State_Ewflag{Ewflag: &crdtpb.EWFlag{Context: ctx, Dots: dots("", func(leaf) bool { return true })}}
	case TypeORMap:
		st.Value = &crdtpb.State_Ormap{Ormap: &crdtpb.ORMap{Context: ctx, Entries: mapEntries("")}}
	}
	return st
}

func TestCausalSubstates(t *testing.T) {
	for _, sp := range []*spec{orsetSpec, mvSpec, ewflagSpec, ormapSpec} {
		t.Run(sp.String(), func(t *testing.T) {
			t.Parallel()
			rapid.Check(t, func(t *rapid.T) {
				u := universe(t, sp)
				var vs []pooled
				for range 8 {
					v, ref := substate(t, sp.typ, u, "form")
					checkInvariants(t, v)
					sp.check(t, v, ref)
					vs = append(vs, pooled{v: v, ref: ref})
				}
				for _, a := range vs {
					for _, b := range vs {
						x := a.v.Clone()
						checkedJoin(t, x, b.v)
						r := a.ref.clone()
						r.join(b.ref)
						sp.check(t, x, r)
					}
				}
				checkLaws(t, sp, vs[0], vs[1], vs[2])
				checkLaws(t, sp, vs[3], vs[4], vs[5])
				checkLaws(t, sp, vs[6], vs[7], vs[0])
			})
		})
	}
}
