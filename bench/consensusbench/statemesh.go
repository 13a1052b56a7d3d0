package consensusbench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/statemesh/statemesh/node"
	"github.com/statemesh/statemesh/protocol/adminpb"
)

// The statemesh target: 3 `statemesh node` processes on loopback, written
// to through the admin service's Command (an event appended to an
// event-sourced entity through its shard's Raft group).

const (
	// statemeshNodes is the cluster size.
	statemeshNodes = 3
	// statemeshPortsPerNode: gossip, peer gRPC, admin gRPC and Raft (HTTP
	// is off).
	statemeshPortsPerNode = 4
	// DefaultStatemeshShards is the shard count StartStatemesh uses for 0:
	// the node's own default.
	DefaultStatemeshShards = 8
	// statemeshReadyTimeout bounds the wait for a node's "ready" line.
	statemeshReadyTimeout = 30 * time.Second
	// statemeshStartTimeout bounds the wait, after the last node is
	// ready, for every shard to have a replica and a leader on every node
	// and every node to have acknowledged a command.
	statemeshStartTimeout = 120 * time.Second
	// statemeshStopTimeout is how long Close (and the end of
	// StartStatemesh's ctx) waits after SIGTERM before SIGKILL.
	statemeshStopTimeout = 10 * time.Second
	// healthEntity is the entity StartStatemesh writes to through every
	// node before it returns; the benchmark's keys ("k0042") never clash.
	healthEntity = "statemesh-bench/health"
)

// ErrStatemeshNotReady is returned, wrapped, when the nodes do not start
// or do not replicate every shard in time.
var ErrStatemeshNotReady = errors.New("consensusbench: statemesh cluster not ready")

// StatemeshCluster is a 3-node statemesh cluster on loopback, run as child
// processes of this one. It implements Target.
//
// Clients: like EtcdCluster, one gRPC connection per node, shared by all
// clients, and every command goes to the next node in turn. A node that
// does not lead the entity's shard forwards the command to the leader
// (as an etcd follower forwards a Put to its leader).
type StatemeshCluster struct {
	// Binary is the statemesh executable; Version its `version` output.
	Binary  string
	Version string
	// Shards is the --shards of every node.
	Shards int
	// Admin are the nodes' admin gRPC addresses (host:port).
	Admin []string
	// Args are the command-line arguments of each node.
	Args [][]string
	// Dir holds the nodes' data directories (Close removes them) and
	// their output, stdout and stderr, in s1.log to s3.log (kept).
	Dir  string
	Logs []string
	// Startup is the time from the first node's start until every shard
	// was replicated on every node and every node had acknowledged a
	// command.
	Startup time.Duration

	nodes   []*statemeshNode
	conns   []*grpc.ClientConn
	clients []adminpb.AdminClient
	next    atomic.Uint64 // round-robin over clients

	closeOnce sync.Once
	closeErr  error
}

var _ Target = (*StatemeshCluster)(nil)

type statemeshNode struct {
	name    string
	dataDir string
	cmd     *exec.Cmd
	logFile *os.File
	tail    *tailBuffer
	// ready is closed at the first stdout line containing "ready".
	ready chan struct{}
	// exited is closed when the process has exited and been waited for;
	// err and byCtx are set before.
	exited chan struct{}
	err    error
	byCtx  bool
}

