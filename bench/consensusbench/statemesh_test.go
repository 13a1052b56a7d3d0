package consensusbench

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/statemesh/statemesh/protocol/adminpb"
)

func TestReadyWriter(t *testing.T) {
	var out syncBuffer
	ready := make(chan struct{})
	w := &readyWriter{w: &out, ready: ready}
	for _, s := range []string{"starting\nnot re", "ally, the line goes on", "\nstill not", " yet\nnode s1 re", "ady: gossip\nmore\n"} {
		select {
		case <-ready:
			t.Fatalf("ready before %q", s)
		default:
		}
		if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	select {
	case <-ready:
	default:
		t.Fatal("not ready after the ready line")
	}
	w.Write([]byte("ready again\n")) // closes nothing twice
	if got := out.String(); got != "starting\nnot really, the line goes on\nstill not yet\nnode s1 ready: gossip\nmore\nready again\n" {
		t.Errorf("passed through %q", got)
	}
}

func TestUnreplicated(t *testing.T) {
	ls := []*adminpb.ShardLeader{
		{Shard: 1, ReplicaId: 7, Local: true},
		{Shard: 2, ReplicaId: 0, Local: true},  // no leader known
		{Shard: 3, ReplicaId: 7, Local: false}, // no local replica
	}
	if got := unreplicated(ls, 4); len(got) != 3 || got[0] != 2 || got[1] != 3 || got[2] != 4 {
		t.Errorf("unreplicated %v; want [2 3 4]", got)
	}
	if got := unreplicated(ls[:1], 1); len(got) != 0 {
		t.Errorf("unreplicated %v; want none", got)
	}
}

func TestProcessCPU(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	before, err := ProcessCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Spin until the counter shows 50 ms more of CPU. No bound on how
	// long that takes on a busy machine, only that it happens and that
	// the reading never goes back.
	deadline := time.Now().Add(30 * time.Second)
	for {
		after, err := ProcessCPU(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if after < before {
			t.Fatalf("CPU time went back: %s after %s", after, before)
		}
		if after-before >= 50*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s of spinning showed only %s of CPU", after-before)
		}
		for spin := time.Now(); time.Since(spin) < 5*time.Millisecond; {
		}
	}
	if _, ok := ClusterCPU(newFake("x", constant(0), nil)); ok {
		t.Error("ClusterCPU of a fake target: ok")
	}
}

// buildStatemesh builds the statemesh binary into a temporary directory.
func buildStatemesh(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "statemesh")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/statemesh/statemesh/cmd/statemesh").CombinedOutput(); err != nil {
		t.Fatalf("building statemesh: %v\n%s", err, out)
	}
	return bin
}

// TestStatemesh starts a real 3-node cluster with 4 shards and runs 4
// clients against it for about a second; Close stops every node cleanly,
// removes the data and keeps the logs.
func TestStatemesh(t *testing.T) {
	bin := buildStatemesh(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var log syncBuffer
	c, err := StartStatemesh(ctx, bin, t.TempDir(), 4, &log)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !strings.HasPrefix(c.Version, "statemesh ") || len(c.Admin) != 3 || len(c.Logs) != 3 || c.Shards != 4 {
		t.Errorf("version %q, admin %v, logs %v, shards %d", c.Version, c.Admin, c.Logs, c.Shards)
	}
	t.Logf("started in %s", c.Startup)
	r, err := Run(ctx, c, LoadConfig{Clients: 4, Keys: 100, ValueBytes: 100, Warmup: 200 * time.Millisecond, Duration: time.Second, Seed: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s, 4 clients: %.0f writes/s, p50 %.2f ms, p99 %.2f ms, max %.1f ms", c.Version, r.OpsPerSec, r.P50Ms, r.P99Ms, r.MaxMs)
	if r.Ops == 0 || r.Errors != 0 || r.P50Ms <= 0 {
		t.Errorf("result %+v", r)
	}
	if cpu, ok := ClusterCPU(c); !ok || cpu <= 0 {
		t.Errorf("ClusterCPU %s, %v", cpu, ok)
	}
	if l, err := c.LeaderCounts(ctx); err != nil || !strings.HasPrefix(l, "s1 ") {
		t.Errorf("LeaderCounts %q, %v", l, err)
	}
	if !strings.Contains(log.String(), "s2: ") || !strings.Contains(c.Describe(), "--shards 4") {
		t.Errorf("no prefixed node output in the log, or Describe %q", c.Describe())
	}
	pids := c.pids()
	start := time.Now()
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	t.Logf("Close took %s", time.Since(start))
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("node %d still running after Close", pid)
		}
	}
	for i, n := range c.nodes {
		if _, err := os.Stat(n.dataDir); !os.IsNotExist(err) {
			t.Errorf("data dir %s left behind: %v", n.dataDir, err)
		}
		if b, err := os.ReadFile(c.Logs[i]); err != nil || !strings.Contains(string(b), "ready") {
			t.Errorf("log %s: %v, %d bytes", c.Logs[i], err, len(b))
		}
	}
	if err := c.Write(ctx, 0, "k", []byte("v")); err == nil {
		t.Error("Write after Close: no error")
	}
}

// When StartStatemesh's ctx ends the nodes are stopped, and Close does not
// report that as a failure.
func TestStatemeshStoppedWithContext(t *testing.T) {
	bin := buildStatemesh(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := StartStatemesh(ctx, bin, t.TempDir(), 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cancel()
	for _, n := range c.nodes {
		select {
		case <-n.exited:
		case <-time.After(2 * statemeshStopTimeout):
			t.Fatalf("node %s still running %s after ctx ended", n.name, 2*statemeshStopTimeout)
		}
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close after ctx ended: %v", err)
	}
}

func TestStartStatemeshNodeFails(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "statemesh")
	script := "#!/bin/sh\nif [ \"$1\" = version ]; then echo 'statemesh 0.0.0'; exit 0; fi\necho \"fake node: cannot start $3\" >&2\nexit 1\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	_, err := StartStatemesh(context.Background(), bin, dir, 0, nil)
	if !errors.Is(err, ErrStatemeshNotReady) || !strings.Contains(err.Error(), "fake node: cannot start s1") {
		t.Fatalf("StartStatemesh: %v; want ErrStatemeshNotReady with the node's output", err)
	}
}
