// Package meshbench measures a real mesh on loopback. Every node is a
// mesh.Node with its own memberlist, Peer gRPC service and in-memory
// store, all in this process, talking over 127.0.0.1.
//
//   - Convergence (RunConvergence): one LOCAL write at a time, the time
//     until every node holds it, for clusters of 8 to 64 nodes; and the
//     anti-entropy bytes each node sends per update.
//   - Throughput (RunThroughput): 3 nodes, LOCAL GCounter increments on
//     random keys from several goroutines per node for a fixed time; the
//     updates per second each node takes, its replication lag, and the
//     time after the writes stop until the replicas agree.
package meshbench

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"runtime/metrics"
	"sync"
	"syscall"
	"time"

	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/eventlog"
	"github.com/statemesh/statemesh/mesh"
)

// Metric names read from each node's registry.
const (
	metricBytesSent = "statemesh_mesh_bytes_sent_total"
	metricMsgsSent  = "statemesh_mesh_messages_sent_total"
	metricDropped   = "statemesh_mesh_messages_dropped_total"
	metricRefused   = "statemesh_mesh_messages_refused_total"
	metricTransfers = "statemesh_mesh_full_state_transfers_total"
	metricLag       = "statemesh_mesh_replication_lag_deltas"
)

// SmallDBOptions are in-memory store options small enough for 64 nodes in
// one process: 1 MiB memtables (Badger allocates the active memtable's
// arena up front: with the default 16 MiB, 64 nodes would hold some
// 1.3 GiB of arenas; with 1 MiB, about 85 MiB), no block cache (and so no
// compression: nothing reaches an SSTable in these runs anyway), a 1 MiB
// index cache, no value-log GC (in-memory stores have no value log).
func SmallDBOptions() eventlog.Options {
	o := eventlog.DefaultOptions("")
	o.InMemory = true
	o.MemTableSize = 1 << 20
	o.NumMemtables = 2
	o.ValueLogFileSize = 1 << 20
	o.BlockCacheSize = 0
	o.IndexCacheSize = 1 << 20
	o.GCInterval = -1
	return o
}

// clusterConfig describes an in-process mesh.
type clusterConfig struct {
	nodes    int
	preset   mesh.Preset
	tick     time.Duration // mesh.Config.TickInterval
	db       eventlog.Options
	seed     uint64
	progress func(string)
}

// cluster is N mesh nodes on loopback, each with a store the cluster opened
// (and closes).
type cluster struct {
	nodes []*mesh.Node
	dbs   []*eventlog.DB
}

// startCluster starts cc.nodes nodes one after the other, each joining
// through the first node and up to two others, and waits until every node
// sees every other one alive.
func startCluster(ctx context.Context, cc clusterConfig) (*cluster, error) {
	c := &cluster{}
	if err := c.start(ctx, cc); err != nil {
		c.close(cc.progress)
		return nil, err
	}
	return c, nil
}

func (c *cluster) start(ctx context.Context, cc clusterConfig) error {
	rng := rand.New(rand.NewPCG(cc.seed, 0xc1))
	for i := range cc.nodes {
		if err := ctx.Err(); err != nil {
			return err
		}
		db, err := eventlog.Open(cc.db)
		if err != nil {
			return fmt.Errorf("meshbench: store of node %d: %w", i+1, err)
		}
		c.dbs = append(c.dbs, db)
		cfg := mesh.Config{
			Name:         fmt.Sprintf("n%02d", i+1),
			Preset:       cc.preset,
			TickInterval: cc.tick,
			DB:           db,
		}
		if i > 0 {
			cfg.Join = append(cfg.Join, c.nodes[0].GossipAddr())
			for range 2 {
				cfg.Join = append(cfg.Join, c.nodes[rng.IntN(i)].GossipAddr())
			}
		}
		n, err := mesh.Start(cfg)
		if err != nil {
			return fmt.Errorf("meshbench: start %s: %w", cfg.Name, err)
		}
		c.nodes = append(c.nodes, n)
	}
	return c.waitMembers(ctx, 30*time.Second, cc.progress)
}

