package crdt

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/protocol/crdtpb"
)

func pbReps(names ...string) []*crdtpb.Replica {
	var out []*crdtpb.Replica
	for _, n := range names {
		out = append(out, &crdtpb.Replica{Node: n, Incarnation: 1})
	}
	return out
}

// pbCtx builds a context: replica index -> runs.
func pbCtx(rs ...[]uint64) *crdtpb.Context {
	c := &crdtpb.Context{}
	for i, r := range rs {
		if r != nil {
			c.Replicas = append(c.Replicas, &crdtpb.ReplicaRuns{Replica: uint32(i), Runs: r})
		}
	}
	return c
}

func pbDots(pairs ...uint64) *crdtpb.Dots {
	d := &crdtpb.Dots{}
	for i := 0; i+1 < len(pairs); i += 2 {
		d.Replica = append(d.Replica, uint32(pairs[i]))
		d.Seq = append(d.Seq, pairs[i+1])
	}
	return d
}

func pbORSet(ctx *crdtpb.Context, es ...*crdtpb.ORSetEntry) *crdtpb.State {
	return &crdtpb.State{Replicas: pbReps("a", "b"), Value: &crdtpb.State_Orset{Orset: &crdtpb.ORSet{Context: ctx, Entries: es}}}
}

func pbElem(e string, d *crdtpb.Dots) *crdtpb.ORSetEntry {
	return &crdtpb.ORSetEntry{Element: []byte(e), Dots: d}
}

func pbORMap(ctx *crdtpb.Context, es ...*crdtpb.ORMapEntry) *crdtpb.State {
	return &crdtpb.State{Replicas: pbReps("a", "b"), Value: &crdtpb.State_Ormap{Ormap: &crdtpb.ORMap{Context: ctx, Entries: es}}}
}

func pbFlagEntry(key string, d *crdtpb.Dots) *crdtpb.ORMapEntry {
	return &crdtpb.ORMapEntry{Key: []byte(key), Type: crdtpb.Type_TYPE_EWFLAG, Store: &crdtpb.ORMapEntry_Ewflag{Ewflag: d}}
}

// pbNested returns an ORMap entry nesting maps depth levels deep around a
// flag holding dot (0, 1).
func pbNested(depth int) *crdtpb.ORMapEntry {
	e := pbFlagEntry("f", pbDots(0, 1))
	for range depth {
		e = &crdtpb.ORMapEntry{Key: []byte("m"), Type: crdtpb.Type_TYPE_ORMAP, Store: &crdtpb.ORMapEntry_Ormap{Ormap: &crdtpb.ORMapStore{Entries: []*crdtpb.ORMapEntry{e}}}}
	}
	return e
}

func pbGCounter(replicas []uint32, counts []uint64) *crdtpb.State {
	return &crdtpb.State{Replicas: pbReps("a", "b"), Value: &crdtpb.State_Gcounter{Gcounter: &crdtpb.GCounter{Replica: replicas, Count: counts}}}
}

func pbVote(bs ...*crdtpb.Ballot) *crdtpb.State {
	return &crdtpb.State{Replicas: pbReps("a", "b"), Value: &crdtpb.State_Vote{Vote: &crdtpb.Vote{Ballots: bs}}}
}

func pbMV(ctx *crdtpb.Context, es ...*crdtpb.MVEntry) *crdtpb.State {
	return &crdtpb.State{Replicas: pbReps("a", "b"), Value: &crdtpb.State_Mvregister{Mvregister: &crdtpb.MVRegister{Context: ctx, Entries: es}}}
}

func pbRuns(runs ...uint64) *crdtpb.State {
	return pbORSet(pbCtx(runs))
}

type decodeCase struct {
	name string
	st   *crdtpb.State
	raw  []byte // instead of st
	lim  *Limits
	want error // nil: must decode
}

