// Command statemesh is the single statemesh binary. Subcommands:
//
//	statemesh bench sync [flags]   the delta-sync benchmark (Enes et al.)
//	statemesh version
//
// The node, demo, ctl and jepsen subcommands arrive with their issues.
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
  bench sync   run the delta-sync benchmark; --help for flags
  version      print the version`)
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "bench":
		if len(args) < 2 {
			fmt.Fprintln(stderr, "usage: statemesh bench <name> [flags]; benchmarks: sync")
			return 2
		}
		switch args[1] {
		case "sync":
			return benchSync(args[2:], stdout, stderr)
		}
		fmt.Fprintf(stderr, "statemesh bench: unknown benchmark %q (have: sync)\n", args[1])
		return 2
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