// StartStatemesh starts 3 statemesh nodes, s1 to s3, from binary on
// 127.0.0.1 with shards Raft shards (0: DefaultStatemeshShards), in a
// fresh directory under dir, and returns once every node reports every
// shard with a local replica and a known leader and has acknowledged a
// command. Each node runs
//
//	statemesh node --name sN --bind 127.0.0.1:P --peer 127.0.0.1:P+1
//	  --admin 127.0.0.1:P+2 --metrics off --raft 127.0.0.1:P+3
//	  --data-dir DIR/sN --preset local --shards S [--join s1,...]
//
// s1 (no --join) bootstraps the shards; s2 and s3 join it and placement
// adds them to every shard. Each node's output goes to DIR/sN.log and, if
// log is not nil, to log, each line prefixed with the node's name. Each
// node runs in its own process group and gets SIGTERM, then SIGKILL after
// 10 s, from Close and when ctx ends; on Linux the kernel kills it
// (SIGKILL) if this process dies.
func StartStatemesh(ctx context.Context, binary, dir string, shards int, log io.Writer) (*StatemeshCluster, error) {
	if shards == 0 {
		shards = DefaultStatemeshShards
	}
	if shards < 1 {
		return nil, fmt.Errorf("%w: %d shards", ErrInvalidConfig, shards)
	}
	version, err := statemeshVersion(ctx, binary)
	if err != nil {
		return nil, err
	}
	base, err := FreePorts(statemeshNodes * statemeshPortsPerNode)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	runDir, err := os.MkdirTemp(dir, "statemesh-")
	if err != nil {
		return nil, err
	}
	c := &StatemeshCluster{Binary: binary, Version: version, Shards: shards, Dir: runDir}
	start := time.Now()
	var logMu sync.Mutex // the nodes' lines to log, one at a time
	var binds []string
	for i := range statemeshNodes {
		name := fmt.Sprintf("s%d", i+1)
		port := base + statemeshPortsPerNode*i
		addr := func(off int) string { return fmt.Sprintf("127.0.0.1:%d", port+off) }
		n := &statemeshNode{name: name, dataDir: filepath.Join(runDir, name), tail: &tailBuffer{max: tailBytes},
			ready: make(chan struct{}), exited: make(chan struct{})}
		args := []string{"node", "--name", name, "--bind", addr(0), "--peer", addr(1), "--admin", addr(2),
			"--metrics", "off", "--raft", addr(3), "--data-dir", n.dataDir, "--preset", "local", "--shards", strconv.Itoa(shards)}
		if len(binds) > 0 {
			args = append(args, "--join", strings.Join(binds, ","))
		}
		binds = append(binds, addr(0))
		c.Args = append(c.Args, args)
		c.Admin = append(c.Admin, addr(2))
		logPath := filepath.Join(runDir, name+".log")
		c.Logs = append(c.Logs, logPath)
		if n.logFile, err = os.Create(logPath); err != nil {
			c.Close()
			return nil, err
		}
		// stdout and stderr are copied by two goroutines: out serialises
		// them.
		out := &lockedWriter{w: io.MultiWriter(n.tail, n.logFile)}
		if log != nil {
			out.w = io.MultiWriter(n.tail, n.logFile, &prefixWriter{mu: &logMu, w: log, prefix: name + ": "})
		}
		cmd := exec.CommandContext(ctx, binary, args...)
		cmd.SysProcAttr = sysProcAttr()
		cmd.Cancel = func() error { return killGroup(cmd.Process.Pid, syscall.SIGTERM) }
		// After Cancel, Wait kills the node (SIGKILL) if it has not
		// exited within this delay.
		cmd.WaitDelay = statemeshStopTimeout
		cmd.Stdout = &readyWriter{w: out, ready: n.ready}
		cmd.Stderr = out
		if err := cmd.Start(); err != nil {
			c.Close()
			return nil, fmt.Errorf("consensusbench: start statemesh node %s: %w", name, err)
		}
		n.cmd = cmd
		c.nodes = append(c.nodes, n)
		go func() {
			err := cmd.Wait()
			n.err, n.byCtx = err, ctx.Err() != nil
			close(n.exited)
		}()
		// One at a time, as the process tests do: s2 joins a running s1.
		if err := n.waitReady(ctx, logPath); err != nil {
			c.Close()
			return nil, err
		}
	}
	for _, a := range c.Admin {
		conn, err := grpc.NewClient("passthrough:///"+a,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second}}),
		)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("consensusbench: gRPC client for statemesh at %s: %w", a, err)
		}
		c.conns = append(c.conns, conn)
		c.clients = append(c.clients, adminpb.NewAdminClient(conn))
	}
	if err := c.waitReplicated(ctx); err != nil {
		c.Close()
		return nil, err
	}
	c.Startup = time.Since(start)
	return c, nil
}

