package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/statemesh/statemesh/examples"
	"github.com/statemesh/statemesh/jepsen"
	"github.com/statemesh/statemesh/sdk"
)

// runJepsen runs `statemesh jepsen`: one test, exit 0 valid, 1 invalid, 2
// unknown (or the test could not run).
func runJepsen(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("statemesh jepsen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	backend := fs.String("backend", "sim", "sim (one process), local (processes on loopback) or netns (processes in network namespaces; root)")
	workload := fs.String("workload", "counter", "counter, set, register, durability or convergence")
	nemesis := fs.String("nemesis", "", "comma-separated faults: "+strings.Join(jepsen.AllNemeses, ", ")+"; \"all\": every one the backend supports; empty: none")
	timeLimit := fs.Duration("time-limit", 20*time.Second, "how long clients run while faults come and go")
	interval := fs.Duration("interval", 3*time.Second, "how long each fault lasts, and the quiet time between two")
	nodes := fs.Int("nodes", 3, "number of nodes")
	concurrency := fs.Int("concurrency", 0, "client workers (default 2 per node)")
	seed := fs.Int64("seed", 0, "random seed of the workload and the nemesis (0: from the clock; the run records it)")
	store := fs.String("store", "store", "results root: runs go to STORE/<test>/<timestamp>/")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *seed == 0 {
		*seed = time.Now().UnixNano() % 1e9
	}
	bin, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "statemesh jepsen: %v\n", err)
		return 2
	}
	cfg := jepsen.Config{Backend: *backend, Workload: *workload, Nodes: *nodes, TimeLimit: *timeLimit,
		Interval: *interval, Concurrency: *concurrency, Seed: *seed, Store: *store, Binary: bin,
		Command: "statemesh jepsen " + strings.Join(args, " "), Progress: stdout}
	switch *nemesis {
	case "":
	case "all":
		caps, err := jepsen.BackendCaps(*backend)
		if err != nil {
			fmt.Fprintf(stderr, "statemesh jepsen: %v\n", err)
			return 2
		}
		for _, n := range jepsen.AllNemeses {
			if jepsen.Supported(caps, n) == nil {
				cfg.Nemeses = append(cfg.Nemeses, n)
			}
		}
	default:
		cfg.Nemeses = strings.Split(*nemesis, ",")
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	out, err := jepsen.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "statemesh jepsen: %v\n", err)
		return 2
	}
	fmt.Fprintf(stdout, "%s: %s (%d history entries); report: %s/index.html\n", cfg.TestName(), out.Valid, out.Ops, out.Dir)
	return out.Valid.ExitCode()
}

// runFunctions runs `statemesh functions`: the example functions on one
// gRPC address, until SIGINT or SIGTERM (the jepsen harness's process
// backends run one beside each node).
func runFunctions(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("statemesh functions", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("listen", "127.0.0.1:8080", "address to serve the function protocol on")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	svc := sdk.New(sdk.WithLogger(log), sdk.WithServiceName("statemesh-examples"), sdk.WithServiceVersion(sdk.LibraryVersion))
	if err := examples.Register(svc); err != nil {
		fmt.Fprintf(stderr, "statemesh functions: %v\n", err)
		return 1
	}
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(stderr, "statemesh functions: %v\n", err)
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		svc.Stop()
	}()
	log.Info("functions: serving", "addr", lis.Addr().String())
	if err := svc.Serve(lis); err != nil {
		fmt.Fprintf(stderr, "statemesh functions: %v\n", err)
		return 1
	}
	return 0
}
