package meshbench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/eventlog"
	"github.com/statemesh/statemesh/mesh"
)

// ConvergenceOptions configures RunConvergence.
type ConvergenceOptions struct {
	// Nodes lists the cluster sizes, one cluster per size.
	Nodes []int
	// Writes is the number of measured writes per cluster, one at a time,
	// each from the next node in a shuffled order of the nodes.
	Writes int
	// WarmupRounds: before the measured writes, every node writes this
	// many times (unmeasured), so that each has made itself known to its
	// neighbours; warm-up writes that do not reach every node in time are
	// reported apart (ConvergenceResult.WarmupTimeouts).
	WarmupRounds int
	// Preset picks the gossip and failure-detector timing.
	Preset mesh.Preset
	// Tick is the anti-entropy interval (mesh.Config.TickInterval); the
	// targets are in units of it.
	Tick time.Duration
	// Timeout bounds the wait for one write to reach every node.
	Timeout time.Duration
	// Seed drives the join order, the writers' order and the pauses.
	Seed uint64
	// DB are the options of every node's store.
	DB eventlog.Options
}

// DefaultConvergenceOptions: 8, 16, 32 and 64 nodes, 200 writes each,
// PresetLocal with its 100 ms anti-entropy interval.
func DefaultConvergenceOptions() ConvergenceOptions {
	return ConvergenceOptions{
		Nodes: []int{8, 16, 32, 64}, Writes: 200, WarmupRounds: 1, Preset: mesh.PresetLocal,
		Tick: 100 * time.Millisecond, Timeout: 2 * time.Second, Seed: 1,
		DB: SmallDBOptions(),
	}
}

// ConvergenceResult is one cluster size's measurement. Latencies are from
// just before Node.Update on the writer to the moment the last node's
// watcher (Node.Watch) received a state holding the write.
type ConvergenceResult struct {
	Nodes  int     `json:"nodes"`
	Writes int     `json:"writes"`
	TickMs float64 `json:"tick_ms"`
	MeanMs float64 `json:"mean_ms"`
	P50Ms  float64 `json:"p50_ms"`
	P90Ms  float64 `json:"p90_ms"`
	P99Ms  float64 `json:"p99_ms"`
	MaxMs  float64 `json:"max_ms"`
	// TargetP99Ms is (ceil(log2 N) + 2) anti-entropy intervals.
	TargetP99Ms float64 `json:"target_p99_ms"`
	P99Met      bool    `json:"p99_met"`
	// TargetP50Ms is half an interval: "well under one interval".
	TargetP50Ms float64 `json:"target_p50_ms"`
	P50Met      bool    `json:"p50_met"`
	// Timeouts counts writes that did not reach every node within
	// ConvergenceOptions.Timeout (counted at the timeout in the
	// percentiles).
	Timeouts int `json:"timeouts"`
	// Missed counts, per node, the timed-out writes it had not received.
	Missed map[string]int `json:"missed,omitempty"`
	// WarmupTimeouts and WarmupMissed are the same for the warm-up
	// writes.
	WarmupTimeouts int            `json:"warmup_timeouts"`
	WarmupMissed   map[string]int `json:"warmup_missed,omitempty"`
	// Anti-entropy traffic (statemesh_mesh_bytes_sent_total and
	// messages_sent_total summed over peers and nodes) from the first
	// measured write until two intervals after the last, per write and
	// per node. Gossip (memberlist) is not included.
	BytesPerUpdatePerNode    float64 `json:"bytes_per_update_per_node"`
	MessagesPerUpdatePerNode float64 `json:"messages_per_update_per_node"`
	Dropped                  float64 `json:"dropped"`
	// DroppedBy and RefusedBy break drops and refusals down by reason.
	DroppedBy          map[string]float64 `json:"dropped_by,omitempty"`
	RefusedBy          map[string]float64 `json:"refused_by,omitempty"`
	FullStateTransfers float64            `json:"full_state_transfers"`
	// Peers is the mean number of peers a node exchanged anti-entropy
	// messages with (its neighbours and those that chose it).
	Peers float64 `json:"peers"`
	// CPUCores is the process's CPU time during the measured writes
	// divided by their wall time.
	CPUCores float64 `json:"cpu_cores"`
	SetupS   float64 `json:"setup_s"`
	RunS     float64 `json:"run_s"`
	HeapMiB  float64 `json:"heap_mib"`
	// Latencies in ms, sorted (for the plot).
	Latencies []float64 `json:"-"`
}

