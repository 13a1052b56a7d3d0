package crdt

// Convergence under random delivery: replicas mutate and ship delta-groups
// (and sometimes full states) as encoded bytes over a channel that loses,
// duplicates and reorders messages. A receiver keeps only the part of a
// message that is new to it (Extract), joins it, and forwards that part in
// its own next delta-group, as a delta-sync node does. A final
// anti-entropy exchange of full states must leave every replica Equal, and
// equal to the reference model of all mutations.

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

type simMessage struct {
	to  int
	b   []byte
	ref refModel
}

type simNode struct {
	state    Value
	ref      refModel
	group    Value // deltas not yet shipped
	groupRef refModel
}

type sim struct {
	t        *testing.T
	sp       *spec
	rng      *rand.Rand
	ids      []ReplicaID
	nodes    []*simNode
	inflight []simMessage
	global   refModel // every mutation's reference delta
	stats    simStats
}

func (s *sim) send(to int, v Value, rf refModel) {
	s.stats.sent++
	s.inflight = append(s.inflight, simMessage{to: to, b: Encode(v), ref: rf.clone()})
}

func (s *sim) receive(m simMessage) {
	t := s.t
	t.Helper()
	s.stats.delivered++
	n := s.nodes[m.to]
	v, err := Decode(m.b, DefaultLimits)
	if err != nil {
		t.Fatalf("decoding a message: %v", err)
	}
	e, err := Extract(n.state, v)
	if err != nil {
		t.Fatal(err)
	}
	if e.IsBottom() {
		if s.rng.IntN(4) == 0 { // cheap spot check: a message with nothing new does not inflate
			if ch := mustJoin(t, n.state.Clone(), v); ch {
				t.Fatalf("Extract was bottom but the join inflated")
			}
		}
		return
	}
	s.stats.fresh++
	er := s.sp.restrict(m.ref, e)
	// a plain state-based node would join the whole message: same result
	whole := n.state.Clone()
	mustJoin(t, whole, v)
	if !mustJoin(t, n.state, e) {
		t.Fatalf("a non-bottom Extract did not inflate the state")
	}
	if !whole.Equal(n.state) {
		t.Fatalf("x ⊔ m != x ⊔ Extract(x, m)")
	}
	n.ref.join(er)
	mustJoin(t, n.group, e)
	n.groupRef.join(er)
	checkInvariants(t, n.state)
	s.sp.check(t, n.state, n.ref)
}

// deliver takes a random in-flight message (reordering), and loses,
// duplicates or delivers it.
func (s *sim) deliver() {
	if len(s.inflight) == 0 {
		return
	}
	k := s.rng.IntN(len(s.inflight))
	m := s.inflight[k]
	s.inflight = append(s.inflight[:k], s.inflight[k+1:]...)
	switch r := s.rng.IntN(100); {
	case r < 15:
		s.stats.lost++
	case r < 30:
		s.stats.dup++
		s.inflight = append(s.inflight, m)
		s.receive(m)
	default:
		s.receive(m)
	}
}

type simStats = struct{ sent, lost, dup, delivered, fresh int }

func simulate(t *testing.T, sp *spec, seed uint64) simStats {
	rng := rand.New(rand.NewPCG(seed, uint64(sp.typ)))
	src := randSrc{rng}
	n := 3 + rng.IntN(3)
	s := &sim{t: t, sp: sp, rng: rng, ids: genReplicas(src, n), global: sp.newRef()}
	for range n {
		s.nodes = append(s.nodes, &simNode{state: bottom(sp.typ), ref: sp.newRef(), group: bottom(sp.typ), groupRef: sp.newRef()})
	}
	peer := func(i int) int { return (i + 1 + rng.IntN(n-1)) % n }
	for range 250 {
		i := rng.IntN(n)
		nd := s.nodes[i]
		switch r := rng.IntN(20); {
		case r < 8:
			d, dr, err := sp.mutate(t, src, s.ids[i], s.ids, nd.state, nd.ref)
			if err != nil {
				continue
			}
			mustJoin(t, nd.group, d)
			nd.groupRef.join(dr)
			s.global.join(dr)
			checkInvariants(t, nd.state)
			sp.check(t, nd.state, nd.ref)
		case r < 11: // ship the delta-group to one or two peers
			if nd.group.IsBottom() {
				continue
			}
			s.send(peer(i), nd.group, nd.groupRef)
			if rng.IntN(2) == 0 {
				s.send(peer(i), nd.group, nd.groupRef)
			}
			nd.group, nd.groupRef = bottom(sp.typ), sp.newRef()
		case r < 12:
			s.send(peer(i), nd.state, nd.ref)
		default:
			s.deliver()
		}
	}
	for len(s.inflight) > 0 {
		s.deliver()
	}
	// anti-entropy: every replica gets every other replica's full state
	snaps := make([][]byte, n)
	refs := make([]refModel, n)
	for i, nd := range s.nodes {
		snaps[i], refs[i] = Encode(nd.state), nd.ref.clone()
	}
	for i := range s.nodes {
		for j := range s.nodes {
			if i != j {
				s.receive(simMessage{to: i, b: snaps[j], ref: refs[j]})
			}
		}
	}
	for i, nd := range s.nodes {
		if !nd.state.Equal(s.nodes[0].state) {
			t.Fatalf("seed %d: replica %d differs from replica 0 after anti-entropy", seed, i)
		}
		sp.check(t, nd.state, s.global)
	}
	return s.stats
}

func TestConvergence(t *testing.T) {
	for _, sp := range specs {
		t.Run(sp.String(), func(t *testing.T) {
			t.Parallel()
			var all simStats
			for seed := range uint64(20) {
				t.Run(fmt.Sprint(seed), func(t *testing.T) {
					st := simulate(t, sp, seed)
					all.sent += st.sent
					all.lost += st.lost
					all.dup += st.dup
					all.fresh += st.fresh
					all.delivered += st.delivered
				})
			}
			// the runs exercised what they are meant to
			if all.fresh < 5 || all.lost < 20 || all.dup < 20 {
				t.Fatalf("degenerate runs: %+v", all)
			}
			t.Logf("%+v", all)
		})
	}
}
