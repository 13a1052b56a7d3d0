package sdk

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/protocol/functionpb"
)

func bs(ss ...string) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}

func sameBytes(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

func wantDelta(t *testing.T, c Crdt, want *functionpb.CrdtDelta) {
	t.Helper()
	got := c.delta()
	if (got == nil) != (want == nil) || (got != nil && !proto.Equal(got, want)) {
		t.Fatalf("delta %v, want %v", got, want)
	}
}

func TestPNCounterAndGCounter(t *testing.T) {
	c := NewPNCounter()
	wantDelta(t, c, nil)
	c.Increment(5)
	c.Decrement(2)
	if c.Value() != 3 {
		t.Fatalf("value %d", c.Value())
	}
	wantDelta(t, c, &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Pncounter{Pncounter: &functionpb.PNCounterDelta{Change: 3}}})
	c.discard()
	if c.Value() != 0 {
		t.Fatalf("after discard %d", c.Value())
	}
	c.Increment(1)
	c.commit()
	wantDelta(t, c, nil)
	if c.Value() != 1 {
		t.Fatalf("after commit %d", c.Value())
	}

	g := NewGCounter()
	if err := g.setState(&functionpb.CrdtState{State: &functionpb.CrdtState_Gcounter{Gcounter: &functionpb.GCounterState{Value: 4}}}); err != nil {
		t.Fatal(err)
	}
	if err := g.applyDelta(&functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Gcounter{Gcounter: &functionpb.GCounterDelta{Increment: 2}}}); err != nil {
		t.Fatal(err)
	}
	g.Increment(3)
	wantDelta(t, g, &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Gcounter{Gcounter: &functionpb.GCounterDelta{Increment: 3}}})
	if g.Value() != 9 {
		t.Fatalf("gcounter %d", g.Value())
	}
	if err := g.applyDelta(&functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Pncounter{}}); err == nil {
		t.Fatal("wrong delta type accepted")
	}
}

func TestSets(t *testing.T) {
	g := NewGSet()
	g.Add([]byte("b"))
	g.Add([]byte("a"))
	if !sameBytes(g.Elements(), bs("a", "b")) || g.Len() != 2 {
		t.Fatalf("gset %q", g.Elements())
	}
	wantDelta(t, g, &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Gset{Gset: &functionpb.GSetDelta{Added: bs("a", "b")}}})
	g.commit()
	g.Add([]byte("a"))
	wantDelta(t, g, nil)

	s := NewORSet()
	if err := s.setState(&functionpb.CrdtState{State: &functionpb.CrdtState_Orset{Orset: &functionpb.ORSetState{Items: bs("x", "y")}}}); err != nil {
		t.Fatal(err)
	}
	s.Add([]byte("a"))
	s.Remove([]byte("a")) // an add then remove in one command is nothing
	s.Remove([]byte("x"))
	s.Remove([]byte("nope"))
	if !sameBytes(s.Elements(), bs("y")) || s.Contains([]byte("x")) || !s.Contains([]byte("y")) {
		t.Fatalf("orset %q", s.Elements())
	}
	wantDelta(t, s, &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Orset{Orset: &functionpb.ORSetDelta{Removed: bs("x")}}})
	s.discard()
	if !sameBytes(s.Elements(), bs("x", "y")) {
		t.Fatalf("after discard %q", s.Elements())
	}
	s.Clear()
	s.Add([]byte("x"))
	if !sameBytes(s.Elements(), bs("x")) {
		t.Fatalf("after clear, add %q", s.Elements())
	}
	wantDelta(t, s, &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Orset{Orset: &functionpb.ORSetDelta{Cleared: true, Added: bs("x")}}})
	s.commit()
	if !sameBytes(s.Elements(), bs("x")) {
		t.Fatalf("after commit %q", s.Elements())
	}
	if err := s.applyDelta(&functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Orset{Orset: &functionpb.ORSetDelta{Cleared: true, Added: bs("q")}}}); err != nil {
		t.Fatal(err)
	}
	if !sameBytes(s.Elements(), bs("q")) {
		t.Fatalf("after remote clear %q", s.Elements())
	}
}

func TestRegisterAndFlag(t *testing.T) {
	r := NewLWWRegister()
	if r.Value() != nil {
		t.Fatal("new register not empty")
	}
	r.Set([]byte("v"))
	if string(r.Value()) != "v" {
		t.Fatalf("register %q", r.Value())
	}
	wantDelta(t, r, &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Lwwregister{Lwwregister: &functionpb.LWWRegisterDelta{Value: []byte("v")}}})
	r.discard()
	if r.Value() != nil {
		t.Fatal("discard kept the write")
	}
	if err := r.applyDelta(&functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Lwwregister{Lwwregister: &functionpb.LWWRegisterDelta{Value: []byte("w")}}}); err != nil {
		t.Fatal(err)
	}
	if string(r.Value()) != "w" {
		t.Fatalf("register %q", r.Value())
	}

	f := NewFlag()
	f.Disable()
	wantDelta(t, f, nil) // already disabled
	f.Enable()
	if !f.Enabled() {
		t.Fatal("not enabled")
	}
	wantDelta(t, f, &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Flag{Flag: &functionpb.FlagDelta{Value: true}}})
	f.commit()
	if !f.Enabled() {
		t.Fatal("commit lost the enable")
	}
	if err := f.setState(&functionpb.CrdtState{State: &functionpb.CrdtState_Pncounter{}}); err == nil {
		t.Fatal("wrong state type accepted")
	}
}
