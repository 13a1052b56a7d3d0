package jepsen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/statemesh/statemesh/jepsen/check"
	"github.com/statemesh/statemesh/jepsen/history"
	"github.com/statemesh/statemesh/jepsen/report"
)

// Config is one test run.
type Config struct {
	Backend  string   // sim, local or netns
	Workload string   // counter, set, register, durability, convergence
	Nemeses  []string // empty: none (the workload runs on a healthy cluster)
	Nodes    int      // default 3
	// Regions are assigned to nodes round-robin (default two: the
	// partition-region nemesis splits them).
	Regions []string
	// TimeLimit is how long clients run while faults come and go.
	TimeLimit time.Duration
	// Interval is how long each fault lasts, and the quiet time between
	// two (default 3s).
	Interval time.Duration
	// Concurrency is the number of client workers (default 2 per node),
	// spread over the nodes.
	Concurrency int
	// Rate is each worker's mean operations per second (default 50): the
	// pause between two operations is uniform in [0, 2/Rate].
	Rate float64
	// OpTimeout bounds one client operation (default 2s); one that runs out
	// is recorded as info: it may have taken effect.
	OpTimeout time.Duration
	// ConvergeTimeout bounds the wait for replicas to agree after the
	// faults heal (default 60s).
	ConvergeTimeout time.Duration
	// CheckTimeout bounds the linearizability checker (default 60s); one
	// that runs out makes the verdict unknown.
	CheckTimeout time.Duration
	Seed         int64
	// Store is the results root: the run goes to Store/<test>/<timestamp>/.
	Store string
	// Binary is the statemesh executable (process backends).
	Binary string
	// Command is the command line, shown in the report.
	Command string
	// Progress receives progress lines (nil: none).
	Progress io.Writer
}

