package consensusbench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/statemesh/statemesh/internal/freeport"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"
)

// The etcd baseline. etcd runs as 3 child processes and is driven through
// its gRPC API with requests encoded by hand (protowire), so that none of
// etcd's modules enter our go.mod. Field numbers are those of
// api/etcdserverpb/rpc.proto (etcd-io/etcd), unchanged since 3.0:
//
//	service KV { rpc Put(PutRequest) returns (PutResponse) }
//	message PutRequest     { bytes key = 1; bytes value = 2; int64 lease = 3; ... }
//	message PutResponse    { ResponseHeader header = 1; mvccpb.KeyValue prev_kv = 2; }
//	message ResponseHeader { uint64 cluster_id = 1; uint64 member_id = 2; int64 revision = 3; uint64 raft_term = 4; }
const (
	etcdPutMethod = "/etcdserverpb.KV/Put"

	putKeyField         = 1 // PutRequest.key
	putValueField       = 2 // PutRequest.value
	putHeaderField      = 1 // PutResponse.header
	headerRevisionField = 3 // ResponseHeader.revision
)

const (
	// etcdMembers is the cluster size.
	etcdMembers = 3
	// etcdQuotaBytes is --quota-backend-bytes: 8 GiB, the largest etcd
	// recommends. The benchmark never compacts, so etcd keeps every
	// revision; the default quota (2 GiB) would raise the NOSPACE alarm,
	// and fail every write, after some millions of 100-byte puts.
	etcdQuotaBytes = 8 << 30
	// etcdStartTimeout bounds the wait for every member to acknowledge a
	// Put after start.
	etcdStartTimeout = 30 * time.Second
	// etcdWaitDelay bounds the wait for a member's output to be copied
	// after it has exited (exec.Cmd.WaitDelay).
	etcdWaitDelay = 5 * time.Second
	// tailBytes of each member's output are kept for error messages.
	tailBytes = 6 << 10
)

// Errors of the etcd baseline.
var (
	ErrEtcdNotFound = errors.New("consensusbench: etcd binary not found")
	ErrBadResponse  = errors.New("consensusbench: malformed etcd PutResponse")
	ErrPortInUse    = errors.New("consensusbench: port in use")
)

// FindEtcd returns the path of the etcd binary: `etcd` in PATH, else
// /usr/bin/etcd (Debian's etcd-server package).
func FindEtcd() (string, error) {
	if p, err := exec.LookPath("etcd"); err == nil {
		return p, nil
	}
	const debian = "/usr/bin/etcd"
	if fi, err := os.Stat(debian); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
		return debian, nil
	}
	return "", fmt.Errorf("%w in PATH nor at /usr/bin/etcd: install it with `apt-get install etcd-server` (Debian/Ubuntu; etcd 3.4)", ErrEtcdNotFound)
}

// EtcdCluster is a 3-member etcd cluster on loopback, run as child
// processes of this one. It implements Target.
//
// Clients: one gRPC connection (HTTP/2, multiplexed) per member, shared by
// all clients, and every Put goes to the next member in turn, whatever
// the client. That is what etcd's own client (clientv3) does with the
// endpoints of all members: one ClientConn whose round-robin balancer
// rotates over a sub-connection per member, RPC by RPC. So about a third
// of the writes reach the leader directly and the rest are forwarded by a
// follower, at every client count, whichever member is the leader (a
// client pinned to one member would make the 1-client result depend on
// the election).
type EtcdCluster struct {
	// Path and Version of the etcd binary ("3.4.23").
	Path    string
	Version string
	// Endpoints are the members' client addresses (host:port).
	Endpoints []string
	// Args are the command-line flags of each member.
	Args [][]string

	dataDir string
	members []*etcdMember
	conns   []*grpc.ClientConn
	next    atomic.Uint64 // round-robin over conns

	closeOnce sync.Once
	closeErr  error
}

var _ Target = (*EtcdCluster)(nil)

type etcdMember struct {
	name string
	cmd  *exec.Cmd
	tail *tailBuffer
	// exited is closed when the process has exited and been waited for;
	// err and byCtx are set before.
	exited chan struct{}
	err    error
	byCtx  bool // the process exited after StartEtcd's ctx ended (and killed it)
}

