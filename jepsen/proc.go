package jepsen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/statemesh/statemesh/internal/freeport"
	"github.com/statemesh/statemesh/jepsen/netns"
	"github.com/statemesh/statemesh/protocol/adminpb"
)

// procCluster runs every node as a real `statemesh node` process with its
// own `statemesh functions` sidecar: on loopback (backend local) or each
// in its own network namespace (backend netns). Kill is SIGKILL, Pause
// SIGSTOP; the clock-skew fault goes through the node's admin service.
type procCluster struct {
	backend string
	cfg     ClusterConfig
	env     procEnv
	client  *http.Client

	mu    sync.Mutex
	nodes []*procNode
}

// procEnv is where the processes run: how they are started, which
// addresses they bind, how the harness reaches them, how links are cut.
type procEnv interface {
	// addrs returns node i's addresses: gossip, peer, admin, metrics, raft,
	// http, function.
	addrs(i int) ([7]string, error)
	command(i int, name string, args ...string) *exec.Cmd
	dial(ctx context.Context, network, addr string) (net.Conn, error)
	cut(a, b int) error
	// loss drops a fraction of the messages between nodes until heal.
	loss(p float64) error
	heal() error
	caps() Caps
	close() error
}

type procNode struct {
	i      int
	info   NodeInfo
	addrs  [7]string
	log    *os.File
	node   *exec.Cmd // nil while killed
	fn     *exec.Cmd
	done   chan struct{} // closed when node exits
	fnDone chan struct{} // closed when fn exits
	args   []string
}

const (
	aGossip = iota
	aPeer
	aAdmin
	aMetrics
	aRaft
	aHTTP
	aFunction
)

func startProc(ctx context.Context, backend string, cfg ClusterConfig, env procEnv) (_ *procCluster, err error) {
	if cfg.Binary == "" {
		return nil, errors.New("jepsen: the " + backend + " backend needs the statemesh binary (ClusterConfig.Binary)")
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DialContext: env.dial}
	c := &procCluster{backend: backend, cfg: cfg, env: env, client: &http.Client{Transport: tr}}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()
	logs := filepath.Join(cfg.Dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return nil, err
	}
	var seeds []string
	for i := range cfg.Nodes {
		name := nodeName(i)
		addrs, err := env.addrs(i)
		if err != nil {
			return nil, err
		}
		f, err := os.OpenFile(filepath.Join(logs, name+".log"), os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		pn := &procNode{i: i, info: NodeInfo{Name: name, Region: cfg.region(i), HTTP: "http://" + addrs[aHTTP]}, addrs: addrs, log: f}
		c.nodes = append(c.nodes, pn)
		pn.fn = env.command(i, cfg.Binary, "functions", "--listen", addrs[aFunction])
		pn.fn.Stdout, pn.fn.Stderr = f, f
		if err := pn.fn.Start(); err != nil {
			return nil, fmt.Errorf("jepsen: start %s's functions: %w", name, err)
		}
		pn.fnDone = waitDone(pn.fn)
		pn.args = []string{"node", "--name", name, "--region", pn.info.Region, "--preset", "local",
			"--bind", addrs[aGossip], "--peer", addrs[aPeer], "--admin", addrs[aAdmin], "--metrics", addrs[aMetrics],
			"--raft", addrs[aRaft], "--http", addrs[aHTTP], "--grpc", "off", "--function", addrs[aFunction],
			"--data-dir", filepath.Join(cfg.Dir, "data", name), "--durability", durability(cfg.Sync).String(), "--log-level", "info"}
		if len(seeds) == 0 {
			pn.args = append(pn.args, "--bootstrap", "true")
		} else {
			pn.args = append(pn.args, "--bootstrap", "false", "--join", strings.Join(seeds, ","))
		}
		// The ports were free when chosen; if another process took one
		// before the node bound it, start again on new ones.
		for attempt := 0; ; attempt++ {
			err := c.start(ctx, pn)
			if err == nil {
				break
			}
			if attempt == 2 || !logSays(f, "address already in use") {
				return nil, err
			}
			cfg.Progress("%s: a port was taken; starting on others", name)
			c.mu.Lock()
			pn.node = nil
			c.mu.Unlock()
			if pn.addrs, err = env.addrs(i); err != nil {
				return nil, err
			}
			pn.info.HTTP = "http://" + pn.addrs[aHTTP]
			pn.args = setFlags(pn.args, "--bind", pn.addrs[aGossip], "--peer", pn.addrs[aPeer], "--admin", pn.addrs[aAdmin],
				"--metrics", pn.addrs[aMetrics], "--raft", pn.addrs[aRaft], "--http", pn.addrs[aHTTP])
		}
		seeds = append(seeds, pn.addrs[aGossip])
		cfg.Progress("node %s up (%d/%d), pid %d", name, i+1, cfg.Nodes, pn.node.Process.Pid)
	}
	// A restarted node joins through every other and never bootstraps.
	for _, pn := range c.nodes {
		pn.args = append(dropFlag(dropFlag(pn.args, "--bootstrap"), "--join"),
			"--bootstrap", "false", "--join", strings.Join(otherSeeds(seeds, pn.addrs[aGossip]), ","))
	}
	return c, nil
}

// dropFlag removes the first occurrence of flag and its value from args.
func dropFlag(args []string, flag string) []string {
	if k := slices.Index(args, flag); k >= 0 && k+1 < len(args) {
		return slices.Delete(args, k, k+2)
	}
	return args
}

// waitDone reaps a started command; the channel closes when it has
// exited.
func waitDone(cmd *exec.Cmd) chan struct{} {
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	return done
}

// otherSeeds returns seeds without self.
func otherSeeds(seeds []string, self string) []string {
	var out []string
	for _, s := range seeds {
		if s != self {
			out = append(out, s)
		}
	}
	return out
}

// setFlags replaces the values of the given flags in args.
func setFlags(args []string, kv ...string) []string {
	out := append([]string(nil), args...)
	for k := 0; k+1 < len(kv); k += 2 {
		for j := 0; j+1 < len(out); j++ {
			if out[j] == kv[k] {
				out[j+1] = kv[k+1]
			}
		}
	}
	return out
}

// logSays reports whether the last 8 KiB of a node's log contain s.
func logSays(f *os.File, s string) bool {
	st, err := f.Stat()
	if err != nil {
		return false
	}
	off := max(0, st.Size()-8192)
	b := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		return false
	}
	return strings.Contains(string(b), s)
}