func (c Config) withDefaults() Config {
	if c.Nodes <= 0 {
		c.Nodes = 3
	}
	if len(c.Regions) == 0 {
		c.Regions = []string{"east", "west"}
	}
	if c.TimeLimit <= 0 {
		c.TimeLimit = 20 * time.Second
	}
	if c.Interval <= 0 {
		c.Interval = 3 * time.Second
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 2 * c.Nodes
	}
	if c.Rate <= 0 {
		c.Rate = 50
	}
	if c.OpTimeout <= 0 {
		c.OpTimeout = 2 * time.Second
	}
	if c.ConvergeTimeout <= 0 {
		c.ConvergeTimeout = 60 * time.Second
	}
	if c.CheckTimeout <= 0 {
		c.CheckTimeout = 60 * time.Second
	}
	if c.Store == "" {
		c.Store = "store"
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	return c
}

// sync reports whether the nodes acknowledge CRDT writes only after
// fsync. The guarantees under test across a crash (no acknowledged write
// lost, a node reads its own writes) are sync mode's: write-behind, the
// default, documents that a crash loses the writes of its last flush
// interval that had not yet spread (jepsen/FINDINGS.md, finding 1).
func (c Config) sync() bool {
	return c.Workload == WorkloadDurability || slices.Contains(c.Nemeses, Kill)
}

// TestName names the run's directory under the store.
func (c Config) TestName() string {
	n := "none"
	if len(c.Nemeses) > 0 {
		n = strings.Join(c.Nemeses, "+")
		if len(n) > 60 {
			n = fmt.Sprintf("%d-nemeses", len(c.Nemeses))
		}
	}
	return fmt.Sprintf("%s-%s-%s", c.Workload, c.Backend, n)
}

// Outcome is a finished run.
type Outcome struct {
	Valid   check.Validity `json:"valid"`
	Results []check.Result `json:"results"`
	Dir     string         `json:"dir"`
	Ops     int            `json:"ops"`
}

// results.json: the run's verdict and everything needed to repeat it.
type resultsFile struct {
	Test        string         `json:"test"`
	Valid       check.Validity `json:"valid"`
	Backend     string         `json:"backend"`
	Workload    string         `json:"workload"`
	Nemeses     []string       `json:"nemeses"`
	Seed        int64          `json:"seed"`
	Durability  string         `json:"durability"`
	Nodes       []NodeInfo     `json:"nodes"`
	Command     string         `json:"command"`
	Start       time.Time      `json:"start"`
	DurationSec float64        `json:"duration_s"`
	Results     []check.Result `json:"results"`
}

// runner is one run in progress.
type runner struct {
	cfg     Config
	dir     string
	cluster Cluster
	rec     *history.Recorder
	wl      workload
	workers []*worker
	nextPID atomic.Int64
	// convergence is the verdict of the final phase's wait for agreement
	// (CRDT workloads).
	convergence check.Result
	counts      struct{ ok, fail, info atomic.Int64 }
}

func (r *runner) progress(format string, a ...any) {
	fmt.Fprintf(r.cfg.Progress, "[jepsen %6.1fs] %s\n", time.Since(r.rec.Start()).Seconds(), fmt.Sprintf(format, a...))
}

// Run runs one test: start the cluster, run the workload while the
// nemeses inject faults, heal, final reads, check, write the report. The
// error is for runs that could not happen (bad configuration, a cluster
// that would not start); a run that happened returns its verdict.
func Run(ctx context.Context, cfg Config) (*Outcome, error) {
	cfg = cfg.withDefaults()
	wl, err := newWorkload(cfg.Workload)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	dir := filepath.Join(cfg.Store, cfg.TestName(), start.UTC().Format("20060102T150405.000"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, dir: dir, wl: wl, rec: history.NewRecorder(start, time.Now)}
	r.progress("%s: backend %s, %d nodes, nemeses %v, %v, seed %d; results in %s",
		cfg.TestName(), cfg.Backend, cfg.Nodes, cfg.Nemeses, cfg.TimeLimit, cfg.Seed, dir)
	ccfg := ClusterConfig{Nodes: cfg.Nodes, Regions: cfg.Regions, Dir: dir, Sync: cfg.sync(),
		Binary: cfg.Binary, Progress: r.progress}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	r.cluster, err = StartCluster(sctx, cfg.Backend, ccfg, cfg.Seed)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotStarted, err)
	}
	defer func() {
		if err := r.cluster.Close(); err != nil {
			r.progress("stopping the cluster: %v", err)
		}
	}()
	for _, n := range cfg.Nemeses {
		if err := Supported(r.cluster.Caps(), n); err != nil {
			return nil, fmt.Errorf("%w (backend %s)", err, cfg.Backend)
		}
	}
	if err := r.run(ctx); err != nil {
		return nil, err
	}
	return r.finish(start)
}

// ErrNotStarted: the cluster never started, so the test did not run (no
// fault was injected yet; the suite script tries such a run once more).
var ErrNotStarted = errors.New("jepsen: the cluster did not start")

// StartCluster starts a cluster on the named backend.
func StartCluster(ctx context.Context, backend string, cfg ClusterConfig, seed int64) (Cluster, error) {
	if cfg.Progress == nil {
		cfg.Progress = func(string, ...any) {}
	}
	switch backend {
	case "sim":
		return startSim(ctx, cfg, seed)
	case "local":
		return startLocal(ctx, cfg)
	case "netns":
		return startNetns(ctx, cfg)
	}
	return nil, fmt.Errorf("jepsen: unknown backend %q (sim, local or netns)", backend)
}

