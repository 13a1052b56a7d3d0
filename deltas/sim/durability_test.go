package sim

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/deltas"
)

// TestCrashRestartLosesNothing: the sim persists every change before the
// node goes on, so every update is acknowledged the moment it is made.
// Nodes crash (often right after an update they never sent) and restart
// from what they persisted, under loss and duplication; after healing,
// every replica must count every increment and hold every element added.
func TestCrashRestartLosesNothing(t *testing.T) {
	for _, mode := range deltas.Modes {
		for seed := uint64(1); seed <= 2; seed++ {
			t.Run(fmt.Sprintf("%s/seed%d", mode, seed), func(t *testing.T) {
				s, err := New(Config{
					Topology: PartialMesh(6, 4), Seed: seed, Wire: seed == 1,
					Faults: Faults{Loss: 0.2, Duplicate: 0.15, MaxDelay: 2},
					Engine: deltas.Config{Mode: mode, EvictTicks: 6},
				})
				if err != nil {
					t.Fatal(err)
				}
				rng := rand.New(rand.NewPCG(seed, 42))
				var total uint64
				var added []string
				restartAt := map[int]int{} // crashed node -> round it restarts
				crashes := 0
				for round := 0; round < 70; round++ {
					for i := range s.N() {
						if !s.Up(i) {
							continue
						}
						r := crdt.ReplicaID{Node: string(NodeID(i)), Incarnation: 1}
						if rng.IntN(2) == 0 {
							n := uint64(rng.IntN(5) + 1)
							err := s.Update(i, "count", crdt.TypeGCounter, func(v crdt.Value) (crdt.Value, error) {
								return v.(*crdt.GCounter).Increment(r, n)
							})
							if err != nil {
								t.Fatal(err)
							}
							total += n
						}
						if rng.IntN(2) == 0 {
							el := fmt.Sprintf("%s/%d", NodeID(i), round)
							err := s.Update(i, "set", crdt.TypeORSet, func(v crdt.Value) (crdt.Value, error) {
								return v.(*crdt.ORSet).Add(r, []byte(el)), nil
							})
							if err != nil {
								t.Fatal(err)
							}
							added = append(added, el)
						}
					}
					if round%4 == 1 {
						if i := rng.IntN(s.N()); s.Up(i) {
							s.Crash(i)
							crashes++
							restartAt[i] = round + 1 + rng.IntN(5)
						}
					}
					for i := range s.N() {
						if at, ok := restartAt[i]; ok && at <= round {
							if err := s.Restart(i); err != nil {
								t.Fatal(err)
							}
							delete(restartAt, i)
						}
					}
					if err := s.Step(); err != nil {
						t.Fatal(err)
					}
				}
				if crashes < 10 {
					t.Fatalf("only %d crashes", crashes)
				}
				s.Heal()
				s.SetFaults(Faults{})
				for i := range s.N() {
					if err := s.Restart(i); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := s.RunUntilConverged(300); err != nil {
					t.Fatal(err)
				}
				for i := range s.N() {
					e := s.Engine(i)
					c, ok := e.Get("count").(*crdt.GCounter)
					if !ok || c.Value() != total {
						t.Fatalf("%s counts %v, want %d", NodeID(i), e.Get("count"), total)
					}
					set, ok := e.Get("set").(*crdt.ORSet)
					if !ok || set.Len() != len(added) {
						t.Fatalf("%s holds %v elements, want %d", NodeID(i), e.Get("set"), len(added))
					}
					for _, el := range added {
						if !set.Contains([]byte(el)) {
							t.Fatalf("%s lost %q", NodeID(i), el)
						}
					}
				}
			})
		}
	}
}

// runScenario runs one faulty scenario: random updates of every type,
// loss, duplication, delay, a partition and a crash-restart. The workload
// does not depend on seed; the network does.
func runScenario(t *testing.T, seed uint64) *Sim {
	t.Helper()
	s, err := New(Config{
		Topology: PartialMesh(6, 4), Seed: seed, Wire: true,
		Faults: Faults{Loss: 0.2, Duplicate: 0.1, MaxDelay: 3},
		Engine: deltas.Config{EvictTicks: 6},
	})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	for round := 0; round < 40; round++ {
		for i := range s.N() {
			if s.Up(i) && rng.IntN(2) == 0 {
				randomOp(t, s, rng, i)
			}
		}
		switch round {
		case 8:
			s.Partition([]int{0, 1, 2}, []int{3, 4, 5})
		case 18:
			s.Heal()
		case 22:
			s.Crash(4)
		case 27:
			if err := s.Restart(4); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Step(); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func TestDeterministic(t *testing.T) {
	a, b := runScenario(t, 3), runScenario(t, 3)
	if a.Counters != b.Counters {
		t.Fatalf("same seed, counters %+v and %+v", a.Counters, b.Counters)
	}
	if a.Counters.Messages == 0 || a.Counters.Bytes == 0 || a.Counters.Elements == 0 {
		t.Fatalf("counters %+v", a.Counters)
	}
	if a.Stats() != b.Stats() {
		t.Fatalf("same seed, stats %+v and %+v", a.Stats(), b.Stats())
	}
	for i := range a.N() {
		ea, eb := a.Engine(i), b.Engine(i)
		if !slices.Equal(ea.Keys(), eb.Keys()) {
			t.Fatalf("%s: same seed, keys %q and %q", NodeID(i), ea.Keys(), eb.Keys())
		}
		for _, k := range ea.Keys() {
			if !bytes.Equal(crdt.Encode(ea.Get(k)), crdt.Encode(eb.Get(k))) {
				t.Fatalf("%s: same seed, key %q differs", NodeID(i), k)
			}
		}
	}
	if ok, _ := a.Converged(); ok {
		t.Fatal("the scenario converged by itself: states say nothing about determinism under faults")
	}
	c := runScenario(t, 4)
	if c.Counters == a.Counters {
		t.Fatalf("seeds 3 and 4 give the same counters %+v", a.Counters)
	}
}
