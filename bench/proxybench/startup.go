package proxybench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/statemesh/statemesh/bench/consensusbench"
	"github.com/statemesh/statemesh/examples/counter/counterpb"
)

// StartupTarget is the target of the startup benchmark: a node serves the
// function within this time of its exec.
const StartupTarget = 100 * time.Millisecond

// StartupConfig configures Startup.
type StartupConfig struct {
	// Binary is the statemesh binary (`statemesh node`).
	Binary string
	// FunctionAddr is the running function (the example counter) every
	// node fronts.
	FunctionAddr string
	// Dir holds each run's data directory (removed after the run) and
	// log (kept).
	Dir string
	// Runs is the number of cold starts. Default 20.
	Runs int
	// Raft runs the node with a Raft transport, bootstrapping its shards
	// (a one-node cluster); otherwise --raft off.
	Raft bool
	// Timeout bounds each start. Default 30 s.
	Timeout time.Duration
}

// StartupResult is the cold starts of one mode.
type StartupResult struct {
	Mode string `json:"mode"`
	// Ms are the times of every run, in order, from exec to the first
	// successful Increment, in milliseconds.
	Ms       []float64 `json:"ms"`
	MedianMs float64   `json:"median_ms"`
	P90Ms    float64   `json:"p90_ms"`
	MaxMs    float64   `json:"max_ms"`
	MinMs    float64   `json:"min_ms"`
	// StopMs is the median time from SIGTERM to exit.
	StopMs float64 `json:"stop_median_ms"`
	Met    bool    `json:"met"`
}

// Mode names the configuration.
func (c StartupConfig) Mode() string {
	if c.Raft {
		return "raft (bootstrap, 1 node)"
	}
	return "no raft (--raft off)"
}