// StartEtcd starts 3 etcd members, e1 to e3, on 127.0.0.1: member i
// (0-based) serves clients on basePort+2i and peers on basePort+2i+1, so
// the cluster uses the 6 ports from basePort. Their data lives in a fresh
// directory under dir, which Close removes. Their output goes to log, if
// not nil, each line prefixed with the member's name.
//
// Flags (etcd 3.4), beyond names, URLs and data directories:
//
//   - --initial-cluster-state new, a fresh --initial-cluster-token: a new
//     cluster every time;
//   - --quota-backend-bytes 8 GiB: room for every revision of the run
//     (nothing is compacted);
//   - --logger zap --log-outputs stderr: etcd 3.4's default logger
//     (capnslog) is deprecated;
//   - everything else default: a WAL fsynced before each acknowledged
//     write, --snapshot-count 100000, --heartbeat-interval 100 ms,
//     --election-timeout 1000 ms, no auto-compaction.
//
// ETCD_* variables are removed from the members' environment (etcd reads
// its flags from them too). Each member runs in its own process group,
// killed (SIGKILL) by Close, when ctx ends and, on Linux, when this
// process dies. StartEtcd returns once
// every member has acknowledged a Put, or an error, within 30 s, that
// ends with the output of the members that did not.
func StartEtcd(ctx context.Context, dir string, basePort int, log io.Writer) (*EtcdCluster, error) {
	path, err := FindEtcd()
	if err != nil {
		return nil, err
	}
	version, err := etcdVersion(ctx, path)
	if err != nil {
		return nil, err
	}
	if basePort < 1 || basePort+2*etcdMembers-1 > 65535 {
		return nil, fmt.Errorf("%w: etcd base port %d: need %d ports below 65536", ErrInvalidConfig, basePort, 2*etcdMembers)
	}
	for p := basePort; p < basePort+2*etcdMembers; p++ {
		if !freeport.Free(p) {
			return nil, fmt.Errorf("%w: 127.0.0.1:%d, one of etcd's ports %d-%d", ErrPortInUse, p, basePort, basePort+2*etcdMembers-1)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	dataDir, err := os.MkdirTemp(dir, "etcd-")
	if err != nil {
		return nil, err
	}
	c := &EtcdCluster{Path: path, Version: version, dataDir: dataDir}
	var initial []string
	for i := range etcdMembers {
		initial = append(initial, fmt.Sprintf("e%d=http://127.0.0.1:%d", i+1, basePort+2*i+1))
	}
	token := fmt.Sprintf("statemesh-bench-%d-%d", os.Getpid(), time.Now().UnixNano())
	env := etcdEnv()
	var logMu sync.Mutex // the members' lines to log, one at a time
	for i := range etcdMembers {
		name := fmt.Sprintf("e%d", i+1)
		client := fmt.Sprintf("http://127.0.0.1:%d", basePort+2*i)
		peer := fmt.Sprintf("http://127.0.0.1:%d", basePort+2*i+1)
		args := []string{
			"--name", name,
			"--data-dir", filepath.Join(dataDir, name),
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new",
			"--initial-cluster-token", token,
			"--quota-backend-bytes", strconv.Itoa(etcdQuotaBytes),
			"--logger", "zap", "--log-outputs", "stderr",
		}
		c.Args = append(c.Args, args)
		c.Endpoints = append(c.Endpoints, strings.TrimPrefix(client, "http://"))
		m := &etcdMember{name: name, tail: &tailBuffer{max: tailBytes}, exited: make(chan struct{})}
		cmd := exec.CommandContext(ctx, path, args...)
		cmd.Env = env
		cmd.SysProcAttr = sysProcAttr()
		cmd.Cancel = func() error { return killGroup(cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = etcdWaitDelay
		var out io.Writer = m.tail
		if log != nil {
			out = io.MultiWriter(m.tail, &prefixWriter{mu: &logMu, w: log, prefix: name + ": "})
		}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			c.Close()
			return nil, fmt.Errorf("consensusbench: start etcd member %s: %w", name, err)
		}
		m.cmd = cmd
		c.members = append(c.members, m)
		go func() {
			err := cmd.Wait()
			m.err, m.byCtx = err, ctx.Err() != nil
			close(m.exited)
		}()
	}
	for _, ep := range c.Endpoints {
		conn, err := grpc.NewClient("passthrough:///"+ep,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})),
			// Reconnect quickly: members start listening a moment after
			// the first attempts.
			grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second}}),
		)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("consensusbench: gRPC client for etcd at %s: %w", ep, err)
		}
		c.conns = append(c.conns, conn)
	}
	if err := c.waitHealthy(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// waitHealthy waits until every member has acknowledged a Put sent to it.
func (c *EtcdCluster) waitHealthy(ctx context.Context) error {
	deadline := time.Now().Add(etcdStartTimeout)
	healthy := make([]bool, len(c.members))
	lastErr := make([]error, len(c.members))
	for {
		all := true
		for i, m := range c.members {
			if healthy[i] {
				continue
			}
			select {
			case <-m.exited:
				return fmt.Errorf("consensusbench: etcd member %s exited while starting (%v); its output ends with:\n%s", m.name, m.err, m.tail)
			default:
			}
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			err := put(pctx, c.conns[i], "statemesh-bench/health", []byte(m.name))
			cancel()
			if err == nil {
				healthy[i] = true
			} else {
				lastErr[i], all = err, false
			}
		}
		if all {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("consensusbench: waiting for etcd: %w", err)
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			fmt.Fprintf(&b, "consensusbench: etcd not healthy after %s:", etcdStartTimeout)
			for i, m := range c.members {
				if !healthy[i] {
					fmt.Fprintf(&b, "\nmember %s (%s): last Put: %v; its output ends with:\n%s", m.name, c.Endpoints[i], lastErr[i], m.tail)
				}
			}
			return errors.New(b.String())
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Name is SystemEtcd.
func (c *EtcdCluster) Name() string { return SystemEtcd }

// Write puts value at key through the next member in turn (see
// EtcdCluster); the client number plays no part. etcd acknowledges a Put
// once a majority has the entry in its fsynced WAL and the leader has
// applied it.
func (c *EtcdCluster) Write(ctx context.Context, _ int, key string, value []byte) error {
	conn := c.conns[c.next.Add(1)%uint64(len(c.conns))]
	return put(ctx, conn, key, value)
}

// Describe says what was measured, for the report.
func (c *EtcdCluster) Describe() string {
	return fmt.Sprintf("etcd %s (`%s`), %d members as child processes on 127.0.0.1, every acknowledged write fsynced to a majority's WAL; "+
		"flags beyond names and URLs: `--quota-backend-bytes %d` (8 GiB) `--logger zap`, defaults otherwise (`--snapshot-count` 100000, heartbeat 100 ms, election timeout 1000 ms, no auto-compaction). "+
		"Driven through gRPC `KV/Put` (hand-encoded), one connection per member shared by all clients, each Put sent to the next member in turn like clientv3's round-robin balancer; a follower forwards it to the leader.",
		c.Version, c.Path, len(c.members), etcdQuotaBytes)
}

// Close kills the members (SIGKILL to their process groups), closes the
// connections and removes the data directory. It reports
// a member that had exited before, other than because StartEtcd's ctx
// ended.
func (c *EtcdCluster) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.close() })
	return c.closeErr
}

func (c *EtcdCluster) close() error {
	var errs []error
	for _, conn := range c.conns {
		conn.Close()
	}
	for _, m := range c.members {
		select {
		case <-m.exited:
			if !m.byCtx {
				errs = append(errs, fmt.Errorf("consensusbench: etcd member %s exited before Close (%v); its output ends with:\n%s", m.name, m.err, m.tail))
			}
			continue
		default:
		}
		// SIGKILL, not SIGTERM: the data is thrown away, and a leader
		// stopped gracefully tries to hand over leadership first, to
		// followers stopping at the same moment, which takes seconds.
		_ = killGroup(m.cmd.Process.Pid, syscall.SIGKILL)
	}
	for _, m := range c.members {
		<-m.exited
	}
	if err := os.RemoveAll(c.dataDir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// pids are the members' process ids.
func (c *EtcdCluster) pids() []int {
	var out []int
	for _, m := range c.members {
		out = append(out, m.cmd.Process.Pid)
	}
	return out
}

// put sends one Put and checks that the response decodes.
func put(ctx context.Context, conn *grpc.ClientConn, key string, value []byte) error {
	req := appendPutRequest(make([]byte, 0, len(key)+len(value)+8), key, value)
	var resp []byte
	if err := conn.Invoke(ctx, etcdPutMethod, req, &resp); err != nil {
		return err
	}
	return checkPutResponse(resp)
}

// appendPutRequest appends the encoding of PutRequest{key, value}.
func appendPutRequest(b []byte, key string, value []byte) []byte {
	b = protowire.AppendTag(b, putKeyField, protowire.BytesType)
	b = protowire.AppendString(b, key)
	b = protowire.AppendTag(b, putValueField, protowire.BytesType)
	return protowire.AppendBytes(b, value)
}

// checkPutResponse checks that b is a PutResponse with a header whose
// revision is positive (every Put creates a revision; the first key
// makes it 2).
func checkPutResponse(b []byte) error {
	header, ok, err := bytesField(b, putHeaderField)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: no header", ErrBadResponse)
	}
	var rev int64
	for len(header) > 0 {
		num, typ, n := protowire.ConsumeTag(header)
		if n < 0 {
			return fmt.Errorf("%w: header: %v", ErrBadResponse, protowire.ParseError(n))
		}
		header = header[n:]
		if num == headerRevisionField && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(header)
			if n < 0 {
				return fmt.Errorf("%w: header revision: %v", ErrBadResponse, protowire.ParseError(n))
			}
			rev, header = int64(v), header[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, header)
		if n < 0 {
			return fmt.Errorf("%w: header field %d: %v", ErrBadResponse, num, protowire.ParseError(n))
		}
		header = header[n:]
	}
	if rev <= 0 {
		return fmt.Errorf("%w: header revision %d", ErrBadResponse, rev)
	}
	return nil
}

// bytesField returns the last occurrence of length-delimited field num of
// message b, after checking that all of b parses.
func bytesField(b []byte, num protowire.Number) (v []byte, ok bool, err error) {
	for len(b) > 0 {
		n0, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, false, fmt.Errorf("%w: %v", ErrBadResponse, protowire.ParseError(n))
		}
		b = b[n:]
		if n0 == num && typ == protowire.BytesType {
			x, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, false, fmt.Errorf("%w: field %d: %v", ErrBadResponse, num, protowire.ParseError(n))
			}
			v, ok, b = x, true, b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(n0, typ, b)
		if n < 0 {
			return nil, false, fmt.Errorf("%w: field %d: %v", ErrBadResponse, n0, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return v, ok, nil
}

// rawCodec passes encoded messages through: requests are []byte (or
// *[]byte), responses are decoded into a *[]byte. Its name is "proto", so
// the content type is application/grpc+proto, which etcd expects.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case []byte:
		return m, nil
	case *[]byte:
		return *m, nil
	}
	return nil, fmt.Errorf("consensusbench: raw codec cannot marshal %T", v)
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("consensusbench: raw codec cannot unmarshal into %T", v)
	}
	*p = append((*p)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

// etcdVersion runs `etcd --version` and returns the version ("3.4.23").
func etcdVersion(ctx context.Context, path string) (string, error) {
	cmd := exec.CommandContext(ctx, path, "--version")
	cmd.Env = etcdEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("consensusbench: %s --version: %w: %s", path, err, bytes.TrimSpace(out))
	}
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "etcd Version:"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("consensusbench: %s --version: no version in %q", path, out)
}

// etcdEnv is this process's environment without ETCD_* variables, except
// that etcd 3.4 refuses to run on architectures other than amd64 and
// ppc64le unless ETCD_UNSUPPORTED_ARCH names it.
func etcdEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD_") {
			env = append(env, kv)
		}
	}
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "ppc64le" {
		env = append(env, "ETCD_UNSUPPORTED_ARCH="+runtime.GOARCH)
	}
	return env
}

