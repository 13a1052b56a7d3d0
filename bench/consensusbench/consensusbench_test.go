package consensusbench

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// fakeTarget is an in-memory Target whose latency and failures are set
// per client and call; it records the largest number of writes in flight.
type fakeTarget struct {
	name    string
	latency func(client, n int) time.Duration // n: the client's call number, from 1
	fail    func(client, n int) bool

	mu struct {
		sync.Mutex
		calls       map[int]int
		inflight    int
		maxInflight int
		store       map[string][]byte
	}
}

func newFake(name string, latency func(client, n int) time.Duration, fail func(client, n int) bool) *fakeTarget {
	f := &fakeTarget{name: name, latency: latency, fail: fail}
	f.mu.calls = map[int]int{}
	f.mu.store = map[string][]byte{}
	return f
}

func (f *fakeTarget) Name() string { return f.name }
func (f *fakeTarget) Close() error { return nil }

func (f *fakeTarget) Write(ctx context.Context, client int, key string, value []byte) error {
	f.mu.Lock()
	f.mu.calls[client]++
	n := f.mu.calls[client]
	f.mu.inflight++
	f.mu.maxInflight = max(f.mu.maxInflight, f.mu.inflight)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.mu.inflight--
		f.mu.Unlock()
	}()
	select {
	case <-time.After(f.latency(client, n)):
	case <-ctx.Done():
		return ctx.Err()
	}
	if f.fail != nil && f.fail(client, n) {
		return fmt.Errorf("fake: write %d of client %d fails", n, client)
	}
	f.mu.Lock()
	f.mu.store[key] = bytes.Clone(value)
	f.mu.Unlock()
	return nil
}

func constant(d time.Duration) func(int, int) time.Duration {
	return func(int, int) time.Duration { return d }
}

// With a fake clock every count is exact: a client's n-th write starts at
// n-1 ms and completes at n ms; the window [100 ms, 1100 ms) holds writes
// 100 to 1099, every tenth of which fails.
func TestRunCountsExactly(t *testing.T) {
	for _, clients := range []int{1, 16, 128} {
		t.Run(fmt.Sprintf("clients=%d", clients), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFake("fake", constant(time.Millisecond), func(_, n int) bool { return n%10 == 0 })
				cfg := LoadConfig{Clients: clients, Keys: 50, ValueBytes: 100, Warmup: 100 * time.Millisecond, Duration: time.Second, Seed: 7}
				var last int
				calls := 0
				r, err := Run(t.Context(), f, cfg, func(done int) { last, calls = done, calls+1 })
				if err != nil {
					t.Fatal(err)
				}
				c := int64(clients)
				if r.Ops != 900*c || r.Errors != 100*c || r.WarmupOps != 90*c || r.WarmupErrors != 9*c {
					t.Errorf("ops %d errors %d warm-up ops %d errors %d; want %d %d %d %d", r.Ops, r.Errors, r.WarmupOps, r.WarmupErrors, 900*c, 100*c, 90*c, 9*c)
				}
				if r.OpsPerSec != float64(900*c) || r.DurationS != 1 {
					t.Errorf("ops/s %v over %v s; want %d over 1 s", r.OpsPerSec, r.DurationS, 900*c)
				}
				if r.P50Ms != 1 || r.P99Ms != 1 || r.MaxMs != 1 || r.MeanMs != 1 {
					t.Errorf("latencies p50 %v p99 %v max %v mean %v; want 1 ms", r.P50Ms, r.P99Ms, r.MaxMs, r.MeanMs)
				}
				if !strings.Contains(r.FirstError, "write 10 of client") {
					t.Errorf("first error %q; want the 10th write's", r.FirstError)
				}
				if int64(last) < r.Ops+r.WarmupOps || calls < 2 {
					t.Errorf("progress: %d calls, last %d; want at least 2 calls and %d", calls, last, r.Ops+r.WarmupOps)
				}
				f.mu.Lock()
				defer f.mu.Unlock()
				if f.mu.maxInflight != clients {
					t.Errorf("at most %d writes in flight; want %d", f.mu.maxInflight, clients)
				}
				if len(f.mu.store) > cfg.Keys || len(f.mu.store) < cfg.Keys/2 {
					t.Errorf("%d keys written; want most of %d", len(f.mu.store), cfg.Keys)
				}
				for k, v := range f.mu.store {
					if len(v) != cfg.ValueBytes {
						t.Fatalf("value of %s: %d bytes; want %d", k, len(v), cfg.ValueBytes)
					}
				}
			})
		})
	}
}

