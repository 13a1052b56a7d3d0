package deltas_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/deltas"
	"github.com/statemesh/statemesh/deltas/sim"
	"github.com/statemesh/statemesh/internal/hlc"
	"github.com/statemesh/statemesh/protocol/crdtpb"
	"github.com/statemesh/statemesh/protocol/syncpb"
)

// sampleStates holds one non-trivial value of every CRDT type.
func sampleStates(t testing.TB) []deltas.KeyState {
	t.Helper()
	r1, r2 := replica("n1"), replica("n2")
	must := func(v crdt.Value, err error) crdt.Value {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	gc := crdt.NewGCounter()
	must(gc.Increment(r1, 3))
	must(gc.Increment(r2, 1<<40))
	pn := crdt.NewPNCounter()
	must(pn.Increment(r1, -7))
	must(pn.Increment(r2, 2))
	or := crdt.NewORSet()
	or.Add(r1, []byte("x"))
	or.Add(r2, []byte("y"))
	or.Add(r1, []byte("z"))
	or.Remove([]byte("x"))
	lww := crdt.NewLWWRegister()
	lww.Set(r2, hlc.Timestamp{WallNanos: 1_700_000_000_000_000_000, Logical: 3}, []byte("v"))
	mv := crdt.NewMVRegister()
	mv.Assign(r1, []byte("a"))
	mv2 := crdt.NewMVRegister()
	mv2.Assign(r2, []byte("b"))
	must(nil, joinErr(mv, mv2))
	fl := crdt.NewFlag()
	fl.Enable()
	ew := crdt.NewEWFlag()
	ew.Enable(r1)
	om := crdt.NewORMap()
	must(om.Update(r1, []byte("inner"), crdt.TypeORSet, func(v crdt.Value) (crdt.Value, error) {
		return v.(*crdt.ORSet).Add(r1, []byte("e")), nil
	}))
	must(om.Update(r2, []byte("flag"), crdt.TypeEWFlag, func(v crdt.Value) (crdt.Value, error) {
		return v.(*crdt.EWFlag).Enable(r2), nil
	}))
	vote := crdt.NewVote()
	must(vote.Set(r1, true))
	must(vote.Set(r2, false))
	return []deltas.KeyState{
		{Key: "ewflag", State: ew},
		{Key: "flag", State: fl},
		{Key: "gcounter", State: gc},
		{Key: "gset", State: gset("p", "q", "")},
		{Key: "lww", State: lww},
		{Key: "mv", State: mv},
		{Key: "ormap", State: om},
		{Key: "orset", State: or},
		{Key: "pn", State: pn},
		{Key: "vote", State: vote},
		{Key: "", State: crdt.NewGCounter()}, // empty key, bottom state
	}
}

func joinErr(x, d crdt.Value) error { _, err := crdt.Join(x, d); return err }

// sameMessage compares two messages field by field (To aside).
func sameMessage(t testing.TB, got, want deltas.Message) {
	t.Helper()
	if got.From != want.From || got.Session != want.Session || got.AckSession != want.AckSession || got.Ack != want.Ack {
		t.Fatalf("header %q/%d/%d/%d, want %q/%d/%d/%d", got.From, got.Session, got.AckSession, got.Ack,
			want.From, want.Session, want.AckSession, want.Ack)
	}
	if kind(got) != kind(want) {
		t.Fatalf("body %s, want %s", kind(got), kind(want))
	}
	if !slices.Equal(got.Marks, want.Marks) {
		t.Fatalf("marks %v, want %v", got.Marks, want.Marks)
	}
	sameStates := func(a, b []deltas.KeyState) {
		t.Helper()
		if len(a) != len(b) {
			t.Fatalf("%d states, want %d", len(a), len(b))
		}
		for i := range a {
			if a[i].Key != b[i].Key || a[i].Deleted != b[i].Deleted || (!a[i].Deleted && !a[i].State.Equal(b[i].State)) {
				t.Fatalf("state %d: %q differs from %q", i, a[i].Key, b[i].Key)
			}
		}
	}
	switch w := want.Body.(type) {
	case *deltas.Deltas:
		g := got.Body.(*deltas.Deltas)
		if g.FromSeq != w.FromSeq || g.ToSeq != w.ToSeq {
			t.Fatalf("interval [%d, %d), want [%d, %d)", g.FromSeq, g.ToSeq, w.FromSeq, w.ToSeq)
		}
		sameStates(g.Deltas, w.Deltas)
	case *deltas.Digest:
		g := got.Body.(*deltas.Digest)
		if g.Seq != w.Seq {
			t.Fatalf("digest seq %d, want %d", g.Seq, w.Seq)
		}
		if !slices.Equal(g.Digests, w.Digests) { // nil and empty compare equal
			t.Fatalf("digests %v, want %v", g.Digests, w.Digests)
		}
	case *deltas.DigestReply:
		g := got.Body.(*deltas.DigestReply)
		if g.Seq != w.Seq {
			t.Fatalf("reply seq %d, want %d", g.Seq, w.Seq)
		}
		if !slices.Equal(g.Want, w.Want) {
			t.Fatalf("want %q, want %q", g.Want, w.Want)
		}
		sameStates(g.States, w.States)
	case *deltas.States:
		g := got.Body.(*deltas.States)
		if g.Seq != w.Seq {
			t.Fatalf("seq %d, want %d", g.Seq, w.Seq)
		}
		sameStates(g.States, w.States)
	}
}

func TestMessageRoundTrip(t *testing.T) {
	states := sampleStates(t)
	head := deltas.Message{From: "n1", To: "n2", Session: 3, AckSession: 1 << 50, Ack: 12345}
	with := func(b deltas.Body) deltas.Message { m := head; m.Body = b; return m }
	cases := []struct {
		name string
		m    deltas.Message
	}{
		{"bare ack", head},
		{"bare, no ack", deltas.Message{From: "n1", Session: 1}},
		{"deltas", with(&deltas.Deltas{FromSeq: 7, ToSeq: 19, Deltas: states})},
		{"deltas, empty interval", with(&deltas.Deltas{FromSeq: 4, ToSeq: 4})},
		{"deltas, zero", with(&deltas.Deltas{})},
		{"digest", with(&deltas.Digest{Digests: []deltas.KeyDigest{{Key: "a", Hash: 1}, {Key: "b", Hash: 0}, {Key: "", Hash: 1<<64 - 1}}})},
		{"digest, empty", with(&deltas.Digest{})},
		{"digest reply", with(&deltas.DigestReply{Want: []string{"a", "", "c"}, States: states[:5]})},
		{"digest reply, empty", with(&deltas.DigestReply{})},
		{"digest reply, want only", with(&deltas.DigestReply{Want: []string{"x"}})},
		{"digest reply with seq", with(&deltas.DigestReply{Seq: 9, Want: []string{"x"}})},
		{"digest with seq", with(&deltas.Digest{Seq: 12, Digests: []deltas.KeyDigest{{Key: "k", Hash: 1}}})},
		{"states, transfer", with(&deltas.States{Seq: 99, States: states})},
		{"states, state-based", with(&deltas.States{States: states[5:]})},
		{"states, empty", with(&deltas.States{})},
		{"deltas with a deletion", with(&deltas.Deltas{FromSeq: 1, ToSeq: 3, Deltas: append([]deltas.KeyState{{Key: "gone", Deleted: true}}, states[:2]...)})},
		{"transfer of a deletion", with(&deltas.States{Seq: 5, States: []deltas.KeyState{{Key: "gone", Deleted: true}}})},
		{"deltas with marks", func() deltas.Message {
			m := with(&deltas.Deltas{FromSeq: 2, ToSeq: 5, Deltas: states[:3]})
			m.Marks = []deltas.Mark{{Peer: "n3", Session: 1 << 40, Seq: 77}, {Peer: "n4", Session: 9}}
			return m
		}()},
		{"bare ack with a mark", func() deltas.Message {
			m := head
			m.Marks = []deltas.Mark{{Peer: "n3", Session: 5, Seq: 1}}
			return m
		}()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			enc := deltas.EncodeMessage(tc.m)
			if n := deltas.MessageSize(tc.m); n != len(enc) {
				t.Fatalf("MessageSize = %d, len(EncodeMessage) = %d", n, len(enc))
			}
			if got := deltas.AppendMessage([]byte("prefix"), tc.m); !bytes.Equal(got, append([]byte("prefix"), enc...)) {
				t.Fatal("AppendMessage differs from EncodeMessage")
			}
			// It is a syncpb.Message.
			var pm syncpb.Message
			if err := proto.Unmarshal(enc, &pm); err != nil {
				t.Fatal(err)
			}
			if pm.GetFrom() != string(tc.m.From) || pm.GetSession() != tc.m.Session || pm.GetAck() != tc.m.Ack {
				t.Fatalf("wire header %q/%d/%d", pm.GetFrom(), pm.GetSession(), pm.GetAck())
			}
			got, err := deltas.DecodeMessage(enc, deltas.DefaultLimits)
			if err != nil {
				t.Fatal(err)
			}
			if got.To != "" {
				t.Fatalf("decoded To = %q", got.To)
			}
			sameMessage(t, got, tc.m)
			if re := deltas.EncodeMessage(got); !bytes.Equal(re, enc) {
				t.Fatal("re-encoding the decoded message changes its bytes")
			}
		})
	}
}