// FreePorts returns the first of n consecutive ports on 127.0.0.1 that
// are free now, below the kernel's ephemeral range (internal/freeport),
// e.g. for StartEtcd's basePort (n = 6). Another process may still take
// one before they are used.
func FreePorts(n int) (int, error) {
	base, err := freeport.Block(n)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrPortInUse, err)
	}
	return base, nil
}

// tailBuffer keeps about the last max bytes written to it.
type tailBuffer struct {
	max int
	mu  sync.Mutex
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > 2*t.max {
		t.b = append([]byte(nil), t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

// String is the tail, from the first whole line.
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.b
	if len(b) > t.max {
		b = b[len(b)-t.max:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	if len(b) == 0 {
		return "(no output)"
	}
	return string(b)
}

// prefixWriter writes whole lines to w, prefixed, holding mu (shared by
// the writers of all members). Write is called by one goroutine (the
// member's output copier). It never fails: a broken log must not stop
// etcd.
type prefixWriter struct {
	mu     *sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte // a partial line
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.buf = append(p.buf, b...)
	i := bytes.LastIndexByte(p.buf, '\n')
	if i < 0 {
		return len(b), nil
	}
	var out []byte
	for _, line := range bytes.SplitAfter(p.buf[:i+1], []byte("\n")) {
		if len(line) > 0 {
			out = append(append(out, p.prefix...), line...)
		}
	}
	p.buf = append(p.buf[:0], p.buf[i+1:]...)
	p.mu.Lock()
	_, _ = p.w.Write(out)
	p.mu.Unlock()
	return len(b), nil
}