// waitMembers waits until every node sees all the others alive.
func (c *cluster) waitMembers(ctx context.Context, timeout time.Duration, progress func(string)) error {
	names := map[string]bool{}
	for _, n := range c.nodes {
		names[n.Name()] = true
	}
	start := time.Now()
	deadline, report := start.Add(timeout), start.Add(2*time.Second)
	for {
		behind, why := 0, ""
		minAlive, dead, unknown := len(c.nodes), 0, 0
		for _, n := range c.nodes {
			ms, err := n.Members(ctx)
			if err != nil {
				return err
			}
			alive := 0
			for _, m := range ms {
				switch {
				case m.Alive && names[m.Name]:
					alive++
				case names[m.Name]:
					dead++
				}
			}
			unknown += len(c.nodes) - 1 - len(ms)
			minAlive = min(minAlive, alive)
			if alive != len(c.nodes)-1 {
				behind++
				why = fmt.Sprintf("%s sees %d of %d others alive", n.Name(), alive, len(c.nodes)-1)
			}
		}
		if behind == 0 {
			return nil
		}
		if time.Now().After(report) && progress != nil {
			report = report.Add(2 * time.Second)
			progress(fmt.Sprintf("membership after %.0f s: %d nodes do not see all others alive (fewest seen alive: %d; %d member entries held dead, %d missing)",
				time.Since(start).Seconds(), behind, minAlive, dead, unknown))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("meshbench: membership did not settle in %s: %d nodes behind, e.g. %s", timeout, behind, why)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// close stops every node gracefully and then closes the stores. The nodes
// leave in parallel, since each leave waits for gossip; so some announce
// their leave to nobody left to hear it and report a timeout. Errors do
// not change what was measured: they go to progress.
func (c *cluster) close(progress func(string)) {
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		wg.Go(func() { errs[i] = n.Close() })
	}
	wg.Wait()
	for _, db := range c.dbs {
		errs = append(errs, db.Close())
	}
	failed, first := 0, error(nil)
	for _, err := range errs {
		if err != nil {
			failed++
			first = cmp.Or(first, err)
		}
	}
	if failed > 0 && progress != nil {
		progress(fmt.Sprintf("closing the cluster: %d nodes or stores reported errors, e.g. %v", failed, first))
	}
}

// sum adds up metric name (every series) over the cluster's nodes.
func (c *cluster) sum(name string) float64 {
	var s float64
	for _, n := range c.nodes {
		s += metricValue(n, name)
	}
	return s
}

// metricValue sums every series of a counter or gauge in n's registry.
func metricValue(n *mesh.Node, name string) float64 {
	reg := n.Registry()
	if reg == nil {
		return 0
	}
	mfs, err := reg.Gather()
	if err != nil {
		return 0
	}
	var s float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				s += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				s += m.GetGauge().GetValue()
			}
		}
	}
	return s
}

// sumByLabel adds up metric name over the cluster's nodes, by the value of
// its label.
func (c *cluster) sumByLabel(name, label string) map[string]float64 {
	return c.sumByLabelOf(c.nodes, name, label)
}

func (c *cluster) sumByLabelOf(nodes []*mesh.Node, name, label string) map[string]float64 {
	out := map[string]float64{}
	for _, n := range nodes {
		reg := n.Registry()
		if reg == nil {
			continue
		}
		mfs, err := reg.Gather()
		if err != nil {
			continue
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				var lv string
				for _, lp := range m.GetLabel() {
					if lp.GetName() == label {
						lv = lp.GetValue()
					}
				}
				out[lv] += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return out
}

// meanPeers is the mean, over the nodes, of the number of peers a node has
// sent anti-entropy messages to since it started: its neighbours and the
// nodes that chose it as theirs.
func (c *cluster) meanPeers() float64 {
	var s int
	for _, n := range c.nodes {
		s += len(c.sumByLabelOf([]*mesh.Node{n}, metricMsgsSent, "peer"))
	}
	return float64(s) / float64(len(c.nodes))
}

// PresetName names a mesh preset as the flags spell it.
func PresetName(p mesh.Preset) string {
	switch p {
	case mesh.PresetLAN:
		return "lan"
	case mesh.PresetWAN:
		return "wan"
	case mesh.PresetLocal:
		return "local"
	}
	return fmt.Sprintf("preset-%d", p)
}

// ParsePreset reads local, lan or wan.
func ParsePreset(s string) (mesh.Preset, error) {
	for _, p := range []mesh.Preset{mesh.PresetLocal, mesh.PresetLAN, mesh.PresetWAN} {
		if PresetName(p) == s {
			return p, nil
		}
	}
	return 0, fmt.Errorf("meshbench: unknown preset %q (local, lan or wan)", s)
}

// increment is the benchmarks' write: r's entry of a GCounter grows by one.
func increment(r crdt.ReplicaID) mesh.Mutator {
	return func(v crdt.Value) (crdt.Value, error) {
		d, err := v.(*crdt.GCounter).Increment(r, 1)
		if err != nil {
			return nil, err
		}
		return d, nil
	}
}

// counterValue reads a GCounter state (0 for none).
func counterValue(v crdt.Value) uint64 {
	if c, ok := v.(*crdt.GCounter); ok {
		return c.Value()
	}
	return 0
}

// heapMiB is the heap in use, in MiB.
func heapMiB() float64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapInuse) / (1 << 20)
}

// gcCPU returns the CPU time the Go runtime has spent in garbage
// collection so far.
func gcCPU() time.Duration {
	s := []metrics.Sample{{Name: "/cpu/classes/gc/total:cpu-seconds"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindFloat64 {
		return 0
	}
	return time.Duration(s[0].Value.Float64() * float64(time.Second))
}

// processCPU returns the process's user+system CPU time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// sleepCtx sleeps for d unless ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
