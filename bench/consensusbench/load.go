package consensusbench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// LoadConfig configures one Run: a closed loop of Clients clients, each
// with one write outstanding at a time.
type LoadConfig struct {
	// Clients is the number of concurrent clients (goroutines). Default 16.
	Clients int
	// Keys is the number of distinct keys (entities); every write picks
	// one uniformly at random. Default 10000: enough that concurrent
	// writes rarely touch the same key.
	Keys int
	// ValueBytes is the size of every value. Default 100.
	ValueBytes int
	// Warmup is written but not measured: connections, leader, caches
	// and the Go runtime settle. Default 2 s.
	Warmup time.Duration
	// Duration is the measured window after the warm-up. Default 10 s.
	Duration time.Duration
	// Drain bounds the wait, after the window, for writes still in
	// flight; they are cancelled then. Writes that complete after the
	// window never count. Zero means 10 s.
	Drain time.Duration
	// Seed seeds the key choice (client c uses Seed and c), so two
	// systems run with the same Seed see the same key sequence per
	// client.
	Seed int64
}

// DefaultLoadConfig returns the defaults documented on LoadConfig.
func DefaultLoadConfig() LoadConfig {
	return LoadConfig{Clients: 16, Keys: 10000, ValueBytes: 100, Warmup: 2 * time.Second, Duration: 10 * time.Second, Seed: 1}
}

// ErrInvalidConfig is returned, wrapped, for a configuration that cannot run.
var ErrInvalidConfig = errors.New("consensusbench: invalid configuration")

// Validate reports a configuration that cannot run.
func (c LoadConfig) Validate() error {
	switch {
	case c.Clients < 1:
		return fmt.Errorf("%w: Clients %d < 1", ErrInvalidConfig, c.Clients)
	case c.Keys < 1:
		return fmt.Errorf("%w: Keys %d < 1", ErrInvalidConfig, c.Keys)
	case c.ValueBytes < 0:
		return fmt.Errorf("%w: ValueBytes %d < 0", ErrInvalidConfig, c.ValueBytes)
	case c.Warmup < 0:
		return fmt.Errorf("%w: Warmup %s < 0", ErrInvalidConfig, c.Warmup)
	case c.Duration <= 0:
		return fmt.Errorf("%w: Duration %s <= 0", ErrInvalidConfig, c.Duration)
	case c.Drain < 0:
		return fmt.Errorf("%w: Drain %s < 0", ErrInvalidConfig, c.Drain)
	}
	return nil
}

func (c LoadConfig) drain() time.Duration {
	if c.Drain == 0 {
		return 10 * time.Second
	}
	return c.Drain
}

// Result is one Run: one system, one client count, one round.
type Result struct {
	System string `json:"system"`
	// Round is 1-based under RunPlan; 0 for a lone Run.
	Round      int     `json:"round"`
	Clients    int     `json:"clients"`
	Keys       int     `json:"keys"`
	ValueBytes int     `json:"value_bytes"`
	WarmupS    float64 `json:"warmup_s"`
	// DurationS is the measured window.
	DurationS float64 `json:"duration_s"`
	// Ops are the writes acknowledged within the window (completed at or
	// after its start and before its end); OpsPerSec = Ops / DurationS.
	Ops       int64   `json:"ops"`
	OpsPerSec float64 `json:"ops_per_s"`
	// Latency of the acknowledged writes of the window, from the call of
	// Write to its return; exact quantiles (nearest rank) over all of
	// them.
	MeanMs float64 `json:"mean_ms"`
	P50Ms  float64 `json:"p50_ms"`
	P90Ms  float64 `json:"p90_ms"`
	P99Ms  float64 `json:"p99_ms"`
	MaxMs  float64 `json:"max_ms"`
	// Errors are the writes that failed within the window; they are not
	// in Ops nor in the latencies.
	Errors int64 `json:"errors"`
	// The warm-up's acknowledged and failed writes.
	WarmupOps    int64 `json:"warmup_ops"`
	WarmupErrors int64 `json:"warmup_errors"`
	// FirstError is the text of the earliest failed write (warm-up or
	// window), if any.
	FirstError string `json:"first_error,omitempty"`
}

// clientStats is what one client goroutine records; only that goroutine
// writes it, except done, which the progress reporter reads.
type clientStats struct {
	done       atomic.Int64 // acknowledged writes so far, warm-up included
	lat        []time.Duration
	errors     int64
	warmOps    int64
	warmErrors int64
	firstErr   error
	firstErrAt time.Time
	_          [64]byte // keep clients' counters off each other's cache lines
}