func (r *runner) run(ctx context.Context) error {
	nodes := r.cluster.Nodes()
	for i := range r.cfg.Concurrency {
		r.workers = append(r.workers, r.newWorker(nodes[i%len(nodes)], uint64(i)+1))
	}
	wctx, stop := context.WithTimeout(ctx, r.cfg.TimeLimit)
	defer stop()
	// The durability workload ends with every node killed while the
	// clients still write; the clients stop once the nodes are down.
	// The nemesis stops at the time limit in every workload; a fault it
	// is undoing then (a restart) finishes before anything else happens.
	nctx, ncancel := context.WithTimeout(ctx, r.cfg.TimeLimit)
	defer ncancel()
	nem := newNemesis(r.cluster, r.cfg.Seed)
	nemDone := make(chan struct{})
	killed := make(chan error, 1)
	if r.cfg.Workload == WorkloadDurability {
		var cancelWorkers context.CancelFunc
		wctx, cancelWorkers = context.WithCancel(context.WithoutCancel(ctx))
		defer cancelWorkers()
		go func() {
			<-nctx.Done() // the time limit (or the run's end)
			<-nemDone     // and the nemesis is still
			if err := ctx.Err(); err != nil {
				killed <- err
			} else {
				killed <- r.killEvery(ctx, nem)
			}
			cancelWorkers()
		}()
	} else {
		killed <- nil
	}
	var wg sync.WaitGroup
	for _, w := range r.workers {
		wg.Go(func() {
			stagger := time.Duration(float64(2*time.Second) / r.cfg.Rate)
			for wctx.Err() == nil {
				r.wl.step(wctx, w)
				select {
				case <-wctx.Done():
				case <-time.After(time.Duration(w.rng.Int64N(int64(stagger) + 1))):
				}
			}
		})
	}
	var nemErr error
	wg.Go(func() {
		defer close(nemDone)
		nemErr = r.runNemesis(nctx, nem)
	})
	wg.Go(func() { r.reportProgress(wctx) })
	wg.Wait()
	if err := <-killed; err != nil {
		return fmt.Errorf("jepsen: kill every node: %w", err)
	}
	r.progress("time limit reached: healing every fault")
	hctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := nem.healAll(hctx); err != nil {
		return fmt.Errorf("jepsen: heal: %w", err)
	}
	r.record(history.Info, "heal", "healed every fault")
	if nemErr != nil {
		return fmt.Errorf("jepsen: nemesis: %w", nemErr)
	}
	for _, n := range nodes {
		if err := waitHTTP(hctx, r.cluster.HTTPClient(), n.HTTP); err != nil {
			return err
		}
	}
	r.progress("cluster healthy: final phase")
	fctx, fcancel := context.WithTimeout(ctx, r.cfg.ConvergeTimeout+2*time.Minute)
	defer fcancel()
	return r.wl.final(fctx, r)
}

// record adds a nemesis entry.
func (r *runner) record(typ, f string, value any) {
	r.rec.Add(typ, history.NemesisProcess, f, "", value, "")
}

// runNemesis alternates quiet intervals and faults, round-robin over the
// configured nemeses, until ctx ends; the fault running then is stopped
// by healAll.
func (r *runner) runNemesis(ctx context.Context, m *nemesis) error {
	if len(r.cfg.Nemeses) == 0 {
		return nil
	}
	sleep := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(r.cfg.Interval):
			return true
		}
	}
	// Faults run on a context of their own: a restart must finish even if
	// the clients' time is up.
	fctx := context.WithoutCancel(ctx)
	for i := 0; ; i++ {
		if !sleep() {
			return nil
		}
		name := r.cfg.Nemeses[i%len(r.cfg.Nemeses)]
		desc, err := m.start(fctx, name)
		r.record(history.Info, "start-"+name, desc)
		r.progress("nemesis: start %s: %s", name, desc)
		if err != nil {
			return err
		}
		if !sleep() {
			// Time is up: the final heal undoes this fault with the
			// rest (and, after the durability workload killed every
			// node, restarts them together: one restarted alone here
			// could join no one).
			return nil
		}
		if err := m.stop(fctx, name); err != nil {
			return err
		}
		r.record(history.Info, "stop-"+name, nil)
		r.progress("nemesis: stop %s", name)
	}
}

func (r *runner) reportProgress(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.progress("ops ok %d, fail %d, info %d", r.counts.ok.Load(), r.counts.fail.Load(), r.counts.info.Load())
		}
	}
}

// worker is one client process bound to one node.
type worker struct {
	r       *runner
	process int
	node    string
	c       client
	rng     *rand.Rand
	seq     int
	added   []check.SetOp // set workload: elements this worker added
	written []string      // durability: register keys written
}

// newWorker returns a worker bound to node n with a fresh process
// number; stream picks its random sequence (seeded by the run's seed).
func (r *runner) newWorker(n NodeInfo, stream uint64) *worker {
	return &worker{r: r, process: r.newProcess(), node: n.Name,
		c:   client{http: r.cluster.HTTPClient(), base: n.HTTP},
		rng: rand.New(rand.NewPCG(uint64(r.cfg.Seed), stream))}
}