func (n *statemeshNode) waitReady(ctx context.Context, logPath string) error {
	t := time.NewTimer(statemeshReadyTimeout)
	defer t.Stop()
	select {
	case <-n.ready:
		return nil
	case <-n.exited:
		return fmt.Errorf("%w: node %s exited before it was ready (%v); %s ends with:\n%s", ErrStatemeshNotReady, n.name, n.err, logPath, n.tail)
	case <-t.C:
		return fmt.Errorf("%w: node %s not ready after %s; %s ends with:\n%s", ErrStatemeshNotReady, n.name, statemeshReadyTimeout, logPath, n.tail)
	case <-ctx.Done():
		return fmt.Errorf("consensusbench: waiting for statemesh node %s: %w", n.name, ctx.Err())
	}
}

// waitReplicated waits until every node reports every shard with a local
// replica and a leader, then until every node has acknowledged a command.
func (c *StatemeshCluster) waitReplicated(ctx context.Context) error {
	deadline := time.Now().Add(statemeshStartTimeout)
	state := make([]string, len(c.nodes))
	replicated := func() bool {
		all := true
		for i := range c.nodes {
			ls, err := c.leaders(ctx, i)
			if err != nil {
				state[i], all = err.Error(), false
				continue
			}
			if missing := unreplicated(ls, c.Shards); len(missing) > 0 {
				state[i], all = fmt.Sprintf("shards without a local replica or a leader: %v", missing), false
				continue
			}
			state[i] = "every shard replicated with a leader"
		}
		return all
	}
	healthy := make([]bool, len(c.nodes))
	commanded := func() bool {
		all := true
		for i, n := range c.nodes {
			if healthy[i] {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := c.command(cctx, c.clients[i], healthEntity, []byte(n.name))
			cancel()
			if err == nil {
				healthy[i] = true
			} else {
				state[i], all = "command: "+err.Error(), false
			}
		}
		return all
	}
	for _, cond := range []func() bool{replicated, commanded} {
		for !cond() {
			for _, n := range c.nodes {
				select {
				case <-n.exited:
					return fmt.Errorf("%w: node %s exited while starting (%v); %s ends with:\n%s", ErrStatemeshNotReady, n.name, n.err, c.logOf(n), n.tail)
				default:
				}
			}
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("consensusbench: waiting for statemesh: %w", err)
			}
			if time.Now().After(deadline) {
				var b strings.Builder
				for i, n := range c.nodes {
					fmt.Fprintf(&b, "\nnode %s (admin %s): %s; %s ends with:\n%s", n.name, c.Admin[i], state[i], c.logOf(n), n.tail)
				}
				return fmt.Errorf("%w after %s:%s", ErrStatemeshNotReady, statemeshStartTimeout, b.String())
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// unreplicated lists the shards (1..shards) that ls does not report with a
// local replica and a leader.
func unreplicated(ls []*adminpb.ShardLeader, shards int) []uint64 {
	ok := map[uint64]bool{}
	for _, l := range ls {
		if l.Local && l.ReplicaId != 0 {
			ok[l.Shard] = true
		}
	}
	var missing []uint64
	for s := uint64(1); s <= uint64(shards); s++ {
		if !ok[s] {
			missing = append(missing, s)
		}
	}
	return missing
}

func (c *StatemeshCluster) leaders(ctx context.Context, i int) ([]*adminpb.ShardLeader, error) {
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	r, err := c.clients[i].ShardLeaders(lctx, &adminpb.ShardLeadersRequest{})
	if err != nil {
		return nil, err
	}
	return r.Leaders, nil
}

// LeaderCounts says how many shards each node leads, as node s1 sees it
// now ("s1 16, s2 0, s3 0").
func (c *StatemeshCluster) LeaderCounts(ctx context.Context) (string, error) {
	ls, err := c.leaders(ctx, 0)
	if err != nil {
		return "", err
	}
	count := map[string]int{}
	for _, l := range ls {
		name := l.Node
		if l.ReplicaId == 0 {
			name = "none"
		}
		count[name]++
	}
	var parts []string
	for _, n := range c.nodes {
		parts = append(parts, fmt.Sprintf("%s %d", n.name, count[n.name]))
		delete(count, n.name)
	}
	for _, name := range slices.Sorted(maps.Keys(count)) {
		parts = append(parts, fmt.Sprintf("%s %d", name, count[name]))
	}
	return strings.Join(parts, ", "), nil
}

func (c *StatemeshCluster) logOf(n *statemeshNode) string {
	return filepath.Join(c.Dir, n.name+".log")
}

// Name is SystemStatemesh.
func (c *StatemeshCluster) Name() string { return SystemStatemesh }

// Write appends value as one event to the entity key (type
// node.LogType) through the next node in turn (see StatemeshCluster); the
// client number plays no part. The node acknowledges the command once the
// event is applied by its shard's leader, after a majority has the Raft
// entry in its fsynced log.
func (c *StatemeshCluster) Write(ctx context.Context, _ int, key string, value []byte) error {
	client := c.clients[c.next.Add(1)%uint64(len(c.clients))]
	return c.command(ctx, client, key, value)
}

func (c *StatemeshCluster) command(ctx context.Context, client adminpb.AdminClient, key string, value []byte) error {
	r, err := client.Command(ctx, &adminpb.CommandRequest{Type: node.LogType, Id: key, Command: value})
	if err != nil {
		return err
	}
	if r.Seq == 0 {
		return fmt.Errorf("consensusbench: statemesh acknowledged a command on %q with sequence number 0", key)
	}
	return nil
}

// Describe says what was measured, for the report.
func (c *StatemeshCluster) Describe() string {
	return fmt.Sprintf("%s (`%s`), %d nodes as child processes on 127.0.0.1 (`statemesh node --preset local --metrics off --shards %d`, defaults otherwise), data directories beside etcd's. "+
		"Each write is an admin gRPC `Command` of type `%s` that appends the value as one event to the event-sourced entity named by the key, through the Raft group (Dragonboat) of the entity's shard: "+
		"a linearizable read of the entity, then a proposal with the expected sequence number, acknowledged once applied, the Raft entry fsynced to a majority's log. "+
		"One connection per node shared by all clients, each command sent to the next node in turn; a node that does not lead the entity's shard forwards the command to the leader.",
		c.Version, c.Binary, len(c.nodes), c.Shards, node.LogType)
}

// Close closes the connections, stops the nodes one at a time, s3 first
// (SIGTERM to its process group, SIGKILL if it still runs 10 s later),
// and removes their data directories; their logs stay in Dir. It reports
// a node that had exited before, other than because StartStatemesh's ctx
// ended, and one that had to be killed or exited with an error when
// stopped.
func (c *StatemeshCluster) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.close() })
	return c.closeErr
}

func (c *StatemeshCluster) close() error {
	var errs []error
	for _, conn := range c.conns {
		conn.Close()
	}
	// One node at a time, the last started first, each leaving a mesh
	// whose other members still run: stopped all at once, a node may
	// find no live member to take its leave broadcast, wait for it in
	// vain and exit with an error ("timeout waiting for leave
	// broadcast").
	for _, n := range slices.Backward(c.nodes) {
		select {
		case <-n.exited:
			if !n.byCtx {
				errs = append(errs, fmt.Errorf("consensusbench: statemesh node %s exited before Close (%v); see %s", n.name, n.err, c.logOf(n)))
			}
			continue
		default:
		}
		_ = killGroup(n.cmd.Process.Pid, syscall.SIGTERM)
		t := time.NewTimer(statemeshStopTimeout)
		select {
		case <-n.exited:
			t.Stop()
			if n.err != nil && !n.byCtx {
				errs = append(errs, fmt.Errorf("consensusbench: statemesh node %s stopped with %v; see %s", n.name, n.err, c.logOf(n)))
			}
		case <-t.C:
			_ = killGroup(n.cmd.Process.Pid, syscall.SIGKILL)
			<-n.exited
			errs = append(errs, fmt.Errorf("consensusbench: statemesh node %s still running %s after SIGTERM: killed; see %s", n.name, statemeshStopTimeout, c.logOf(n)))
		}
	}
	for _, n := range c.nodes {
		if n.logFile != nil {
			n.logFile.Close()
		}
		if err := os.RemoveAll(n.dataDir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// pids are the nodes' process ids.
func (c *StatemeshCluster) pids() []int {
	var out []int
	for _, n := range c.nodes {
		out = append(out, n.cmd.Process.Pid)
	}
	return out
}

// ClusterCPU is the CPU time (user and system) the processes of t, a
// *StatemeshCluster or an *EtcdCluster, have used so far, from
// /proc/PID/stat; ok is false for other targets, or where /proc cannot be
// read.
func ClusterCPU(t Target) (cpu time.Duration, ok bool) {
	var pids []int
	switch c := t.(type) {
	case *StatemeshCluster:
		pids = c.pids()
	case *EtcdCluster:
		pids = c.pids()
	default:
		return 0, false
	}
	for _, pid := range pids {
		d, err := ProcessCPU(pid)
		if err != nil {
			return 0, false
		}
		cpu += d
	}
	return cpu, true
}

// ProcessCPU is the CPU time (user and system) process pid has used so
// far, from /proc/PID/stat (Linux; 100 clock ticks a second, USER_HZ on
// every Linux architecture Go supports).
func ProcessCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// fields are counted after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("consensusbench: /proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("consensusbench: /proc/%d/stat: %d fields", pid, len(f)+2)
	}
	var ticks int64
	for _, s := range f[11:13] {
		t, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("consensusbench: /proc/%d/stat: %w", pid, err)
		}
		ticks += t
	}
	const hz = 100
	return time.Duration(ticks) * time.Second / hz, nil
}

// statemeshVersion runs `binary version` ("statemesh 0.1.0-dev").
func statemeshVersion(ctx context.Context, binary string) (string, error) {
	out, err := exec.CommandContext(ctx, binary, "version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("consensusbench: %s version: %w: %s", binary, err, bytes.TrimSpace(out))
	}
	v := strings.TrimSpace(string(out))
	if !strings.HasPrefix(v, "statemesh ") {
		return "", fmt.Errorf("consensusbench: %s version: %q is not statemesh's", binary, v)
	}
	return v, nil
}

// lockedWriter serialises writes from several goroutines to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// readyWriter passes a node's stdout to w and closes ready at the first
// line that contains "ready". Write is called by one goroutine (the
// stdout copier). It never fails: a broken log must not stop the node.
type readyWriter struct {
	w     io.Writer
	ready chan struct{}
	seen  bool
	line  []byte // a partial line, until ready
}

func (r *readyWriter) Write(b []byte) (int, error) {
	_, _ = r.w.Write(b)
	if r.seen {
		return len(b), nil
	}
	r.line = append(r.line, b...)
	for {
		i := bytes.IndexByte(r.line, '\n')
		if i < 0 {
			return len(b), nil
		}
		if bytes.Contains(r.line[:i], []byte("ready")) {
			r.seen, r.line = true, nil
			close(r.ready)
			return len(b), nil
		}
		r.line = r.line[i+1:]
	}
}