func decodeCases() []decodeCase {
	small := DefaultLimits
	small.MaxEntries = 4
	depth2 := DefaultLimits
	depth2.MaxDepth = 2
	bytes10 := DefaultLimits
	bytes10.MaxBytes = 10
	reps1 := DefaultLimits
	reps1.MaxReplicas = 1
	item3 := DefaultLimits
	item3.MaxItemBytes = 3
	okCtx := pbCtx([]uint64{1, 3}, []uint64{1, 1})
	mapEntry := func(t crdtpb.Type, e *crdtpb.ORMapEntry) *crdtpb.ORMapEntry {
		e.Key, e.Type = []byte("k"), t
		return e
	}
	return []decodeCase{
		// controls: well-formed messages close to the limits decode
		{name: "ok orset", st: pbORSet(okCtx, pbElem("e", pbDots(0, 1, 0, 3)), pbElem("f", pbDots(1, 1)))},
		{name: "ok runs up to 2^64-1", st: pbRuns(1, 3, 5, math.MaxUint64)},
		{name: "ok depth at limit", st: pbORMap(pbCtx([]uint64{1, 1}), pbNested(1)), lim: &depth2},
		{name: "ok entries at limit", st: pbGCounter([]uint32{0, 1}, []uint64{1, 2}), lim: &small},
		{name: "ok empty state of each kind", st: &crdtpb.State{Value: &crdtpb.State_Orset{Orset: &crdtpb.ORSet{}}}},

		{name: "garbage", raw: []byte{0xff, 0xff, 0xff}, want: ErrDecode},
		{name: "no value", st: &crdtpb.State{Replicas: pbReps("a")}, want: ErrDecode},
		{name: "replica index out of range", st: pbGCounter([]uint32{2}, []uint64{1}), want: ErrDecode},
		{name: "dot replica out of range", st: pbORSet(okCtx, pbElem("e", pbDots(7, 1))), want: ErrDecode},
		{name: "context replica out of range", st: pbORSet(pbCtx(nil, nil, []uint64{1, 1})), want: ErrDecode},
		{name: "lww replica out of range", st: &crdtpb.State{Replicas: pbReps("a"), Value: &crdtpb.State_Lwwregister{Lwwregister: &crdtpb.LWWRegister{Timestamp: &crdtpb.Timestamp{}, Replica: 1}}}, want: ErrDecode},
		{name: "duplicate replica", st: &crdtpb.State{Replicas: pbReps("a", "a"), Value: &crdtpb.State_Flag{Flag: &crdtpb.Flag{}}}, want: ErrDecode},
		{name: "empty node name", st: &crdtpb.State{Replicas: pbReps("a", ""), Value: &crdtpb.State_Flag{Flag: &crdtpb.Flag{}}}, want: ErrDecode},
		{name: "node name too long", st: &crdtpb.State{Replicas: pbReps(strings.Repeat("n", 256)), Value: &crdtpb.State_Flag{Flag: &crdtpb.Flag{}}}, want: ErrDecode},
		{name: "dot not in context", st: pbORSet(okCtx, pbElem("e", pbDots(0, 4))), want: ErrDecode},
		{name: "mv dot not in context", st: pbMV(okCtx, &crdtpb.MVEntry{Replica: 1, Seq: 2}), want: ErrDecode},
		{name: "duplicate dot in one element", st: pbORSet(okCtx, pbElem("e", pbDots(0, 1, 0, 1))), want: ErrDecode},
		{name: "duplicate dot across elements", st: pbORSet(okCtx, pbElem("e", pbDots(0, 1)), pbElem("f", pbDots(0, 1))), want: ErrDecode},
		{name: "duplicate mv dot", st: pbMV(okCtx, &crdtpb.MVEntry{Seq: 1, Value: []byte("x")}, &crdtpb.MVEntry{Seq: 1, Value: []byte("y")}), want: ErrDecode},
		{name: "duplicate dot across map entries", st: pbORMap(okCtx, pbFlagEntry("f", pbDots(0, 1)), pbFlagEntry("g", pbDots(0, 1))), want: ErrDecode},
		{name: "runs overlapping", st: pbRuns(1, 5, 3, 7), want: ErrDecode},
		{name: "runs unsorted", st: pbRuns(5, 6, 1, 2), want: ErrDecode},
		{name: "runs touching", st: pbRuns(1, 2, 3, 4), want: ErrDecode},
		{name: "runs after one ending at 2^64-1", st: pbRuns(1, math.MaxUint64, 5, 6), want: ErrDecode},
		{name: "runs odd", st: pbRuns(1, 2, 3), want: ErrDecode},
		{name: "runs zero", st: pbRuns(0, 2), want: ErrDecode},
		{name: "runs reversed", st: pbRuns(5, 3), want: ErrDecode},
		{name: "runs empty", st: pbORSet(pbCtx([]uint64{})), want: ErrDecode},
		{name: "context lists a replica twice", st: pbORSet(&crdtpb.Context{Replicas: []*crdtpb.ReplicaRuns{{Runs: []uint64{1, 1}}, {Runs: []uint64{3, 3}}}}), want: ErrDecode},
		{name: "zero gcounter count", st: pbGCounter([]uint32{0}, []uint64{0}), want: ErrDecode},
		{name: "duplicate gcounter entry", st: pbGCounter([]uint32{0, 0}, []uint64{1, 2}), want: ErrDecode},
		{name: "zero pncounter count", st: &crdtpb.State{Replicas: pbReps("a"), Value: &crdtpb.State_Pncounter{Pncounter: &crdtpb.PNCounter{N: &crdtpb.GCounter{Replica: []uint32{0}, Count: []uint64{0}}}}}, want: ErrDecode},
		{name: "gcounter arrays mismatched", st: pbGCounter([]uint32{0, 1}, []uint64{1}), want: ErrDecode},
		{name: "dots arrays mismatched", st: pbORSet(okCtx, pbElem("e", &crdtpb.Dots{Replica: []uint32{0, 0}, Seq: []uint64{1}})), want: ErrDecode},
		{name: "ewflag dots arrays mismatched", st: &crdtpb.State{Replicas: pbReps("a"), Value: &crdtpb.State_Ewflag{Ewflag: &crdtpb.EWFlag{Context: pbCtx([]uint64{1, 1}), Dots: &crdtpb.Dots{Seq: []uint64{1}}}}}, want: ErrDecode},
		{name: "element without dots", st: pbORSet(okCtx, pbElem("e", nil)), want: ErrDecode},
		{name: "duplicate element", st: pbORSet(okCtx, pbElem("e", pbDots(0, 1)), pbElem("e", pbDots(0, 2))), want: ErrDecode},
		{name: "duplicate gset element", st: &crdtpb.State{Value: &crdtpb.State_Gset{Gset: &crdtpb.GSet{Elements: [][]byte{[]byte("x"), []byte("x")}}}}, want: ErrDecode},
		{name: "map entry with wrong store kind", st: pbORMap(okCtx, mapEntry(crdtpb.Type_TYPE_ORSET, &crdtpb.ORMapEntry{Store: &crdtpb.ORMapEntry_Ewflag{Ewflag: pbDots(0, 1)}})), want: ErrDecode},
		{name: "map entry mv with orset store", st: pbORMap(okCtx, mapEntry(crdtpb.Type_TYPE_MVREGISTER, &crdtpb.ORMapEntry{Store: &crdtpb.ORMapEntry_Orset{Orset: &crdtpb.ORSetStore{Entries: []*crdtpb.ORSetEntry{pbElem("e", pbDots(0, 1))}}}})), want: ErrDecode},
		{name: "map entry map with mv store", st: pbORMap(okCtx, mapEntry(crdtpb.Type_TYPE_ORMAP, &crdtpb.ORMapEntry{Store: &crdtpb.ORMapEntry_Mvregister{Mvregister: &crdtpb.MVStore{Entries: []*crdtpb.MVEntry{{Seq: 1}}}}})), want: ErrDecode},
		{name: "map entry ewflag with map store", st: pbORMap(okCtx, mapEntry(crdtpb.Type_TYPE_EWFLAG, &crdtpb.ORMapEntry{Store: &crdtpb.ORMapEntry_Ormap{Ormap: &crdtpb.ORMapStore{Entries: []*crdtpb.ORMapEntry{pbFlagEntry("f", pbDots(0, 1))}}}})), want: ErrDecode},
		{name: "map entry of non-nestable type", st: pbORMap(okCtx, mapEntry(crdtpb.Type_TYPE_GCOUNTER, &crdtpb.ORMapEntry{Store: &crdtpb.ORMapEntry_Ewflag{Ewflag: pbDots(0, 1)}})), want: ErrDecode},
		{name: "map entry of unspecified type", st: pbORMap(okCtx, mapEntry(crdtpb.Type_TYPE_UNSPECIFIED, &crdtpb.ORMapEntry{Store: &crdtpb.ORMapEntry_Ewflag{Ewflag: pbDots(0, 1)}})), want: ErrDecode},
		{name: "map entry type that truncates to a nestable one", st: pbORMap(okCtx, mapEntry(crdtpb.Type(256+8), &crdtpb.ORMapEntry{Store: &crdtpb.ORMapEntry_Ewflag{Ewflag: pbDots(0, 1)}})), want: ErrDecode},
		{name: "map entry of negative type", st: pbORMap(okCtx, mapEntry(crdtpb.Type(-248), &crdtpb.ORMapEntry{Store: &crdtpb.ORMapEntry_Ewflag{Ewflag: pbDots(0, 1)}})), want: ErrDecode},
		{name: "map entry without store", st: pbORMap(okCtx, mapEntry(crdtpb.Type_TYPE_EWFLAG, &crdtpb.ORMapEntry{})), want: ErrDecode},
		{name: "empty map entry", st: pbORMap(okCtx, mapEntry(crdtpb.Type_TYPE_EWFLAG, &crdtpb.ORMapEntry{Store: &crdtpb.ORMapEntry_Ewflag{Ewflag: &crdtpb.Dots{}}})), want: ErrDecode},
		{name: "empty nested map", st: pbORMap(okCtx, mapEntry(crdtpb.Type_TYPE_ORMAP, &crdtpb.ORMapEntry{Store: &crdtpb.ORMapEntry_Ormap{Ormap: &crdtpb.ORMapStore{}}})), want: ErrDecode},
		{name: "duplicate map entry", st: pbORMap(okCtx, pbFlagEntry("f", pbDots(0, 1)), pbFlagEntry("f", pbDots(0, 2))), want: ErrDecode},
		{name: "lww unset with value", st: &crdtpb.State{Value: &crdtpb.State_Lwwregister{Lwwregister: &crdtpb.LWWRegister{Value: []byte("v")}}}, want: ErrDecode},
		{name: "lww unset with writer", st: &crdtpb.State{Replicas: pbReps("a", "b"), Value: &crdtpb.State_Lwwregister{Lwwregister: &crdtpb.LWWRegister{Replica: 1}}}, want: ErrDecode},
		{name: "ballot version 0", st: pbVote(&crdtpb.Ballot{Replica: 0, Vote: true}), want: ErrDecode},
		{name: "removed ballot with vote and no version", st: pbVote(&crdtpb.Ballot{Replica: 0, Vote: true, Removed: true}), want: ErrDecode},
		{name: "duplicate ballot", st: pbVote(&crdtpb.Ballot{Replica: 1, Version: 1}, &crdtpb.Ballot{Replica: 1, Version: 2}), want: ErrDecode},
		{name: "ballot replica out of range", st: pbVote(&crdtpb.Ballot{Replica: 2, Version: 1}), want: ErrDecode},

		{name: "nesting deeper than MaxDepth", st: pbORMap(pbCtx([]uint64{1, 1}), pbNested(2)), lim: &depth2, want: ErrTooLarge},
		{name: "nesting deeper than the default MaxDepth", st: pbORMap(pbCtx([]uint64{1, 1}), pbNested(DefaultLimits.MaxDepth)), want: ErrTooLarge},
		{name: "over MaxBytes", st: pbORSet(okCtx, pbElem("element", pbDots(0, 1))), lim: &bytes10, want: ErrTooLarge},
		{name: "over MaxEntries counter", st: pbGCounter([]uint32{0, 1, 0, 1, 0}, []uint64{1, 1, 1, 1, 1}), lim: &small, want: ErrTooLarge},
		{name: "over MaxEntries runs", st: pbRuns(1, 1, 3, 3, 5, 5, 7, 7, 9, 9), lim: &small, want: ErrTooLarge},
		{name: "over MaxEntries dots", st: pbORSet(pbCtx([]uint64{1, 9}), pbElem("e", pbDots(0, 1, 0, 2, 0, 3, 0, 4))), lim: &small, want: ErrTooLarge},
		{name: "over MaxEntries gset", st: &crdtpb.State{Value: &crdtpb.State_Gset{Gset: &crdtpb.GSet{Elements: [][]byte{{1}, {2}, {3}, {4}, {5}}}}}, lim: &small, want: ErrTooLarge},
		{name: "over MaxEntries ballots", st: pbVote(&crdtpb.Ballot{Replica: 0, Version: 1}, &crdtpb.Ballot{Replica: 1, Version: 1}, &crdtpb.Ballot{Replica: 0, Version: 1}, &crdtpb.Ballot{Replica: 1, Version: 1}, &crdtpb.Ballot{Replica: 0, Version: 1}), lim: &small, want: ErrTooLarge},
		{name: "over MaxReplicas", st: &crdtpb.State{Replicas: pbReps("a", "b"), Value: &crdtpb.State_Flag{Flag: &crdtpb.Flag{}}}, lim: &reps1, want: ErrTooLarge},
		{name: "over MaxItemBytes element", st: pbORSet(okCtx, pbElem("long", pbDots(0, 1))), lim: &item3, want: ErrTooLarge},
		{name: "over MaxItemBytes value", st: pbMV(okCtx, &crdtpb.MVEntry{Seq: 1, Value: []byte("long")}), lim: &item3, want: ErrTooLarge},
		{name: "over MaxItemBytes key", st: pbORMap(okCtx, pbFlagEntry("long", pbDots(0, 1))), lim: &item3, want: ErrTooLarge},
	}
}