// TargetP99 returns the p99 target for n nodes: (ceil(log2 n) + 2) ticks.
func TargetP99(n int, tick time.Duration) time.Duration {
	return time.Duration(math.Ceil(math.Log2(float64(n)))+2) * tick
}

// RunConvergence measures every cluster size in o.Nodes in turn. progress,
// if not nil, receives a line now and then.
func RunConvergence(ctx context.Context, o ConvergenceOptions, progress func(string)) ([]ConvergenceResult, error) {
	if progress == nil {
		progress = func(string) {}
	}
	var out []ConvergenceResult
	for _, n := range o.Nodes {
		if n < 2 {
			return out, fmt.Errorf("meshbench: cluster of %d nodes", n)
		}
		r, err := convergenceOne(ctx, o, n, progress)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

// probe collects, for the write in flight, when each node first saw it.
type probe struct {
	mu     sync.Mutex
	target uint64 // counter value that holds the write; 0: none in flight
	seen   []bool
	left   int
	last   time.Time
	done   chan struct{}
}

// arm starts waiting for every node to reach target.
func (p *probe) arm(target uint64) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target, p.left, p.last = target, len(p.seen), time.Time{}
	clear(p.seen)
	p.done = make(chan struct{})
	return p.done
}

// observe records that node i holds value v at t.
func (p *probe) observe(i int, v uint64, t time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.target == 0 || v < p.target || p.seen[i] {
		return
	}
	p.seen[i] = true
	p.left--
	if t.After(p.last) {
		p.last = t
	}
	if p.left == 0 {
		close(p.done)
	}
}

// missing lists the nodes that have not seen the write in flight.
func (p *probe) missing() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []int
	for i, ok := range p.seen {
		if !ok {
			out = append(out, i)
		}
	}
	return out
}

func (p *probe) lastSeen() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