// newProcess returns a process number no worker has used.
func (r *runner) newProcess() int { return int(r.nextPID.Add(1) - 1) }

// unique returns a value no other worker produces.
func (w *worker) unique() string {
	w.seq++
	return fmt.Sprintf("w%d-%d", w.process, w.seq)
}

// run invokes one operation, records its invoke and completion, and
// returns the completion type. After an info completion the worker takes
// a new process number: the old one may still be running the operation.
func (w *worker) run(f string, invoke any, fn func(context.Context) (any, outcome)) string {
	w.r.rec.Add(history.Invoke, w.process, f, w.node, invoke, "")
	ctx, cancel := context.WithTimeout(context.Background(), w.r.cfg.OpTimeout)
	value, o := fn(ctx)
	cancel()
	if o.typ != history.OK {
		value = invoke
	}
	w.r.rec.Add(o.typ, w.process, f, w.node, value, o.err)
	switch o.typ {
	case history.OK:
		w.r.counts.ok.Add(1)
	case history.Fail:
		w.r.counts.fail.Add(1)
	default:
		w.r.counts.info.Add(1)
		w.process = w.r.newProcess()
	}
	return o.typ
}

// converge polls every node's digest of the workload's keys until all
// nodes agree and keep agreeing for stableFor, or ConvergeTimeout passes;
// the verdict goes to r.convergence.
func (r *runner) converge(ctx context.Context, digest func(context.Context, client) (string, error)) {
	start := time.Now()
	deadline := start.Add(r.cfg.ConvergeTimeout)
	nodes := r.cluster.Nodes()
	var agreedSince time.Time
	polls := 0
	var last []string
	for time.Now().Before(deadline) && ctx.Err() == nil {
		polls++
		ds := make([]string, len(nodes))
		var err error
		for i, n := range nodes {
			c := client{http: r.cluster.HTTPClient(), base: n.HTTP}
			rctx, cancel := context.WithTimeout(ctx, r.cfg.OpTimeout)
			ds[i], err = digest(rctx, c)
			cancel()
			if err != nil {
				break
			}
		}
		last = ds
		if err == nil && allEqual(ds) {
			if agreedSince.IsZero() {
				agreedSince = time.Now()
			}
			if time.Since(agreedSince) >= stableFor {
				took := agreedSince.Sub(start)
				r.convergence = check.Result{Checker: "convergence", Valid: check.Valid,
					Summary: fmt.Sprintf("all %d replicas agree %v after the faults healed", len(nodes), took.Round(time.Millisecond)),
					Details: mustJSON(map[string]any{"converged_ms": took.Milliseconds(), "polls": polls})}
				r.progress("converged in %v", took.Round(time.Millisecond))
				return
			}
		} else {
			agreedSince = time.Time{}
		}
		time.Sleep(100 * time.Millisecond)
	}
	var probs []string
	for i, d := range last {
		if len(d) > 300 {
			d = d[:300] + "..."
		}
		probs = append(probs, fmt.Sprintf("%s: %s", nodes[i].Name, d))
	}
	r.convergence = check.Result{Checker: "convergence", Valid: check.Invalid,
		Summary:  fmt.Sprintf("replicas did not agree within %v after the faults healed", r.cfg.ConvergeTimeout),
		Problems: probs}
	r.progress("did not converge within %v", r.cfg.ConvergeTimeout)
}