func (c *procCluster) start(ctx context.Context, pn *procNode) error {
	fmt.Fprintf(pn.log, "==== jepsen: starting %s at %s\n", pn.info.Name, time.Now().UTC().Format(time.RFC3339Nano))
	cmd := c.env.command(pn.i, c.cfg.Binary, pn.args...)
	cmd.Stdout, cmd.Stderr = pn.log, pn.log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("jepsen: start %s: %w", pn.info.Name, err)
	}
	done := waitDone(cmd)
	c.mu.Lock()
	pn.node, pn.done = cmd, done
	c.mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	go func() {
		select {
		case <-done:
			cancel() // it exited: stop waiting
		case <-wctx.Done():
		}
	}()
	if err := waitHTTP(wctx, c.client, pn.info.HTTP); err != nil {
		return fmt.Errorf("jepsen: %s did not start (see its log): %w", pn.info.Name, err)
	}
	return nil
}

func (c *procCluster) Backend() string { return c.backend }

func (c *procCluster) Nodes() []NodeInfo {
	out := make([]NodeInfo, len(c.nodes))
	for i, pn := range c.nodes {
		out[i] = pn.info
	}
	return out
}

func (c *procCluster) Caps() Caps { return c.env.caps() }

func (c *procCluster) HTTPClient() *http.Client { return c.client }

func (c *procCluster) index(name string) (*procNode, error) {
	for _, pn := range c.nodes {
		if pn.info.Name == name {
			return pn, nil
		}
	}
	return nil, fmt.Errorf("jepsen: no node %q", name)
}

func (c *procCluster) Cut(pairs [][2]string) error {
	for _, p := range pairs {
		a, err := c.index(p[0])
		if err != nil {
			return err
		}
		b, err := c.index(p[1])
		if err != nil {
			return err
		}
		if err := c.env.cut(a.i, b.i); err != nil {
			return err
		}
	}
	return nil
}

func (c *procCluster) Heal() error { return c.env.heal() }

func (c *procCluster) signal(name string, sig syscall.Signal) (*procNode, error) {
	pn, err := c.index(name)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	cmd := pn.node
	c.mu.Unlock()
	if cmd == nil {
		return pn, nil
	}
	if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return nil, fmt.Errorf("jepsen: %v %s: %w", sig, name, err)
	}
	return pn, nil
}

func (c *procCluster) Kill(ctx context.Context, name string) error {
	pn, err := c.signal(name, syscall.SIGKILL)
	if err != nil {
		return err
	}
	c.mu.Lock()
	done := pn.done
	pn.node = nil
	c.mu.Unlock()
	if done != nil {
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (c *procCluster) Restart(ctx context.Context, name string) error {
	pn, err := c.index(name)
	if err != nil {
		return err
	}
	c.mu.Lock()
	running := pn.node != nil
	c.mu.Unlock()
	if running {
		return nil
	}
	return c.start(ctx, pn)
}

func (c *procCluster) Pause(name string) error {
	if !c.env.caps().Pause {
		return unsupported(c.backend, "pause a node", "")
	}
	_, err := c.signal(name, syscall.SIGSTOP)
	return err
}

func (c *procCluster) Resume(name string) error {
	_, err := c.signal(name, syscall.SIGCONT)
	return err
}

func (c *procCluster) SetClockOffset(ctx context.Context, name string, d time.Duration) error {
	pn, err := c.index(name)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient("passthrough:///"+pn.addrs[aAdmin], grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return c.env.dial(ctx, "tcp", a) }))
	if err != nil {
		return err
	}
	defer conn.Close()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := adminpb.NewAdminClient(conn).SetClockOffset(rctx, &adminpb.SetClockOffsetRequest{OffsetNanos: int64(d)}); err != nil {
		return fmt.Errorf("jepsen: clock offset of %s: %w", name, err)
	}
	return nil
}

