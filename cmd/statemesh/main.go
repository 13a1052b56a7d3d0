// Command statemesh is the single statemesh binary. Subcommands:
//
//	statemesh node [flags]         run a mesh node
//	statemesh demo [flags]         a local mesh with the example functions
//	statemesh ctl [flags] CMD      talk to a node's admin service
//	statemesh bench NAME [flags]   benchmarks (sync, convergence, mesh, consensus, proxy, startup)
//	statemesh jepsen [flags]       the Jepsen-style consistency tests
//	statemesh functions [flags]    serve the example functions (a node's --function)
//	statemesh version
package main

import (
	"fmt"
	"io"
	"os"
)

const version = "0.1.0-dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprintln(w, `usage: statemesh <command> [flags]

commands:
  node         run a mesh node; --help for flags
  demo         a local 3-node mesh with the example functions (counter, register)
  ctl          talk to a node's admin service (members, keys, get, update)
  bench sync         the delta-sync benchmark (Enes et al.); --help for flags
  bench convergence  time for a write to reach every node, N = 8..64
  bench mesh         LOCAL updates/s per node on 3 nodes, with replication lag
  bench consensus    replicated writes/s and latency on 3 nodes, statemesh vs etcd
  bench proxy        requests/s through a node to a function (gRPC, HTTP/JSON) vs Redis
  bench startup      node cold start to serving the function
  jepsen       consistency tests under faults: --backend sim|local|netns --workload W --nemesis N1,N2
  functions    serve the example functions over the function protocol (--listen ADDR)
  version      print the version`)
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "node":
		return runNode(args[1:], stdout, stderr)
	case "ctl":
		return runCtl(args[1:], stdout, stderr)
	case "demo":
		return runDemo(args[1:], stdout, stderr)
	case "bench":
		if len(args) < 2 {
			fmt.Fprintln(stderr, "usage: statemesh bench <name> [flags]; benchmarks: sync, convergence, mesh, consensus, proxy, startup")
			return 2
		}
		switch args[1] {
		case "sync":
			return benchSync(args[2:], stdout, stderr)
		case "convergence":
			return benchConvergence(args[2:], stdout, stderr)
		case "mesh":
			return benchMesh(args[2:], stdout, stderr)
		case "consensus":
			return benchConsensus(args[2:], stdout, stderr)
		case "proxy":
			return benchProxy(args[2:], stdout, stderr)
		case "startup":
			return benchStartup(args[2:], stdout, stderr)
		}
		fmt.Fprintf(stderr, "statemesh bench: unknown benchmark %q (have: sync, convergence, mesh, consensus, proxy, startup)\n", args[1])
		return 2
	case "jepsen":
		return runJepsen(args[1:], stdout, stderr)
	case "functions":
		return runFunctions(args[1:], stderr)
	case "version":
		fmt.Fprintln(stdout, "statemesh", version)
		return 0
	case "-h", "--help", "help":
		usage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "statemesh: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}