// Startup starts `statemesh node` cfg.Runs times, each with a fresh data
// directory, and times each from exec to the first Increment answered
// through its gRPC endpoint; it stops each (SIGTERM) before the next.
// progress, if not nil, gets a line per run.
func Startup(ctx context.Context, cfg StartupConfig, progress func(string)) (StartupResult, error) {
	runs := cmp.Or(cfg.Runs, 20)
	timeout := cmp.Or(cfg.Timeout, 30*time.Second)
	res := StartupResult{Mode: cfg.Mode()}
	var stops []float64
	for i := range runs {
		d, stop, err := startOnce(ctx, cfg, i, timeout)
		if err != nil {
			return res, err
		}
		res.Ms = append(res.Ms, ms(d))
		stops = append(stops, ms(stop))
		if progress != nil {
			progress(fmt.Sprintf("%s: run %d/%d ready in %.1f ms (stopped in %.0f ms)", res.Mode, i+1, runs, ms(d), ms(stop)))
		}
	}
	s := slices.Sorted(slices.Values(res.Ms))
	res.MedianMs = consensusbench.Median(s)
	res.P90Ms = s[min(len(s)-1, max(0, int(math.Ceil(0.9*float64(len(s))))-1))]
	res.MaxMs, res.MinMs = s[len(s)-1], s[0]
	res.StopMs = consensusbench.Median(stops)
	res.Met = res.MaxMs < ms(StartupTarget)
	return res, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// startOnce is one cold start: it returns the time to ready and the time
// to stop.
func startOnce(ctx context.Context, cfg StartupConfig, i int, timeout time.Duration) (ready, stopped time.Duration, err error) {
	name := fmt.Sprintf("s%02d", i+1)
	dataDir := filepath.Join(cfg.Dir, name)
	defer os.RemoveAll(dataDir)
	logPath := filepath.Join(cfg.Dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return 0, 0, err
	}
	defer logf.Close()
	grpcAddr := FreeAddr()
	raft := "off"
	if cfg.Raft {
		raft = FreeAddr()
	}
	args := []string{"node", "--name", name, "--bind", FreeAddr(), "--peer", FreeAddr(), "--admin", "off", "--metrics", "off",
		"--function", cfg.FunctionAddr, "--grpc", grpcAddr, "--http", "off", "--raft", raft,
		"--data-dir", dataDir, "--preset", "local", "--log-level", "warn"}
	// A gRPC connection that retries quickly: the default backoff (1 s
	// after the first refused connection) would be measured instead of
	// the node.
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: time.Millisecond, Multiplier: 1.2, MaxDelay: 5 * time.Millisecond}, MinConnectTimeout: time.Second}))
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	cmd := exec.Command(cfg.Binary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, fmt.Errorf("proxybench: start %s: %w", cfg.Binary, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop := func() time.Duration {
		s := time.Now()
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		return time.Since(s)
	}
	deadline := t0.Add(timeout)
	var last error
	for {
		cctx, cancel := context.WithDeadline(ctx, deadline)
		cctx, cancel2 := context.WithTimeout(cctx, 500*time.Millisecond)
		last = conn.Invoke(cctx, MethodIncrement, &counterpb.ChangeRequest{Id: "startup", Value: 1}, new(counterpb.CounterValue), grpc.WaitForReady(true))
		cancel2()
		cancel()
		if last == nil {
			ready = time.Since(t0)
			break
		}
		select {
		case <-exited:
			return 0, 0, fmt.Errorf("proxybench: node %s exited before serving (%v); log %s: %s", name, cmd.ProcessState, logPath, tail(logPath))
		default:
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			stop()
			return 0, 0, errors.Join(fmt.Errorf("proxybench: node %s not serving within %s; log %s", name, timeout, logPath), last, ctx.Err())
		}
		time.Sleep(time.Millisecond)
	}
	return ready, stop(), nil
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	s := strings.TrimSpace(string(b))
	if len(s) > 500 {
		s = "…" + s[len(s)-500:]
	}
	return s
}

// RenderStartup writes the report kept in bench/results/startup.md.
func RenderStartup(w io.Writer, results []StartupResult, command string, notes []string) {
	fmt.Fprintf(w, "# Startup benchmark: node cold start to serving the function\n\n")
	fmt.Fprintf(w, "A function server (the example counter alone, Go SDK: the register would need Raft) runs throughout in the benchmark's process. Then, once per run, `statemesh node` is started as a child process with a fresh data directory (`--function ADDR --preset local --metrics off --admin off --http off`, `--raft off` or a one-node Raft cluster that bootstraps its shards), and timed from just before exec to the first `Counter/Increment` answered through its `--grpc` address (polled with a gRPC client that reconnects every 1–5 ms). It is then stopped with SIGTERM, before the next run. The counter is a CRDT: with Raft, the time is that of the node serving the counter route, not of its shards electing leaders.\n\n")
	fmt.Fprintf(w, "- Command: `%s`\n- Machine: %s\n- Date: %s\n- Target: every start (the maximum) under %s\n\n", command, consensusbench.LocalMachine(), time.Now().UTC().Format("2006-01-02"), StartupTarget)
	fmt.Fprintf(w, "| mode | runs | median ms | p90 ms | max ms | min ms | stop median ms | target < %d ms |\n|---|---:|---:|---:|---:|---:|---:|---|\n", StartupTarget.Milliseconds())
	for _, r := range results {
		verdict := "met"
		if !r.Met {
			verdict = fmt.Sprintf("NOT met (max %.0f ms, median %.0f ms)", r.MaxMs, r.MedianMs)
		}
		fmt.Fprintf(w, "| %s | %d | %.1f | %.1f | %.1f | %.1f | %.0f | %s |\n", r.Mode, len(r.Ms), r.MedianMs, r.P90Ms, r.MaxMs, r.MinMs, r.StopMs, verdict)
	}
	fmt.Fprintf(w, "\n## Every run (ms, in order)\n\n")
	for _, r := range results {
		xs := make([]string, len(r.Ms))
		for i, x := range r.Ms {
			xs[i] = fmt.Sprintf("%.1f", x)
		}
		fmt.Fprintf(w, "- %s: %s\n", r.Mode, strings.Join(xs, ", "))
	}
	if len(notes) > 0 {
		fmt.Fprintf(w, "\n## Notes\n\n- %s\n", strings.Join(notes, "\n- "))
	}
}
