package meshbench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/eventlog"
	"github.com/statemesh/statemesh/mesh"
)

// TargetUpdatesPerSecond is the throughput target per node.
const TargetUpdatesPerSecond = 100_000

// ThroughputOptions configures RunThroughput.
type ThroughputOptions struct {
	Nodes int
	Keys  int
	// Writers is the number of goroutines writing on each node.
	Writers int
	// Rates are the offered loads, in updates per second per node, one
	// run (on a fresh cluster) each; 0 means as fast as the writers go.
	Rates    []float64
	Duration time.Duration
	// Preset picks the gossip and failure-detector timing.
	Preset mesh.Preset
	// Tick is the anti-entropy interval (mesh.Config.TickInterval).
	Tick time.Duration
	// KeepUpTicks: replication keeps up when the replicas agree within
	// this many intervals after the writes stop, and no sampled lag is
	// larger than that.
	KeepUpTicks int
	// AgreeTimeout bounds the wait, after the writes stop, for every
	// replica to hold every write.
	AgreeTimeout time.Duration
	Seed         uint64
	DB           eventlog.Options
}

// DefaultThroughputOptions: 3 nodes, 1000 keys, 4 writers per node, 10 s
// as fast as they go, then 10 s at each of 10k, 20k, 25k, 30k and 40k
// updates/s per node (the knee of a 2-core machine lies in that range);
// PresetLocal (100 ms interval); each node's store in memory with the
// default sizes.
func DefaultThroughputOptions() ThroughputOptions {
	db := eventlog.DefaultOptions("")
	db.InMemory = true
	db.GCInterval = -1
	return ThroughputOptions{
		Nodes: 3, Keys: 1000, Writers: 4, Rates: []float64{0, 10000, 20000, 30000, 40000, 50000, 60000, 80000}, Duration: 10 * time.Second,
		Preset: mesh.PresetLocal, Tick: 100 * time.Millisecond, KeepUpTicks: 5,
		AgreeTimeout: 60 * time.Second, Seed: 1, DB: db,
	}
}

// NodeThroughput is one node's share of a throughput run.
type NodeThroughput struct {
	Node        string  `json:"node"`
	Updates     int64   `json:"updates"`
	UpdatesPerS float64 `json:"updates_per_s"`
	// BytesPerUpdate: anti-entropy bytes this node sent per update made
	// anywhere in the mesh.
	BytesPerUpdate float64 `json:"bytes_per_update"`
	// LagMax and LagMean are over samples of the node's
	// statemesh_mesh_replication_lag_deltas gauge (set every tick) taken
	// every interval during the writes; LagAtStop is the first sample
	// after they stopped.
	LagMax    float64 `json:"lag_max_deltas"`
	LagMean   float64 `json:"lag_mean_deltas"`
	LagAtStop float64 `json:"lag_at_stop_deltas"`
	// AgreeMs is when, after the writes stopped, this node held every
	// write.
	AgreeMs float64 `json:"agree_ms"`
}

// ThroughputResult is one throughput run.
type ThroughputResult struct {
	Nodes   int `json:"nodes"`
	Keys    int `json:"keys"`
	Writers int `json:"writers_per_node"`
	// Rate is the offered load per node (0: unthrottled).
	Rate      float64 `json:"offered_updates_per_s_per_node"`
	DurationS float64 `json:"duration_s"`
	TickMs    float64 `json:"tick_ms"`
	// UpdatesPerSPerNode is the mean over the nodes; MinUpdatesPerS the
	// slowest node's.
	UpdatesPerSPerNode float64 `json:"updates_per_s_per_node"`
	MinUpdatesPerS     float64 `json:"min_updates_per_s"`
	TotalUpdatesPerS   float64 `json:"total_updates_per_s"`
	// AgreeMs: from the moment the last writer stopped until every node
	// held every write; AgreePollMs is how long one check of all nodes
	// took (the resolution of AgreeMs).
	AgreeMs     float64 `json:"agree_ms"`
	AgreePollMs float64 `json:"agree_poll_ms"`
	// LagMax is the largest lag gauge sampled (deltas); LagMaxMs converts
	// it to time: a node buffers about one delta per update made anywhere
	// (its own, and what the others' inflate), so LagMax / the cluster's
	// update rate is roughly how far its slowest neighbour is behind.
	LagMax   float64 `json:"lag_max_deltas"`
	LagMaxMs float64 `json:"lag_max_ms"`
	// KeepsUp: the replicas agreed within KeepUpTicks intervals after the
	// writes stopped, and LagMaxMs stayed within as long.
	KeepsUp bool `json:"keeps_up"`
	// Target and TargetMet: the slowest node made Target updates/s and
	// replication kept up.
	Target    float64 `json:"target_updates_per_s_per_node"`
	TargetMet bool    `json:"target_met"`
	// Anti-entropy traffic, per update and per node.
	BytesPerUpdatePerNode float64 `json:"bytes_per_update_per_node"`
	Dropped               float64 `json:"dropped"`
	FullStateTransfers    float64 `json:"full_state_transfers"`
	// CPUCores is the process's CPU time during the writes divided by
	// their wall time; GCShare the part of that CPU time the Go runtime
	// spent collecting garbage.
	CPUCores float64          `json:"cpu_cores"`
	GCShare  float64          `json:"gc_share"`
	PerNode  []NodeThroughput `json:"per_node"`
	// Timeline has one sample per second of writing.
	Timeline []Sample `json:"timeline"`
}

