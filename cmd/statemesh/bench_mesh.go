package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/statemesh/statemesh/bench/meshbench"
)

// benchConvergence runs `statemesh bench convergence`: how long a write
// takes to reach every node of a loopback mesh of 8 to 64 nodes.
func benchConvergence(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("statemesh bench convergence", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := meshbench.DefaultConvergenceOptions()
	nodes := fs.String("nodes", joinInts(o.Nodes), "comma-separated cluster sizes")
	fs.IntVar(&o.Writes, "writes", o.Writes, "measured writes per cluster size, one at a time")
	fs.IntVar(&o.WarmupRounds, "warmup-rounds", o.WarmupRounds, "unmeasured writes from every node before them")
	preset := fs.String("preset", meshbench.PresetName(o.Preset), "gossip and failure-detector timing: local, lan or wan")
	fs.DurationVar(&o.Tick, "tick", o.Tick, "anti-entropy interval (mesh TickInterval); the targets are in units of it")
	fs.DurationVar(&o.Timeout, "timeout", o.Timeout, "longest wait for one write to reach every node")
	fs.Uint64Var(&o.Seed, "seed", o.Seed, "random seed (join order, writers, pauses)")
	c := commonBenchFlags(fs, "bench/results/convergence.md", "Markdown report to write (convergence.svg beside it); empty for none")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var err error
	if o.Nodes, err = parseInts(*nodes); err != nil {
		fmt.Fprintln(stderr, "statemesh bench convergence: --nodes:", err)
		return 2
	}
	if o.Preset, err = meshbench.ParsePreset(*preset); err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	return c.run("statemesh bench convergence", args, stdout, stderr, func(ctx context.Context, progress func(string)) (report, error) {
		rs, err := meshbench.RunConvergence(ctx, o, progress)
		if err != nil {
			return report{}, err
		}
		r := report{table: func(w io.Writer) { meshbench.WriteConvergenceTable(w, rs) }}
		for _, x := range rs {
			r.json = append(r.json, x)
			if !x.P99Met || !x.P50Met {
				r.missed = append(r.missed, fmt.Sprintf("N=%d: p50 %.1f ms (target < %.0f), p99 %.1f ms (target <= %.0f), %d timeouts",
					x.Nodes, x.P50Ms, x.TargetP50Ms, x.P99Ms, x.TargetP99Ms, x.Timeouts))
			}
			if x.WarmupTimeouts > 0 {
				r.missed = append(r.missed, fmt.Sprintf("N=%d: %d warm-up writes did not reach every node in %s (missed by %v)", x.Nodes, x.WarmupTimeouts, o.Timeout, x.WarmupMissed))
			}
		}
		r.markdown = func(w io.Writer, env meshbench.Env) { meshbench.WriteConvergenceMarkdown(w, rs, o, env) }
		r.svg = func(w io.Writer) { meshbench.WriteConvergenceSVG(w, rs) }
		return r, nil
	})
}

// benchMesh runs `statemesh bench mesh`: LOCAL updates per second per node
// of a 3-node loopback mesh, with replication running.
func benchMesh(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("statemesh bench mesh", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := meshbench.DefaultThroughputOptions()
	fs.IntVar(&o.Nodes, "nodes", o.Nodes, "nodes in the mesh")
	fs.IntVar(&o.Keys, "keys", o.Keys, "GCounter keys written at random")
	fs.IntVar(&o.Writers, "writers", o.Writers, "writing goroutines per node")
	rates := fs.String("rate", joinFloats(o.Rates), "comma-separated offered loads in updates/s per node, one run each; 0: as fast as the writers go")
	fs.DurationVar(&o.Duration, "duration", o.Duration, "how long the writers write, per run")
	fs.IntVar(&o.KeepUpTicks, "keep-up", o.KeepUpTicks, "replication keeps up when lag and the agreement wait stay within this many intervals")
	preset := fs.String("preset", meshbench.PresetName(o.Preset), "gossip and failure-detector timing: local, lan or wan")
	fs.DurationVar(&o.Tick, "tick", o.Tick, "anti-entropy interval (mesh TickInterval)")
	fs.Uint64Var(&o.Seed, "seed", o.Seed, "random seed")
	c := commonBenchFlags(fs, "bench/results/mesh.md", "Markdown report to write; empty for none")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var err error
	if o.Preset, err = meshbench.ParsePreset(*preset); err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	if o.Rates, err = parseFloats(*rates); err != nil {
		fmt.Fprintln(stderr, "statemesh bench mesh: --rate:", err)
		return 2
	}
	return c.run("statemesh bench mesh", args, stdout, stderr, func(ctx context.Context, progress func(string)) (report, error) {
		rs, err := meshbench.RunThroughput(ctx, o, progress)
		if err != nil {
			return report{}, err
		}
		rep := report{table: func(w io.Writer) { meshbench.WriteThroughputTable(w, rs) }}
		met := false
		for _, r := range rs {
			rep.json = append(rep.json, r)
			met = met || r.TargetMet
		}
		if !met {
			rep.missed = append(rep.missed, fmt.Sprintf("no run reached %d updates/s on every node with replication keeping up", meshbench.TargetUpdatesPerSecond))
		}
		rep.markdown = func(w io.Writer, env meshbench.Env) { meshbench.WriteThroughputMarkdown(w, rs, o, env) }
		return rep, nil
	})
}

// benchFlags are the flags both mesh benchmarks share.
type benchFlags struct {
	json, quiet, check *bool
	out, cpuProfile    *string
}

func commonBenchFlags(fs *flag.FlagSet, out, outHelp string) benchFlags {
	return benchFlags{
		json:       fs.Bool("json", false, "print one JSON object per result line instead of a table"),
		quiet:      fs.Bool("quiet", false, "no progress on stderr"),
		check:      fs.Bool("check", false, "exit 1 unless every target is met"),
		out:        fs.String("out", out, outHelp),
		cpuProfile: fs.String("cpuprofile", "", "write a CPU profile of the run to this file"),
	}
}

// report is what a benchmark hands back for printing and writing.
type report struct {
	json     []any
	table    func(io.Writer)
	markdown func(io.Writer, meshbench.Env)
	svg      func(io.Writer) // nil: no plot
	missed   []string        // targets not met
}

// run runs bench with progress on stderr, prints its results, writes the
// report (and plot) and returns the exit code.
func (f benchFlags) run(name string, args []string, stdout, stderr io.Writer, bench func(context.Context, func(string)) (report, error)) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	load := ""
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			load = strings.Join(f[:3], " ")
		}
	}
	start := time.Now()
	progress := progressLines(stderr, *f.quiet, start)
	stopProfile, err := startCPUProfile(*f.cpuProfile)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer stopProfile()
	rep, err := bench(ctx, progress)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	wall := time.Since(start).Seconds()
	if *f.json {
		enc := json.NewEncoder(stdout)
		for _, r := range rep.json {
			if err := enc.Encode(r); err != nil {
				fmt.Fprintln(stderr, err)
				return 1
			}
		}
	} else {
		rep.table(stdout)
	}
	if *f.out != "" {
		env := meshbench.Env{
			Command: strings.TrimSpace(name + " " + strings.Join(args, " ")),
			Machine: machine(), Date: time.Now().UTC().Format("2006-01-02"), WallS: wall, Load: load, Profile: *f.cpuProfile,
		}
		files := map[string]*bytes.Buffer{*f.out: {}}
		rep.markdown(files[*f.out], env)
		if rep.svg != nil {
			svgPath := strings.TrimSuffix(*f.out, filepath.Ext(*f.out)) + ".svg"
			files[svgPath] = &bytes.Buffer{}
			rep.svg(files[svgPath])
		}
		if err := os.MkdirAll(filepath.Dir(*f.out), 0o755); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		for path, b := range files {
			if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
				fmt.Fprintln(stderr, err)
				return 1
			}
			progress("wrote " + path)
		}
	}
	for _, m := range rep.missed {
		fmt.Fprintln(stderr, "target not met:", m)
	}
	if *f.check && len(rep.missed) > 0 {
		return 1
	}
	return 0
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		x, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	return out, nil
}

func joinFloats(xs []float64) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.FormatFloat(x, 'f', -1, 64)
	}
	return strings.Join(s, ",")
}

func parseFloats(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		x, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	return out, nil
}
