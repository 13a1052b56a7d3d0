package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/statemesh/statemesh/bench/consensusbench"
	"github.com/statemesh/statemesh/bench/syncbench"
	"github.com/statemesh/statemesh/deltas"
)

func benchSync(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("statemesh bench sync", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := syncbench.DefaultOptions()
	jsonOut := fs.Bool("json", false, "print one JSON object per result line instead of a table")
	out := fs.String("out", "bench/results/sync.md", "Markdown report to write (an SVG plot is written beside it); empty for none")
	check := fs.Bool("check", false, "exit 1 unless the acceptance criteria hold (delta+bp+rr fewest bytes; ratios vs state-based)")
	quiet := fs.Bool("quiet", false, "no progress on stderr")
	workloads := fs.String("workloads", strings.Join(o.Workloads, ","), "comma-separated workloads: gcounter, gset, gmap-K")
	topologies := fs.String("topologies", strings.Join(o.Topologies, ","), "comma-separated topologies: partial-mesh, tree, full-mesh")
	modes := fs.String("modes", "", "comma-separated sync modes (default all): state, delta, delta+bp, delta+rr, delta+bp+rr")
	fs.IntVar(&o.Nodes, "nodes", o.Nodes, "replicas")
	fs.IntVar(&o.Events, "events", o.Events, "update events per node, one per round")
	fs.IntVar(&o.MapKeys, "map-keys", o.MapKeys, "keys of the gmap workloads")
	fs.IntVar(&o.Parallel, "parallel", o.Parallel, "runs at once")
	fs.Uint64Var(&o.Seed, "seed", o.Seed, "random seed")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile to this file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o.Workloads = strings.Split(*workloads, ",")
	o.Topologies = strings.Split(*topologies, ",")
	if *modes != "" {
		o.Modes = nil
		for _, m := range strings.Split(*modes, ",") {
			md, err := deltas.ParseMode(m)
			if err != nil {
				fmt.Fprintln(stderr, err)
				return 2
			}
			o.Modes = append(o.Modes, md)
		}
	}
	// The simulator allocates heavily and its live heap is small (about
	// 150 MiB per run): collect less often than the default, unless the
	// user set GOGC.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	stopProfile, err := startCPUProfile(*cpuProfile)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer stopProfile()
	start := time.Now()
	results, err := syncbench.Run(o, func(done, total int, r syncbench.Result) {
		if !*quiet {
			fmt.Fprintf(stderr, "[%2d/%d %5.1fs] %-9s %-12s %-12s %12d bytes\n", done, total, time.Since(start).Seconds(), r.Workload, r.Topology, r.Mode, r.Bytes)
		}
	})
	if err != nil {
		fmt.Fprintln(stderr, "statemesh bench sync:", err)
		return 1
	}
	wall := time.Since(start).Seconds()
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		for _, r := range results {
			if err := enc.Encode(r); err != nil {
				fmt.Fprintln(stderr, err)
				return 1
			}
		}
	} else {
		syncbench.WriteTable(stdout, results)
	}
	if *out != "" {
		var md, svg bytes.Buffer
		cmd := "statemesh bench sync " + strings.Join(args, " ")
		syncbench.WriteMarkdown(&md, results, o, strings.TrimSpace(cmd), machine(), wall)
		syncbench.WriteSVG(&svg, results)
		if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		svgPath := strings.TrimSuffix(*out, filepath.Ext(*out)) + ".svg"
		for path, b := range map[string][]byte{*out: md.Bytes(), svgPath: svg.Bytes()} {
			if err := os.WriteFile(path, b, 0o644); err != nil {
				fmt.Fprintln(stderr, err)
				return 1
			}
		}
		if !*quiet {
			fmt.Fprintf(stderr, "wrote %s and %s (%.1f s)\n", *out, svgPath, wall)
		}
	}
	if bad := syncbench.Check(results); len(bad) > 0 {
		for _, b := range bad {
			fmt.Fprintln(stderr, "check failed:", b)
		}
		if *check {
			return 1
		}
	}
	return 0
}

// machine describes the machine for the report.
func machine() string { return consensusbench.LocalMachine().String() }

// progressLines returns a printer of timestamped progress lines
// ("[  12.3s] msg") on w, counted from start; it prints nothing when quiet.
func progressLines(w io.Writer, quiet bool, start time.Time) func(string) {
	return func(s string) {
		if !quiet {
			fmt.Fprintf(w, "[%6.1fs] %s\n", time.Since(start).Seconds(), s)
		}
	}
}

// benchDir returns dir, created if missing, or, when dir is empty, a new
// temporary directory named after the benchmark.
func benchDir(dir, bench string) (string, error) {
	if dir == "" {
		return os.MkdirTemp("", "statemesh-bench-"+bench+"-")
	}
	return dir, os.MkdirAll(dir, 0o755)
}