func TestDecodeMessageMalformed(t *testing.T) {
	lim := deltas.DefaultLimits
	valid := func() *syncpb.Message {
		return &syncpb.Message{From: "n1", Session: 1, AckSession: 2, Ack: 3,
			Body: &syncpb.Message_Deltas{Deltas: &syncpb.Deltas{FromSeq: 1, ToSeq: 2, Deltas: []*syncpb.KeyState{
				{Key: []byte("k"), State: crdt.ToProto(gset("x"))},
			}}}}
	}
	pks := func(keys ...string) []*syncpb.KeyState {
		var out []*syncpb.KeyState
		for _, k := range keys {
			out = append(out, &syncpb.KeyState{Key: []byte(k), State: crdt.ToProto(gset("x"))})
		}
		return out
	}
	deltasOf := func(ks []*syncpb.KeyState) *syncpb.Message {
		m := valid()
		m.Body = &syncpb.Message_Deltas{Deltas: &syncpb.Deltas{FromSeq: 1, ToSeq: 2, Deltas: ks}}
		return m
	}
	statesOf := func(ks []*syncpb.KeyState) *syncpb.Message {
		m := valid()
		m.Body = &syncpb.Message_States{States: &syncpb.States{Seq: 4, States: ks}}
		return m
	}
	replyOf := func(want []string, ks []*syncpb.KeyState) *syncpb.Message {
		m := valid()
		r := &syncpb.DigestReply{States: ks}
		for _, w := range want {
			r.Want = append(r.Want, []byte(w))
		}
		m.Body = &syncpb.Message_DigestReply{DigestReply: r}
		return m
	}
	digestOf := func(keys ...string) *syncpb.Message {
		m := valid()
		d := &syncpb.Digest{}
		for _, k := range keys {
			d.Digests = append(d.Digests, &syncpb.KeyDigest{Key: []byte(k), Hash: 7})
		}
		m.Body = &syncpb.Message_Digest{Digest: d}
		return m
	}
	withState := func(st *crdtpb.State) *syncpb.Message {
		return deltasOf([]*syncpb.KeyState{{Key: []byte("k"), State: st}})
	}
	long := strings.Repeat("k", lim.MaxKeyBytes)
	three := lim
	three.MaxKeys = 3
	validBytes := marshal(t, valid())
	small := lim
	small.MaxBytes = len(validBytes) - 1
	exact := lim
	exact.MaxBytes = len(validBytes)

	cases := []struct {
		name string
		pm   *syncpb.Message
		raw  []byte // instead of pm
		lim  deltas.Limits
		ok   bool
	}{
		{name: "valid", pm: valid(), lim: lim, ok: true},
		{name: "deletion", pm: deltasOf([]*syncpb.KeyState{{Key: []byte("k"), Deleted: true}}), lim: lim, ok: true},
		{name: "deletion with a state", pm: deltasOf([]*syncpb.KeyState{{Key: []byte("k"), Deleted: true, State: crdt.ToProto(gset("x"))}}), lim: lim},
		{name: "empty sender", pm: func() *syncpb.Message { m := valid(); m.From = ""; return m }(), lim: lim},
		{name: "sender over MaxKeyBytes", pm: func() *syncpb.Message { m := valid(); m.From = long + "x"; return m }(), lim: lim},
		{name: "sender of MaxKeyBytes", pm: func() *syncpb.Message { m := valid(); m.From = long; return m }(), lim: lim, ok: true},
		{name: "sender not UTF-8", raw: append([]byte{0x0a, 0x02, 0xff, 0xfe}, marshal(t, func() *syncpb.Message { m := valid(); m.From = ""; return m }())...), lim: lim},
		{name: "session 0", pm: func() *syncpb.Message { m := valid(); m.Session = 0; return m }(), lim: lim},
		{name: "duplicate key in deltas", pm: deltasOf(pks("a", "b", "a")), lim: lim},
		{name: "duplicate key in states", pm: statesOf(pks("a", "a")), lim: lim},
		{name: "duplicate key in digest reply states", pm: replyOf([]string{"w"}, pks("a", "a")), lim: lim},
		{name: "duplicate wanted key", pm: replyOf([]string{"w", "w"}, nil), lim: lim},
		{name: "duplicate key in digest", pm: digestOf("a", "b", "b"), lim: lim},
		{name: "key over MaxKeyBytes in deltas", pm: deltasOf(pks(long + "x")), lim: lim},
		{name: "key over MaxKeyBytes in states", pm: statesOf(pks("a", long+"x")), lim: lim},
		{name: "key over MaxKeyBytes in want", pm: replyOf([]string{long + "x"}, nil), lim: lim},
		{name: "key over MaxKeyBytes in digest", pm: digestOf(long + "x"), lim: lim},
		{name: "key of MaxKeyBytes", pm: deltasOf(pks(long)), lim: lim, ok: true},
		{name: "more than MaxKeys deltas", pm: deltasOf(pks("a", "b", "c", "d")), lim: three},
		{name: "more than MaxKeys digests", pm: digestOf("a", "b", "c", "d"), lim: three},
		{name: "more than MaxKeys wants", pm: replyOf([]string{"a", "b", "c", "d"}, nil), lim: three},
		{name: "more than MaxKeys wants and states", pm: replyOf([]string{"a", "b"}, pks("c", "d")), lim: three},
		{name: "MaxKeys keys", pm: replyOf([]string{"a"}, pks("c", "d")), lim: three, ok: true},
		{name: "key state without state", pm: deltasOf([]*syncpb.KeyState{{Key: []byte("k")}}), lim: lim},
		{name: "states key without state", pm: statesOf([]*syncpb.KeyState{{Key: []byte("k")}}), lim: lim},
		{name: "from_seq > to_seq", pm: func() *syncpb.Message {
			m := valid()
			m.GetDeltas().FromSeq, m.GetDeltas().ToSeq = 3, 2
			return m
		}(), lim: lim},
		{name: "corrupt state: no value", pm: withState(&crdtpb.State{}), lim: lim},
		{name: "corrupt state: replica index out of range", pm: withState(&crdtpb.State{
			Value: &crdtpb.State_Gcounter{Gcounter: &crdtpb.GCounter{Replica: []uint32{0}, Count: []uint64{1}}}}), lim: lim},
		{name: "corrupt state: zero counter entry", pm: withState(&crdtpb.State{
			Replicas: []*crdtpb.Replica{{Node: "n", Incarnation: 1}},
			Value:    &crdtpb.State_Gcounter{Gcounter: &crdtpb.GCounter{Replica: []uint32{0}, Count: []uint64{0}}}}), lim: lim},
		{name: "corrupt state: dot outside the context", pm: withState(&crdtpb.State{
			Replicas: []*crdtpb.Replica{{Node: "n", Incarnation: 1}},
			Value: &crdtpb.State_Orset{Orset: &crdtpb.ORSet{Entries: []*crdtpb.ORSetEntry{
				{Element: []byte("e"), Dots: &crdtpb.Dots{Replica: []uint32{0}, Seq: []uint64{1}}}}}}}), lim: lim},
		{name: "corrupt state in digest reply", pm: replyOf(nil, []*syncpb.KeyState{{Key: []byte("k"), State: &crdtpb.State{}}}), lim: lim},
		{name: "over MaxBytes", pm: valid(), lim: small},
		{name: "exactly MaxBytes", pm: valid(), lim: exact, ok: true},
		{name: "marks", pm: func() *syncpb.Message {
			m := valid()
			m.Marks = []*syncpb.Mark{{Peer: []byte("n3"), Session: 4, Seq: 9}, {Peer: []byte("n4"), Session: 1}}
			return m
		}(), lim: lim, ok: true},
		{name: "mark without a peer", pm: func() *syncpb.Message { m := valid(); m.Marks = []*syncpb.Mark{{Session: 4, Seq: 9}}; return m }(), lim: lim},
		{name: "mark without a session", pm: func() *syncpb.Message { m := valid(); m.Marks = []*syncpb.Mark{{Peer: []byte("n3"), Seq: 9}}; return m }(), lim: lim},
		{name: "mark peer over MaxKeyBytes", pm: func() *syncpb.Message {
			m := valid()
			m.Marks = []*syncpb.Mark{{Peer: []byte(long + "x"), Session: 1}}
			return m
		}(), lim: lim},
		{name: "more than MaxKeys marks", pm: func() *syncpb.Message {
			m := valid()
			for _, p := range []string{"a", "b", "c", "d"} {
				m.Marks = append(m.Marks, &syncpb.Mark{Peer: []byte(p), Session: 1})
			}
			return m
		}(), lim: three},
		{name: "not protobuf", raw: []byte{0xff, 0xff, 0xff}, lim: lim},
		{name: "truncated", raw: validBytes[:len(validBytes)-2], lim: lim},
		{name: "empty input", raw: []byte{}, lim: lim},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.raw
			if b == nil {
				b = marshal(t, tc.pm)
			}
			m, err := deltas.DecodeMessage(b, tc.lim)
			if tc.ok {
				if err != nil {
					t.Fatalf("DecodeMessage: %v", err)
				}
				if !bytes.Equal(deltas.EncodeMessage(m), b) {
					t.Fatal("valid message does not re-encode to its bytes")
				}
				return
			}
			if !errors.Is(err, deltas.ErrDecode) {
				t.Fatalf("DecodeMessage: %v, want an error wrapping ErrDecode", err)
			}
			t.Log(err)
			if m.From != "" || m.Body != nil {
				t.Fatalf("a failed decode returned %+v", m)
			}
		})
	}
}