func convergenceOne(ctx context.Context, o ConvergenceOptions, n int, progress func(string)) (ConvergenceResult, error) {
	res := ConvergenceResult{Nodes: n, TickMs: ms(o.Tick), TargetP99Ms: ms(TargetP99(n, o.Tick)), TargetP50Ms: ms(o.Tick / 2)}
	t0 := time.Now()
	progress(fmt.Sprintf("convergence N=%d: starting %d nodes", n, n))
	c, err := startCluster(ctx, clusterConfig{nodes: n, preset: o.Preset, tick: o.Tick, db: o.DB, seed: o.Seed ^ uint64(n), progress: progress})
	if err != nil {
		return res, err
	}
	defer func() {
		tc := time.Now()
		c.close(progress)
		progress(fmt.Sprintf("convergence N=%d: closed in %.1f s", n, time.Since(tc).Seconds()))
	}()
	res.SetupS = time.Since(t0).Seconds()
	res.HeapMiB = heapMiB()
	progress(fmt.Sprintf("convergence N=%d: membership settled in %.1f s, heap %.0f MiB", n, res.SetupS, res.HeapMiB))

	key := mesh.Key{Service: "bench.Convergence", ID: "counter"}
	p := &probe{seen: make([]bool, n)}
	var wg sync.WaitGroup
	var cancels []func()
	defer func() {
		for _, cancel := range cancels {
			cancel()
		}
		wg.Wait()
	}()
	for i, node := range c.nodes {
		ch, cancel, err := node.Watch(ctx, key)
		if err != nil {
			return res, err
		}
		cancels = append(cancels, cancel)
		wg.Go(func() {
			for v := range ch {
				p.observe(i, counterValue(v), time.Now())
			}
		})
	}

	rng := rand.New(rand.NewPCG(o.Seed, uint64(n)))
	var order []int
	var value uint64
	// write makes the next node in order increment the counter and
	// returns how long until every node held it.
	write := func() (time.Duration, error) {
		if len(order) == 0 {
			order = rng.Perm(n)
		}
		w := c.nodes[order[0]]
		order = order[1:]
		value++
		done := p.arm(value)
		start := time.Now()
		if _, err := w.Update(ctx, key, crdt.TypeGCounter, increment(w.Replica()), mesh.Options{}); err != nil {
			return 0, fmt.Errorf("meshbench: update on %s: %w", w.Name(), err)
		}
		t := time.NewTimer(o.Timeout)
		defer t.Stop()
		select {
		case <-done:
			return p.lastSeen().Sub(start), nil
		case <-t.C:
			return o.Timeout, errTimeout
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	// pause spreads the writes over the anti-entropy phase.
	pause := func() error { return sleepCtx(ctx, time.Duration(rng.Int64N(int64(o.Tick/2)+1))) }

	// missed records the nodes a timed-out write did not reach.
	missed := func(into *map[string]int) []string {
		var names []string
		for _, j := range p.missing() {
			name := c.nodes[j].Name()
			names = append(names, name)
			if *into == nil {
				*into = map[string]int{}
			}
			(*into)[name]++
		}
		return names
	}
	for i := range o.WarmupRounds * n {
		_, err := write()
		switch {
		case errors.Is(err, errTimeout):
			res.WarmupTimeouts++
			progress(fmt.Sprintf("convergence N=%d: warm-up write %d did not reach %v in %s", n, i+1, missed(&res.WarmupMissed), o.Timeout))
		case err != nil:
			return res, err
		}
		if err := pause(); err != nil {
			return res, err
		}
	}
	// Let the warm-up's acknowledgements go out.
	if err := sleepCtx(ctx, 3*o.Tick); err != nil {
		return res, err
	}
	bytes0, msgs0 := c.sum(metricBytesSent), c.sum(metricMsgsSent)
	drop0, xfer0 := c.sum(metricDropped), c.sum(metricTransfers)
	dropBy0 := c.sumByLabel(metricDropped, "reason")
	t1, cpu1 := time.Now(), processCPU()
	lat := make([]float64, 0, o.Writes)
	for i := range o.Writes {
		d, err := write()
		switch {
		case errors.Is(err, errTimeout):
			res.Timeouts++
			names := missed(&res.Missed)
			progress(fmt.Sprintf("convergence N=%d: write %d did not reach %d nodes in %s: %v; drops so far %v",
				n, i+1, len(names), o.Timeout, names, diff(c.sumByLabel(metricDropped, "reason"), dropBy0)))
		case err != nil:
			return res, err
		}
		lat = append(lat, ms(d))
		if (i+1)%50 == 0 || i+1 == o.Writes {
			progress(fmt.Sprintf("convergence N=%d: %d/%d writes, last %.1f ms", n, i+1, o.Writes, ms(d)))
		}
		if err := pause(); err != nil {
			return res, err
		}
	}
	if err := sleepCtx(ctx, 2*o.Tick); err != nil {
		return res, err
	}
	res.RunS = time.Since(t1).Seconds()
	res.CPUCores = float64(processCPU()-cpu1) / float64(time.Since(t1))
	res.Peers = c.meanPeers()
	res.Writes = len(lat)
	per := float64(max(1, res.Writes)) * float64(n)
	res.BytesPerUpdatePerNode = (c.sum(metricBytesSent) - bytes0) / per
	res.MessagesPerUpdatePerNode = (c.sum(metricMsgsSent) - msgs0) / per
	res.Dropped = c.sum(metricDropped) - drop0
	res.FullStateTransfers = c.sum(metricTransfers) - xfer0
	res.DroppedBy = diff(c.sumByLabel(metricDropped, "reason"), dropBy0)
	res.RefusedBy = diff(c.sumByLabel(metricRefused, "reason"), nil)

	slices.Sort(lat)
	res.Latencies = lat
	res.P50Ms, res.P90Ms, res.P99Ms = percentile(lat, 50), percentile(lat, 90), percentile(lat, 99)
	if len(lat) > 0 {
		res.MaxMs = lat[len(lat)-1]
		var s float64
		for _, v := range lat {
			s += v
		}
		res.MeanMs = s / float64(len(lat))
	}
	res.P99Met = res.Timeouts == 0 && res.P99Ms <= res.TargetP99Ms
	res.P50Met = res.P50Ms < res.TargetP50Ms
	progress(fmt.Sprintf("convergence N=%d: p50 %.1f ms, p99 %.1f ms (target %.0f ms), %.0f bytes/update/node",
		n, res.P50Ms, res.P99Ms, res.TargetP99Ms, res.BytesPerUpdatePerNode))
	return res, nil
}

var errTimeout = errors.New("meshbench: write did not reach every node in time")

// percentile is the nearest-rank percentile of sorted xs.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(xs)))) - 1
	return xs[max(0, min(i, len(xs)-1))]
}

// diff returns the non-zero growths from before to after.
func diff(after, before map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
