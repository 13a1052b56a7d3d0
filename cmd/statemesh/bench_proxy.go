package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/statemesh/statemesh/bench/consensusbench"
	"github.com/statemesh/statemesh/bench/proxybench"
)

// benchProxy runs `statemesh bench proxy`: counter increments through a
// node's proxy (gRPC and HTTP/JSON) against Redis INCR, and the event-
// sourced register's Set and cart's AddItem, on a 3-node mesh in this
// process.
func benchProxy(args []string, stdout, stderr io.Writer) int {
	const name = "statemesh bench proxy"
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	counter := consensusbench.Plan{Clients: []int{64}, Repeat: 3, Load: consensusbench.LoadConfig{
		Clients: 64, Keys: 1000, Warmup: 2 * time.Second, Duration: 10 * time.Second, Seed: 1}}
	jsonOut := fs.Bool("json", false, "print one JSON object per result line (system, medians over the rounds) instead of a table")
	out := fs.String("out", "bench/results/proxy.md", "Markdown report to write (the .svg plot and a .jsonl of every round's result beside it); empty for none")
	quiet := fs.Bool("quiet", false, "no progress on stderr")
	fs.IntVar(&counter.Clients[0], "clients", 64, "closed-loop clients of the counter and Redis runs, one request outstanding each")
	registerClients := fs.Int("register-clients", 16, "closed-loop clients of the register run (0: skip it)")
	cartClients := fs.Int("cart-clients", 16, "closed-loop clients of the cart run (0: skip it)")
	fs.IntVar(&counter.Repeat, "repeat", counter.Repeat, "rounds; the report quotes medians over them")
	fs.DurationVar(&counter.Load.Duration, "duration", counter.Load.Duration, "measured window of each run")
	fs.DurationVar(&counter.Load.Warmup, "warmup", counter.Load.Warmup, "unmeasured requests before each window")
	fs.IntVar(&counter.Load.Keys, "keys", counter.Load.Keys, "distinct counter ids (Redis keys, register ids), each request to one at random")
	fs.Int64Var(&counter.Load.Seed, "seed", counter.Load.Seed, "seed of the id sequence (round r uses seed + r - 1)")
	withHTTP := fs.Bool("http", true, "run the HTTP/JSON counter increments (statemesh-http)")
	withFloor := fs.Bool("floor", true, "run the floors: grpc-echo (a bare gRPC counter server) and grpc-relay (a bare relay to a bare function server), gRPC alone in this process")
	withRedis := fs.Bool("redis", true, "run the Redis baseline (needs redis-server: apt-get install redis-server)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run (nodes, functions and clients share the process) to this file")
	dir := fs.String("dir", "", "directory for the nodes' and Redis's data (removed) and logs (kept); default: a new temporary directory")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected arguments %q\n", name, fs.Args())
		return 2
	}
	register, cart := counter, counter
	register.Clients = []int{*registerClients}
	cart.Clients = []int{*cartClients}
	if err := counter.Validate(); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	for _, p := range []struct {
		clients int
		plan    consensusbench.Plan
	}{{*registerClients, register}, {*cartClients, cart}} {
		if p.clients > 0 {
			if err := p.plan.Validate(); err != nil {
				fmt.Fprintf(stderr, "%s: %v\n", name, err)
				return 2
			}
		}
	}
	if *withRedis {
		if _, err := proxybench.FindRedis(); err != nil {
			fmt.Fprintf(stderr, "%s: %v; or run without the baseline: --redis=false\n", name, err)
			return 1
		}
	}

	stopProfile, err := startCPUProfile(*cpuProfile)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	defer stopProfile()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	line := progressLines(stderr, *quiet, start)
	progress := func(format string, a ...any) { line(fmt.Sprintf(format, a...)) }
	fail := func(err error) int {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	runDir, err := benchDir(*dir, "proxy")
	if err != nil {
		return fail(err)
	}
	meta := proxybench.NewMeta(strings.TrimSpace(name + " " + strings.Join(args, " ")))
	meta.Counter, meta.Register, meta.Cart = counter, register, cart

	nodeLogPath := filepath.Join(runDir, "nodes.log")
	nodeLog, err := os.Create(nodeLogPath)
	if err != nil {
		return fail(err)
	}
	defer nodeLog.Close()
	progress("starting 3 nodes and the example functions in this process; logs %s", nodeLogPath)
	meshStart := time.Now()
	m, err := proxybench.StartMesh(ctx, filepath.Join(runDir, "mesh"), 3, slog.New(slog.NewTextHandler(nodeLog, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return fail(err)
	}
	defer m.Close()
	progress("mesh serving in %.1f s: gRPC %s, HTTP %s", time.Since(meshStart).Seconds(), strings.Join(m.GRPCAddrs(), " "), strings.Join(m.HTTPAddrs(), " "))
	meta.Systems = append(meta.Systems,
		fmt.Sprintf("**statemesh** %s: 3 nodes (preset local, Raft on, default shards) and the example functions (Go SDK) in the benchmark's own process, so the nodes, the functions and the load generator share its %d cores and Go runtime; every request crosses loopback twice (client → node → function).", version, consensusbench.LocalMachine().CPUs))

	var targets []consensusbench.Target
	defer func() {
		for _, t := range targets {
			t.Close()
		}
	}()
	g, err := proxybench.NewGRPCTarget(proxybench.SystemGRPC, m.GRPCAddrs())
	if err != nil {
		return fail(err)
	}
	targets = append(targets, g)
	if *withHTTP {
		targets = append(targets, proxybench.NewHTTPTarget(m.HTTPAddrs(), counter.Clients[0]))
	}
	if *withFloor {
		f, err := proxybench.StartFloor(3)
		if err != nil {
			return fail(err)
		}
		defer f.Close()
		for _, t := range []struct {
			name  string
			addrs []string
		}{{proxybench.SystemEcho, f.EchoAddrs()}, {proxybench.SystemRelay, f.RelayAddrs()}} {
			ft, err := proxybench.NewGRPCTarget(t.name, t.addrs)
			if err != nil {
				return fail(err)
			}
			targets = append(targets, ft)
		}
		progress("floors: grpc-echo on %s, grpc-relay on %s", strings.Join(f.EchoAddrs(), " "), strings.Join(f.RelayAddrs(), " "))
	}
	var redis *proxybench.Redis
	if *withRedis {
		redisLog, err := os.Create(filepath.Join(runDir, "redis.log"))
		if err != nil {
			return fail(err)
		}
		defer redisLog.Close()
		redisDir := filepath.Join(runDir, "redis")
		if err := os.MkdirAll(redisDir, 0o755); err != nil {
			return fail(err)
		}
		if redis, err = proxybench.StartRedis(ctx, redisDir, redisLog); err != nil {
			return fail(err)
		}
		defer redis.Close()
		progress("redis-server on %s (%s)", redis.Addr, redis.Version)
		targets = append(targets, proxybench.NewRedisTarget(redis.Addr, counter.Clients[0]))
		meta.Systems = append(meta.Systems, fmt.Sprintf("**redis**: %s, a child process on loopback, `--save \"\" --appendonly no`, one connection per client.", redis.Version))
	}

	// CPU per run: this process (nodes, functions and clients) and
	// redis-server. A snapshot at every run's final progress line.
	type snap struct {
		at          time.Time
		self, redis time.Duration
	}
	take := func() snap {
		s := snap{at: time.Now()}
		s.self, _ = consensusbench.ProcessCPU(os.Getpid())
		if redis != nil {
			s.redis, _ = consensusbench.ProcessCPU(redis.Pid())
		}
		return s
	}
	snaps := []snap{take()}
	onProgress := func(s string) {
		if strings.Contains(s, "writes/s") {
			snaps = append(snaps, take())
		}
		progress("%s", strings.ReplaceAll(s, "writes", "requests"))
	}
	results, err := consensusbench.RunPlan(ctx, targets, counter, onProgress)
	if err != nil {
		return fail(err)
	}
	// The event-sourced runs, each with its own client count.
	for _, es := range []struct {
		system  string
		clients int
		plan    consensusbench.Plan
	}{{proxybench.SystemRegister, *registerClients, register}, {proxybench.SystemCart, *cartClients, cart}} {
		if es.clients == 0 {
			continue
		}
		r, err := proxybench.NewGRPCTarget(es.system, m.GRPCAddrs())
		if err != nil {
			return fail(err)
		}
		targets = append(targets, r)
		rr, err := consensusbench.RunPlan(ctx, []consensusbench.Target{r}, es.plan, onProgress)
		if err != nil {
			return fail(err)
		}
		results = append(results, rr...)
	}
	meta.LoadAfter = consensusbench.LoadAvg()
	meta.WallS = time.Since(start).Seconds()

	var rounds []roundCPU
	for i, r := range results {
		x := roundCPU{Result: r}
		if i+1 < len(snaps) {
			a, b := snaps[i], snaps[i+1]
			wall := b.at.Sub(a.at).Seconds()
			x.SelfCPUCores = (b.self - a.self).Seconds() / wall
			x.RedisCPUCores = (b.redis - a.redis).Seconds() / wall
		}
		rounds = append(rounds, x)
	}
	meta.Notes = append(meta.Notes, cpuNote(rounds))

	rows := consensusbench.Rows(results)
	proxybench.SortRows(rows)
	verdict := proxybench.Judge(rows)
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		for _, r := range rows {
			line := proxyRow{Row: r}
			if r.System == proxybench.SystemGRPC && verdict.Measured {
				line.VsRedis = &verdict
			}
			if err := enc.Encode(line); err != nil {
				return fail(err)
			}
		}
	} else {
		proxybench.WriteTable(stdout, rows)
	}
	if *out != "" {
		base := strings.TrimSuffix(*out, filepath.Ext(*out))
		svgPath, jsonlPath := base+".svg", base+".jsonl"
		meta.SVG = filepath.Base(svgPath)
		var md, svg, jl bytes.Buffer
		proxybench.RenderMarkdown(&md, rows, meta)
		proxybench.WriteSVG(&svg, rows)
		enc := json.NewEncoder(&jl)
		for _, r := range rounds {
			if err := enc.Encode(r); err != nil {
				return fail(err)
			}
		}
		for path, b := range map[string][]byte{*out: md.Bytes(), svgPath: svg.Bytes(), jsonlPath: jl.Bytes()} {
			if err := writeFile(path, func(w io.Writer) error { _, err := w.Write(b); return err }); err != nil {
				return fail(err)
			}
		}
		progress("wrote %s, %s and %s", *out, svgPath, jsonlPath)
	}
	progress("target (statemesh-grpc ≥ 1/3 of Redis): %s", verdict.Text)
	if err := m.Close(); err != nil {
		return fail(err)
	}
	if err := os.RemoveAll(filepath.Join(runDir, "mesh")); err != nil {
		return fail(err)
	}
	progress("logs kept in %s", runDir)
	return 0
}

// proxyRow is a --json line: a row, and for statemesh-grpc the verdict.
type proxyRow struct {
	consensusbench.Row
	VsRedis *proxybench.Verdict `json:"vs_redis,omitempty"`
}

// roundCPU is a line of the .jsonl: one run's result and the CPU used
// during it (warm-up, window and drain), in cores.
type roundCPU struct {
	consensusbench.Result
	// SelfCPUCores: this process, i.e. the 3 nodes, the functions and
	// the load generator.
	SelfCPUCores float64 `json:"self_cpu_cores"`
	// RedisCPUCores: redis-server.
	RedisCPUCores float64 `json:"redis_cpu_cores"`
}

func cpuNote(rounds []roundCPU) string {
	var parts []string
	for _, r := range rounds {
		parts = append(parts, fmt.Sprintf("%s round %d: process %.2f, redis-server %.2f", r.System, r.Round, r.SelfCPUCores, r.RedisCPUCores))
	}
	return fmt.Sprintf("CPU in cores per run (warm-up and drain included; the process holds the nodes, the functions and every client, Redis's clients too; the machine has %d cores): %s.", consensusbench.LocalMachine().CPUs, strings.Join(parts, "; "))
}

// benchStartup runs `statemesh bench startup`: `statemesh node` cold
// starts, from exec to the first Increment answered through the proxy.
func benchStartup(args []string, stdout, stderr io.Writer) int {
	const name = "statemesh bench startup"
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	runs := fs.Int("runs", 20, "cold starts per mode")
	modes := fs.String("modes", "noraft,raft", "comma-separated modes: noraft (--raft off), raft (a one-node Raft cluster, bootstrapped)")
	out := fs.String("out", "bench/results/startup.md", "Markdown report to write; empty for none")
	jsonOut := fs.Bool("json", false, "print one JSON object per mode instead of a table")
	quiet := fs.Bool("quiet", false, "no progress on stderr")
	dir := fs.String("dir", "", "directory for the nodes' data (removed) and logs (kept); default: a new temporary directory")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 || *runs < 1 {
		fmt.Fprintf(stderr, "%s: --runs ≥ 1 and no arguments\n", name)
		return 2
	}
	var cfgs []proxybench.StartupConfig
	for _, m := range strings.Split(*modes, ",") {
		switch strings.TrimSpace(m) {
		case "noraft":
			cfgs = append(cfgs, proxybench.StartupConfig{Runs: *runs})
		case "raft":
			cfgs = append(cfgs, proxybench.StartupConfig{Runs: *runs, Raft: true})
		default:
			fmt.Fprintf(stderr, "%s: --modes: unknown mode %q (have: noraft, raft)\n", name, m)
			return 2
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	progress := progressLines(stderr, *quiet, start)
	fail := func(err error) int {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	binary, err := os.Executable()
	if err != nil {
		return fail(err)
	}
	runDir, err := benchDir(*dir, "startup")
	if err != nil {
		return fail(err)
	}
	loadBefore := consensusbench.LoadAvg()
	fn, fnAddr, err := proxybench.StartFunctions(slog.New(slog.DiscardHandler), false)
	if err != nil {
		return fail(err)
	}
	defer fn.Stop()
	progress(fmt.Sprintf("example functions on %s; node logs in %s", fnAddr, runDir))
	var results []proxybench.StartupResult
	for _, c := range cfgs {
		c.Binary, c.FunctionAddr, c.Dir = binary, fnAddr, runDir
		r, err := proxybench.Startup(ctx, c, progress)
		if err != nil {
			return fail(err)
		}
		results = append(results, r)
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		for _, r := range results {
			if err := enc.Encode(r); err != nil {
				return fail(err)
			}
		}
	} else {
		fmt.Fprintf(stdout, "%-26s %5s %10s %8s %8s %8s  %s\n", "mode", "runs", "median_ms", "p90_ms", "max_ms", "min_ms", "target < 100 ms")
		for _, r := range results {
			fmt.Fprintf(stdout, "%-26s %5d %10.1f %8.1f %8.1f %8.1f  %v\n", r.Mode, len(r.Ms), r.MedianMs, r.P90Ms, r.MaxMs, r.MinMs, map[bool]string{true: "met", false: "NOT met"}[r.Met])
		}
	}
	if *out != "" {
		var md bytes.Buffer
		notes := []string{
			"Load average before the run: " + loadBefore + "; after: " + consensusbench.LoadAvg() + ".",
			fmt.Sprintf("Wall time %.1f s; node logs kept in %s.", time.Since(start).Seconds(), runDir),
		}
		proxybench.RenderStartup(&md, results, strings.TrimSpace(name+" "+strings.Join(args, " ")), notes)
		if err := writeFile(*out, func(w io.Writer) error { _, err := w.Write(md.Bytes()); return err }); err != nil {
			return fail(err)
		}
		progress("wrote " + *out)
	}
	return 0
}