func marshal(t testing.TB, pm *syncpb.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(pm)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// simOp applies one random mutation of a random CRDT type at node i.
func simOp(t testing.TB, s *sim.Sim, rng *rand.Rand, round, i int) {
	t.Helper()
	r := crdt.ReplicaID{Node: string(sim.NodeID(i)), Incarnation: 1}
	el := []byte(fmt.Sprintf("e%d", rng.IntN(6)))
	var err error
	up := func(key string, typ crdt.Type, fn func(v crdt.Value) (crdt.Value, error)) {
		err = s.Update(i, key, typ, fn)
	}
	switch rng.IntN(10) {
	case 0:
		up("gcounter", crdt.TypeGCounter, func(v crdt.Value) (crdt.Value, error) {
			return v.(*crdt.GCounter).Increment(r, uint64(rng.IntN(9)+1))
		})
	case 1:
		up("pn", crdt.TypePNCounter, func(v crdt.Value) (crdt.Value, error) {
			return v.(*crdt.PNCounter).Increment(r, int64(rng.IntN(9)-4))
		})
	case 2:
		up("gset", crdt.TypeGSet, func(v crdt.Value) (crdt.Value, error) { return v.(*crdt.GSet).Add(el), nil })
	case 3:
		up("orset", crdt.TypeORSet, func(v crdt.Value) (crdt.Value, error) {
			if rng.IntN(3) == 0 {
				return v.(*crdt.ORSet).Remove(el), nil
			}
			return v.(*crdt.ORSet).Add(r, el), nil
		})
	case 4:
		up("lww", crdt.TypeLWWRegister, func(v crdt.Value) (crdt.Value, error) {
			return v.(*crdt.LWWRegister).Set(r, hlc.Timestamp{WallNanos: int64(round), Logical: uint32(i)}, el), nil
		})
	case 5:
		up("mv", crdt.TypeMVRegister, func(v crdt.Value) (crdt.Value, error) { return v.(*crdt.MVRegister).Assign(r, el), nil })
	case 6:
		up("flag", crdt.TypeFlag, func(v crdt.Value) (crdt.Value, error) { return v.(*crdt.Flag).Enable(), nil })
	case 7:
		up("ewflag", crdt.TypeEWFlag, func(v crdt.Value) (crdt.Value, error) {
			if rng.IntN(2) == 0 {
				return v.(*crdt.EWFlag).Disable(), nil
			}
			return v.(*crdt.EWFlag).Enable(r), nil
		})
	case 8:
		up("ormap", crdt.TypeORMap, func(v crdt.Value) (crdt.Value, error) {
			m := v.(*crdt.ORMap)
			if rng.IntN(4) == 0 {
				return m.Remove(el, crdt.TypeORSet), nil
			}
			return m.Update(r, el, crdt.TypeORSet, func(n crdt.Value) (crdt.Value, error) {
				return n.(*crdt.ORSet).Add(r, []byte(fmt.Sprint(rng.IntN(3)))), nil
			})
		})
	case 9:
		up("vote", crdt.TypeVote, func(v crdt.Value) (crdt.Value, error) { return v.(*crdt.Vote).Set(r, rng.IntN(2) == 0) })
	}
	if err != nil {
		t.Fatal(err)
	}
}

// simMessages runs a small simulation in the given mode: updates of every
// CRDT type under loss and duplication, a partition long enough to evict,
// and a crash-restart. It then runs fault-free rounds of its engines by
// hand (the sim does not expose its network) and returns every message
// they send: deltas, acks, digests, replies, transfers.
func simMessages(t testing.TB, mode deltas.Mode) []deltas.Message {
	t.Helper()
	s, err := sim.New(sim.Config{
		Topology: sim.FullMesh(4), Seed: 11, Wire: true,
		Faults: sim.Faults{Loss: 0.2, Duplicate: 0.1, MaxDelay: 1},
		Engine: deltas.Config{Mode: mode, RetransmitTicks: 2, EvictTicks: 4, SyncTimeoutTicks: 4},
	})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 5))
	for round := 0; round < 16; round++ {
		for i := range s.N() {
			if s.Up(i) && rng.IntN(3) != 0 {
				simOp(t, s, rng, round, i)
			}
		}
		switch round {
		case 4:
			s.Partition([]int{0, 1}, []int{2, 3})
		case 10:
			s.Crash(3)
		case 14:
			if err := s.Restart(3); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Step(); err != nil {
			t.Fatal(err)
		}
	}
	s.Heal()
	byID := map[deltas.PeerID]*deltas.Engine{}
	for i := range s.N() {
		byID[sim.NodeID(i)] = s.Engine(i)
	}
	var out []deltas.Message
	for range 8 {
		var queue []deltas.Message
		for i := range s.N() {
			s.Engine(i).Tick()
			queue = append(queue, s.Engine(i).Ready().Messages...)
		}
		for len(queue) > 0 {
			m := queue[0]
			queue = queue[1:]
			out = append(out, m)
			e := byID[m.To]
			if err := e.Step(m); err != nil {
				t.Fatal(err)
			}
			queue = append(queue, e.Ready().Messages...)
		}
	}
	return out
}

