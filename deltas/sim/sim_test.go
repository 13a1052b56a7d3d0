package sim

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/deltas"
)

// workload applies one random mutation of a random type at node i.
func randomOp(t *testing.T, s *Sim, rng *rand.Rand, i int) {
	t.Helper()
	r := crdt.ReplicaID{Node: string(NodeID(i)), Incarnation: 1}
	el := []byte(fmt.Sprintf("e%d", rng.IntN(8)))
	var err error
	switch rng.IntN(6) {
	case 0:
		err = s.Update(i, "gcounter", crdt.TypeGCounter, func(v crdt.Value) (crdt.Value, error) {
			return v.(*crdt.GCounter).Increment(r, uint64(rng.IntN(5)+1))
		})
	case 1:
		err = s.Update(i, "pn", crdt.TypePNCounter, func(v crdt.Value) (crdt.Value, error) {
			return v.(*crdt.PNCounter).Increment(r, int64(rng.IntN(11)-5))
		})
	case 2:
		err = s.Update(i, "orset", crdt.TypeORSet, func(v crdt.Value) (crdt.Value, error) {
			if rng.IntN(3) == 0 {
				return v.(*crdt.ORSet).Remove(el), nil
			}
			return v.(*crdt.ORSet).Add(r, el), nil
		})
	case 3:
		err = s.Update(i, "mv", crdt.TypeMVRegister, func(v crdt.Value) (crdt.Value, error) {
			return v.(*crdt.MVRegister).Assign(r, el), nil
		})
	case 4:
		err = s.Update(i, "ormap", crdt.TypeORMap, func(v crdt.Value) (crdt.Value, error) {
			m := v.(*crdt.ORMap)
			if rng.IntN(4) == 0 {
				return m.Remove(el, crdt.TypeORSet), nil
			}
			return m.Update(r, el, crdt.TypeORSet, func(n crdt.Value) (crdt.Value, error) {
				return n.(*crdt.ORSet).Add(r, []byte(fmt.Sprint(rng.IntN(4)))), nil
			})
		})
	case 5:
		err = s.Update(i, "ewflag", crdt.TypeEWFlag, func(v crdt.Value) (crdt.Value, error) {
			if rng.IntN(2) == 0 {
				return v.(*crdt.EWFlag).Disable(), nil
			}
			return v.(*crdt.EWFlag).Enable(r), nil
		})
	}
	if err != nil {
		t.Fatal(err)
	}
}

func TestConvergenceUnderFaults(t *testing.T) {
	topos := []Topology{PartialMesh(7, 4), Tree(7, 3), FullMesh(5)}
	engines := []deltas.Config{}
	for _, mode := range deltas.Modes {
		engines = append(engines, deltas.Config{Mode: mode, EvictTicks: 8})
	}
	// The mesh's configuration: relays held back while the other peers
	// hear the origin directly.
	engines = append(engines, deltas.Config{Mode: deltas.ModeDeltaBPRR, EvictTicks: 8, RelayHoldTicks: 2})
	for _, ecfg := range engines {
		name := ecfg.Mode.String()
		if ecfg.RelayHoldTicks > 0 {
			name += "+hold"
		}
		for _, topo := range topos {
			for seed := uint64(1); seed <= 3; seed++ {
				t.Run(fmt.Sprintf("%s/%s/seed%d", name, topo.Name, seed), func(t *testing.T) {
					s, err := New(Config{
						Topology: topo, Seed: seed, Wire: seed == 1,
						Faults: Faults{Loss: 0.2, Duplicate: 0.1, MaxDelay: 3},
						Engine: ecfg,
					})
					if err != nil {
						t.Fatal(err)
					}
					rng := rand.New(rand.NewPCG(seed, 7))
					for round := 0; round < 60; round++ {
						for i := range s.N() {
							if s.Up(i) && rng.IntN(2) == 0 {
								randomOp(t, s, rng, i)
							}
						}
						switch {
						case round == 10:
							s.Partition([]int{0, 1, 2}, []int{3, 4})
						case round == 25:
							s.Heal()
						case round%17 == 5:
							s.Crash(rng.IntN(s.N()))
						case round%17 == 9:
							for i := range s.N() {
								if err := s.Restart(i); err != nil {
									t.Fatal(err)
								}
							}
						}
						if err := s.Step(); err != nil {
							t.Fatal(err)
						}
					}
					s.Heal()
					s.SetFaults(Faults{})
					for i := range s.N() {
						if err := s.Restart(i); err != nil {
							t.Fatal(err)
						}
					}
					if _, err := s.RunUntilConverged(200); err != nil {
						t.Fatalf("seed %d: %v", seed, err)
					}
				})
			}
		}
	}
}