// Latencies cycling through 1..100 ms: the quantiles of a uniform
// distribution.
func TestRunQuantiles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake("fake", func(c, n int) time.Duration { return time.Duration((n+7*c)%100+1) * time.Millisecond }, nil)
		r, err := Run(t.Context(), f, LoadConfig{Clients: 8, Keys: 100, ValueBytes: 10, Warmup: 50 * time.Millisecond, Duration: 30 * time.Second}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !(r.P50Ms <= r.P90Ms && r.P90Ms <= r.P99Ms && r.P99Ms <= r.MaxMs) {
			t.Errorf("quantiles out of order: p50 %v p90 %v p99 %v max %v", r.P50Ms, r.P90Ms, r.P99Ms, r.MaxMs)
		}
		if r.P50Ms < 45 || r.P50Ms > 56 || r.P90Ms < 87 || r.P90Ms > 93 || r.P99Ms < 97 || r.MaxMs != 100 || r.MeanMs < 48 || r.MeanMs > 53 {
			t.Errorf("p50 %v p90 %v p99 %v max %v mean %v; want about 50, 90, 99, 100, 50.5", r.P50Ms, r.P90Ms, r.P99Ms, r.MaxMs, r.MeanMs)
		}
		if r.Errors != 0 || r.FirstError != "" {
			t.Errorf("errors %d (%q); want none", r.Errors, r.FirstError)
		}
	})
}

func TestRunCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		defer cancel()
		f := newFake("fake", constant(time.Millisecond), nil)
		_, err := Run(ctx, f, LoadConfig{Clients: 4, Keys: 10, Duration: time.Second}, nil)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Run cut short: %v; want DeadlineExceeded", err)
		}
	})
}

func TestValidate(t *testing.T) {
	if err := DefaultLoadConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	if err := DefaultPlan().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []LoadConfig{{Clients: 0, Keys: 1, Duration: 1}, {Clients: 1, Keys: 0, Duration: 1}, {Clients: 1, Keys: 1}, {Clients: 1, Keys: 1, Duration: 1, Warmup: -1}} {
		if err := c.Validate(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%+v: %v; want ErrInvalidConfig", c, err)
		}
	}
	if _, err := Run(context.Background(), newFake("x", constant(0), nil), LoadConfig{}, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Run with a zero config: %v", err)
	}
}

func TestRunPlanAlternatesAndSummarises(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sm := newFake(SystemStatemesh, constant(time.Millisecond), nil)
		etcd := newFake(SystemEtcd, constant(2*time.Millisecond), nil)
		p := Plan{Clients: []int{1, 4}, Repeat: 3, Load: LoadConfig{Keys: 10, ValueBytes: 8, Warmup: 10 * time.Millisecond, Duration: 100 * time.Millisecond, Seed: 1}}
		var lines []string
		rs, err := RunPlan(t.Context(), []Target{sm, etcd}, p, func(s string) { lines = append(lines, s) })
		if err != nil {
			t.Fatal(err)
		}
		var order []string
		for _, r := range rs {
			order = append(order, fmt.Sprintf("%d:%s:%d", r.Round, r.System, r.Clients))
		}
		want := "1:statemesh:1 1:etcd:1 1:statemesh:4 1:etcd:4 2:etcd:1 2:statemesh:1 2:etcd:4 2:statemesh:4 3:statemesh:1 3:etcd:1 3:statemesh:4 3:etcd:4"
		if got := strings.Join(order, " "); got != want {
			t.Errorf("order\n got %s\nwant %s", got, want)
		}
		if len(lines) == 0 || !strings.Contains(lines[len(lines)-1], "writes/s") {
			t.Errorf("progress lines %q", lines)
		}
		rows := Rows(rs)
		if len(rows) != 4 || rows[0].System != SystemStatemesh || rows[1].System != SystemEtcd || rows[2].Clients != 4 {
			t.Fatalf("rows %+v", rows)
		}
		// 1 ms per write, 1 client, 100 ms: 100 writes/s... per 100 ms,
		// so 1000 writes/s; etcd's fake is twice as slow.
		if rows[0].OpsPerSec != 1000 || rows[1].OpsPerSec != 500 || rows[2].OpsPerSec != 4000 || len(rows[0].Rounds) != 3 {
			t.Errorf("rows %+v", rows)
		}
	})
}

