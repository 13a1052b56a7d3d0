package jepsen

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/statemesh/statemesh/jepsen/check"
	"github.com/statemesh/statemesh/jepsen/history"
)

// simRun runs a short test on the sim backend and returns its outcome.
func simRun(t *testing.T, workload string, nemeses ...string) *Outcome {
	t.Helper()
	var progress strings.Builder
	cfg := Config{Backend: "sim", Workload: workload, Nemeses: nemeses, TimeLimit: 5 * time.Second,
		Interval: 1200 * time.Millisecond, Seed: 42, Store: t.TempDir(), ConvergeTimeout: 30 * time.Second,
		Progress: &progress}
	out, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, progress.String())
	}
	t.Logf("%s: %s\n%s", cfg.TestName(), out.Valid, progress.String())
	return out
}

// TestSimWorkloads runs every workload briefly under faults on the sim
// backend: each must pass, and the run directory must hold the report.
func TestSimWorkloads(t *testing.T) {
	cases := []struct {
		workload string
		nemeses  []string
		// checkers that must have run
		checkers []string
	}{
		{WorkloadCounter, []string{PartitionHalves, Kill, ClockSkew}, []string{"counter", "convergence"}},
		{WorkloadSet, []string{PartitionOne, Loss, Kill}, []string{"set", "convergence"}},
		{WorkloadRegister, []string{PartitionOne, Kill, PartitionHalves}, []string{"register"}},
		{WorkloadDurability, []string{PartitionRing}, []string{"durability"}},
		{WorkloadConvergence, []string{PartitionBridge, Delay, PartitionRegion}, []string{"convergence", "counter", "set"}},
	}
	for _, tc := range cases {
		t.Run(tc.workload, func(t *testing.T) {
			out := simRun(t, tc.workload, tc.nemeses...)
			if out.Valid != check.Valid {
				t.Fatalf("verdict %s: %+v", out.Valid, out.Results)
			}
			var got []string
			for _, r := range out.Results {
				got = append(got, r.Checker)
			}
			if strings.Join(got, ",") != strings.Join(tc.checkers, ",") {
				t.Errorf("checkers %v, want %v", got, tc.checkers)
			}
			for _, f := range []string{"results.json", "history.jsonl", "history.txt", "index.html", "latency.svg", "throughput.svg", "logs/n1.log"} {
				if _, err := os.Stat(filepath.Join(out.Dir, f)); err != nil {
					t.Errorf("run directory: %v", err)
				}
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(out.Dir), "latest")); err != nil {
				t.Errorf("latest link: %v", err)
			}
			// The stored history reads back, pairs up, and shows the faults.
			f, err := os.Open(filepath.Join(out.Dir, "history.jsonl"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			ops, err := history.ReadJSONL(f)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := history.Pairs(ops); err != nil {
				t.Fatal(err)
			}
			windows := history.FaultWindows(ops, ops[len(ops)-1].Time)
			if len(windows) == 0 {
				t.Errorf("no fault windows in the history")
			}
			var res resultsFile
			b, err := os.ReadFile(filepath.Join(out.Dir, "results.json"))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &res); err != nil || res.Seed != 42 || res.Valid != check.Valid {
				t.Errorf("results.json: seed %d valid %s err %v", res.Seed, res.Valid, err)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{Backend: "sim", Workload: "nope"},
		{Backend: "nope", Workload: WorkloadCounter},
		{Backend: "sim", Workload: WorkloadCounter, Nemeses: []string{Pause}}, // sim cannot pause
		{Backend: "sim", Workload: WorkloadCounter, Nemeses: []string{"nope"}},
	} {
		cfg.Store = t.TempDir()
		cfg.TimeLimit = time.Second
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
}

func TestPartitionCuts(t *testing.T) {
	nodes := []NodeInfo{{Name: "a", Region: "east"}, {Name: "b", Region: "west"}, {Name: "c", Region: "east"},
		{Name: "d", Region: "west"}, {Name: "e", Region: "east"}}
	rng := rand.New(rand.NewPCG(1, 2))
	// Reachability after the cuts: every node must still see itself, and
	// the shapes must hold.
	reach := func(cuts [][2]string) map[string]int {
		cut := map[[2]string]bool{}
		for _, c := range cuts {
			cut[c], cut[[2]string{c[1], c[0]}] = true, true
		}
		out := map[string]int{}
		for _, x := range nodes {
			for _, y := range nodes {
				if !cut[[2]string{x.Name, y.Name}] {
					out[x.Name]++
				}
			}
		}
		return out
	}
	for _, name := range []string{PartitionHalves, PartitionOne, PartitionRing, PartitionBridge, PartitionRegion} {
		cuts, desc := partitionCuts(name, nodes, rng)
		if len(cuts) == 0 {
			t.Errorf("%s: no cuts", name)
			continue
		}
		r := reach(cuts)
		switch name {
		case PartitionOne:
			ones := 0
			for _, v := range r {
				if v == 1 {
					ones++
				}
			}
			if ones != 1 {
				t.Errorf("%s (%s): reach %v", name, desc, r)
			}
		case PartitionRing:
			for n, v := range r {
				if v != 3 { // itself and its two ring neighbours: a majority of 5
					t.Errorf("%s (%s): %s reaches %d", name, desc, n, v)
				}
			}
		case PartitionBridge:
			full := 0
			for _, v := range r {
				if v == 5 {
					full++
				}
			}
			if full != 1 {
				t.Errorf("%s (%s): reach %v, want one bridge node", name, desc, r)
			}
		case PartitionRegion:
			if r["a"] != 3 || r["b"] != 2 {
				t.Errorf("%s (%s): reach %v", name, desc, r)
			}
		}
	}
}

// TestSyncUnderKill: crash guarantees are tested in sync durability
// (FINDINGS.md, finding 1).
func TestSyncUnderKill(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		sync bool
	}{
		{Config{Workload: WorkloadSet, Nemeses: []string{PartitionOne}}, false},
		{Config{Workload: WorkloadSet, Nemeses: []string{PartitionOne, Kill}}, true},
		{Config{Workload: WorkloadDurability}, true},
	} {
		if got := tc.cfg.sync(); got != tc.sync {
			t.Errorf("%s %v: sync %v, want %v", tc.cfg.Workload, tc.cfg.Nemeses, got, tc.sync)
		}
	}
}

// TestNetnsPrefix: the sweep of dead runs reads the pid back from the
// namespace prefix, which must fit netns's 8 characters.
func TestNetnsPrefix(t *testing.T) {
	for _, pid := range []int{1, 4242, 4194304} {
		p := netnsPrefix(pid, 77)
		if len(p) > 8 {
			t.Fatalf("prefix %q longer than 8", p)
		}
		rest := strings.TrimPrefix(p, "sj")
		got, err := strconv.ParseInt(rest[:len(rest)-1], 36, 64)
		if err != nil || int(got) != pid {
			t.Errorf("prefix %q: pid %d (%v), want %d", p, got, err, pid)
		}
	}
}
