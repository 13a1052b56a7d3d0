package jepsen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"time"
)

// Nemesis names, as `statemesh jepsen --nemesis` takes them.
const (
	PartitionHalves = "partition-halves" // two random halves
	PartitionOne    = "partition-one"    // one node isolated
	PartitionRing   = "partition-ring"   // every node sees a majority, no two the same
	PartitionBridge = "partition-bridge" // two halves joined by one node that sees both
	PartitionRegion = "partition-region" // regions cut from each other
	Kill            = "kill"             // kill -9 a minority, restart it
	Pause           = "pause"            // SIGSTOP one node, SIGCONT it
	ClockSkew       = "clock-skew"       // offset some nodes' physical clocks by up to seconds
	Delay           = "delay"            // delay every message by up to 50 ms
	Loss            = "loss"             // drop 10% of messages
)

// AllNemeses lists every nemesis in the order a combined schedule runs
// them.
var AllNemeses = []string{PartitionHalves, Kill, PartitionOne, Pause, PartitionRing, ClockSkew, PartitionBridge, Delay, PartitionRegion, Loss}

// Supported reports whether the backend can run the nemesis, and why not.
func Supported(caps Caps, name string) error {
	need := map[string]bool{
		PartitionHalves: caps.Partition, PartitionOne: caps.Partition, PartitionRing: caps.Partition,
		PartitionBridge: caps.Partition, PartitionRegion: caps.Partition, Kill: caps.Kill, Pause: caps.Pause,
		ClockSkew: caps.ClockSkew, Delay: caps.LinkFaults, Loss: caps.LinkFaults || caps.Loss,
	}
	ok, known := need[name]
	switch {
	case !known:
		return fmt.Errorf("jepsen: unknown nemesis %q (one of %v)", name, AllNemeses)
	case !ok:
		return fmt.Errorf("%w: nemesis %s", ErrUnsupported, name)
	}
	return nil
}

// nemesis injects faults into a cluster and remembers what it did, so
// healAll can undo everything.
type nemesis struct {
	c     Cluster
	rng   *rand.Rand
	names []string // node names

	mu     sync.Mutex
	killed map[string]bool
	paused map[string]bool
	skewed map[string]bool
}

func newNemesis(c Cluster, seed int64) *nemesis {
	var names []string
	for _, n := range c.Nodes() {
		names = append(names, n.Name)
	}
	return &nemesis{c: c, rng: rand.New(rand.NewPCG(uint64(seed), 0x6e656d65)), names: names,
		killed: map[string]bool{}, paused: map[string]bool{}, skewed: map[string]bool{}}
}

// cutsBetween returns the links between every node of a and every node of
// b.
func cutsBetween(a, b []string) [][2]string {
	var out [][2]string
	for _, x := range a {
		for _, y := range b {
			out = append(out, [2]string{x, y})
		}
	}
	return out
}

// partitionCuts returns the links a partition nemesis cuts, and a
// description of the grudge.
func partitionCuts(name string, nodes []NodeInfo, rng *rand.Rand) ([][2]string, string) {
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.Name
	}
	shuffled := slices.Clone(names)
	rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	n := len(names)
	switch name {
	case PartitionHalves:
		h := n / 2
		return cutsBetween(shuffled[:h], shuffled[h:]), fmt.Sprintf("%v | %v", shuffled[:h], shuffled[h:])
	case PartitionOne:
		return cutsBetween(shuffled[:1], shuffled[1:]), fmt.Sprintf("%v isolated", shuffled[0])
	case PartitionRing:
		// On a ring of the shuffled nodes, each node keeps its links to
		// the nodes within distance d, so it sees d*2+1 >= a majority, and
		// no two nodes see the same majority. Below 5 nodes a ring is the
		// full graph minus one link.
		if n < 5 {
			return [][2]string{{shuffled[0], shuffled[1]}}, fmt.Sprintf("%s x %s", shuffled[0], shuffled[1])
		}
		d := (n/2 + 1) / 2
		var cuts [][2]string
		for i := range n {
			for j := i + 1; j < n; j++ {
				dist := min(j-i, n-(j-i))
				if dist > d {
					cuts = append(cuts, [2]string{shuffled[i], shuffled[j]})
				}
			}
		}
		return cuts, fmt.Sprintf("ring %v, links beyond distance %d cut", shuffled, d)
	case PartitionBridge:
		h := (n - 1) / 2
		a, bridge, b := shuffled[:h], shuffled[h], shuffled[h+1:]
		return cutsBetween(a, b), fmt.Sprintf("%v | %s | %v", a, bridge, b)
	case PartitionRegion:
		byRegion := map[string][]string{}
		for _, nd := range nodes {
			byRegion[nd.Region] = append(byRegion[nd.Region], nd.Name)
		}
		regions := make([]string, 0, len(byRegion))
		for r := range byRegion {
			regions = append(regions, r)
		}
		sort.Strings(regions)
		var cuts [][2]string
		for i := range regions {
			for j := i + 1; j < len(regions); j++ {
				cuts = append(cuts, cutsBetween(byRegion[regions[i]], byRegion[regions[j]])...)
			}
		}
		return cuts, fmt.Sprintf("regions %v", regions)
	}
	return nil, ""
}

