// Package syncbench reproduces the synchronisation experiment of Enes et
// al., "Efficient Synchronization of State-based CRDTs" (ICDE 2019), on
// statemesh's deltas engine: 15 nodes in a partial mesh (4 neighbours) and
// in a tree (fanout at most 3); 100 update events per node, one per sync
// round; workloads GCounter, GSet and a map of 1000 keys of which 10%, 30%,
// 60% or 100% are updated per event; every sync mode. It counts messages,
// CRDT elements and bytes on the wire (statemesh's own encoding), average
// memory in elements, and CPU time.
package syncbench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/deltas"
	"github.com/statemesh/statemesh/deltas/sim"
)

// Options configures a run. DefaultOptions is the paper's setup.
type Options struct {
	Nodes      int
	Neighbors  int // partial mesh degree
	Fanout     int // tree fanout
	Events     int // update events per node, one per round
	MapKeys    int
	Seed       uint64
	Workloads  []string
	Topologies []string
	Modes      []deltas.Mode
	// MaxExtraRounds bounds the rounds after the last event until every
	// replica holds the same state.
	MaxExtraRounds int
	// Parallel is how many runs go at once (each is single-threaded).
	Parallel int
}

// DefaultOptions follow Enes et al.
func DefaultOptions() Options {
	return Options{
		Nodes: 15, Neighbors: 4, Fanout: 3, Events: 100, MapKeys: 1000, Seed: 1,
		Workloads:      []string{"gcounter", "gset", "gmap-10", "gmap-30", "gmap-60", "gmap-100"},
		Topologies:     []string{"partial-mesh", "tree"},
		Modes:          deltas.Modes,
		MaxExtraRounds: 100,
		Parallel:       runtime.GOMAXPROCS(0),
	}
}

// Result is one (workload, topology, mode) measurement.
type Result struct {
	Workload string `json:"workload"`
	Topology string `json:"topology"`
	Mode     string `json:"mode"`
	Messages int    `json:"messages"`
	Elements int    `json:"elements"`
	Bytes    int    `json:"bytes"`
	// MemoryElements is the average, over rounds and nodes, of the
	// elements a node holds: its state plus its delta buffer.
	MemoryElements float64 `json:"memory_elements"`
	CPUMs          float64 `json:"cpu_ms"`
	// Rounds is the number of rounds until every replica converged.
	Rounds int `json:"rounds"`
}

// Paper reports whether o is the full setup of DefaultOptions (the seed
// and the number of workers aside), the run the 60 s target is about.
func (o Options) Paper() bool {
	d := DefaultOptions()
	return o.Nodes == d.Nodes && o.Neighbors == d.Neighbors && o.Fanout == d.Fanout &&
		o.Events == d.Events && o.MapKeys == d.MapKeys &&
		slices.Equal(o.Workloads, d.Workloads) && slices.Equal(o.Topologies, d.Topologies) &&
		slices.Equal(o.Modes, d.Modes)
}

// Run runs every combination on o.Parallel workers, calling progress (if
// not nil, from one goroutine at a time) after each. Results come in the
// order workload, topology, mode.
func Run(o Options, progress func(done, total int, r Result)) ([]Result, error) {
	type job struct {
		i    int
		w, t string
		m    deltas.Mode
	}
	var jobs []job
	for _, w := range o.Workloads {
		for _, t := range o.Topologies {
			for _, m := range o.Modes {
				jobs = append(jobs, job{len(jobs), w, t, m})
			}
		}
	}
	// The runs allocate fast but hold little: collecting less often
	// leaves more of the cores to the runs (the collector's workers share
	// them). At 1000 the default benchmark peaks at about 0.7 GB resident
	// with two runs at once (0.35 GB at 400, for 2-3% more CPU). Results
	// do not depend on it; the previous setting is restored.
	defer debug.SetGCPercent(debug.SetGCPercent(1000))
	out := make([]Result, len(jobs))
	errs := make([]error, len(jobs))
	work := make(chan job)
	var mu sync.Mutex
	done := 0
	var wg sync.WaitGroup
	for range max(1, o.Parallel) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// CPU time is read per thread, so each worker keeps its own.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			for j := range work {
				out[j.i], errs[j.i] = RunOne(o, j.w, j.t, j.m)
				mu.Lock()
				done++
				if progress != nil && errs[j.i] == nil {
					progress(done, len(jobs), out[j.i])
				}
				mu.Unlock()
			}
		}()
	}
	// The last workloads are the heaviest (gmap-100 takes the most):
	// starting them first keeps one long run from finishing alone at the
	// end. Results keep their order.
	for _, j := range slices.Backward(jobs) {
		work <- j
	}
	close(work)
	wg.Wait()
	return out, errors.Join(errs...)
}