func (c *procCluster) SetLinkFaults(delay time.Duration, loss float64) error {
	if delay > 0 || !c.env.caps().Loss {
		return unsupported(c.backend, "delay messages", "this kernel has no netem")
	}
	return c.env.loss(loss)
}

func (c *procCluster) Close() error {
	var errs []error
	_ = c.env.heal()
	for _, pn := range c.nodes {
		for _, cmd := range []*exec.Cmd{pn.node, pn.fn} {
			if cmd != nil && cmd.Process != nil {
				_ = cmd.Process.Signal(syscall.SIGCONT)
				_ = cmd.Process.Kill()
			}
		}
		for _, done := range []chan struct{}{pn.done, pn.fnDone} {
			if done != nil {
				select {
				case <-done:
				case <-time.After(10 * time.Second):
				}
			}
		}
	}
	for _, pn := range c.nodes {
		errs = append(errs, pn.log.Close())
	}
	c.client.CloseIdleConnections()
	errs = append(errs, c.env.close())
	return errors.Join(errs...)
}

// ---- local: loopback ----

type localEnv struct{}

func startLocal(ctx context.Context, cfg ClusterConfig) (Cluster, error) {
	return startProc(ctx, "local", cfg, localEnv{})
}

func (localEnv) addrs(int) ([7]string, error) {
	var a [7]string
	for k := range a {
		var err error
		if a[k], err = freeport.Addr(); err != nil {
			return a, err
		}
	}
	return a, nil
}

func (localEnv) command(_ int, name string, args ...string) *exec.Cmd {
	return exec.Command(name, args...)
}

func (localEnv) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

func (localEnv) cut(int, int) error {
	return unsupported("local", "cut links", "every node shares the loopback interface; use netns")
}
func (localEnv) loss(float64) error {
	return unsupported("local", "drop messages", "every node shares the loopback interface; use netns")
}
func (localEnv) heal() error  { return nil }
func (localEnv) caps() Caps   { return Caps{Kill: true, Pause: true, ClockSkew: true} }
func (localEnv) close() error { return nil }

// ---- netns: one network namespace per node ----

type netnsEnv struct{ net *netns.Net }

func startNetns(ctx context.Context, cfg ClusterConfig) (Cluster, error) {
	if err := netns.Available(); err != nil {
		return nil, err
	}
	sweepNetns(cfg.Progress)
	n, err := netns.Create(ctx, netnsPrefix(os.Getpid(), time.Now().UnixNano()), cfg.Nodes)
	if err != nil {
		return nil, err
	}
	cfg.Progress("network namespaces %v on a bridge", n.Names())
	return startProc(ctx, "netns", cfg, &netnsEnv{net: n})
}

// netnsPrefix names a run's namespaces: "sj" (the harness's runs and
// nothing else), the harness's pid in base 36 (at most 5 digits), and one
// character that differs between runs of one process, so sweepNetns can
// tell a dead harness's leftovers from a live one's.
func netnsPrefix(pid int, nonce int64) string {
	const digits = "0123456789abcdefghijklmnopqrstuvwxyz"
	return "sj" + strconv.FormatInt(int64(pid), 36) + string(digits[nonce%36])
}

// sweepNetns deletes the namespaces of harness runs whose process is gone
// (killed before it could clean up).
func sweepNetns(progress func(string, ...any)) {
	prefixes, err := netns.Prefixes()
	if err != nil {
		return
	}
	for _, p := range prefixes {
		rest, ok := strings.CutPrefix(p, "sj")
		if !ok || len(rest) < 2 {
			continue
		}
		pid, err := strconv.ParseInt(rest[:len(rest)-1], 36, 64)
		if err != nil {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // that harness still runs
		}
		if err := netns.Cleanup(p); err == nil {
			progress("removed the namespaces %s-* of a harness run that died (pid %d)", p, pid)
		}
	}
}

func (e *netnsEnv) addrs(i int) ([7]string, error) {
	ip := e.net.Addr(i + 1)
	var a [7]string
	for k := range 6 {
		a[k] = net.JoinHostPort(ip, strconv.Itoa(7946+k))
	}
	// The function is the node's sidecar: loopback inside its namespace.
	a[aFunction] = "127.0.0.1:8080"
	return a, nil
}

func (e *netnsEnv) command(i int, name string, args ...string) *exec.Cmd {
	return e.net.Command(context.Background(), i+1, name, args...)
}

func (e *netnsEnv) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return e.net.DialContext(ctx, network, addr)
}

func (e *netnsEnv) cut(a, b int) error   { return e.net.Cut(a+1, b+1) }
func (e *netnsEnv) heal() error          { return e.net.Heal() }
func (e *netnsEnv) loss(p float64) error { return e.net.SetLoss(p) }
func (e *netnsEnv) caps() Caps {
	return Caps{Partition: true, Kill: true, Pause: true, ClockSkew: true, Loss: true}
}
func (e *netnsEnv) close() error { return e.net.Close() }