func TestSimMessagesRoundTrip(t *testing.T) {
	kinds := map[string]int{}
	for _, mode := range deltas.Modes {
		for _, m := range simMessages(t, mode) {
			k := kind(m)
			if st, ok := m.Body.(*deltas.States); ok && st.Seq > 0 {
				k = "States{Seq}"
			}
			kinds[k]++
			enc := deltas.EncodeMessage(m)
			got, err := deltas.DecodeMessage(enc, deltas.DefaultLimits)
			if err != nil {
				t.Fatalf("%s: %v", mode, err)
			}
			sameMessage(t, got, m)
			// MessageSize counts without encoding, from the shared
			// encoding when the engine set one (m) and from the states
			// (got).
			if n, dn := deltas.MessageSize(m), deltas.MessageSize(got); n != len(enc) || dn != len(enc) {
				t.Fatalf("%s: %s message of %d bytes, MessageSize %d (decoded: %d)", mode, k, len(enc), n, dn)
			}
		}
	}
	for _, k := range []string{"ack", "Deltas", "Digest", "DigestReply", "States", "States{Seq}"} {
		if kinds[k] == 0 {
			t.Errorf("the sim runs sent no %s (sent %v)", k, kinds)
		}
	}
}

// fuzzEngine holds state of the keys simMessages uses, one of them ("flag")
// with another type than the sim's.
func fuzzEngine(t testing.TB) *deltas.Engine {
	e := newEngine(t, "n01", 2, deltas.ModeDeltaBPRR)
	e.PeerUp("n00")
	incr(t, e, "gcounter", 1)
	oradd(t, e, "orset", "e1")
	gadd(t, e, "flag", "not a flag")
	e.Ready()
	return e
}

