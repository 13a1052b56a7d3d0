package deltas_test

import (
	"testing"

	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/deltas"
)

func hold(ticks int) func(*deltas.Config) {
	return func(c *deltas.Config) { c.RelayHoldTicks = ticks }
}

// fullMesh returns three engines a, b, c, each the peer of the others,
// that have exchanged a write each, so that each has heard every origin
// and told the others so (Message.Marks).
func fullMesh(t *testing.T, tune ...func(*deltas.Config)) *network {
	t.Helper()
	a := newEngine(t, "a", 1, deltas.ModeDeltaBPRR, tune...)
	b := newEngine(t, "b", 1, deltas.ModeDeltaBPRR, tune...)
	c := newEngine(t, "c", 1, deltas.ModeDeltaBPRR, tune...)
	n := newNetwork(t, a, b, c)
	n.link("a", "b")
	n.link("a", "c")
	n.link("b", "c")
	for _, e := range []*deltas.Engine{a, b, c} {
		incr(t, e, "warm-"+string(e.ID()), 1)
	}
	n.settle(40)
	return n
}

// relays returns the messages among msgs that carry key from a peer other
// than origin.
func relays(msgs []deltas.Message, origin deltas.PeerID, key string) []deltas.Message {
	var out []deltas.Message
	for _, m := range msgs {
		if m.From == origin {
			continue
		}
		for _, ks := range bodyStates(m) {
			if ks.Key == key {
				out = append(out, m)
			}
		}
	}
	return out
}

func TestRelayHeldWhilePeersHearTheOrigin(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tune   []func(*deltas.Config)
		off    bool // HoldRelays(false) after the warm-up
		relays bool
	}{
		{"without hold (BP+RR)", nil, false, true},
		{"hold 2 ticks", []func(*deltas.Config){hold(2)}, false, false},
		{"hold 2 ticks, turned off", []func(*deltas.Config){hold(2)}, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := fullMesh(t, tc.tune...)
			if tc.off {
				for _, e := range n.eng {
					e.HoldRelays(false)
				}
			}
			start := len(n.log)
			for i := range 5 {
				incr(t, n.eng["a"], "k", uint64(i+1))
				n.round()
			}
			n.settle(40)
			got := relays(n.log[start:], "a", "k")
			if tc.relays && len(got) == 0 {
				t.Fatal("b and c never relayed a's deltas to each other: the test sees no relay")
			}
			if !tc.relays && len(got) > 0 {
				t.Fatalf("a's deltas relayed although every peer hears a directly:%s", describe(got))
			}
			for _, m := range n.log[start:] {
				if len(m.Marks) > 0 && (tc.off || len(tc.tune) == 0) {
					t.Fatalf("%s sent marks with the hold off: %v", m.From, m.Marks)
				}
			}
			if v := n.eng["c"].Get("k").(*crdt.GCounter).Value(); v != 15 {
				t.Fatalf("c reads %d, want 15", v)
			}
		})
	}
}

// A peer that stops hearing the origin still gets its deltas, relayed
// once the hold has run out.
func TestHeldRelayRunsOutWhenTheOriginIsCutOff(t *testing.T) {
	n := fullMesh(t, hold(2))
	n.drop = func(m deltas.Message) bool { return m.From == "a" && m.To == "c" }
	incr(t, n.eng["a"], "k", 7)
	rounds := 0
	for ; rounds < 6; rounds++ {
		if v := n.eng["c"].Get("k"); v != nil && v.(*crdt.GCounter).Value() == 7 {
			break
		}
		n.round()
	}
	// Tick 1 sends a's delta; b holds it for 2 ticks, then relays it.
	if rounds > 4 {
		t.Fatalf("c got a's delta after %d rounds, want at most 4 (RelayHoldTicks 2)", rounds)
	}
	if got := relays(n.log, "a", "k"); len(got) == 0 {
		t.Fatal("c got the delta, but not relayed")
	}
	n.drop = nil
	n.settle(60)
}

// An origin that crashes after reaching one peer only: the delta still
// reaches the other, through the peer that holds it.
func TestHeldRelayRunsOutWhenTheOriginCrashes(t *testing.T) {
	n := fullMesh(t, hold(2))
	incr(t, n.eng["a"], "k", 3)
	n.eng["a"].Tick()
	for _, m := range n.take("a") {
		if m.To == "b" {
			n.deliver(m)
		}
	}
	if n.eng["b"].Get("k") == nil {
		t.Fatal("b did not get a's delta")
	}
	if n.eng["b"].Buffered() == 0 || !n.eng["b"].BufferHolds(func(v crdt.Value) bool { _, ok := v.(*crdt.GCounter); return ok }) {
		t.Fatal("b neither buffers nor holds the delta it got")
	}
	delete(n.eng, "a") // crashed: nothing more from or to it
	n.drop = func(m deltas.Message) bool { return m.To == "a" }
	for range 4 {
		n.round()
	}
	if v := n.eng["c"].Get("k"); v == nil || v.(*crdt.GCounter).Value() != 3 {
		t.Fatalf("c reads %v after 4 rounds, want 3", v)
	}
}

// A peer that knows nothing of an origin (it told no mark for it) gets
// the origin's deltas relayed at once: holding is for full meshes.
func TestRelayNotHeldForAPeerThatDoesNotHearTheOrigin(t *testing.T) {
	a := newEngine(t, "a", 1, deltas.ModeDeltaBPRR, hold(2))
	b := newEngine(t, "b", 1, deltas.ModeDeltaBPRR, hold(2))
	c := newEngine(t, "c", 1, deltas.ModeDeltaBPRR, hold(2))
	n := newNetwork(t, a, b, c)
	n.link("a", "b") // a line: a - b - c
	n.link("b", "c")
	incr(t, a, "k", 2)
	n.round() // a -> b
	msgs := n.round()
	if got := relays(msgs, "a", "k"); len(got) == 0 {
		t.Fatalf("b did not relay a's delta to c in the next round:%s", describe(msgs))
	}
	n.settle(40)
}
