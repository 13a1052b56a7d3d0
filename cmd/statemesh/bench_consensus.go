package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/statemesh/statemesh/bench/consensusbench"
)

// benchConsensus runs `statemesh bench consensus`: replicated,
// acknowledged writes on 3 nodes, statemesh (this binary, as `statemesh
// node` processes) against etcd, in the same run.
func benchConsensus(args []string, stdout, stderr io.Writer) int {
	const name = "statemesh bench consensus"
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	p := consensusbench.DefaultPlan()
	jsonOut := fs.Bool("json", false, "print one JSON object per result line (system and client count, medians over the rounds) instead of a table")
	out := fs.String("out", "bench/results/consensus.md", "Markdown report to write (the .svg plot and a .jsonl of every round's result beside it); empty for none")
	quiet := fs.Bool("quiet", false, "no progress on stderr")
	clients := fs.String("clients", joinInts(p.Clients), "comma-separated client counts (closed-loop clients, one write outstanding each)")
	fs.IntVar(&p.Repeat, "repeat", p.Repeat, "rounds; the report quotes medians over them")
	fs.DurationVar(&p.Load.Duration, "duration", p.Load.Duration, "measured window of each run")
	fs.DurationVar(&p.Load.Warmup, "warmup", p.Load.Warmup, "unmeasured writes before each window")
	fs.IntVar(&p.Load.Keys, "keys", p.Load.Keys, "distinct keys (entities), each write to one at random")
	fs.IntVar(&p.Load.ValueBytes, "value-bytes", p.Load.ValueBytes, "bytes of every value")
	fs.Int64Var(&p.Load.Seed, "seed", p.Load.Seed, "seed of the key sequence (round r uses seed + r - 1)")
	shards := fs.Int("shards", consensusbench.DefaultStatemeshShards, "statemesh Raft shards (--shards of every node)")
	systems := fs.String("systems", consensusbench.SystemStatemesh+","+consensusbench.SystemEtcd, "comma-separated systems to run: statemesh, etcd")
	fs.BoolVar(&p.PauseIdle, "pause-idle", true, "stop (SIGSTOP) the cluster that is not being measured during each run, so it takes no CPU from the one that is")
	dir := fs.String("dir", "", "directory for the clusters' data (removed at the end) and the nodes' logs (kept); default: a new temporary directory")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected arguments %q\n", name, fs.Args())
		return 2
	}
	var err error
	if p.Clients, err = parseInts(*clients); err != nil {
		fmt.Fprintf(stderr, "%s: --clients: %v\n", name, err)
		return 2
	}
	if err := p.Validate(); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	var run []string
	for _, s := range strings.Split(*systems, ",") {
		s = strings.TrimSpace(s)
		switch s {
		case consensusbench.SystemStatemesh, consensusbench.SystemEtcd:
			if !slices.Contains(run, s) {
				run = append(run, s)
			}
		default:
			fmt.Fprintf(stderr, "%s: --systems: unknown system %q (have: statemesh, etcd)\n", name, s)
			return 2
		}
	}
	if slices.Contains(run, consensusbench.SystemEtcd) {
		if _, err := consensusbench.FindEtcd(); err != nil {
			fmt.Fprintf(stderr, "%s: %v; or run statemesh alone with --systems statemesh\n", name, err)
			return 1
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	line := progressLines(stderr, *quiet, start)
	progress := func(format string, a ...any) { line(fmt.Sprintf(format, a...)) }
	fail := func(err error) int {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	runDir, err := benchDir(*dir, "consensus")
	if err != nil {
		return fail(err)
	}
	meta := consensusbench.NewMeta(strings.TrimSpace(name+" "+strings.Join(args, " ")), p)

	var (
		targets []consensusbench.Target
		sm      *consensusbench.StatemeshCluster
		logs    []*os.File
	)
	defer func() {
		// Error paths: stop the clusters; the normal path has closed
		// them. Their logs after them.
		for _, t := range targets {
			t.Close()
		}
		for _, f := range logs {
			f.Close()
		}
	}()
	for _, system := range run {
		switch system {
		case consensusbench.SystemStatemesh:
			binary, err := os.Executable()
			if err != nil {
				return fail(err)
			}
			progress("starting statemesh: 3 nodes, %d shards, in %s", *shards, runDir)
			if sm, err = consensusbench.StartStatemesh(ctx, binary, runDir, *shards, nil); err != nil {
				return fail(err)
			}
			targets = append(targets, sm)
			progress("statemesh ready in %.1f s; node logs %s", sm.Startup.Seconds(), strings.Join(sm.Logs, ", "))
			meta.Systems = append(meta.Systems, consensusbench.SystemInfo{Name: system, Detail: sm.Describe()})
		case consensusbench.SystemEtcd:
			base, err := consensusbench.FreePorts(6)
			if err != nil {
				return fail(err)
			}
			logPath := filepath.Join(runDir, "etcd.log")
			lf, err := os.Create(logPath)
			if err != nil {
				return fail(err)
			}
			logs = append(logs, lf)
			progress("starting etcd: 3 members, log %s", logPath)
			etcdStart := time.Now()
			e, err := consensusbench.StartEtcd(ctx, runDir, base, lf)
			if err != nil {
				return fail(err)
			}
			targets = append(targets, e)
			progress("etcd %s ready in %.1f s", e.Version, time.Since(etcdStart).Seconds())
			meta.Systems = append(meta.Systems, consensusbench.SystemInfo{Name: system, Detail: e.Describe()})
		}
	}
	if sm != nil {
		if l, err := sm.LeaderCounts(ctx); err == nil {
			meta.Notes = append(meta.Notes, fmt.Sprintf("statemesh shard leaders before the run (shards each node leads): %s; the cluster took %.1f s from the first node's start to every shard replicated on every node.", l, sm.Startup.Seconds()))
		}
	}

	// CPU: the clusters' idle use first, then every run's. A snapshot
	// is taken at each run's final progress line (the one with
	// "writes/s", said right after its Result is appended), so the
	// interval between snapshot i and i+1 is run i.
	idle := idleCPU(ctx, targets, 3*time.Second)
	snaps := []cpuSnapshot{takeCPU(targets)}
	results, err := consensusbench.RunPlan(ctx, targets, p, func(s string) {
		if strings.Contains(s, "writes/s") {
			snaps = append(snaps, takeCPU(targets))
		}
		progress("%s", s)
	})
	if err != nil {
		return fail(err)
	}
	if sm != nil {
		if l, err := sm.LeaderCounts(ctx); err == nil {
			meta.Notes = append(meta.Notes, fmt.Sprintf("statemesh shard leaders after the run: %s.", l))
		}
	}
	var rounds []roundResult
	for i, r := range results {
		rr := roundResult{Result: r}
		if i+1 < len(snaps) {
			rr.cpu(snaps[i], snaps[i+1])
		}
		rounds = append(rounds, rr)
	}
	meta.WallS = time.Since(start).Seconds()
	meta.Notes = append(meta.Notes, cpuNotes(idle, rounds, targets, p.PauseIdle)...)
	if l := consensusbench.LoadAvg(); l != "" {
		meta.Notes = append(meta.Notes, "Load average after the run: "+l+" (the benchmark's own threads included, those waiting in fsync too).")
	}

	rows := consensusbench.Rows(results)
	if *jsonOut {
		ratios := map[int]consensusbench.Ratio{}
		for _, r := range consensusbench.Ratios(rows) {
			ratios[r.Clients] = r
		}
		enc := json.NewEncoder(stdout)
		for _, r := range rows {
			line := jsonRow{Row: r}
			if x, ok := ratios[r.Clients]; ok && r.System == consensusbench.SystemStatemesh {
				line.VsEtcd = &x
			}
			if err := enc.Encode(line); err != nil {
				return fail(err)
			}
		}
	} else {
		consensusbench.WriteTable(stdout, rows)
	}
	if *out != "" {
		svgPath := strings.TrimSuffix(*out, filepath.Ext(*out)) + ".svg"
		jsonlPath := strings.TrimSuffix(*out, filepath.Ext(*out)) + ".jsonl"
		meta.SVG = filepath.Base(svgPath)
		if err := consensusbench.WriteMarkdown(*out, rows, meta); err != nil {
			return fail(err)
		}
		if err := writeFile(svgPath, func(w io.Writer) error { consensusbench.WriteSVG(w, rows); return nil }); err != nil {
			return fail(err)
		}
		if err := writeFile(jsonlPath, func(w io.Writer) error {
			enc := json.NewEncoder(w)
			for _, r := range rounds {
				if err := enc.Encode(r); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return fail(err)
		}
		progress("wrote %s, %s and %s", *out, svgPath, jsonlPath)
	}
	if _, measured, text := consensusbench.TargetVerdict(rows); measured {
		progress("target at %d clients: %s", consensusbench.TargetClients, text)
	}
	var closeErrs []error
	for _, t := range targets {
		if err := t.Close(); err != nil {
			closeErrs = append(closeErrs, fmt.Errorf("%s: %w", t.Name(), err))
		}
	}
	if sm != nil {
		progress("statemesh node logs kept: %s", strings.Join(sm.Logs, ", "))
	}
	if err := errors.Join(closeErrs...); err != nil {
		return fail(err)
	}
	return 0
}

// jsonRow is a --json line: a row, and for statemesh its ratio to etcd.
type jsonRow struct {
	consensusbench.Row
	VsEtcd *consensusbench.Ratio `json:"vs_etcd,omitempty"`
}

// cpuSnapshot is the CPU time used so far by each cluster (by system) and
// by this process (the clients), at a moment.
type cpuSnapshot struct {
	at       time.Time
	clusters map[string]time.Duration
	self     time.Duration
}

func takeCPU(targets []consensusbench.Target) cpuSnapshot {
	s := cpuSnapshot{at: time.Now(), clusters: map[string]time.Duration{}}
	for _, t := range targets {
		if d, ok := consensusbench.ClusterCPU(t); ok {
			s.clusters[t.Name()] = d
		}
	}
	s.self, _ = consensusbench.ProcessCPU(os.Getpid())
	return s
}

// idleCPU measures the clusters' CPU use, in cores, over d with no load.
func idleCPU(ctx context.Context, targets []consensusbench.Target, d time.Duration) map[string]float64 {
	a := takeCPU(targets)
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
	b := takeCPU(targets)
	wall := b.at.Sub(a.at).Seconds()
	out := map[string]float64{}
	for name, cpu := range b.clusters {
		out[name] = (cpu - a.clusters[name]).Seconds() / wall
	}
	return out
}

// roundResult is a line of the .jsonl: one run's result and the CPU used
// during it (warm-up, window and drain), in cores.
type roundResult struct {
	consensusbench.Result
	// NodesCPUCores: the processes of the system under test.
	NodesCPUCores float64 `json:"nodes_cpu_cores"`
	// OtherCPUCores: the other system's, idle meanwhile.
	OtherCPUCores float64 `json:"other_cluster_cpu_cores"`
	// ClientCPUCores: this process, the load generator.
	ClientCPUCores float64 `json:"client_cpu_cores"`
	// NodesCPUPerWriteUs: the system's CPU time per acknowledged write
	// (warm-up and window), in microseconds.
	NodesCPUPerWriteUs float64 `json:"nodes_cpu_per_write_us"`
}

func (r *roundResult) cpu(a, b cpuSnapshot) {
	wall := b.at.Sub(a.at).Seconds()
	if wall <= 0 {
		return
	}
	for name, cpu := range b.clusters {
		d := cpu - a.clusters[name]
		if name == r.System {
			r.NodesCPUCores = d.Seconds() / wall
			if n := r.Ops + r.WarmupOps; n > 0 {
				r.NodesCPUPerWriteUs = float64(d.Microseconds()) / float64(n)
			}
		} else {
			r.OtherCPUCores += d.Seconds() / wall
		}
	}
	r.ClientCPUCores = (b.self - a.self).Seconds() / wall
}

// cpuNotes summarise the CPU use for the report: idle, then per system
// and client count (medians over the rounds).
func cpuNotes(idle map[string]float64, rounds []roundResult, targets []consensusbench.Target, paused bool) []string {
	if len(idle) == 0 {
		return nil
	}
	var idleParts []string
	for _, t := range targets {
		if v, ok := idle[t.Name()]; ok {
			idleParts = append(idleParts, fmt.Sprintf("%s %.3f", t.Name(), v))
		}
	}
	during := "both clusters run throughout, so the idle one competes with the measured one"
	if paused {
		during = "during each run the other cluster is stopped with SIGSTOP, so it takes none"
	}
	notes := []string{fmt.Sprintf("CPU of the idle clusters (cores, over 3 s before the run; %s): %s.", during, strings.Join(idleParts, ", "))}
	type key struct {
		system  string
		clients int
	}
	by := map[key][]roundResult{}
	var keys []key
	for _, r := range rounds {
		k := key{r.System, r.Clients}
		if _, ok := by[k]; !ok {
			keys = append(keys, k)
		}
		by[k] = append(by[k], r)
	}
	slices.SortStableFunc(keys, func(a, b key) int { return a.clients - b.clients })
	var parts []string
	for _, k := range keys {
		rs := by[k]
		med := func(f func(roundResult) float64) float64 {
			xs := make([]float64, len(rs))
			for i, r := range rs {
				xs[i] = f(r)
			}
			return consensusbench.Median(xs)
		}
		parts = append(parts, fmt.Sprintf("%s at %d clients: nodes %.2f cores (%.0f µs per write), clients %.2f, other cluster %.2f",
			k.system, k.clients, med(func(r roundResult) float64 { return r.NodesCPUCores }), med(func(r roundResult) float64 { return r.NodesCPUPerWriteUs }),
			med(func(r roundResult) float64 { return r.ClientCPUCores }), med(func(r roundResult) float64 { return r.OtherCPUCores })))
	}
	if len(parts) > 0 {
		notes = append(notes, "CPU during the runs (median over the rounds, warm-up and drain included; the machine has "+fmt.Sprint(consensusbench.LocalMachine().CPUs)+" cores): "+strings.Join(parts, "; ")+".")
	}
	return notes
}

// writeFile creates path (and its directory) and writes it with write.
func writeFile(path string, write func(io.Writer) error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