// Run drives t with cfg.Clients clients for cfg.Warmup and then
// cfg.Duration, each client writing cfg.ValueBytes bytes to random keys of
// cfg.Keys, one write at a time. progress, if not nil, is called about
// every second and once at the end with the acknowledged writes so far
// (warm-up included), from one goroutine. A Run cut short by ctx returns
// ctx's error.
func Run(ctx context.Context, t Target, cfg LoadConfig, progress func(done int)) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	keys := make([]string, cfg.Keys)
	width := len(strconv.Itoa(cfg.Keys - 1))
	for i := range keys {
		keys[i] = fmt.Sprintf("k%0*d", width, i)
	}
	stats := make([]clientStats, cfg.Clients)
	start := time.Now()
	warmEnd := start.Add(cfg.Warmup)
	end := warmEnd.Add(cfg.Duration)
	wctx, cancel := context.WithDeadline(ctx, end.Add(cfg.drain()))
	defer cancel()
	var wg sync.WaitGroup
	for c := range stats {
		wg.Go(func() { stats[c].run(wctx, t, c, cfg, keys, warmEnd, end) })
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	sum := func() int {
		n := int64(0)
		for i := range stats {
			n += stats[i].done.Load()
		}
		return int(n)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
wait:
	for {
		select {
		case <-finished:
			break wait
		case <-tick.C:
			if progress != nil {
				progress(sum())
			}
		}
	}
	if progress != nil {
		progress(sum())
	}
	if err := ctx.Err(); err != nil {
		return Result{}, fmt.Errorf("consensusbench: run of %s cut short: %w", t.Name(), err)
	}
	r := Result{
		System: t.Name(), Clients: cfg.Clients, Keys: cfg.Keys, ValueBytes: cfg.ValueBytes,
		WarmupS: cfg.Warmup.Seconds(), DurationS: cfg.Duration.Seconds(),
	}
	var lat []time.Duration
	var first *clientStats
	for i := range stats {
		s := &stats[i]
		lat = append(lat, s.lat...)
		r.Errors += s.errors
		r.WarmupOps += s.warmOps
		r.WarmupErrors += s.warmErrors
		if s.firstErr != nil && (first == nil || s.firstErrAt.Before(first.firstErrAt)) {
			first = s
		}
	}
	if first != nil {
		r.FirstError = first.firstErr.Error()
	}
	r.Ops = int64(len(lat))
	r.OpsPerSec = float64(r.Ops) / r.DurationS
	if len(lat) > 0 {
		slices.Sort(lat)
		var total time.Duration
		for _, d := range lat {
			total += d
		}
		r.MeanMs = ms(total / time.Duration(len(lat)))
		r.P50Ms = ms(quantile(lat, 0.50))
		r.P90Ms = ms(quantile(lat, 0.90))
		r.P99Ms = ms(quantile(lat, 0.99))
		r.MaxMs = ms(lat[len(lat)-1])
	}
	return r, nil
}

func (s *clientStats) run(ctx context.Context, t Target, c int, cfg LoadConfig, keys []string, warmEnd, end time.Time) {
	rng := rand.New(rand.NewPCG(uint64(cfg.Seed), uint64(c)))
	value := make([]byte, cfg.ValueBytes)
	for i := range value {
		value[i] = byte(rng.Uint32())
	}
	s.lat = make([]time.Duration, 0, 1024)
	for n := uint64(0); ctx.Err() == nil; n++ {
		key := keys[rng.IntN(len(keys))]
		if len(value) >= 8 {
			// Every write of a client carries a different value.
			binary.LittleEndian.PutUint64(value, n)
		}
		t0 := time.Now()
		if !t0.Before(end) {
			return
		}
		err := t.Write(ctx, c, key, value)
		t1 := time.Now()
		if err == nil {
			s.done.Add(1)
		}
		switch {
		case t1.Before(warmEnd):
			if err != nil {
				s.warmErrors++
			} else {
				s.warmOps++
			}
		case t1.Before(end):
			if err != nil {
				s.errors++
			} else {
				s.lat = append(s.lat, t1.Sub(t0))
			}
		default:
			// Completed after the window: not counted; a failure here
			// is most likely the drain deadline.
			continue
		}
		if err != nil && s.firstErr == nil {
			s.firstErr, s.firstErrAt = err, t1
		}
	}
}

// quantile is the nearest-rank q-quantile of sorted, non-empty xs.
func quantile(xs []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(xs)))) - 1
	return xs[min(max(i, 0), len(xs)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Plan is a whole benchmark: every client count against every target,
// Repeat times.
type Plan struct {
	// Clients are the client counts, one Run each per target and round.
	// Default 1, 16, 128.
	Clients []int
	// Repeat is the number of rounds; the report quotes medians over
	// them. Default 3.
	Repeat int
	// Load is the configuration of every Run; its Clients is replaced by
	// each of Plan.Clients, and round r (1-based) uses Seed + r - 1.
	Load LoadConfig
	// PauseIdle: during each Run, the other Pausable targets are
	// stopped, so that the measured one has the machine to itself; a
	// target continued for its run first gets PauseSettle. RunPlan
	// continues every target before it returns.
	PauseIdle bool `json:"pause_idle,omitempty"`
}

// PauseSettle is how long RunPlan lets a target that it has just
// continued settle before its run. A process stopped for a run of the
// other target finds its connections' read deadlines long past when it
// continues: etcd's members drop and redial their peer streams, and the
// writes of a warm-up started at once timed out into the measured window
// (47 failed writes in one run).
const PauseSettle = 3 * time.Second

// measureAlone stops every other Pausable target and continues t,
// waiting PauseSettle if t was stopped; paused tracks which are.
func measureAlone(ctx context.Context, targets []Target, t Target, paused map[Target]bool) error {
	for _, o := range targets {
		if pt, ok := o.(Pausable); ok && o != t && !paused[o] {
			if err := pt.Pause(); err != nil {
				return err
			}
			paused[o] = true
		}
	}
	pt, ok := t.(Pausable)
	if !ok || !paused[t] {
		return nil
	}
	if err := pt.Resume(); err != nil {
		return err
	}
	paused[t] = false
	select {
	case <-time.After(PauseSettle):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// DefaultPlan: 1, 16 and 128 clients, 3 rounds, DefaultLoadConfig (2 s
// warm-up, 10 s measured): 2 systems × 3 × 3 × 12 s ≈ 3.6 minutes.
func DefaultPlan() Plan {
	return Plan{Clients: []int{1, 16, 128}, Repeat: 3, Load: DefaultLoadConfig()}
}

// Validate reports a plan that cannot run.
func (p Plan) Validate() error {
	if len(p.Clients) == 0 {
		return fmt.Errorf("%w: no client counts", ErrInvalidConfig)
	}
	if p.Repeat < 1 {
		return fmt.Errorf("%w: Repeat %d < 1", ErrInvalidConfig, p.Repeat)
	}
	for _, c := range p.Clients {
		l := p.Load
		l.Clients = c
		if err := l.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// RunPlan runs p against targets: for each round, for each client count,
// every target in turn. The order of the targets alternates between
// rounds (reversed in even rounds), so that no system always runs first,
// on a cooler machine or an emptier store. Every Run's Result is returned,
// in the order run; Rows summarises them. progress, if not nil, gets
// one-line reports.
func RunPlan(ctx context.Context, targets []Target, p Plan, progress func(string)) ([]Result, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if len(targets) == 0 {
		return nil, fmt.Errorf("%w: no targets", ErrInvalidConfig)
	}
	say := func(format string, args ...any) {
		if progress != nil {
			progress(fmt.Sprintf(format, args...))
		}
	}
	var out []Result
	paused := map[Target]bool{}
	if p.PauseIdle {
		defer func() {
			for _, t := range targets {
				if pt, ok := t.(Pausable); ok {
					_ = pt.Resume() // best effort: the run's error, if any, matters more
				}
			}
		}()
	}
	for round := 1; round <= p.Repeat; round++ {
		order := slices.Clone(targets)
		if round%2 == 0 {
			slices.Reverse(order)
		}
		for _, clients := range p.Clients {
			for _, t := range order {
				if p.PauseIdle {
					if err := measureAlone(ctx, targets, t, paused); err != nil {
						return out, err
					}
				}
				cfg := p.Load
				cfg.Clients = clients
				cfg.Seed = p.Load.Seed + int64(round-1)
				// Start every run from a collected heap: the garbage of
				// the previous run is not this one's cost.
				runtime.GC()
				label := fmt.Sprintf("round %d/%d %s, %d clients", round, p.Repeat, t.Name(), clients)
				r, err := Run(ctx, t, cfg, func(done int) { say("%s: %d writes", label, done) })
				if err != nil {
					return out, err
				}
				r.Round = round
				out = append(out, r)
				line := fmt.Sprintf("%s: %.0f writes/s, p50 %.2f ms, p99 %.2f ms, max %.1f ms, %d errors", label, r.OpsPerSec, r.P50Ms, r.P99Ms, r.MaxMs, r.Errors)
				if r.FirstError != "" {
					line += " (first: " + r.FirstError + ")"
				}
				say("%s", line)
			}
		}
	}
	return out, nil
}