// Sample is the state of a throughput run about once a second.
type Sample struct {
	AtS float64 `json:"at_s"`
	// UpdatesPerSPerNode over the second before.
	UpdatesPerSPerNode float64 `json:"updates_per_s_per_node"`
	// Lag is each node's replication-lag gauge (deltas).
	Lag []float64 `json:"lag_deltas"`
}

// RunThroughput runs one throughput measurement per offered rate in
// o.Rates, each on a fresh cluster (see throughputOne).
func RunThroughput(ctx context.Context, o ThroughputOptions, progress func(string)) ([]ThroughputResult, error) {
	if progress == nil {
		progress = func(string) {}
	}
	if o.Nodes < 2 || o.Keys < 1 || o.Writers < 1 || o.Duration <= 0 || len(o.Rates) == 0 {
		return nil, fmt.Errorf("meshbench: throughput needs 2+ nodes, 1+ keys and writers, a duration and a rate (got %d, %d, %d, %s, %v)",
			o.Nodes, o.Keys, o.Writers, o.Duration, o.Rates)
	}
	var out []ThroughputResult
	for _, rate := range o.Rates {
		if rate < 0 {
			return out, fmt.Errorf("meshbench: negative rate %v", rate)
		}
		r, err := throughputOne(ctx, o, rate, progress)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

// throughputOne starts o.Nodes nodes, creates o.Keys GCounters, then has
// o.Writers goroutines per node increment random keys (LOCAL) for
// o.Duration, at rate updates/s per node (0: as fast as they can), and
// waits until every replica holds every write.
func throughputOne(ctx context.Context, o ThroughputOptions, rate float64, progress func(string)) (ThroughputResult, error) {
	res := ThroughputResult{Nodes: o.Nodes, Keys: o.Keys, Writers: o.Writers, Rate: rate, TickMs: ms(o.Tick), Target: TargetUpdatesPerSecond}
	label := "as fast as possible"
	if rate > 0 {
		label = fmt.Sprintf("offered %.0f/s per node", rate)
	}
	say := func(s string) { progress("throughput (" + label + "): " + s) }
	say(fmt.Sprintf("starting %d nodes", o.Nodes))
	c, err := startCluster(ctx, clusterConfig{nodes: o.Nodes, preset: o.Preset, tick: o.Tick, db: o.DB, seed: o.Seed, progress: say})
	if err != nil {
		return res, err
	}
	defer c.close(say)
	keys := make([]mesh.Key, o.Keys)
	for i := range keys {
		keys[i] = mesh.Key{Service: "bench.Throughput", ID: fmt.Sprintf("k%05d", i)}
	}
	// Create every key (one increment each, from the first node), and wait
	// until everyone has them: a warm-up too.
	first := c.nodes[0]
	for _, k := range keys {
		if _, err := first.Update(ctx, k, crdt.TypeGCounter, increment(first.Replica()), mesh.Options{}); err != nil {
			return res, err
		}
	}
	if _, _, err := waitAgree(ctx, c, keys, uint64(o.Keys), o.AgreeTimeout); err != nil {
		return res, fmt.Errorf("meshbench: after creating the keys: %w", err)
	}
	say(fmt.Sprintf("%d keys on every node; %d writers per node for %s", o.Keys, o.Writers, o.Duration))

	counts := make([]atomic.Int64, o.Nodes)
	bytes0 := make([]float64, o.Nodes)
	for i, n := range c.nodes {
		bytes0[i] = metricValue(n, metricBytesSent)
	}
	drop0, xfer0 := c.sum(metricDropped), c.sum(metricTransfers)

	// Sample the lag gauges every tick until the agreement check is over.
	type lagStats struct {
		max, sum float64
		samples  int
		atStop   float64
		stopSeen bool
	}
	lags := make([]lagStats, o.Nodes)
	var stopped atomic.Bool
	sampleDone := make(chan struct{})
	var sampler sync.WaitGroup
	var timeline []Sample // written by the sampler, read after it stopped
	sampler.Go(func() {
		t := time.NewTicker(o.Tick)
		defer t.Stop()
		var lastCount int64
		lastT, t0 := time.Now(), time.Now()
		for {
			select {
			case <-sampleDone:
				return
			case <-t.C:
			}
			after := stopped.Load()
			cur := make([]float64, len(c.nodes))
			for i, n := range c.nodes {
				v := metricValue(n, metricLag)
				cur[i] = v
				l := &lags[i]
				switch {
				case !after:
					l.max = max(l.max, v)
					l.sum += v
					l.samples++
				case !l.stopSeen:
					l.atStop, l.stopSeen = v, true
				}
			}
			if after || time.Since(lastT) < time.Second {
				continue
			}
			var count int64
			for i := range counts {
				count += counts[i].Load()
			}
			now := time.Now()
			sm := Sample{AtS: now.Sub(t0).Seconds(), UpdatesPerSPerNode: float64(count-lastCount) / now.Sub(lastT).Seconds() / float64(len(c.nodes)), Lag: cur}
			timeline = append(timeline, sm)
			lastCount, lastT = count, now
			say(fmt.Sprintf("%4.1f s: %.0f updates/s per node, lag %v deltas", sm.AtS, sm.UpdatesPerSPerNode, cur))
		}
	})
	stopSampler := sync.OnceFunc(func() { close(sampleDone); sampler.Wait() })
	defer stopSampler()

	wctx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()
	var firstErr error
	var errOnce sync.Once
	var writers sync.WaitGroup
	cpu0, gc0, start := processCPU(), gcCPU(), time.Now()
	for i, n := range c.nodes {
		for w := range o.Writers {
			rng := rand.New(rand.NewPCG(o.Seed, uint64(i*o.Writers+w+1)))
			inc := increment(n.Replica())
			pace := newPacer(start, rate/float64(o.Writers))
			writers.Go(func() {
				for wctx.Err() == nil {
					if !pace.wait(wctx) {
						return
					}
					_, err := n.Update(wctx, keys[rng.IntN(len(keys))], crdt.TypeGCounter, inc, mesh.Options{DiscardState: true})
					if err != nil {
						if wctx.Err() == nil {
							errOnce.Do(func() { firstErr = fmt.Errorf("meshbench: update on %s: %w", n.Name(), err) })
							cancel()
						}
						return
					}
					counts[i].Add(1)
				}
			})
		}
	}
	writers.Wait()
	stopped.Store(true)
	wall := time.Since(start)
	cpu := processCPU() - cpu0
	res.CPUCores = float64(cpu) / float64(wall)
	if cpu > 0 {
		res.GCShare = float64(gcCPU()-gc0) / float64(cpu)
	}
	if firstErr != nil {
		return res, firstErr
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	res.DurationS = wall.Seconds()

	var total int64
	for i := range counts {
		total += counts[i].Load()
	}
	say(fmt.Sprintf("%d updates in %.1f s (%.0f/s per node); waiting for the replicas to agree", total, wall.Seconds(), float64(total)/wall.Seconds()/float64(o.Nodes)))
	agree, poll, err := waitAgree(ctx, c, keys, uint64(o.Keys)+uint64(total), o.AgreeTimeout)
	if err != nil {
		return res, err
	}
	stopSampler()
	res.Timeline = timeline
	res.AgreePollMs = ms(poll)
	for _, d := range agree {
		res.AgreeMs = max(res.AgreeMs, ms(d))
	}
	res.Dropped = c.sum(metricDropped) - drop0
	res.FullStateTransfers = c.sum(metricTransfers) - xfer0

	res.MinUpdatesPerS = -1
	var bytes float64
	for i, n := range c.nodes {
		nt := NodeThroughput{Node: n.Name(), Updates: counts[i].Load(), AgreeMs: ms(agree[i])}
		nt.UpdatesPerS = float64(nt.Updates) / wall.Seconds()
		// Bytes are read after the agreement wait: what the run's writes
		// cost to spread.
		b := metricValue(n, metricBytesSent) - bytes0[i]
		bytes += b
		if total > 0 {
			nt.BytesPerUpdate = b / float64(total)
		}
		l := lags[i]
		nt.LagMax, nt.LagAtStop = l.max, l.atStop
		if l.samples > 0 {
			nt.LagMean = l.sum / float64(l.samples)
		}
		res.LagMax = max(res.LagMax, l.max)
		res.PerNode = append(res.PerNode, nt)
		res.UpdatesPerSPerNode += nt.UpdatesPerS / float64(o.Nodes)
		res.TotalUpdatesPerS += nt.UpdatesPerS
		if res.MinUpdatesPerS < 0 || nt.UpdatesPerS < res.MinUpdatesPerS {
			res.MinUpdatesPerS = nt.UpdatesPerS
		}
	}
	if total > 0 {
		res.BytesPerUpdatePerNode = bytes / float64(total) / float64(o.Nodes)
	}
	if res.TotalUpdatesPerS > 0 {
		res.LagMaxMs = 1000 * res.LagMax / res.TotalUpdatesPerS
	}
	bound := float64(o.KeepUpTicks) * res.TickMs
	res.KeepsUp = res.AgreeMs <= bound && res.LagMaxMs <= bound
	res.TargetMet = res.KeepsUp && res.MinUpdatesPerS >= TargetUpdatesPerSecond
	say(fmt.Sprintf("%.0f updates/s per node; replicas agree %.0f ms after the writes stopped; lag up to %.0f deltas (~%.0f ms)",
		res.UpdatesPerSPerNode, res.AgreeMs, res.LagMax, res.LagMaxMs))
	return res, nil
}

// pacer spaces one writer's updates at a given rate; it lets a writer that
// fell behind catch up, by at most 100 ms worth of updates.
type pacer struct {
	next     time.Time
	interval time.Duration // 0: unpaced
}

func newPacer(start time.Time, rate float64) *pacer {
	p := &pacer{next: start}
	if rate > 0 {
		p.interval = time.Duration(float64(time.Second) / rate)
	}
	return p
}

// wait blocks until the next update is due; false if ctx ended first.
func (p *pacer) wait(ctx context.Context) bool {
	if p.interval == 0 {
		return true
	}
	now := time.Now()
	if now.Sub(p.next) > 100*time.Millisecond {
		p.next = now
	}
	d := p.next.Sub(now)
	p.next = p.next.Add(p.interval)
	// Sleeping costs about as much as a short wait: only sleep when at
	// least a millisecond early, and catch up on the rest later.
	if d >= time.Millisecond {
		return sleepCtx(ctx, d) == nil
	}
	return true
}

// waitAgree polls every node until the sum of its counters over keys is
// want, and returns how long each node took and how long one poll of all
// nodes took.
func waitAgree(ctx context.Context, c *cluster, keys []mesh.Key, want uint64, timeout time.Duration) ([]time.Duration, time.Duration, error) {
	start := time.Now()
	agree := make([]time.Duration, len(c.nodes))
	done := make([]bool, len(c.nodes))
	var poll time.Duration
	for round := 0; ; round++ {
		p0 := time.Now()
		left := 0
		var mu sync.Mutex
		var firstErr error
		var wg sync.WaitGroup
		for i, n := range c.nodes {
			if done[i] {
				continue
			}
			wg.Go(func() {
				var sum uint64
				for _, k := range keys {
					v, err := n.Get(ctx, k, mesh.Options{})
					if err != nil {
						mu.Lock()
						firstErr = errors.Join(firstErr, err)
						mu.Unlock()
						return
					}
					sum += counterValue(v)
				}
				mu.Lock()
				defer mu.Unlock()
				if sum == want {
					done[i], agree[i] = true, time.Since(start)
				} else {
					left++
				}
			})
		}
		wg.Wait()
		if firstErr != nil {
			return nil, 0, firstErr
		}
		if round == 0 {
			poll = time.Since(p0)
		}
		if left == 0 {
			return agree, poll, nil
		}
		if time.Since(start) > timeout {
			return nil, 0, fmt.Errorf("meshbench: %d of %d nodes do not hold all %d increments after %s", left, len(c.nodes), want, timeout)
		}
		if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
			return nil, 0, err
		}
	}
}