// start starts one fault and returns its description.
func (m *nemesis) start(ctx context.Context, name string) (string, error) {
	switch name {
	case PartitionHalves, PartitionOne, PartitionRing, PartitionBridge, PartitionRegion:
		cuts, desc := partitionCuts(name, m.c.Nodes(), m.rng)
		return desc, m.c.Cut(cuts)
	case Kill:
		victims := m.minority()
		return fmt.Sprintf("killed %v", victims), m.kill(ctx, victims)
	case Pause:
		v := m.names[m.rng.IntN(len(m.names))]
		m.mu.Lock()
		m.paused[v] = true
		m.mu.Unlock()
		return "paused " + v, m.c.Pause(v)
	case ClockSkew:
		var desc []string
		for _, v := range m.minority() {
			d := time.Duration(m.rng.Int64N(int64(10*time.Second))) - 5*time.Second
			m.mu.Lock()
			m.skewed[v] = true
			m.mu.Unlock()
			if err := m.c.SetClockOffset(ctx, v, d); err != nil {
				return "", err
			}
			desc = append(desc, fmt.Sprintf("%s %+v", v, d.Round(time.Millisecond)))
		}
		return fmt.Sprint(desc), nil
	case Delay:
		return "delay up to 50ms on every link", m.c.SetLinkFaults(50*time.Millisecond, 0)
	case Loss:
		return "drop 10% of messages", m.c.SetLinkFaults(0, 0.1)
	}
	return "", fmt.Errorf("jepsen: unknown nemesis %q", name)
}

// minority picks between 1 and (n-1)/2 random nodes.
func (m *nemesis) minority() []string {
	k := 1 + m.rng.IntN(max(1, (len(m.names)-1)/2))
	s := slices.Clone(m.names)
	m.rng.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
	out := s[:k]
	sort.Strings(out)
	return out
}

// stop ends one fault.
func (m *nemesis) stop(ctx context.Context, name string) error {
	switch name {
	case PartitionHalves, PartitionOne, PartitionRing, PartitionBridge, PartitionRegion, Delay, Loss:
		return m.c.Heal()
	case Kill:
		return m.restartKilled(ctx)
	case Pause:
		return m.resumePaused()
	case ClockSkew:
		return m.resetClocks(ctx)
	}
	return nil
}

func (m *nemesis) take(set map[string]bool) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for n := range set {
		out = append(out, n)
		delete(set, n)
	}
	sort.Strings(out)
	return out
}

// kill kills the victims (kill -9) for restartKilled to bring back. A
// victim that was paused or had its clock offset needs neither undone.
func (m *nemesis) kill(ctx context.Context, victims []string) error {
	for _, v := range victims {
		m.mu.Lock()
		m.killed[v] = true
		delete(m.paused, v)
		delete(m.skewed, v)
		m.mu.Unlock()
		if err := m.c.Kill(ctx, v); err != nil {
			return err
		}
	}
	return nil
}

// restartKilled restarts the killed nodes together: when they are all the
// nodes (the durability workload's end), one alone could join no one.
func (m *nemesis) restartKilled(ctx context.Context) error {
	names := m.take(m.killed)
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Go(func() { errs[i] = m.c.Restart(ctx, n) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (m *nemesis) resumePaused() error {
	for _, n := range m.take(m.paused) {
		if err := m.c.Resume(n); err != nil {
			return err
		}
	}
	return nil
}

func (m *nemesis) resetClocks(ctx context.Context) error {
	for _, n := range m.take(m.skewed) {
		if err := m.c.SetClockOffset(ctx, n, 0); err != nil {
			return err
		}
	}
	return nil
}

// healAll undoes every fault: links, pauses, kills, clocks.
func (m *nemesis) healAll(ctx context.Context) error {
	if err := m.c.Heal(); err != nil {
		return err
	}
	if err := m.resumePaused(); err != nil {
		return err
	}
	if err := m.restartKilled(ctx); err != nil {
		return err
	}
	return m.resetClocks(ctx)
}