// pausableFake is a fakeTarget that can be paused: a write while paused
// is an error, so a run of a paused target fails its check.
type pausableFake struct {
	*fakeTarget
	mu      sync.Mutex
	paused  bool
	pauses  int
	resumes int
	resumed time.Time
}

func (f *pausableFake) Pause() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.paused = true
	f.pauses++
	return nil
}

func (f *pausableFake) Resume() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.paused = false
	f.resumes++
	f.resumed = time.Now()
	return nil
}

func (f *pausableFake) Write(ctx context.Context, client int, key string, value []byte) error {
	f.mu.Lock()
	paused, resumed := f.paused, f.resumed
	f.mu.Unlock()
	// A refused write takes a millisecond, as a real one would, so that
	// the fake clock moves on.
	if paused {
		time.Sleep(time.Millisecond)
		return fmt.Errorf("%s: written while paused", f.name)
	}
	if !resumed.IsZero() && time.Since(resumed) < PauseSettle {
		time.Sleep(time.Millisecond)
		return fmt.Errorf("%s: written %v after resuming", f.name, time.Since(resumed))
	}
	return f.fakeTarget.Write(ctx, client, key, value)
}

// With PauseIdle, each target runs with the others paused, after
// PauseSettle if it was paused, and every target is running again when
// RunPlan returns.
func TestRunPlanPausesIdleTargets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := &pausableFake{fakeTarget: newFake(SystemStatemesh, constant(time.Millisecond), nil)}
		b := &pausableFake{fakeTarget: newFake(SystemEtcd, constant(time.Millisecond), nil)}
		p := Plan{Clients: []int{1, 2}, Repeat: 2, PauseIdle: true, Load: LoadConfig{Keys: 10, ValueBytes: 8, Warmup: 10 * time.Millisecond, Duration: 50 * time.Millisecond, Seed: 1}}
		rs, err := RunPlan(t.Context(), []Target{a, b}, p, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.Errors != 0 || r.WarmupErrors != 0 || r.Ops == 0 {
				t.Errorf("%s with %d clients, round %d: %d ops, %d errors (first: %s)", r.System, r.Clients, r.Round, r.Ops, r.Errors, r.FirstError)
			}
		}
		for _, f := range []*pausableFake{a, b} {
			if f.paused || f.pauses == 0 || f.resumes == 0 {
				t.Errorf("%s: paused %v at the end, %d pauses, %d resumes", f.name, f.paused, f.pauses, f.resumes)
			}
		}
		// Without PauseIdle nothing is paused or resumed.
		c := &pausableFake{fakeTarget: newFake(SystemStatemesh, constant(time.Millisecond), nil)}
		p.PauseIdle = false
		if _, err := RunPlan(t.Context(), []Target{c}, p, nil); err != nil {
			t.Fatal(err)
		}
		if c.pauses != 0 || c.resumes != 0 {
			t.Errorf("without PauseIdle: %d pauses, %d resumes", c.pauses, c.resumes)
		}
	})
}