func TestDecodeMalformed(t *testing.T) {
	for _, c := range decodeCases() {
		t.Run(c.name, func(t *testing.T) {
			b := c.raw
			if b == nil {
				var err error
				if b, err = proto.Marshal(c.st); err != nil {
					t.Fatal(err)
				}
			}
			lim := DefaultLimits
			if c.lim != nil {
				lim = *c.lim
			}
			v, err := Decode(b, lim)
			if c.want == nil {
				if err != nil {
					t.Fatalf("valid message rejected: %v", err)
				}
				checkInvariants(t, v)
				checkRoundTrip(t, v)
				return
			}
			if !errors.Is(err, c.want) || v != nil {
				t.Fatalf("Decode = %v, %v; want an error wrapping %v", v, err, c.want)
			}
			if c.st != nil && lim.MaxBytes >= len(b) {
				if v, err := FromProto(c.st, lim); !errors.Is(err, c.want) || v != nil {
					t.Fatalf("FromProto = %v, %v; want an error wrapping %v", v, err, c.want)
				}
			}
		})
	}
}

// fuzzSeeds returns encodings of states and deltas of every type, drawn
// from short random histories, plus the malformed messages above.
func fuzzSeeds(t tb) [][]byte {
	var out [][]byte
	r := randSrc{rand.New(rand.NewPCG(1, 2))}
	for _, sp := range specs {
		ids := genReplicas(r, 3)
		states := []Value{bottom(sp.typ), bottom(sp.typ), bottom(sp.typ)}
		refs := []refModel{sp.newRef(), sp.newRef(), sp.newRef()}
		out = append(out, Encode(states[0]))
		for step := range 12 {
			i := r.intn("", 3)
			if step%4 == 3 {
				mustJoin(t, states[i], states[(i+1)%3])
				refs[i].join(refs[(i+1)%3])
				continue
			}
			d, _, err := sp.mutate(t, r, ids[i], ids, states[i], refs[i])
			if err == nil {
				out = append(out, Encode(d))
			}
		}
		for _, s := range states {
			out = append(out, Encode(s))
		}
		// a pruned state, and the delta of its pruning
		if d, err := Prune(states[0], ids[1], ids[0], 7); err == nil {
			out = append(out, Encode(states[0]), Encode(d))
		}
	}
	for _, c := range decodeCases() {
		if c.raw != nil {
			out = append(out, c.raw)
		} else if b, err := proto.Marshal(c.st); err == nil {
			out = append(out, b)
		}
	}
	return out
}

