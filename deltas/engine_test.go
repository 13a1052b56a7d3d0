package deltas_test

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/deltas"
)

// deltaModes are the modes that buffer deltas.
var deltaModes = []deltas.Mode{deltas.ModeDelta, deltas.ModeDeltaBP, deltas.ModeDeltaRR, deltas.ModeDeltaBPRR}

func replica(id deltas.PeerID) crdt.ReplicaID {
	return crdt.ReplicaID{Node: string(id), Incarnation: 1}
}

func newEngine(t testing.TB, id deltas.PeerID, session uint64, mode deltas.Mode, tune ...func(*deltas.Config)) *deltas.Engine {
	t.Helper()
	cfg := deltas.Config{ID: id, Session: session, Mode: mode}
	for _, f := range tune {
		f(&cfg)
	}
	e, err := deltas.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func ticks(retransmit, evict int) func(*deltas.Config) {
	return func(c *deltas.Config) { c.RetransmitTicks, c.EvictTicks = retransmit, evict }
}

// incr increments the engine's own entry of the GCounter at key.
func incr(t testing.TB, e *deltas.Engine, key string, n uint64) crdt.Value {
	t.Helper()
	d, err := e.Update(key, crdt.TypeGCounter, func(v crdt.Value) (crdt.Value, error) {
		return v.(*crdt.GCounter).Increment(replica(e.ID()), n)
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// gadd adds elements to the GSet at key in one update.
func gadd(t testing.TB, e *deltas.Engine, key string, els ...string) crdt.Value {
	t.Helper()
	d, err := e.Update(key, crdt.TypeGSet, func(v crdt.Value) (crdt.Value, error) {
		s, d := v.(*crdt.GSet), crdt.NewGSet()
		for _, el := range els {
			if _, err := crdt.Join(d, s.Add([]byte(el))); err != nil {
				return nil, err
			}
		}
		return d, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// oradd adds an element to the ORSet at key.
func oradd(t testing.TB, e *deltas.Engine, key, el string) crdt.Value {
	t.Helper()
	d, err := e.Update(key, crdt.TypeORSet, func(v crdt.Value) (crdt.Value, error) {
		return v.(*crdt.ORSet).Add(replica(e.ID()), []byte(el)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func gset(els ...string) *crdt.GSet {
	s := crdt.NewGSet()
	for _, el := range els {
		s.Add([]byte(el))
	}
	return s
}

func gcounter(t testing.TB, entries map[deltas.PeerID]uint64) *crdt.GCounter {
	t.Helper()
	c := crdt.NewGCounter()
	for id, n := range entries {
		if _, err := c.Increment(replica(id), n); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func join(t testing.TB, vs ...crdt.Value) crdt.Value {
	t.Helper()
	x := vs[0].Clone()
	for _, v := range vs[1:] {
		if _, err := crdt.Join(x, v); err != nil {
			t.Fatal(err)
		}
	}
	return x
}

// bodyStates returns the key states a message body carries.
func bodyStates(m deltas.Message) []deltas.KeyState {
	switch b := m.Body.(type) {
	case *deltas.Deltas:
		return b.Deltas
	case *deltas.States:
		return b.States
	case *deltas.DigestReply:
		return b.States
	}
	return nil
}

func keysOf(ks []deltas.KeyState) []string {
	out := []string{}
	for _, k := range ks {
		out = append(out, k.Key)
	}
	return out
}

// carries returns the state of key carried by a message to peer, or nil.
func carries(msgs []deltas.Message, to deltas.PeerID, key string) crdt.Value {
	for _, m := range msgs {
		if m.To != to {
			continue
		}
		for _, ks := range bodyStates(m) {
			if ks.Key == key {
				return ks.State
			}
		}
	}
	return nil
}

func kind(m deltas.Message) string {
	switch m.Body.(type) {
	case nil:
		return "ack"
	case *deltas.Deltas:
		return "Deltas"
	case *deltas.Digest:
		return "Digest"
	case *deltas.DigestReply:
		return "DigestReply"
	case *deltas.States:
		return "States"
	}
	return fmt.Sprintf("%T", m.Body)
}

func filter(msgs []deltas.Message, from, to deltas.PeerID, k string) []deltas.Message {
	var out []deltas.Message
	for _, m := range msgs {
		if m.From == from && m.To == to && kind(m) == k {
			out = append(out, m)
		}
	}
	return out
}

func describe(msgs []deltas.Message) string {
	var b bytes.Buffer
	for _, m := range msgs {
		fmt.Fprintf(&b, "\n  %s->%s s%d ack%d/%d %s", m.From, m.To, m.Session, m.AckSession, m.Ack, kind(m))
		switch body := m.Body.(type) {
		case *deltas.Deltas:
			fmt.Fprintf(&b, "[%d,%d)", body.FromSeq, body.ToSeq)
		case *deltas.States:
			fmt.Fprintf(&b, "{seq %d}", body.Seq)
		case *deltas.DigestReply:
			fmt.Fprintf(&b, "{want %q}", body.Want)
		}
		if ks := bodyStates(m); len(ks) > 0 {
			fmt.Fprintf(&b, " %q", keysOf(ks))
		}
	}
	return b.String()
}

// network routes messages between engines driven by hand. Ghost peers have
// no engine: they acknowledge every delta interval and transfer they get.
type network struct {
	t       testing.TB
	eng     map[deltas.PeerID]*deltas.Engine
	ghosts  map[deltas.PeerID]uint64 // ghost -> its session
	drop    func(deltas.Message) bool
	persist map[deltas.PeerID]map[string][]byte
	log     []deltas.Message // every message taken from Ready, delivered or not
}

func newNetwork(t testing.TB, engines ...*deltas.Engine) *network {
	n := &network{t: t, eng: map[deltas.PeerID]*deltas.Engine{}, ghosts: map[deltas.PeerID]uint64{},
		persist: map[deltas.PeerID]map[string][]byte{}}
	for _, e := range engines {
		n.eng[e.ID()] = e
		n.persist[e.ID()] = map[string][]byte{}
	}
	return n
}

// link makes a and b peers of each other.
func (n *network) link(a, b deltas.PeerID) {
	if e, ok := n.eng[a]; ok {
		e.PeerUp(b)
	}
	if e, ok := n.eng[b]; ok {
		e.PeerUp(a)
	}
}

func (n *network) ids() []deltas.PeerID { return slices.Sorted(maps.Keys(n.eng)) }

// take drains an engine's Ready, recording what it persists and sends.
func (n *network) take(id deltas.PeerID) []deltas.Message {
	rd := n.eng[id].Ready()
	for _, ks := range rd.Persist {
		if ks.Deleted {
			n.persist[id][ks.Key] = nil
			continue
		}
		n.persist[id][ks.Key] = crdt.Encode(ks.State)
	}
	for _, m := range rd.Messages {
		if m.From != id || m.Session == 0 {
			n.t.Fatalf("%s sent a message from %q session %d", id, m.From, m.Session)
		}
	}
	n.log = append(n.log, rd.Messages...)
	return rd.Messages
}

func (n *network) deliver(m deltas.Message) {
	n.t.Helper()
	if n.drop != nil && n.drop(m) {
		return
	}
	if s, ok := n.ghosts[m.To]; ok {
		ack := deltas.Message{From: m.To, To: m.From, Session: s, AckSession: m.Session}
		switch b := m.Body.(type) {
		case *deltas.Deltas:
			ack.Ack = b.ToSeq
		case *deltas.States:
			ack.Ack = b.Seq
		default:
			return
		}
		n.deliver(ack)
		return
	}
	e, ok := n.eng[m.To]
	if !ok {
		n.t.Fatalf("message to unknown peer %q", m.To)
	}
	if err := e.Step(m); err != nil {
		n.t.Fatalf("%s: Step: %v", m.To, err)
	}
}

// flush delivers messages until no engine has any to send.
func (n *network) flush() {
	n.t.Helper()
	for i := 0; ; i++ {
		if i > 1000 {
			n.t.Fatal("messages never stop")
		}
		var msgs []deltas.Message
		for _, id := range n.ids() {
			msgs = append(msgs, n.take(id)...)
		}
		if len(msgs) == 0 {
			return
		}
		for _, m := range msgs {
			n.deliver(m)
		}
	}
}

// round ticks every engine, then delivers until quiet. It returns the
// messages sent during the round.
func (n *network) round() []deltas.Message {
	n.t.Helper()
	n.flush()
	start := len(n.log)
	for _, id := range n.ids() {
		n.eng[id].Tick()
	}
	n.flush()
	return slices.Clone(n.log[start:])
}

// settle runs rounds until the engines hold the same state, with empty
// buffers, and a round sends nothing; then it checks that they stay quiet
// (no periodic re-sync) for longer than every timeout.
func (n *network) settle(limit int) int {
	n.t.Helper()
	var last []deltas.Message
	for r := 1; r <= limit; r++ {
		last = n.round()
		if len(last) != 0 || n.differ() != "" {
			continue
		}
		for q := 1; q <= quietRounds; q++ {
			if msgs := n.round(); len(msgs) != 0 {
				n.t.Fatalf("converged after %d rounds, but %d rounds later:%s", r, q, describe(msgs))
			}
		}
		return r
	}
	n.t.Fatalf("not settled after %d rounds: %s; last round:%s", limit, n.differ(), describe(last))
	return 0
}

// differ describes how the engines differ in state, or the first engine
// that buffers deltas; "" if neither.
func (n *network) differ() string {
	ids := n.ids()
	ref := n.eng[ids[0]]
	for _, id := range ids {
		e := n.eng[id]
		if !slices.Equal(ref.Keys(), e.Keys()) {
			return fmt.Sprintf("keys of %s %q, of %s %q", ref.ID(), ref.Keys(), id, e.Keys())
		}
		for _, k := range ref.Keys() {
			if !ref.Get(k).Equal(e.Get(k)) {
				return fmt.Sprintf("key %q differs between %s and %s", k, ref.ID(), id)
			}
		}
		if st := e.Stats(); st.BufferEntries != 0 {
			return fmt.Sprintf("%s buffers %d deltas", id, st.BufferEntries)
		}
	}
	return ""
}

// quietRounds exceeds the default RetransmitTicks, EvictTicks and
// SyncTimeoutTicks.
const quietRounds = 25

func (n *network) converged() {
	n.t.Helper()
	ids := n.ids()
	ref := n.eng[ids[0]]
	for _, id := range ids[1:] {
		e := n.eng[id]
		if !slices.Equal(ref.Keys(), e.Keys()) {
			n.t.Fatalf("keys of %s %q, of %s %q", ref.ID(), ref.Keys(), id, e.Keys())
		}
		for _, k := range ref.Keys() {
			if !ref.Get(k).Equal(e.Get(k)) {
				n.t.Fatalf("key %q differs between %s and %s", k, ref.ID(), id)
			}
		}
	}
}

func TestLocalUpdateReachesPeerInOneTick(t *testing.T) {
	for _, mode := range deltaModes {
		// Idle rounds first, longer than EvictTicks: a peer that acked
		// everything is not late, however long nothing happens.
		for _, idle := range []int{0, 25} {
			t.Run(fmt.Sprintf("%s/idle%d", mode, idle), func(t *testing.T) {
				a := newEngine(t, "a", 1, mode, ticks(3, 10))
				b := newEngine(t, "b", 1, mode, ticks(3, 10))
				n := newNetwork(t, a, b)
				n.link("a", "b")
				// Each engine introduces its session to a new peer once.
				if msgs := n.round(); len(msgs) != 2 || kind(msgs[0]) != "ack" || kind(msgs[1]) != "ack" {
					t.Fatalf("first round sent:%s\nwant one bare introduction each way", describe(msgs))
				}
				for range idle {
					if msgs := n.round(); len(msgs) != 0 {
						t.Fatalf("idle engines sent:%s", describe(msgs))
					}
				}
				d := incr(t, a, "k", 5)
				if got := a.Stats().BufferEntries; got != 1 {
					t.Fatalf("BufferEntries after an update = %d, want 1", got)
				}
				a.Tick()
				msgs := n.take("a")
				if len(msgs) != 1 || msgs[0].To != "b" {
					t.Fatalf("after one tick a sent:%s\nwant one Deltas to b", describe(msgs))
				}
				ds, ok := msgs[0].Body.(*deltas.Deltas)
				if !ok || len(ds.Deltas) != 1 || ds.Deltas[0].Key != "k" || !ds.Deltas[0].State.Equal(d) {
					t.Fatalf("a sent%s, want Deltas carrying the update of k", describe(msgs))
				}
				n.deliver(msgs[0])
				if !b.Get("k").Equal(a.Get("k")) {
					t.Fatal("b does not hold the update after one tick")
				}
				b.Tick()
				replies := n.take("b")
				acked := false
				for _, r := range replies {
					if r.To == "a" && r.AckSession == 1 && r.Ack == ds.ToSeq {
						acked = true
					}
					n.deliver(r)
				}
				if !acked {
					t.Fatalf("b's tick did not acknowledge [%d, %d):%s", ds.FromSeq, ds.ToSeq, describe(replies))
				}
				a.Tick()
				if got := a.Stats().BufferEntries; got != 0 {
					t.Fatalf("a still buffers %d deltas after the ack", got)
				}
				n.settle(10)
			})
		}
	}
}

func TestBackPropagation(t *testing.T) {
	for _, mode := range deltaModes {
		t.Run(mode.String(), func(t *testing.T) {
			// a - b - c
			a, b, c := newEngine(t, "a", 1, mode), newEngine(t, "b", 1, mode), newEngine(t, "c", 1, mode)
			n := newNetwork(t, a, b, c)
			n.link("a", "b")
			n.link("b", "c")
			d := incr(t, a, "k", 1)
			a.Tick()
			for _, m := range n.take("a") {
				n.deliver(m)
			}
			b.Tick()
			msgs := n.take("b")
			echo := carries(msgs, "a", "k")
			if mode.BP() && echo != nil {
				t.Errorf("with BP, b sent a's delta back to a:%s", describe(msgs))
			}
			if !mode.BP() && (echo == nil || !echo.Equal(d)) {
				t.Errorf("without BP, b did not send the delta back to a:%s", describe(msgs))
			}
			if fwd := carries(msgs, "c", "k"); fwd == nil || !fwd.Equal(d) {
				t.Errorf("b did not forward a's delta to c:%s", describe(msgs))
			}
			// Either way b acknowledges a's interval.
			if !slices.ContainsFunc(msgs, func(m deltas.Message) bool { return m.To == "a" && m.AckSession == 1 && m.Ack == 1 }) {
				t.Errorf("b did not acknowledge a's delta:%s", describe(msgs))
			}
			for _, m := range msgs {
				n.deliver(m)
			}
			n.settle(10)
		})
	}
}

func TestRedundancyRemoval(t *testing.T) {
	type tcase struct {
		name string
		// setup makes a's state of "k"; it returns a delta from a's history.
		setup              func(t *testing.T, a *deltas.Engine) crdt.Value
		redundant, partial func(t *testing.T, old crdt.Value) crdt.Value
	}
	cases := []tcase{
		{
			name: "GSet",
			setup: func(t *testing.T, a *deltas.Engine) crdt.Value {
				return gadd(t, a, "k", "x", "y")
			},
			redundant: func(*testing.T, crdt.Value) crdt.Value { return gset("x") },
			partial:   func(*testing.T, crdt.Value) crdt.Value { return gset("y", "z") },
		},
		{
			name: "GCounter",
			setup: func(t *testing.T, a *deltas.Engine) crdt.Value {
				return incr(t, a, "k", 5)
			},
			redundant: func(t *testing.T, _ crdt.Value) crdt.Value { return gcounter(t, map[deltas.PeerID]uint64{"a": 3}) },
			partial: func(t *testing.T, _ crdt.Value) crdt.Value {
				return gcounter(t, map[deltas.PeerID]uint64{"a": 4, "c": 2})
			},
		},
		{
			name: "ORSet",
			setup: func(t *testing.T, a *deltas.Engine) crdt.Value {
				dx := oradd(t, a, "k", "x")
				oradd(t, a, "k", "y")
				return dx
			},
			redundant: func(_ *testing.T, dx crdt.Value) crdt.Value { return dx },
			partial: func(t *testing.T, dx crdt.Value) crdt.Value {
				dz := crdt.NewORSet().Add(replica("c"), []byte("z"))
				return join(t, dx, dz)
			},
		},
	}
	for _, tc := range cases {
		for _, mode := range deltaModes {
			t.Run(tc.name+"/"+mode.String(), func(t *testing.T) {
				a, b := newEngine(t, "a", 1, mode), newEngine(t, "b", 1, mode)
				n := newNetwork(t, a, b)
				n.ghosts["c"] = 9
				n.link("a", "b")
				b.PeerUp("c")
				old := tc.setup(t, a)
				n.settle(10)
				x := b.Get("k")

				// A delta that adds nothing: neither buffered nor forwarded.
				red := tc.redundant(t, old)
				if ok, _ := crdt.Leq(red, x); !ok {
					t.Fatal("test bug: the redundant delta is new")
				}
				err := b.Step(deltas.Message{From: "c", To: "b", Session: 9,
					Body: &deltas.Deltas{FromSeq: 0, ToSeq: 1, Deltas: []deltas.KeyState{{Key: "k", State: red}}}})
				if err != nil {
					t.Fatal(err)
				}
				if got := b.Stats().BufferEntries; got != 0 {
					t.Fatalf("a redundant delta was buffered (%d entries)", got)
				}
				if rd := b.Ready(); len(rd.Persist) != 0 {
					t.Fatalf("a redundant delta changed %q", keysOf(rd.Persist))
				}
				if !b.Get("k").Equal(x) {
					t.Fatal("a redundant delta changed the state")
				}
				b.Tick()
				msgs := n.take("b")
				if carries(msgs, "a", "k") != nil || carries(msgs, "c", "k") != nil {
					t.Fatalf("a redundant delta was forwarded:%s", describe(msgs))
				}
				for _, m := range msgs {
					n.deliver(m)
				}

				// A partly new delta: RR buffers and forwards exactly what
				// inflates; without RR the whole delta.
				part := tc.partial(t, old)
				want, err := crdt.Extract(x, part)
				if err != nil {
					t.Fatal(err)
				}
				if want.IsBottom() || want.Equal(part) || want.Size() == part.Size() {
					t.Fatal("test bug: the partial delta is not partly new")
				}
				err = b.Step(deltas.Message{From: "c", To: "b", Session: 9,
					Body: &deltas.Deltas{FromSeq: 1, ToSeq: 2, Deltas: []deltas.KeyState{{Key: "k", State: part}}}})
				if err != nil {
					t.Fatal(err)
				}
				if !b.Get("k").Equal(join(t, x, part)) {
					t.Fatal("b's state is not x ⊔ d")
				}
				buffered := part
				if mode.RR() {
					buffered = want
				}
				st := b.Stats()
				if st.BufferEntries != 1 || st.BufferElements != buffered.Size() {
					t.Fatalf("buffer holds %d entries of %d elements, want 1 of %d", st.BufferEntries, st.BufferElements, buffered.Size())
				}
				b.Tick()
				msgs = n.take("b")
				if got := carries(msgs, "a", "k"); got == nil || !got.Equal(buffered) {
					t.Fatalf("b forwarded to a %v, want %v:%s", got, buffered, describe(msgs))
				}
				gotC := carries(msgs, "c", "k")
				switch {
				case mode.BP() && gotC != nil:
					t.Fatalf("with BP b sent c's delta back to c:%s", describe(msgs))
				case !mode.BP() && (gotC == nil || !gotC.Equal(buffered)):
					t.Fatalf("without BP b sent c %v, want %v", gotC, buffered)
				}
				for _, m := range msgs {
					n.deliver(m)
				}
				n.settle(10)
			})
		}
	}
}

func TestRetransmitAfterRetransmitTicks(t *testing.T) {
	for _, mode := range deltaModes {
		for _, rt := range []int{2, 3, 5} {
			t.Run(fmt.Sprintf("%s/retransmit%d", mode, rt), func(t *testing.T) {
				a, b := newEngine(t, "a", 1, mode, ticks(rt, 50)), newEngine(t, "b", 1, mode, ticks(rt, 50))
				n := newNetwork(t, a, b)
				n.link("a", "b")
				d := incr(t, a, "k", 1)
				a.Tick() // tick 1: sent, and lost
				if msgs := n.take("a"); carries(msgs, "b", "k") == nil {
					t.Fatalf("tick 1 sent:%s", describe(msgs))
				}
				for tick := 2; tick < rt; tick++ {
					a.Tick()
					if msgs := n.take("a"); len(msgs) != 0 {
						t.Fatalf("tick %d, before RetransmitTicks, sent:%s", tick, describe(msgs))
					}
				}
				a.Tick() // tick rt
				msgs := n.take("a")
				if len(msgs) != 1 || kind(msgs[0]) != "Deltas" {
					t.Fatalf("tick %d sent:%s\nwant the lost interval again", rt, describe(msgs))
				}
				if ds := msgs[0].Body.(*deltas.Deltas); ds.FromSeq != 0 || ds.ToSeq != 1 || len(ds.Deltas) != 1 || !ds.Deltas[0].State.Equal(d) {
					t.Fatalf("retransmission is%s, want [0, 1) with the update", describe(msgs))
				}
				n.deliver(msgs[0])
				if !b.Get("k").Equal(d) {
					t.Fatal("b lacks the retransmitted delta")
				}
				n.settle(10)
			})
		}
		t.Run(mode.String()+"/lost-ack", func(t *testing.T) {
			a, b := newEngine(t, "a", 1, mode, ticks(2, 50)), newEngine(t, "b", 1, mode, ticks(2, 50))
			n := newNetwork(t, a, b)
			n.link("a", "b")
			acks := 0
			n.drop = func(m deltas.Message) bool {
				if m.From == "b" && m.AckSession != 0 {
					acks++
					return acks == 1
				}
				return false
			}
			incr(t, a, "k", 1)
			sends := 0
			for r := 0; r < 10 && a.Stats().BufferEntries > 0; r++ {
				if carries(n.round(), "b", "k") != nil {
					sends++
				}
				if got := b.Stats().BufferEntries; got > 1 {
					t.Fatalf("a duplicate delta was buffered again: %d entries", got)
				}
			}
			if sends < 2 {
				t.Fatalf("a sent the delta %d times, want a retransmission after the lost ack", sends)
			}
			n.drop = nil
			n.settle(10)
		})
	}
}

func TestEvictSilentPeer(t *testing.T) {
	const rt, evict = 2, 6
	for _, mode := range deltaModes {
		t.Run(mode.String(), func(t *testing.T) {
			a, b := newEngine(t, "a", 1, mode, ticks(rt, evict)), newEngine(t, "b", 1, mode, ticks(rt, evict))
			n := newNetwork(t, a, b)
			n.link("a", "b")
			incr(t, a, "same1", 1)
			incr(t, b, "same2", 1)
			n.settle(10)
			for range 2 * evict {
				n.round()
			}

			// b goes silent: it stops ticking and gets nothing.
			delete(n.eng, "b")
			n.drop = func(m deltas.Message) bool { return m.To == "b" }
			incr(t, a, "diffA", 1)
			incr(t, a, "both", 1)
			for tick := 1; tick <= evict; tick++ {
				n.round()
				got := a.Stats().BufferEntries
				if tick < evict && got != 2 {
					t.Fatalf("tick %d of %d: %d deltas buffered, want 2 (b evicted early?)", tick, evict, got)
				}
				if tick == evict && got != 0 {
					t.Fatalf("b silent for EvictTicks, yet a buffers %d deltas", got)
				}
			}
			// Evicted, a only pings b, with bare messages.
			for range 3 * rt {
				for _, m := range n.round() {
					if m.Body != nil {
						t.Fatalf("a sent an evicted peer%s", describe([]deltas.Message{m}))
					}
				}
			}
			// Meanwhile b changed a key of its own and one a changed too.
			incr(t, b, "diffB", 1)
			incr(t, b, "both", 1)

			n.eng["b"] = b
			n.drop = nil
			start := len(n.log)
			n.settle(30)
			msgs := n.log[start:]
			dg := filter(msgs, "a", "b", "Digest")
			dr := filter(msgs, "b", "a", "DigestReply")
			st := filter(msgs, "a", "b", "States")
			if len(dg) != 1 || len(dr) != 1 || len(st) != 1 {
				t.Fatalf("want one Digest, DigestReply and States, got:%s", describe(msgs))
			}
			for _, k := range []string{"Digest", "DigestReply", "States"} {
				if len(filter(msgs, "b", "a", k))+len(filter(msgs, "a", "b", k)) != 1 {
					t.Fatalf("more than one %s:%s", k, describe(msgs))
				}
			}
			var digested []string
			for _, kd := range dg[0].Body.(*deltas.Digest).Digests {
				digested = append(digested, kd.Key)
			}
			if want := []string{"both", "diffA", "diffB", "same1", "same2"}; !slices.Equal(digested, want) {
				t.Errorf("Digest lists %q, want %q", digested, want)
			}
			reply := dr[0].Body.(*deltas.DigestReply)
			if want := []string{"both", "diffA"}; !slices.Equal(reply.Want, want) {
				t.Errorf("DigestReply wants %q, want %q", reply.Want, want)
			}
			if got, want := keysOf(reply.States), []string{"both"}; !slices.Equal(got, want) {
				t.Errorf("DigestReply carries %q, want %q", got, want)
			}
			states := st[0].Body.(*deltas.States)
			if got, want := keysOf(states.States), []string{"both", "diffA"}; !slices.Equal(got, want) {
				t.Errorf("States carries %q, want %q", got, want)
			}
			if states.Seq == 0 {
				t.Error("the transfer's States has Seq 0")
			}
			if v := a.Get("both").(*crdt.GCounter).Value(); v != 2 {
				t.Errorf("both = %d, want 2", v)
			}
		})
	}
}

func TestRestartedPeerIsResynced(t *testing.T) {
	for _, mode := range deltaModes {
		t.Run(mode.String(), func(t *testing.T) {
			a, b := newEngine(t, "a", 1, mode), newEngine(t, "b", 1, mode)
			n := newNetwork(t, a, b)
			n.link("a", "b")
			incr(t, a, "a0", 1)
			gadd(t, b, "b0", "x")
			n.settle(10)

			// a's next update is lost, and b crashes right after an update
			// it persisted but never sent.
			incr(t, a, "a1", 1)
			a.Tick()
			n.take("a")
			gadd(t, b, "b1", "y")
			b.Tick()
			stale := n.take("b")
			if carries(stale, "a", "b1") == nil {
				t.Fatalf("b sent:%s", describe(stale))
			}

			b2 := newEngine(t, "b", 2, mode)
			for k, enc := range n.persist["b"] {
				v, err := crdt.Decode(enc, crdt.DefaultLimits)
				if err != nil {
					t.Fatal(err)
				}
				b2.Restore(k, v)
			}
			if got := b2.Keys(); !slices.Equal(got, []string{"a0", "b0", "b1"}) {
				t.Fatalf("restored keys %q", got)
			}
			n.eng["b"] = b2
			b2.PeerUp("a")
			a.PeerDown("b")
			a.PeerUp("b")
			start := len(n.log)
			n.settle(40)
			msgs := n.log[start:]
			if len(filter(msgs, "b", "a", "Digest")) == 0 {
				t.Errorf("the restarted engine did not open a digest transfer:%s", describe(msgs))
			}
			if len(filter(msgs, "a", "b", "Digest")) == 0 {
				t.Errorf("a did not re-sync the restarted peer with a digest:%s", describe(msgs))
			}
			if got, want := a.Keys(), []string{"a0", "a1", "b0", "b1"}; !slices.Equal(got, want) {
				t.Fatalf("keys %q, want %q", got, want)
			}

			// Messages of b's first session are ignored, even with news.
			stale = append(stale, deltas.Message{From: "b", To: "a", Session: 1,
				Body: &deltas.Deltas{FromSeq: 0, ToSeq: 9, Deltas: []deltas.KeyState{{Key: "new", State: gset("n")}}}})
			for _, m := range stale {
				if err := a.Step(m); err != nil {
					t.Fatalf("a stale message: %v", err)
				}
				if rd := a.Ready(); len(rd.Messages) != 0 || len(rd.Persist) != 0 {
					t.Fatalf("a stale message had an effect: %d messages, persist %q", len(rd.Messages), keysOf(rd.Persist))
				}
			}
			if got, want := a.Keys(), []string{"a0", "a1", "b0", "b1"}; !slices.Equal(got, want) {
				t.Fatalf("after stale messages keys %q, want %q", got, want)
			}
			n.settle(10)
		})
	}
}

func TestNewPeer(t *testing.T) {
	cases := []struct {
		name   string
		setup  func(t *testing.T, a *deltas.Engine, n *network)
		digest bool
	}{
		{"fresh engine: the buffer from seq 0", func(t *testing.T, a *deltas.Engine, n *network) {
			incr(t, a, "k1", 1)
			gadd(t, a, "k2", "x")
		}, false},
		{"restored state: a digest", func(t *testing.T, a *deltas.Engine, n *network) {
			a.Restore("k1", gcounter(t, map[deltas.PeerID]uint64{"a": 1}))
			a.Restore("k2", gset("x"))
		}, true},
		{"restored state then an update: a digest", func(t *testing.T, a *deltas.Engine, n *network) {
			a.Restore("k1", gcounter(t, map[deltas.PeerID]uint64{"a": 1}))
			gadd(t, a, "k2", "x")
		}, true},
		{"buffer collected: a digest", func(t *testing.T, a *deltas.Engine, n *network) {
			n.ghosts["g"] = 5
			a.PeerUp("g")
			incr(t, a, "k1", 1)
			gadd(t, a, "k2", "x")
			n.round()
			n.round()
			if got := a.Stats().BufferEntries; got != 0 {
				t.Fatalf("buffer not collected: %d", got)
			}
		}, true},
	}
	for _, tc := range cases {
		for _, mode := range deltaModes {
			t.Run(tc.name+"/"+mode.String(), func(t *testing.T) {
				a := newEngine(t, "a", 1, mode)
				n := newNetwork(t, a)
				tc.setup(t, a, n)
				b := newEngine(t, "b", 1, mode)
				n.eng["b"] = b
				n.persist["b"] = map[string][]byte{}
				n.link("a", "b")
				a.Tick()
				var msgs []deltas.Message
				for _, m := range n.take("a") {
					if m.To == "b" {
						msgs = append(msgs, m)
					}
				}
				if len(msgs) != 1 {
					t.Fatalf("a sent b:%s", describe(msgs))
				}
				switch body := msgs[0].Body.(type) {
				case *deltas.Digest:
					if !tc.digest {
						t.Fatalf("a sent a digest, want its buffer")
					}
					var keys []string
					for _, kd := range body.Digests {
						keys = append(keys, kd.Key)
					}
					if !slices.Equal(keys, []string{"k1", "k2"}) {
						t.Fatalf("digest of %q", keys)
					}
				case *deltas.Deltas:
					if tc.digest {
						t.Fatalf("a sent deltas%s, want a digest", describe(msgs))
					}
					if body.FromSeq != 0 || body.ToSeq != 2 || !slices.Equal(keysOf(body.Deltas), []string{"k1", "k2"}) {
						t.Fatalf("a sent%s, want [0, 2) of k1, k2", describe(msgs))
					}
				default:
					t.Fatalf("a sent%s", describe(msgs))
				}
				n.deliver(msgs[0])
				n.settle(15)
				if !slices.Equal(b.Keys(), []string{"k1", "k2"}) {
					t.Fatalf("b holds %q", b.Keys())
				}
			})
		}
	}
}

// A restored engine's full-state transfer ends only with an
// acknowledgement of it: an ack sent before the peer got the (lost) States
// must not end it.
func TestRestoredTransferNeedsItsAck(t *testing.T) {
	for _, mode := range deltaModes {
		t.Run(mode.String(), func(t *testing.T) {
			a, b := newEngine(t, "a", 2, mode), newEngine(t, "b", 1, mode)
			a.Restore("k", gset("restored"))
			n := newNetwork(t, a, b)
			n.link("a", "b")
			gadd(t, b, "kb", "x")
			lost := 0
			n.drop = func(m deltas.Message) bool {
				if kind(m) == "States" && m.From == "a" && lost == 0 {
					lost++
					return true
				}
				return false
			}
			n.round()
			if lost != 1 {
				t.Fatalf("no transfer to lose:%s", describe(n.log))
			}
			// b's next delta carries an acknowledgement of a's session.
			gadd(t, b, "kb", "y")
			n.settle(40)
			if !b.Get("k").Equal(gset("restored")) {
				t.Fatal("b never got a's restored state")
			}
		})
	}
}

// Restore after PeerUp: the known peer gets the restored state too.
func TestRestoreAfterPeerUp(t *testing.T) {
	for _, mode := range deltaModes {
		t.Run(mode.String(), func(t *testing.T) {
			a, b := newEngine(t, "a", 2, mode), newEngine(t, "b", 1, mode)
			n := newNetwork(t, a, b)
			n.link("a", "b")
			a.Restore("k", gset("restored"))
			n.settle(40)
			if !b.Get("k").Equal(gset("restored")) {
				t.Fatal("b never got a's restored state")
			}
		})
	}
}

func TestStateMode(t *testing.T) {
	a, b := newEngine(t, "a", 1, deltas.ModeState), newEngine(t, "b", 1, deltas.ModeState)
	n := newNetwork(t, a, b)
	n.link("a", "b")
	incr(t, a, "k1", 1)
	gadd(t, b, "k2", "x")
	for r := 0; r < 4; r++ {
		before := map[deltas.PeerID][]string{"a": a.Keys(), "b": b.Keys()}
		msgs := n.round()
		for _, from := range []deltas.PeerID{"a", "b"} {
			to := deltas.PeerID("b")
			if from == "b" {
				to = "a"
			}
			sent := filter(msgs, from, to, "States")
			if len(sent) != 1 || len(msgs) != 2 {
				t.Fatalf("round %d:%s\nwant one States each way", r, describe(msgs))
			}
			st := sent[0].Body.(*deltas.States)
			want := before[from]
			if st.Seq != 0 || !slices.Equal(keysOf(st.States), want) {
				t.Fatalf("round %d: %s sent%s, want States{0} of %q", r, from, describe(sent), want)
			}
		}
		for _, e := range []*deltas.Engine{a, b} {
			if got := e.Stats().BufferEntries; got != 0 {
				t.Fatalf("state mode buffered %d deltas", got)
			}
		}
		if r == 1 {
			incr(t, b, "k1", 2)
		}
	}
	n.converged()
	if v := a.Get("k1").(*crdt.GCounter).Value(); v != 3 {
		t.Fatalf("k1 = %d, want 3", v)
	}
}

// refusalEngine builds the same engine every time: b, session 7, with
// state, an unacknowledged buffer and a known peer a of session 3.
func refusalEngine(t *testing.T) *deltas.Engine {
	b := newEngine(t, "b", 7, deltas.ModeDeltaBPRR)
	b.PeerUp("a")
	incr(t, b, "g", 1)
	gadd(t, b, "s", "x")
	if err := b.Step(deltas.Message{From: "a", Session: 3, Body: &deltas.Deltas{FromSeq: 0, ToSeq: 1,
		Deltas: []deltas.KeyState{{Key: "o", State: crdt.NewORSet().Add(replica("a"), []byte("e"))}}}}); err != nil {
		t.Fatal(err)
	}
	b.Tick()
	b.Ready()
	return b
}

func TestStepRefusesWhole(t *testing.T) {
	ks := func(k string, v crdt.Value) deltas.KeyState { return deltas.KeyState{Key: k, State: v} }
	counter := gcounter(t, map[deltas.PeerID]uint64{"a": 4})
	cases := []struct {
		name string
		m    deltas.Message
		want error // nil: accepted, and ignored
	}{
		{"deltas: key of another type", deltas.Message{From: "a", Session: 3,
			Body: &deltas.Deltas{FromSeq: 1, ToSeq: 2, Deltas: []deltas.KeyState{ks("n", gset("y")), ks("s", counter)}}},
			deltas.ErrTypeMismatch},
		{"states: key of another type", deltas.Message{From: "a", Session: 3,
			Body: &deltas.States{Seq: 1, States: []deltas.KeyState{ks("g", counter), ks("o", gset("y"))}}},
			deltas.ErrTypeMismatch},
		{"digest reply: key of another type", deltas.Message{From: "a", Session: 3,
			Body: &deltas.DigestReply{Want: []string{"g"}, States: []deltas.KeyState{ks("n", gset("y")), ks("g", gset("y"))}}},
			deltas.ErrTypeMismatch},
		{"one new key twice with two types", deltas.Message{From: "a", Session: 3,
			Body: &deltas.Deltas{FromSeq: 1, ToSeq: 2, Deltas: []deltas.KeyState{ks("n", gset("y")), ks("n", counter)}}},
			deltas.ErrTypeMismatch},
		{"unknown sender, type mismatch", deltas.Message{From: "z", Session: 1,
			Body: &deltas.States{States: []deltas.KeyState{ks("n", gset("y")), ks("g", gset("y"))}}},
			deltas.ErrTypeMismatch},
		{"ack above what was sent", deltas.Message{From: "a", Session: 3, AckSession: 7, Ack: 4,
			Body: &deltas.Deltas{FromSeq: 1, ToSeq: 2, Deltas: []deltas.KeyState{ks("n", gset("y"))}}},
			deltas.ErrBadMessage},
		{"interval from > to", deltas.Message{From: "a", Session: 3, AckSession: 7, Ack: 2,
			Body: &deltas.Deltas{FromSeq: 2, ToSeq: 1, Deltas: []deltas.KeyState{ks("n", gset("y"))}}},
			deltas.ErrBadMessage},
		{"from itself", deltas.Message{From: "b", Session: 7,
			Body: &deltas.Deltas{FromSeq: 0, ToSeq: 1, Deltas: []deltas.KeyState{ks("n", gset("y"))}}},
			deltas.ErrBadMessage},
		{"session 0", deltas.Message{From: "a", Session: 0,
			Body: &deltas.Deltas{FromSeq: 1, ToSeq: 2, Deltas: []deltas.KeyState{ks("n", gset("y"))}}},
			deltas.ErrBadMessage},
		{"no sender", deltas.Message{Session: 3,
			Body: &deltas.States{States: []deltas.KeyState{ks("n", gset("y"))}}},
			deltas.ErrBadMessage},
		{"key without a state", deltas.Message{From: "a", Session: 3,
			Body: &deltas.Deltas{FromSeq: 1, ToSeq: 2, Deltas: []deltas.KeyState{ks("n", gset("y")), {Key: "m"}}}},
			deltas.ErrBadMessage},
		{"older session of the peer", deltas.Message{From: "a", Session: 2, AckSession: 7, Ack: 2,
			Body: &deltas.Deltas{FromSeq: 0, ToSeq: 5, Deltas: []deltas.KeyState{ks("n", gset("y")), ks("g", counter)}}},
			nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, twin := refusalEngine(t), refusalEngine(t)
			keys, stats := b.Keys(), b.Stats()
			states := map[string]crdt.Value{}
			for _, k := range keys {
				states[k] = b.Get(k)
			}
			var err error
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Fatalf("Step panicked: %v", p)
					}
				}()
				err = b.Step(tc.m)
			}()
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("Step: %v, want it ignored", err)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("Step: %v, want %v", err, tc.want)
			}
			if got := b.Keys(); !slices.Equal(got, keys) {
				t.Fatalf("keys %q became %q", keys, got)
			}
			for _, k := range keys {
				if !b.Get(k).Equal(states[k]) {
					t.Fatalf("key %q changed", k)
				}
			}
			if got := b.Stats(); got != stats {
				t.Fatalf("stats %+v became %+v", stats, got)
			}
			if rd := b.Ready(); len(rd.Messages) != 0 || len(rd.Persist) != 0 {
				t.Fatalf("refused message produced%s, persist %q", describe(rd.Messages), keysOf(rd.Persist))
			}
			// Nothing else changed either (acks, peers): the engine
			// behaves exactly like one that never saw the message.
			for range 4 {
				b.Tick()
				twin.Tick()
				got, want := b.Ready().Messages, twin.Ready().Messages
				if len(got) != len(want) {
					t.Fatalf("after the refusal b sends%s\nwant%s", describe(got), describe(want))
				}
				for i := range got {
					if got[i].To != want[i].To || !bytes.Equal(deltas.EncodeMessage(got[i]), deltas.EncodeMessage(want[i])) {
						t.Fatalf("after the refusal b sends%s\nwant%s", describe(got), describe(want))
					}
				}
			}
		})
	}
}

func TestUpdateWrongType(t *testing.T) {
	e := newEngine(t, "a", 1, deltas.ModeDeltaBPRR)
	incr(t, e, "g", 2)
	e.Ready()
	called := false
	_, err := e.Update("g", crdt.TypeGSet, func(v crdt.Value) (crdt.Value, error) {
		called = true
		return v.(*crdt.GSet).Add([]byte("x")), nil
	})
	if !errors.Is(err, deltas.ErrTypeMismatch) {
		t.Fatalf("Update of a GCounter as a GSet: %v, want ErrTypeMismatch", err)
	}
	if called {
		t.Fatal("the mutator ran on a key of another type")
	}
	_, err = e.Update("g", crdt.TypeGCounter, func(v crdt.Value) (crdt.Value, error) { return gset("x"), nil })
	if !errors.Is(err, deltas.ErrTypeMismatch) {
		t.Fatalf("Update returning a delta of another type: %v, want ErrTypeMismatch", err)
	}
	_, err = e.Update("g", crdt.TypeGCounter, func(v crdt.Value) (crdt.Value, error) { return nil, nil })
	if !errors.Is(err, deltas.ErrTypeMismatch) {
		t.Fatalf("Update returning no delta: %v, want ErrTypeMismatch", err)
	}
	if v := e.Get("g").(*crdt.GCounter).Value(); v != 2 || e.Stats().BufferEntries != 1 {
		t.Fatalf("failed updates changed the engine: g = %d, %d buffered", v, e.Stats().BufferEntries)
	}
	if rd := e.Ready(); len(rd.Persist) != 0 {
		t.Fatalf("failed updates persist %q", keysOf(rd.Persist))
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  deltas.Config
		ok   bool
	}{
		{"valid", deltas.Config{ID: "a", Session: 1}, true},
		{"valid state mode", deltas.Config{ID: "a", Session: 9, Mode: deltas.ModeState}, true},
		{"empty id", deltas.Config{Session: 1}, false},
		{"session 0", deltas.Config{ID: "a"}, false},
		{"unknown mode", deltas.Config{ID: "a", Session: 1, Mode: deltas.Mode(42)}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate: %v, want ok=%v", err, tc.ok)
			}
			e, err := deltas.New(tc.cfg)
			if (err == nil) != tc.ok || (e == nil) == tc.ok {
				t.Fatalf("New: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestParseMode(t *testing.T) {
	seen := map[string]bool{}
	for _, m := range deltas.Modes {
		s := m.String()
		if seen[s] {
			t.Fatalf("two modes print as %q", s)
		}
		seen[s] = true
		got, err := deltas.ParseMode(s)
		if err != nil || got != m {
			t.Fatalf("ParseMode(%q) = %v, %v; want %v", s, got, err, m)
		}
	}
	if len(seen) != 5 {
		t.Fatalf("%d modes, want 5", len(seen))
	}
	if deltas.Mode(0) != deltas.ModeDeltaBPRR {
		t.Fatal("the zero Mode is not delta+bp+rr")
	}
	for _, s := range []string{"", "bogus", "Delta", "delta+rr+bp", deltas.Mode(77).String()} {
		if _, err := deltas.ParseMode(s); err == nil {
			t.Errorf("ParseMode(%q) succeeded", s)
		}
	}
}

func TestReadyPersistsChangedKeysOnce(t *testing.T) {
	for _, mode := range deltas.Modes {
		t.Run(mode.String(), func(t *testing.T) {
			e := newEngine(t, "a", 1, mode)
			e.PeerUp("b")
			incr(t, e, "k1", 1)
			incr(t, e, "k1", 1)
			gadd(t, e, "k2", "x")
			gadd(t, e, "k2", "x") // no change: a bottom delta
			gadd(t, e, "k4", "x")
			e.Ready()
			incr(t, e, "k1", 3)
			gadd(t, e, "k2", "x") // no change
			err := e.Step(deltas.Message{From: "b", Session: 1, Body: &deltas.Deltas{FromSeq: 0, ToSeq: 2, Deltas: []deltas.KeyState{
				{Key: "k3", State: gset("y")},
				{Key: "k4", State: gset("x")}, // no change
			}}})
			if err != nil {
				t.Fatal(err)
			}
			incr(t, e, "k1", 1)
			rd := e.Ready()
			if got, want := keysOf(rd.Persist), []string{"k1", "k3"}; !slices.Equal(got, want) {
				t.Fatalf("Persist lists %q, want %q", got, want)
			}
			for _, ks := range rd.Persist {
				if !ks.State.Equal(e.Get(ks.Key)) {
					t.Fatalf("Persist of %q is not its current state", ks.Key)
				}
			}
			if v := rd.Persist[0].State.(*crdt.GCounter).Value(); v != 6 {
				t.Fatalf("persisted k1 = %d, want 6", v)
			}
			if rd := e.Ready(); len(rd.Persist) != 0 {
				t.Fatalf("second Ready persists %q again", keysOf(rd.Persist))
			}
		})
	}
}

// A DigestReply that arrives after its digest timed out and a newer digest
// was sent must not be taken as the answer to the newer one: it does not
// know the keys changed in between, and the transfer would claim them.
func TestLateDigestReplyIgnored(t *testing.T) {
	for _, mode := range deltaModes {
		t.Run(mode.String(), func(t *testing.T) {
			tune := func(c *deltas.Config) { c.SyncTimeoutTicks = 2 }
			a, b := newEngine(t, "a", 2, mode, tune), newEngine(t, "b", 1, mode, tune)
			a.Restore("k1", gset("restored"))
			a.PeerUp("b")
			b.PeerUp("a")
			bodies := func(e *deltas.Engine, want string) []deltas.Message {
				var out []deltas.Message
				for _, m := range e.Ready().Messages {
					if kind(m) == want {
						out = append(out, m)
					}
				}
				return out
			}
			a.Tick()
			d1 := bodies(a, "Digest")
			if len(d1) != 1 {
				t.Fatalf("no first digest")
			}
			if err := b.Step(d1[0]); err != nil {
				t.Fatal(err)
			}
			r1 := bodies(b, "DigestReply")
			if len(r1) != 1 {
				t.Fatalf("no reply to the first digest")
			}
			gadd(t, a, "k3", "between") // changes a after the first digest
			a.Ready()
			var d2 []deltas.Message
			for range 5 {
				a.Tick()
				if d2 = bodies(a, "Digest"); len(d2) > 0 {
					break
				}
			}
			if len(d2) != 1 {
				t.Fatalf("the transfer did not time out and restart")
			}
			if err := a.Step(r1[0]); err != nil { // the late reply
				t.Fatal(err)
			}
			if st := bodies(a, "States"); len(st) != 0 {
				t.Fatalf("a answered a stale DigestReply with a transfer of %v", keysOf(bodyStates(st[0])))
			}
			// The current exchange completes and carries k3.
			if err := b.Step(d2[0]); err != nil {
				t.Fatal(err)
			}
			for _, m := range b.Ready().Messages {
				if err := a.Step(m); err != nil {
					t.Fatal(err)
				}
			}
			for _, m := range a.Ready().Messages {
				if err := b.Step(m); err != nil {
					t.Fatal(err)
				}
			}
			if v := b.Get("k3"); v == nil || !v.Equal(gset("between")) {
				t.Fatalf("b lacks k3 after the transfer: %v", v)
			}
		})
	}
}

// Restore once deltas have flowed: known peers get the restored key too
// (Restore is meant for start-up, but must not leave a peer behind).
func TestRestoreAfterDeltas(t *testing.T) {
	for _, mode := range deltaModes {
		t.Run(mode.String(), func(t *testing.T) {
			a, b := newEngine(t, "a", 1, mode), newEngine(t, "b", 1, mode)
			n := newNetwork(t, a, b)
			n.link("a", "b")
			gadd(t, a, "before", "x")
			n.settle(40)
			a.Restore("k", gset("restored"))
			n.settle(40)
			if v := b.Get("k"); v == nil || !v.Equal(gset("restored")) {
				t.Fatalf("b never got a's restored state: %v", v)
			}
		})
	}
}

// TestFlushPushesWithoutTick checks eager push: Flush sends a fresh update
// down a chain of engines at once, without a tick, sends each delta once,
// and leaves acknowledgement and collection to the ticks.
func TestFlushPushesWithoutTick(t *testing.T) {
	for _, mode := range deltaModes {
		t.Run(mode.String(), func(t *testing.T) {
			a := newEngine(t, "a", 1, mode)
			b := newEngine(t, "b", 1, mode)
			c := newEngine(t, "c", 1, mode)
			n := newNetwork(t, a, b, c)
			n.link("a", "b")
			n.link("b", "c")
			incr(t, a, "k", 3)
			// Flush each engine in turn, delivering what it sends: the
			// update crosses two hops within no tick.
			for _, e := range []*deltas.Engine{a, b} {
				e.Flush()
				for _, m := range n.take(e.ID()) {
					n.deliver(m)
				}
			}
			if !c.Get("k").Equal(a.Get("k")) {
				t.Fatal("c does not hold a's update after two flushes")
			}
			// A second Flush has nothing new to send.
			a.Flush()
			if msgs := n.take("a"); len(msgs) != 0 {
				t.Fatalf("second flush sent:%s", describe(msgs))
			}
			n.settle(10)
		})
	}
	// State-based sync has no deltas to push.
	s := newEngine(t, "s", 1, deltas.ModeState)
	s.PeerUp("t")
	incr(t, s, "k", 1)
	s.Flush()
	if rd := s.Ready(); len(rd.Messages) != 0 {
		t.Fatalf("state mode flush sent %d messages", len(rd.Messages))
	}
}

// TestMerge checks that a state merged from outside the protocol (a
// replicated write or a remote read) inflates, spreads to every peer, is
// ignored when it is old, and is refused whole on a type mismatch.
func TestMerge(t *testing.T) {
	for _, mode := range append([]deltas.Mode{deltas.ModeState}, deltaModes...) {
		t.Run(mode.String(), func(t *testing.T) {
			a := newEngine(t, "a", 1, mode)
			b := newEngine(t, "b", 1, mode)
			n := newNetwork(t, a, b)
			n.link("a", "b")
			x := gcounter(t, map[deltas.PeerID]uint64{"z": 7})
			grew, err := a.Merge("k", x)
			if err != nil || !grew {
				t.Fatalf("Merge of a new key = %v, %v; want true, nil", grew, err)
			}
			if grew, err := a.Merge("k", x); err != nil || grew {
				t.Fatalf("Merge of the same state again = %v, %v; want false, nil", grew, err)
			}
			if _, err := a.Merge("k", gset("e")); !errors.Is(err, deltas.ErrTypeMismatch) {
				t.Fatalf("Merge of a GSet into a GCounter: err %v, want ErrTypeMismatch", err)
			}
			if !a.Get("k").Equal(x) {
				t.Fatal("a's state changed by a refused merge")
			}
			if mode == deltas.ModeState {
				n.round() // state-based sync never goes quiet
			} else {
				n.settle(10)
			}
			if !b.Get("k").Equal(x) {
				t.Fatal("the merged state did not reach b")
			}
		})
	}
}

// TestRestartWithoutStateIsResynced: an engine that restarts with nothing
// (its node lost its data) has nothing to send, yet its peer must learn of
// the restart and transfer its state: the new session introduces itself.
func TestRestartWithoutStateIsResynced(t *testing.T) {
	for _, mode := range deltaModes {
		t.Run(mode.String(), func(t *testing.T) {
			a := newEngine(t, "a", 1, mode)
			b := newEngine(t, "b", 1, mode)
			n := newNetwork(t, a, b)
			n.link("a", "b")
			incr(t, a, "k", 3)
			n.settle(10)
			// b restarts empty under a new session.
			b2 := newEngine(t, "b", 2, mode)
			n.eng["b"] = b2
			b2.PeerUp("a")
			n.settle(30)
			if !b2.Get("k").Equal(a.Get("k")) {
				t.Fatal("the restarted, empty engine did not get the state back")
			}
		})
	}
}

// TestDelete checks key deletion: it spreads, wins over a concurrent
// update, survives a full-state transfer to a new peer, and forbids
// writing the key again.
func TestDelete(t *testing.T) {
	for _, mode := range append([]deltas.Mode{deltas.ModeState}, deltaModes...) {
		t.Run(mode.String(), func(t *testing.T) {
			a := newEngine(t, "a", 1, mode)
			b := newEngine(t, "b", 1, mode)
			n := newNetwork(t, a, b)
			n.link("a", "b")
			incr(t, a, "k", 2)
			incr(t, a, "other", 1)
			n.round()
			n.round()
			// Concurrently: a deletes k, b increments it.
			if !a.Delete("k") {
				t.Fatal("Delete of a live key reported no change")
			}
			if a.Delete("k") {
				t.Fatal("a second Delete reported a change")
			}
			incr(t, b, "k", 5)
			for range 5 {
				n.round()
			}
			for _, e := range []*deltas.Engine{a, b} {
				if !e.Deleted("k") || e.Get("k") != nil {
					t.Fatalf("%s: k not deleted after sync (Deleted %v)", e.ID(), e.Deleted("k"))
				}
				if slices.Contains(e.Keys(), "k") {
					t.Fatalf("%s lists the deleted key", e.ID())
				}
				if _, err := e.Update("k", crdt.TypeGCounter, func(v crdt.Value) (crdt.Value, error) {
					return v.(*crdt.GCounter).Increment(replica(e.ID()), 1)
				}); !errors.Is(err, deltas.ErrDeleted) {
					t.Fatalf("%s: Update of a deleted key: %v, want ErrDeleted", e.ID(), err)
				}
				if _, err := e.Merge("k", gcounter(t, map[deltas.PeerID]uint64{"z": 1})); !errors.Is(err, deltas.ErrDeleted) {
					t.Fatalf("%s: Merge into a deleted key: %v, want ErrDeleted", e.ID(), err)
				}
				if e.Get("other") == nil {
					t.Fatalf("%s lost an unrelated key", e.ID())
				}
			}
			// The deletion was persisted as such.
			if _, ok := n.persist["a"]["k"]; !ok {
				t.Fatal("the deletion of k was not in Ready.Persist")
			}
			// A new peer gets the deletion by full-state transfer.
			c := newEngine(t, "c", 1, mode)
			n.eng["c"] = c
			n.persist["c"] = map[string][]byte{}
			n.link("a", "c")
			for range 5 {
				n.round()
			}
			if !c.Deleted("k") {
				t.Fatal("a new peer did not learn of the deletion")
			}
		})
	}
}

// TestIntroductionRepeatedUntilAnswered: a peer learns of a new engine
// only from a message; if the first introduction is lost (or refused by
// a peer that does not know the sender yet), it is sent again until the
// peer answers, and then the peer's own updates flow to the new engine.
func TestIntroductionRepeatedUntilAnswered(t *testing.T) {
	for _, mode := range deltaModes {
		t.Run(mode.String(), func(t *testing.T) {
			a := newEngine(t, "a", 1, mode)
			b := newEngine(t, "b", 1, mode)
			n := newNetwork(t, a, b)
			b.PeerUp("a") // only b chose the other as a peer
			lost := 0
			n.drop = func(m deltas.Message) bool {
				if m.From == "b" && lost < 2 {
					lost++
					return true
				}
				return false
			}
			for range 10 {
				n.round()
			}
			if lost != 2 {
				t.Fatalf("b sent %d introductions, want them repeated until one got through", lost)
			}
			incr(t, a, "k", 4)
			n.settle(20)
			if !b.Get("k").Equal(a.Get("k")) {
				t.Fatal("a's update did not reach b: a never took b as a peer")
			}
		})
	}
}

// TestRetransmitBackoff: while a peer acknowledges nothing, each
// retransmission waits twice as long as the one before (capped at
// EvictTicks/2), and an acknowledgement resets the wait.
func TestRetransmitBackoff(t *testing.T) {
	a := newEngine(t, "a", 1, deltas.ModeDeltaBPRR, ticks(3, 40))
	a.PeerUp("b")
	a.Tick()
	a.Ready() // the introduction
	incr(t, a, "k", 1)
	var sentAt []int
	for tick := 1; tick <= 39; tick++ {
		a.Tick()
		for _, m := range a.Ready().Messages {
			if _, ok := m.Body.(*deltas.Deltas); ok {
				sentAt = append(sentAt, tick)
			}
		}
	}
	// Sent at tick 1. Waits count from the last progress (tick 0): resent
	// 3 ticks after it, then 6 and 12 ticks later; the next wait would be
	// 24, capped at EvictTicks/2 = 20, past the end of the test.
	want := []int{1, 3, 9, 21}
	if !slices.Equal(sentAt, want) {
		t.Fatalf("deltas sent at ticks %v, want %v", sentAt, want)
	}
}

// TestForgetDropsAReplicaForGood: Forget strips a pruned replica from the
// state (persisted, not sent) and from everything received or restored
// later.
func TestForgetDropsAReplicaForGood(t *testing.T) {
	e := newEngine(t, "a", 1, deltas.ModeDeltaBPRR)
	gone := crdt.ReplicaID{Node: "gone", Incarnation: 1}
	me := crdt.ReplicaID{Node: "a", Incarnation: 1}
	stale := crdt.NewGCounter()
	_, _ = stale.Increment(gone, 5)
	_, _ = stale.Increment(me, 2)
	if _, err := e.Merge("k", stale); err != nil {
		t.Fatal(err)
	}
	e.Ready()
	buffered := e.Buffered()
	e.Forget([]crdt.ReplicaID{gone})
	if v := e.Get("k").(*crdt.GCounter); v.Value() != 2 || crdt.Holds(v, gone) {
		t.Fatalf("after Forget: value %d, holds gone %v", v.Value(), crdt.Holds(v, gone))
	}
	if rd := e.Ready(); len(rd.Persist) != 1 || rd.Persist[0].Key != "k" {
		t.Fatalf("Forget persisted %v, want k", rd.Persist)
	}
	if e.Buffered() != buffered {
		t.Fatalf("Forget buffered deltas for the peers")
	}
	if grew, err := e.Merge("k", stale); err != nil || grew || crdt.Holds(e.Get("k"), gone) {
		t.Fatalf("merging a stale state after Forget: grew=%v err=%v", grew, err)
	}
	e.Restore("k2", stale)
	if crdt.Holds(e.Get("k2"), gone) {
		t.Fatalf("a restored state keeps a forgotten replica")
	}
}