func stepNoPanic(t *testing.T, e *deltas.Engine, m deltas.Message) {
	t.Helper()
	keys := e.Keys()
	err := e.Step(m)
	if err != nil {
		if !errors.Is(err, deltas.ErrBadMessage) && !errors.Is(err, deltas.ErrTypeMismatch) {
			t.Fatalf("Step: %v wraps neither ErrBadMessage nor ErrTypeMismatch", err)
		}
		if rd := e.Ready(); len(rd.Messages) != 0 || len(rd.Persist) != 0 || !slices.Equal(e.Keys(), keys) {
			t.Fatalf("refused message (%v) had an effect", err)
		}
	}
	_ = e.Step(m) // a duplicate
	for range 3 {
		e.Tick()
		e.Ready()
	}
}

func FuzzDecodeMessage(f *testing.F) {
	for _, mode := range deltas.Modes {
		msgs := simMessages(f, mode)
		// Every message that is not Deltas, and a sample of the deltas.
		n := 0
		for _, m := range msgs {
			if _, ok := m.Body.(*deltas.Deltas); ok {
				if n++; n%4 != 1 {
					continue
				}
			}
			f.Add(deltas.EncodeMessage(m))
		}
	}
	f.Add([]byte{})
	f.Add(deltas.EncodeMessage(deltas.Message{From: "n1", Session: 2, AckSession: 3, Ack: 4,
		Body:  &deltas.Deltas{FromSeq: 1, ToSeq: 2, Deltas: []deltas.KeyState{{Key: "k", Deleted: true}}},
		Marks: []deltas.Mark{{Peer: "n2", Session: 5, Seq: 6}, {Peer: "n3", Session: 7}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := deltas.DecodeMessage(b, deltas.DefaultLimits)
		if err != nil {
			if !errors.Is(err, deltas.ErrDecode) {
				t.Fatalf("DecodeMessage: %v does not wrap ErrDecode", err)
			}
			return
		}
		enc := deltas.EncodeMessage(m)
		// DecodeMessage reads the wire format itself: the protobuf
		// library must take the same bytes and read the same message
		// (DecodeMessage may refuse what the library takes, never the
		// reverse).
		var pm syncpb.Message
		if err := proto.Unmarshal(b, &pm); err != nil {
			t.Fatalf("DecodeMessage took bytes the protobuf library refuses (%v)", err)
		}
		pb, err := proto.Marshal(&pm)
		if err != nil {
			t.Fatal(err)
		}
		if mp, err := deltas.DecodeMessage(pb, deltas.DefaultLimits); err != nil || !bytes.Equal(deltas.EncodeMessage(mp), enc) {
			t.Fatalf("the protobuf library reads another message (%v)", err)
		}
		m2, err := deltas.DecodeMessage(enc, deltas.DefaultLimits)
		if err != nil {
			t.Fatalf("re-decoding a decoded message: %v", err)
		}
		if !bytes.Equal(deltas.EncodeMessage(m2), enc) {
			t.Fatal("encode(decode(encode(decode(b)))) != encode(decode(b))")
		}
		for _, mode := range deltas.Modes {
			stepNoPanic(t, newEngine(t, "fuzz", 1, mode), m)
		}
		stepNoPanic(t, fuzzEngine(t), m)
	})
}