func allEqual(ds []string) bool {
	for _, d := range ds[1:] {
		if d != ds[0] {
			return false
		}
	}
	return true
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

// finalReads reads every key on every node, each read retried (with a
// fresh process) until it succeeds or the context ends.
func (r *runner) finalReads(ctx context.Context, keys []string, read func(context.Context, *worker, string)) error {
	nodes := r.cluster.Nodes()
	var wg sync.WaitGroup
	for i, n := range nodes {
		w := r.newWorker(n, uint64(1000+i))
		wg.Go(func() {
			for _, k := range keys {
				for attempt := 0; ctx.Err() == nil; attempt++ {
					before := r.counts.ok.Load()
					read(ctx, w, k)
					if r.counts.ok.Load() > before || attempt >= 20 {
						break
					}
					time.Sleep(200 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	return ctx.Err()
}

// killEvery kills every node at once (kill -9), while the clients may
// still be writing: what a power cut does to a cluster.
func (r *runner) killEvery(ctx context.Context, nem *nemesis) error {
	var names []string
	for _, n := range r.cluster.Nodes() {
		names = append(names, n.Name)
	}
	r.record(history.Info, "start-kill-all", names)
	r.progress("killing every node (kill -9): %v", names)
	return nem.kill(ctx, names) // the final heal restarts them together
}

func (r *runner) checkRegister(ops []history.Op) check.Result {
	f, err := os.Create(filepath.Join(r.dir, "linearizability.html"))
	if err != nil {
		return check.Register(ops, r.cfg.CheckTimeout, nil)
	}
	defer f.Close()
	return check.Register(ops, r.cfg.CheckTimeout, f)
}

// finish checks the history and writes the run directory.
func (r *runner) finish(start time.Time) (*Outcome, error) {
	ops := r.rec.Ops()
	r.progress("checking %d history entries", len(ops))
	results := r.wl.check(r, ops)
	var vs []check.Validity
	for _, res := range results {
		vs = append(vs, res.Valid)
	}
	valid := check.Combine(vs...)
	dur := time.Since(start)
	if err := r.writeFiles(ops, results, valid, start, dur); err != nil {
		return nil, err
	}
	for _, res := range results {
		r.progress("%-16s %-8s %s", res.Checker, res.Valid, res.Summary)
		for i, p := range res.Problems {
			if i == 5 {
				r.progress("    ... (%d problems, see results.json)", len(res.Problems))
				break
			}
			r.progress("    %s", p)
		}
	}
	r.progress("verdict: %s; open %s", strings.ToUpper(string(valid)), filepath.Join(r.dir, report.IndexFile))
	return &Outcome{Valid: valid, Results: results, Dir: r.dir, Ops: len(ops)}, nil
}

func (r *runner) writeFiles(ops []history.Op, results []check.Result, valid check.Validity, start time.Time, dur time.Duration) error {
	write := func(name string, fn func(io.Writer) error) error {
		f, err := os.Create(filepath.Join(r.dir, name))
		if err != nil {
			return err
		}
		if err := fn(f); err != nil {
			f.Close()
			return fmt.Errorf("jepsen: %s: %w", name, err)
		}
		return f.Close()
	}
	res := resultsFile{Test: r.cfg.TestName(), Valid: valid, Backend: r.cfg.Backend, Workload: r.cfg.Workload,
		Nemeses: r.cfg.Nemeses, Seed: r.cfg.Seed, Durability: durability(r.cfg.sync()).String(), Nodes: r.cluster.Nodes(), Command: r.cfg.Command,
		Start: start.UTC(), DurationSec: dur.Seconds(), Results: results}
	err := errors.Join(
		write("results.json", func(w io.Writer) error {
			e := json.NewEncoder(w)
			e.SetIndent("", "  ")
			return e.Encode(res)
		}),
		write("history.jsonl", func(w io.Writer) error { return history.WriteJSONL(w, ops) }),
		write("history.txt", func(w io.Writer) error { return history.WriteText(w, ops) }),
	)
	if err != nil {
		return err
	}
	var end int64
	if len(ops) > 0 {
		end = ops[len(ops)-1].Time
	}
	var names []string
	for _, n := range r.cluster.Nodes() {
		names = append(names, fmt.Sprintf("%s (%s) %s", n.Name, n.Region, n.HTTP))
	}
	page := report.Page{Test: r.cfg.TestName(), Backend: r.cfg.Backend, Workload: r.cfg.Workload, Nemeses: r.cfg.Nemeses,
		Seed: r.cfg.Seed, Command: r.cfg.Command, Start: start, Duration: dur, Valid: valid, Results: results,
		Nodes: names, Windows: history.FaultWindows(ops, end), Ops: ops}
	if err := report.WriteAll(r.dir, page); err != nil {
		return err
	}
	// store/<test>/latest -> this run.
	latest := filepath.Join(filepath.Dir(r.dir), "latest")
	_ = os.Remove(latest)
	return os.Symlink(filepath.Base(r.dir), latest)
}
