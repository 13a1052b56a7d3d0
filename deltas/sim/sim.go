// Package sim is a seeded, deterministic simulator of deltas engines: N
// replicas over a topology, in synchronous rounds, with message loss,
// duplication, reordering, partitions and crash-restart (state restored
// from what each engine asked to persist). Tests use it to check
// convergence; `statemesh bench sync` uses it to count what each sync mode
// sends.
package sim

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"

	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/deltas"
)

// Topology lists each node's neighbours (symmetric).
type Topology struct {
	Name      string
	Neighbors [][]int
}

// PartialMesh connects each of n nodes to its k nearest nodes on a ring
// (k/2 on each side): a k-regular, connected graph with many alternative
// paths, as in Enes et al.'s partial mesh.
func PartialMesh(n, k int) Topology {
	t := Topology{Name: "partial-mesh", Neighbors: make([][]int, n)}
	for i := range n {
		for j := 1; j <= k/2; j++ {
			t.Neighbors[i] = append(t.Neighbors[i], (i+j)%n, (i-j+n)%n)
		}
		slices.Sort(t.Neighbors[i])
		t.Neighbors[i] = slices.Compact(t.Neighbors[i])
	}
	return t
}

// Tree connects n nodes as a tree in which every node has at most fanout
// children: node i's parent is (i-1)/fanout.
func Tree(n, fanout int) Topology {
	t := Topology{Name: "tree", Neighbors: make([][]int, n)}
	for i := 1; i < n; i++ {
		p := (i - 1) / fanout
		t.Neighbors[i] = append(t.Neighbors[i], p)
		t.Neighbors[p] = append(t.Neighbors[p], i)
	}
	for i := range t.Neighbors {
		slices.Sort(t.Neighbors[i])
	}
	return t
}

// FullMesh connects every pair of n nodes.
func FullMesh(n int) Topology {
	t := Topology{Name: "full-mesh", Neighbors: make([][]int, n)}
	for i := range n {
		for j := range n {
			if i != j {
				t.Neighbors[i] = append(t.Neighbors[i], j)
			}
		}
	}
	return t
}

// Faults configures the simulated network.
type Faults struct {
	Loss      float64 // probability a message is lost
	Duplicate float64 // probability a message is delivered twice
	MaxDelay  int     // each copy is delivered 0..MaxDelay rounds late
}

// Config configures a simulation.
type Config struct {
	Topology Topology
	Seed     uint64
	Faults   Faults
	// Engine is the template for every node's engine config; ID and
	// Session are set per node.
	Engine deltas.Config
	// Wire sends every message through EncodeMessage and DecodeMessage.
	Wire bool
}

// Counters are what the network carried (counted when sent, including
// messages that are then lost).
type Counters struct {
	Messages int
	Bytes    int
	// Elements counts CRDT elements in the states and deltas carried.
	Elements int
}

type node struct {
	id        deltas.PeerID
	eng       *deltas.Engine // nil while crashed
	session   uint64
	persisted map[string][]byte
	// unwritten holds the keys the engine asked to persist whose bytes
	// are not in persisted yet. Encoding a key's whole state after every
	// change would cost more than the rest of a benchmark run, so it is
	// done when the node crashes: the simulator drains Ready after every
	// input it gives the engine, so at a crash each such key's state is
	// still the one the engine last asked to persist.
	unwritten map[string]struct{}
}

type inflight struct {
	at  int
	seq int // tie-break to keep delivery deterministic
	to  int
	m   deltas.Message
}

// Sim is a simulation. It is deterministic for a given Config.
type Sim struct {
	cfg     Config
	rng     *rand.Rand
	nodes   []*node
	byID    map[deltas.PeerID]int
	queue   []inflight
	nextSeq int
	round   int
	cut     map[[2]int]bool
	// Counters accumulates network traffic.
	Counters Counters
}

