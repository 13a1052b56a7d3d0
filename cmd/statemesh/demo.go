package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/statemesh/statemesh/examples"
	"github.com/statemesh/statemesh/internal/freeport"
	"github.com/statemesh/statemesh/mesh"
	"github.com/statemesh/statemesh/node"
	"github.com/statemesh/statemesh/sdk"
)

// runDemo runs `statemesh demo`: the example functions and a local
// 3-node mesh in this process, each node fronting the functions, until
// SIGINT or SIGTERM.
func runDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("statemesh demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "", "where the nodes keep their data (default: a temporary directory, removed on exit)")
	nodes := fs.Int("nodes", 3, "how many nodes")
	logLevel := fs.String("log-level", "warn", "node logs on stderr: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil || *nodes < 1 || *nodes > 9 {
		fmt.Fprintln(stderr, "statemesh demo: --log-level debug|info|warn|error, --nodes 1..9")
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	d, err := startDemo(*dataDir, *nodes, log, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "statemesh demo: %v\n", err)
		return 1
	}
	d.print(stdout)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	fmt.Fprintln(stderr, "stopping the demo...")
	if err := d.close(); err != nil {
		fmt.Fprintf(stderr, "statemesh demo: stop: %v\n", err)
		return 1
	}
	return 0
}

type demo struct {
	fn     *sdk.Service
	fnAddr string
	nodes  []*node.Node
	tmp    string // removed on close
}

// startDemo starts the example functions on a loopback port and n nodes
// in this process; the first bootstraps the Raft shards, the others join
// it. Progress goes to progress.
func startDemo(dataDir string, n int, log *slog.Logger, progress io.Writer) (*demo, error) {
	start := time.Now()
	d := &demo{}
	ok := false
	defer func() {
		if !ok {
			_ = d.close()
		}
	}()
	if dataDir == "" {
		tmp, err := os.MkdirTemp("", "statemesh-demo-")
		if err != nil {
			return nil, err
		}
		d.tmp, dataDir = tmp, tmp
	}
	d.fn = sdk.New(sdk.WithLogger(log), sdk.WithServiceName("statemesh-examples"))
	if err := examples.Register(d.fn); err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	d.fnAddr = lis.Addr().String()
	go func() { _ = d.fn.Serve(lis) }()
	fmt.Fprintf(progress, "[demo] example functions (counter, register, sets, cart) on %s\n", d.fnAddr)

	var seeds []string
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		t := time.Now()
		// Every listener but Raft's takes a port the kernel picks; Raft's
		// address must be known before it binds, so a start that lost its
		// "free" port to another process is retried with another.
		var nd *node.Node
		for attempt := 0; ; attempt++ {
			mc := mesh.Config{Name: name, GossipAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0", DataDir: filepath.Join(dataDir, name),
				Join: append([]string(nil), seeds...), Preset: mesh.PresetLocal}
			nc := node.Config{Mesh: mc, AdminAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Logger: log.With("node", name),
				Consensus: node.ConsensusConfig{RaftAddr: freeAddr(), Bootstrap: i == 0},
				Function:  node.FunctionConfig{Addr: d.fnAddr, GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0"}}
			nd, err = node.Start(nc)
			if err == nil {
				break
			}
			if attempt == 2 || !node.AddrInUse(err) {
				return nil, fmt.Errorf("start %s: %w", name, err)
			}
		}
		d.nodes = append(d.nodes, nd)
		seeds = append(seeds, nd.Mesh.GossipAddr())
		fmt.Fprintf(progress, "[demo] node %s ready in %v (%d/%d)\n", name, time.Since(t).Round(time.Millisecond), i+1, n)
	}
	fmt.Fprintf(progress, "[demo] %d nodes up in %v; data in %s\n", n, time.Since(start).Round(time.Millisecond), dataDir)
	ok = true
	return d, nil
}

// freeAddr returns a loopback address whose port is free right now,
// below the ephemeral range (internal/freeport).
func freeAddr() string {
	a, err := freeport.Addr()
	if err != nil {
		return "127.0.0.1:0"
	}
	return a
}

func (d *demo) print(w io.Writer) {
	var b strings.Builder
	fmt.Fprintln(&b, "\nstatemesh demo is running. Nodes:")
	fmt.Fprintf(&b, "  %-4s %-21s %-21s %s\n", "node", "HTTP/JSON", "gRPC", "admin (statemesh ctl --addr)")
	for i, n := range d.nodes {
		fmt.Fprintf(&b, "  n%-3d %-21s %-21s %s\n", i+1, n.APIHTTPAddr(), n.APIGRPCAddr(), n.AdminAddr())
	}
	h1, h2 := d.nodes[0].APIHTTPAddr(), d.nodes[len(d.nodes)-1].APIHTTPAddr()
	fmt.Fprintf(&b, `
Try (counter and sets are CRDTs served by every node, a set's writes LOCAL:
other nodes see them once gossiped; register and cart are event-sourced,
register linearizable; int64 values come back as strings):

  curl -s -X POST -d '{"value":5,"consistency":"MAJORITY"}' http://%[1]s/counters/c1/increment
  curl -s http://%[2]s/counters/c1
  curl -s -X PUT -d '{"value":"hello"}' http://%[1]s/registers/r1
  curl -s -X POST -d '{"expected":"hello","value":"world"}' http://%[2]s/registers/r1/cas
  curl -s http://%[2]s/registers/r1
  curl -s -X POST -d '{"element":"x"}' http://%[1]s/sets/s1/add
  curl -s http://%[2]s/sets/s1
  curl -s -X POST -d '{"product_id":"p1","name":"apple","quantity":2}' http://%[1]s/carts/k1/items
  curl -s -X POST http://%[2]s/carts/k1/items/p1/remove
  curl -s http://%[2]s/carts/k1
  statemesh ctl --addr %[3]s leaders

Every unary method is also served at POST /{package.Service}/{Method}, e.g.
  curl -s -d '{"id":"c1"}' http://%[1]s/statemesh.examples.counter.Counter/Get

Ctrl-C stops the demo.
`, h1, h2, d.nodes[0].AdminAddr())
	fmt.Fprint(w, b.String())
}

func (d *demo) close() error {
	var errs []error
	for i := len(d.nodes) - 1; i >= 0; i-- {
		errs = append(errs, d.nodes[i].Close())
	}
	if d.fn != nil {
		d.fn.Stop()
	}
	if d.tmp != "" {
		errs = append(errs, os.RemoveAll(d.tmp))
	}
	return errors.Join(errs...)
}