// signalGroups stops and continues real process groups.
func TestSignalGroupsStopsAndContinues(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	state := func() byte {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.LastIndexByte(b, ')')
		return b[i+2]
	}
	wait := func(want byte) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for state() != want {
			if time.Now().After(deadline) {
				t.Fatalf("process state %c; want %c", state(), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	pids := []int{cmd.Process.Pid}
	if err := signalGroups(pids, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	wait('T')
	if err := signalGroups(pids, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	wait('S')
	// An exited group is no error.
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if err := signalGroups(pids, syscall.SIGCONT); err != nil {
		t.Errorf("signalling an exited group: %v", err)
	}
}

func TestRowsMedians(t *testing.T) {
	rs := []Result{
		{System: SystemEtcd, Clients: 16, Round: 1, OpsPerSec: 100, P50Ms: 5, P99Ms: 30, MaxMs: 90, Errors: 1},
		{System: SystemEtcd, Clients: 16, Round: 2, OpsPerSec: 300, P50Ms: 1, P99Ms: 10, MaxMs: 50, Errors: 2},
		{System: SystemEtcd, Clients: 16, Round: 3, OpsPerSec: 200, P50Ms: 3, P99Ms: 20, MaxMs: 70},
		{System: SystemStatemesh, Clients: 16, Round: 1, OpsPerSec: 10, P99Ms: 1},
		{System: SystemStatemesh, Clients: 16, Round: 2, OpsPerSec: 20, P99Ms: 3},
	}
	rows := Rows(rs)
	if len(rows) != 2 {
		t.Fatalf("rows %+v", rows)
	}
	sm, e := rows[0], rows[1]
	if e.OpsPerSec != 200 || e.P50Ms != 3 || e.P99Ms != 20 || e.MaxMs != 70 || e.Errors != 3 || len(e.Rounds) != 3 {
		t.Errorf("etcd row %+v", e)
	}
	if sm.OpsPerSec != 15 || sm.P99Ms != 2 {
		t.Errorf("statemesh row (even count: mean of the middle two) %+v", sm)
	}
}

func TestPutEncoding(t *testing.T) {
	req := appendPutRequest(nil, "k0042", []byte("value"))
	got := map[protowire.Number]string{}
	for b := req; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType {
			t.Fatalf("request %x: bad tag", req)
		}
		v, m := protowire.ConsumeBytes(b[n:])
		if m < 0 {
			t.Fatalf("request %x: bad bytes", req)
		}
		got[num] = string(v)
		b = b[n+m:]
	}
	if len(got) != 2 || got[1] != "k0042" || got[2] != "value" {
		t.Errorf("PutRequest fields %v; want key=1, value=2", got)
	}

	header := func(rev uint64) []byte {
		var h []byte
		for _, f := range []struct {
			num protowire.Number
			v   uint64
		}{{1, 0xc1}, {2, 0xe1}, {3, rev}, {4, 2}} {
			h = protowire.AppendTag(h, f.num, protowire.VarintType)
			h = protowire.AppendVarint(h, f.v)
		}
		return h
	}
	resp := func(h []byte, extra ...byte) []byte {
		b := protowire.AppendTag(nil, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, h)
		// prev_kv = 2, which a Put without prev_kv does not send: skipped.
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, []byte{0x0a, 0x01, 'k'})
		return append(b, extra...)
	}
	if err := checkPutResponse(resp(header(17))); err != nil {
		t.Errorf("good response: %v", err)
	}
	for name, b := range map[string][]byte{
		"empty":      nil,
		"revision 0": resp(header(0)),
		"truncated":  resp(header(17))[:5],
		"bad tag":    resp(header(17), 0xff),
	} {
		if err := checkPutResponse(b); !errors.Is(err, ErrBadResponse) {
			t.Errorf("%s: %v; want ErrBadResponse", name, err)
		}
	}

	var c rawCodec
	out, err := c.Marshal(req)
	if err != nil || !bytes.Equal(out, req) || c.Name() != "proto" {
		t.Errorf("Marshal: %x, %v", out, err)
	}
	var back []byte
	if err := c.Unmarshal(req, &back); err != nil || !bytes.Equal(back, req) {
		t.Errorf("Unmarshal: %x, %v", back, err)
	}
	if _, err := c.Marshal("x"); err == nil {
		t.Error("Marshal of a string: no error")
	}
}

func TestTailAndPrefixWriters(t *testing.T) {
	tb := &tailBuffer{max: 20}
	for i := range 20 {
		fmt.Fprintf(tb, "line %02d\n", i)
	}
	if got := tb.String(); got != "line 18\nline 19\n" {
		t.Errorf("tail %q", got)
	}
	var out bytes.Buffer
	var mu sync.Mutex
	pw := &prefixWriter{mu: &mu, w: &out, prefix: "e1: "}
	pw.Write([]byte("a\nb"))
	pw.Write([]byte("c\n\nd"))
	if got := out.String(); got != "e1: a\ne1: bc\ne1: \n" {
		t.Errorf("prefixed %q", got)
	}
}

func startEtcd(t *testing.T, ctx context.Context) (*EtcdCluster, *syncBuffer) {
	t.Helper()
	if _, err := FindEtcd(); err != nil {
		t.Skipf("no etcd: %v (apt-get install etcd-server)", err)
	}
	base, err := FreePorts(2 * etcdMembers)
	if err != nil {
		t.Fatal(err)
	}
	log := &syncBuffer{}
	c, err := StartEtcd(ctx, t.TempDir(), base, log)
	if err != nil {
		t.Fatal(err)
	}
	return c, log
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// TestEtcd starts a real 3-member cluster (skipped only without the etcd
// binary) and runs 4 clients against it for about a second.
func TestEtcd(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, log := startEtcd(t, ctx)
	defer c.Close()
	if !strings.HasPrefix(c.Version, "3.") || len(c.Endpoints) != 3 {
		t.Errorf("version %q, endpoints %v", c.Version, c.Endpoints)
	}
	r, err := Run(ctx, c, LoadConfig{Clients: 4, Keys: 1000, ValueBytes: 100, Warmup: 200 * time.Millisecond, Duration: time.Second, Seed: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("etcd %s, 4 clients: %.0f writes/s, p50 %.2f ms, p99 %.2f ms, max %.1f ms", c.Version, r.OpsPerSec, r.P50Ms, r.P99Ms, r.MaxMs)
	if r.Ops == 0 || r.Errors != 0 || r.P50Ms <= 0 {
		t.Errorf("result %+v", r)
	}
	if !strings.Contains(log.String(), "e2: ") {
		t.Errorf("no prefixed member output in the log")
	}
	if !strings.Contains(c.Describe(), c.Version) {
		t.Errorf("Describe: %s", c.Describe())
	}
	pids, dir := c.pids(), c.dataDir
	start := time.Now()
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("member %d still running after Close", pid)
		}
	}
	t.Logf("Close took %s", time.Since(start))
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("data dir %s left behind: %v", dir, err)
	}
	if err := c.Write(ctx, 0, "k", []byte("v")); err == nil {
		t.Error("Write after Close: no error")
	}
}

// When StartEtcd's ctx ends the members are killed, and Close does not
// report that as a failure.
func TestEtcdKilledWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, _ := startEtcd(t, ctx)
	defer c.Close()
	cancel()
	for _, m := range c.members {
		select {
		case <-m.exited:
		case <-time.After(10 * time.Second):
			t.Fatalf("member %s still running 10 s after ctx ended", m.name)
		}
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close after ctx ended: %v", err)
	}
}

func TestStartEtcdPortInUse(t *testing.T) {
	if _, err := FindEtcd(); err != nil {
		t.Skipf("no etcd: %v (apt-get install etcd-server)", err)
	}
	base, err := FreePorts(6)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+3))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := StartEtcd(context.Background(), dir, base, nil); !errors.Is(err, ErrPortInUse) {
		t.Errorf("StartEtcd with a port taken: %v; want ErrPortInUse", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left %v in %s", ents, dir)
	}
}

func fakeRows() []Row {
	row := func(system string, clients int, ops, p99 float64, errs int64) Row {
		return Row{System: system, Clients: clients, OpsPerSec: ops, P50Ms: p99 / 4, P99Ms: p99, MaxMs: 2 * p99, Errors: errs,
			Rounds: []Result{{System: system, Clients: clients, Round: 1, OpsPerSec: ops, P99Ms: p99}, {System: system, Clients: clients, Round: 2, OpsPerSec: ops, P99Ms: p99}}}
	}
	return []Row{
		row(SystemStatemesh, 1, 900, 3, 0), row(SystemEtcd, 1, 1000, 2, 0),
		row(SystemStatemesh, 16, 8000, 5, 3), row(SystemEtcd, 16, 8000, 5, 0),
		row(SystemStatemesh, 128, 12000, 8, 0), row(SystemEtcd, 128, 10000, 10, 0),
	}
}

func TestReport(t *testing.T) {
	rows := fakeRows()
	rs := Ratios(rows)
	if len(rs) != 3 {
		t.Fatalf("ratios %+v", rs)
	}
	if r := rs[2]; r.Clients != 128 || r.Throughput != 1.2 || r.P99 != 0.8 || !r.Met || r.Verdict != "met" {
		t.Errorf("128 clients: %+v", r)
	}
	if r := rs[0]; r.Met || r.Verdict != "NOT met: throughput 0.90× etcd's, p99 1.50× etcd's" {
		t.Errorf("1 client: %+v", r)
	}
	if r := rs[1]; r.Met || r.Verdict != "NOT met: 3 statemesh writes failed" {
		t.Errorf("16 clients: %+v", r)
	}
	if met, measured, _ := TargetVerdict(rows); !met || !measured {
		t.Errorf("target: met %v measured %v", met, measured)
	}

	meta := NewMeta("statemesh bench consensus --repeat 2", Plan{Clients: []int{1, 16, 128}, Repeat: 2, Load: DefaultLoadConfig()})
	meta.Systems = []SystemInfo{{SystemEtcd, "etcd 3.4"}}
	meta.SVG = "consensus.svg"
	path := filepath.Join(t.TempDir(), "results", "consensus.md")
	if err := WriteMarkdown(path, rows, meta); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	for _, want := range []string{
		"- Command: `statemesh bench consensus --repeat 2`",
		"(at least etcd's throughput, p99 no worse than etcd's): **met**",
		"| statemesh | 128 | 12000 | 2.00 | 8.00 | 16.0 | 0 |",
		"| 128 | 1.20 | 0.80 | met |",
		"| 1 | 0.90 | 1.50 | NOT met: throughput 0.90× etcd's, p99 1.50× etcd's |",
		"| 2 | etcd | 16 | 8000 |",
		"- **etcd**: etcd 3.4",
		"![writes/s and p99 per client count](consensus.svg)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}

	// statemesh slower at 128 clients: the headline says so.
	rows[4].OpsPerSec = 9000
	var buf bytes.Buffer
	RenderMarkdown(&buf, rows, meta)
	if !strings.Contains(buf.String(), "**NOT met: throughput 0.90× etcd's**") {
		t.Errorf("report with the target missed:\n%s", buf.String())
	}
	if _, measured, text := TargetVerdict(rows[:4]); measured || !strings.Contains(text, "not measured") {
		t.Errorf("without 128 clients: measured %v, %q", measured, text)
	}

	var svg bytes.Buffer
	WriteSVG(&svg, rows)
	if err := xml.Unmarshal(svg.Bytes(), new(struct{})); err != nil {
		t.Errorf("SVG does not parse: %v", err)
	}
	var table bytes.Buffer
	WriteTable(&table, rows)
	if !strings.Contains(table.String(), "NOT met: 3 statemesh writes failed") {
		t.Errorf("table:\n%s", table.String())
	}
}

// A member that dies at start: StartEtcd says which, with its output.
func TestStartEtcdMemberFails(t *testing.T) {
	bin := t.TempDir()
	script := "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'etcd Version: 3.4.0'; exit 0; fi\necho \"fake etcd: cannot start $2\" >&2\nexit 1\n"
	if err := os.WriteFile(filepath.Join(bin, "etcd"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	base, err := FreePorts(6)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	_, err = StartEtcd(context.Background(), dir, base, nil)
	if err == nil || !strings.Contains(err.Error(), "exited while starting") || !strings.Contains(err.Error(), "fake etcd: cannot start e") {
		t.Fatalf("StartEtcd: %v; want the member's exit and output", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left %v in %s", ents, dir)
	}
}