func FuzzDecode(f *testing.F) {
	for _, b := range fuzzSeeds(f) {
		f.Add(b)
	}
	tight := Limits{MaxBytes: 200, MaxReplicas: 2, MaxEntries: 8, MaxDepth: 2, MaxItemBytes: 4}
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := Decode(b, tight); err != nil && !errors.Is(err, ErrDecode) && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("Decode with tight limits: unexpected error %v", err)
		}
		v, err := Decode(b, DefaultLimits)
		if err != nil {
			if v != nil {
				t.Fatalf("Decode returned a value and an error")
			}
			if !errors.Is(err, ErrDecode) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error %v wraps neither ErrDecode nor ErrTooLarge", err)
			}
			return
		}
		checkInvariants(t, v)
		// Decode reads the wire format itself: the protobuf library must
		// read the same bytes as a message that holds the same value
		// (Decode may refuse what the library takes, never the reverse).
		var st crdtpb.State
		if err := proto.Unmarshal(b, &st); err != nil {
			t.Fatalf("Decode took bytes the protobuf library refuses (%v)", err)
		}
		if u, err := FromProto(&st, DefaultLimits); err != nil || !u.Equal(v) {
			t.Fatalf("the protobuf library reads another value: %v, %v", u, err)
		}
		// re-encode -> decode gives an Equal value, whose encoding is stable
		b2 := Encode(v)
		w, err := Decode(b2, DefaultLimits)
		if err != nil {
			t.Fatalf("re-decoding an encoded %s: %v", v.Type(), err)
		}
		if !w.Equal(v) || !v.Equal(w) {
			t.Fatalf("re-encode/decode of a %s is not Equal", v.Type())
		}
		if b3 := Encode(w); string(b3) != string(b2) {
			t.Fatalf("encoding of a decoded %s not stable", v.Type())
		}
		// it joins into a fresh bottom of its type, giving itself
		x := bottom(v.Type())
		ch, err := Join(x, v)
		if err != nil || ch == v.IsBottom() || !x.Equal(v) {
			t.Fatalf("⊥ ⊔ v: inflated=%v err=%v equal=%v (v bottom=%v)", ch, err, x.Equal(v), v.IsBottom())
		}
		checkInvariants(t, x)
		// and the lattice operations on it behave
		if ch, _ := Join(x, v); ch {
			t.Fatalf("v ⊔ v inflated")
		}
		if e, _ := Extract(v, w); !e.IsBottom() {
			t.Fatalf("Extract(v, v) not bottom")
		}
		if e, _ := Extract(bottom(v.Type()), v); !e.Equal(v) {
			t.Fatalf("Extract(⊥, v) != v")
		}
	})
}