// New starts one engine per topology node, all empty and connected to
// their neighbours.
func New(cfg Config) (*Sim, error) {
	s := &Sim{
		cfg:  cfg,
		rng:  rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		byID: map[deltas.PeerID]int{},
		cut:  map[[2]int]bool{},
	}
	for i := range cfg.Topology.Neighbors {
		n := &node{id: NodeID(i), persisted: map[string][]byte{}, unwritten: map[string]struct{}{}}
		s.nodes = append(s.nodes, n)
		s.byID[n.id] = i
	}
	for i := range s.nodes {
		if err := s.start(i); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// NodeID is the peer id of node i.
func NodeID(i int) deltas.PeerID { return deltas.PeerID(fmt.Sprintf("n%02d", i)) }

// N returns the number of nodes.
func (s *Sim) N() int { return len(s.nodes) }

// Round returns the number of rounds run.
func (s *Sim) Round() int { return s.round }

// Engine returns node i's engine (nil while crashed).
func (s *Sim) Engine(i int) *deltas.Engine { return s.nodes[i].eng }

func (s *Sim) start(i int) error {
	n := s.nodes[i]
	n.session++
	ec := s.cfg.Engine
	ec.ID, ec.Session = n.id, n.session
	eng, err := deltas.New(ec)
	if err != nil {
		return err
	}
	for _, k := range slices.Sorted(maps.Keys(n.persisted)) {
		if n.persisted[k] == nil {
			eng.RestoreDeleted(k)
			continue
		}
		v, err := crdt.Decode(n.persisted[k], crdt.DefaultLimits)
		if err != nil {
			return fmt.Errorf("sim: restore %s/%s: %w", n.id, k, err)
		}
		eng.Restore(k, v)
	}
	n.eng = eng
	for _, j := range s.cfg.Topology.Neighbors[i] {
		eng.PeerUp(s.nodes[j].id)
		if o := s.nodes[j].eng; o != nil && n.session > 1 {
			o.PeerUp(n.id)
		}
	}
	return nil
}

// Update applies a local mutation at node i (which must be up).
func (s *Sim) Update(i int, key string, t crdt.Type, fn func(v crdt.Value) (crdt.Value, error)) error {
	n := s.nodes[i]
	if n.eng == nil {
		return fmt.Errorf("sim: node %s is down", n.id)
	}
	if _, err := n.eng.Update(key, t, fn); err != nil {
		return err
	}
	return s.drain(i)
}

// Crash stops node i, losing its engine (buffer, acknowledgements) but not
// what it persisted. Its neighbours see it go down.
func (s *Sim) Crash(i int) {
	n := s.nodes[i]
	if n.eng != nil {
		for k := range n.unwritten {
			n.persisted[k] = n.eng.Encoding(k) // the engine is dropped: its cached bytes are ours
		}
		clear(n.unwritten)
	}
	n.eng = nil
	for _, j := range s.cfg.Topology.Neighbors[i] {
		if o := s.nodes[j].eng; o != nil {
			o.PeerDown(n.id)
		}
	}
}

// Restart starts node i again from its persisted state, with a new
// session.
func (s *Sim) Restart(i int) error {
	if s.nodes[i].eng != nil {
		return nil
	}
	return s.start(i)
}

// Up reports whether node i is running.
func (s *Sim) Up(i int) bool { return s.nodes[i].eng != nil }

// Cut drops every message between i and j until Heal.
func (s *Sim) Cut(i, j int) { s.cut[[2]int{min(i, j), max(i, j)}] = true }

// Partition cuts every link between the given groups.
func (s *Sim) Partition(groups ...[]int) {
	for a, g := range groups {
		for _, h := range groups[a+1:] {
			for _, i := range g {
				for _, j := range h {
					s.Cut(i, j)
				}
			}
		}
	}
}

// Heal removes every cut.
func (s *Sim) Heal() { clear(s.cut) }

// SetFaults changes the network's faults from now on.
func (s *Sim) SetFaults(f Faults) { s.cfg.Faults = f }

// Step runs one round: every running node ticks, then every message due
// this round is delivered, including the replies they cause.
func (s *Sim) Step() error {
	s.round++
	for i, n := range s.nodes {
		if n.eng == nil {
			continue
		}
		n.eng.Tick()
		if err := s.drain(i); err != nil {
			return err
		}
	}
	for {
		due := s.takeDue()
		if len(due) == 0 {
			return nil
		}
		for _, f := range due {
			n := s.nodes[f.to]
			if n.eng == nil {
				continue
			}
			if err := n.eng.Step(f.m); err != nil {
				return fmt.Errorf("sim: round %d: %s from %s: %w", s.round, n.id, f.m.From, err)
			}
			if err := s.drain(f.to); err != nil {
				return err
			}
		}
	}
}

func (s *Sim) takeDue() []inflight {
	var due, rest []inflight
	for _, f := range s.queue {
		if f.at <= s.round {
			due = append(due, f)
		} else {
			rest = append(rest, f)
		}
	}
	s.queue = rest
	slices.SortFunc(due, func(a, b inflight) int {
		if a.at != b.at {
			return a.at - b.at
		}
		return a.seq - b.seq
	})
	return due
}

// drain takes node i's Ready: persists its changed keys and puts its
// messages on the network.
func (s *Sim) drain(i int) error {
	n := s.nodes[i]
	rd := n.eng.Ready()
	for _, ks := range rd.Persist {
		if ks.Deleted {
			n.persisted[ks.Key] = nil // a deletion
			delete(n.unwritten, ks.Key)
			continue
		}
		n.unwritten[ks.Key] = struct{}{} // written at a crash (see node)
	}
	for _, m := range rd.Messages {
		to, ok := s.byID[m.To]
		if !ok {
			return fmt.Errorf("sim: message to unknown peer %q", m.To)
		}
		size := deltas.MessageSize(m)
		s.Counters.Messages++
		s.Counters.Bytes += size
		s.Counters.Elements += Elements(m)
		if s.cfg.Wire {
			dm, err := deltas.DecodeMessage(deltas.EncodeMessage(m), deltas.DefaultLimits)
			if err != nil {
				return fmt.Errorf("sim: wire round trip: %w", err)
			}
			dm.To = m.To
			m = dm
		}
		if s.cut[[2]int{min(i, to), max(i, to)}] {
			continue
		}
		f := s.cfg.Faults
		if f.Loss > 0 && s.rng.Float64() < f.Loss {
			continue
		}
		copies := 1
		if f.Duplicate > 0 && s.rng.Float64() < f.Duplicate {
			copies = 2
		}
		for range copies {
			delay := 0
			if f.MaxDelay > 0 {
				delay = s.rng.IntN(f.MaxDelay + 1)
			}
			s.nextSeq++
			s.queue = append(s.queue, inflight{at: s.round + delay, seq: s.nextSeq, to: to, m: m})
		}
	}
	return nil
}

// Elements counts the CRDT elements a message carries.
func Elements(m deltas.Message) int {
	n := 0
	count := func(ks []deltas.KeyState) {
		for _, k := range ks {
			if k.State != nil {
				n += k.State.Size()
			}
		}
	}
	switch b := m.Body.(type) {
	case *deltas.Deltas:
		count(b.Deltas)
	case *deltas.States:
		count(b.States)
	case *deltas.DigestReply:
		count(b.States)
	}
	return n
}

// Converged reports whether every running node holds the same state, and
// if not, the first difference.
func (s *Sim) Converged() (bool, string) {
	var ref *node
	for _, n := range s.nodes {
		if n.eng == nil {
			continue
		}
		if ref == nil {
			ref = n
			continue
		}
		if ok, why := sameState(ref.eng, n.eng); !ok {
			return false, fmt.Sprintf("%s vs %s: %s", ref.id, n.id, why)
		}
	}
	return true, ""
}

func sameState(a, b *deltas.Engine) (bool, string) {
	ka, kb := a.Keys(), b.Keys()
	if !slices.Equal(ka, kb) {
		return false, fmt.Sprintf("keys %q vs %q", ka, kb)
	}
	for _, k := range ka {
		if !a.Get(k).Equal(b.Get(k)) {
			return false, fmt.Sprintf("key %q differs", k)
		}
	}
	return true, ""
}

// RunUntilConverged heals nothing by itself: it runs rounds until every
// running node holds the same state and no message is in flight, or fails
// after limit rounds.
func (s *Sim) RunUntilConverged(limit int) (int, error) {
	for r := 0; r < limit; r++ {
		if ok, _ := s.Converged(); ok && len(s.queue) == 0 && r > 0 {
			return r, nil
		}
		if err := s.Step(); err != nil {
			return r, err
		}
	}
	ok, why := s.Converged()
	if ok {
		return limit, nil
	}
	return limit, fmt.Errorf("sim: not converged after %d rounds: %s", limit, why)
}

// Stats sums the engines' memory over running nodes.
func (s *Sim) Stats() deltas.Stats {
	var t deltas.Stats
	for _, n := range s.nodes {
		if n.eng == nil {
			continue
		}
		st := n.eng.Stats()
		t.BufferEntries += st.BufferEntries
		t.BufferElements += st.BufferElements
		t.StateElements += st.StateElements
		t.Keys += st.Keys
	}
	return t
}