func topology(o Options, name string) (sim.Topology, error) {
	switch name {
	case "partial-mesh":
		return sim.PartialMesh(o.Nodes, o.Neighbors), nil
	case "tree":
		return sim.Tree(o.Nodes, o.Fanout), nil
	case "full-mesh":
		return sim.FullMesh(o.Nodes), nil
	}
	return sim.Topology{}, fmt.Errorf("syncbench: unknown topology %q", name)
}

// event applies node i's update event number ev.
type event func(s *sim.Sim, i, ev int) error

func workload(o Options, name string, rng *rand.Rand) (event, error) {
	// One ReplicaID per node, built once rather than per event.
	replicas := make([]crdt.ReplicaID, o.Nodes)
	for i := range replicas {
		replicas[i] = crdt.ReplicaID{Node: string(sim.NodeID(i)), Incarnation: 1}
	}
	replica := func(i int) crdt.ReplicaID { return replicas[i] }
	switch name {
	case "gcounter":
		return func(s *sim.Sim, i, _ int) error {
			return s.Update(i, "gcounter", crdt.TypeGCounter, func(v crdt.Value) (crdt.Value, error) {
				return v.(*crdt.GCounter).Increment(replica(i), 1)
			})
		}, nil
	case "gset":
		return func(s *sim.Sim, i, ev int) error {
			el := fmt.Appendf(nil, "%02d-%04d", i, ev)
			return s.Update(i, "gset", crdt.TypeGSet, func(v crdt.Value) (crdt.Value, error) {
				return v.(*crdt.GSet).Add(el), nil
			})
		}, nil
	}
	var pct int
	if _, err := fmt.Sscanf(name, "gmap-%d", &pct); err != nil || pct <= 0 || pct > 100 {
		return nil, fmt.Errorf("syncbench: unknown workload %q", name)
	}
	// Per event, pct% of the keys are updated across the system, spread
	// evenly over the nodes (Enes et al.'s GMap K%).
	perNode := max(1, (o.MapKeys*pct/100+o.Nodes-1)/o.Nodes)
	return func(s *sim.Sim, i, ev int) error {
		return s.Update(i, "gmap", crdt.TypeORMap, func(v crdt.Value) (crdt.Value, error) {
			m := v.(*crdt.ORMap)
			delta := crdt.NewORMap()
			val := binary.BigEndian.AppendUint64(nil, uint64(ev))
			for _, k := range rng.Perm(o.MapKeys)[:perNode] {
				d, err := m.Update(replica(i), fmt.Appendf(nil, "k%04d", k), crdt.TypeMVRegister, func(n crdt.Value) (crdt.Value, error) {
					return n.(*crdt.MVRegister).Assign(replica(i), val), nil
				})
				if err != nil {
					return nil, err
				}
				if _, err := crdt.Join(delta, d); err != nil {
					return nil, err
				}
			}
			return delta, nil
		})
	}, nil
}

// RunOne runs one combination.
func RunOne(o Options, workloadName, topoName string, mode deltas.Mode) (Result, error) {
	r := Result{Workload: workloadName, Topology: topoName, Mode: mode.String()}
	topo, err := topology(o, topoName)
	if err != nil {
		return r, err
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0x5eed))
	ev, err := workload(o, workloadName, rng)
	if err != nil {
		return r, err
	}
	s, err := sim.New(sim.Config{
		Topology: topo, Seed: o.Seed,
		// No faults: nothing is retransmitted or evicted, as in the paper.
		Engine: deltas.Config{Mode: mode, EvictTicks: 1 << 20, RetransmitTicks: 1 << 20},
	})
	if err != nil {
		return r, err
	}
	start := cpuTime()
	var mem float64
	rounds := 0
	step := func() error {
		if err := s.Step(); err != nil {
			return err
		}
		st := s.Stats()
		mem += float64(st.StateElements+st.BufferElements) / float64(s.N())
		rounds++
		return nil
	}
	for e := range o.Events {
		for i := range s.N() {
			if err := ev(s, i, e); err != nil {
				return r, err
			}
		}
		if err := step(); err != nil {
			return r, err
		}
	}
	converged := false
	for range o.MaxExtraRounds {
		if ok, _ := s.Converged(); ok {
			converged = true
			break
		}
		if err := step(); err != nil {
			return r, err
		}
	}
	if !converged {
		_, why := s.Converged()
		return r, fmt.Errorf("syncbench: %s/%s/%s did not converge: %s", workloadName, topoName, mode, why)
	}
	r.CPUMs = float64(cpuTime()-start) / float64(time.Millisecond)
	r.Messages, r.Bytes, r.Elements = s.Counters.Messages, s.Counters.Bytes, s.Counters.Elements
	r.MemoryElements = mem / float64(rounds)
	r.Rounds = rounds
	return r, nil
}

// cpuTime returns the calling thread's user+system CPU time (callers lock
// their goroutine to its thread). Garbage collection done on other threads
// is not counted.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
