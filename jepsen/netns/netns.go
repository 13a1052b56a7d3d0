// Package netns builds the network of the Jepsen harness's netns backend:
// every statemesh node runs as a real process in its own Linux network
// namespace, the namespaces are joined by a bridge, and faults are injected
// with iptables rules and tc qdiscs inside the node namespaces.
//
// Layout for Create(ctx, "sm3f2a", 3):
//
//	sm3f2a-hub   bridge br0, 10.X.Y.1/24, veth ends v1..v3 enslaved to br0
//	sm3f2a-n1    eth0 10.X.Y.11/24 (peer of v1 in the hub)
//	sm3f2a-n2    eth0 10.X.Y.12/24
//	sm3f2a-n3    eth0 10.X.Y.13/24
//
// 10.X.Y.0/24 is derived from the prefix. Nothing is configured in the
// caller's (root) namespace apart from the named namespaces themselves:
// the harness reaches the nodes with Net.DialContext, which connects from
// the hub namespace.
//
// Nodes are numbered from 1, as in their namespace names, everywhere in
// this package (Addr, Command, Cut, SetNetem, ...); an index out of range
// is a programming error and panics, except in Command, whose Start fails.
//
// Everything here shells out to ip(8), iptables(8) and tc(8) and needs
// root; Available says whether this machine can run it.
package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Errors.
var (
	// ErrUnavailable wraps every reason Available gives.
	ErrUnavailable = errors.New("netns: backend unavailable")
	// ErrNetemUnsupported is returned by SetNetem when the kernel has no
	// netem qdisc (sch_netem not built or not loadable).
	ErrNetemUnsupported = errors.New("netns: tc netem not supported by this kernel")
	// ErrClosed is returned by methods called after Close.
	ErrClosed = errors.New("netns: closed")
)

const (
	// netnsRunDir is where ip(8) keeps named namespaces.
	netnsRunDir = "/run/netns"
	// partChain is the iptables chain, in each node namespace's filter
	// table, that holds the partition rules; INPUT jumps to it.
	partChain = "SM-PART"
	// MaxPrefix is the longest prefix Create accepts.
	MaxPrefix = 8
	// MaxNodes is the most nodes one Net can have (host part 10+i <= 254).
	MaxNodes = 244
	bridge   = "br0"
	nodeIf   = "eth0"
)

// Net is one run's namespaces. Its methods are safe for concurrent use.
type Net struct {
	prefix string
	hub    string
	nodes  []string // namespace names, nodes[i-1] for node i
	subnet [3]byte  // 10.X.Y

	mu struct {
		sync.Mutex
		closed bool
	}
}

// Create makes the hub namespace prefix-hub with a bridge and n node
// namespaces prefix-n1..prefix-nN, each wired to the bridge by a veth pair.
// prefix must be 1..MaxPrefix characters of [a-zA-Z0-9_] and unique per
// run; creating fails if any of the namespaces already exists. On error
// everything Create made is removed again (and nothing else).
func Create(ctx context.Context, prefix string, n int) (*Net, error) {
	if err := validPrefix(prefix); err != nil {
		return nil, err
	}
	if n < 1 || n > MaxNodes {
		return nil, fmt.Errorf("netns: node count %d not in [1, %d]", n, MaxNodes)
	}
	nt := &Net{prefix: prefix, hub: prefix + "-hub", subnet: subnetFor(prefix)}
	for i := 1; i <= n; i++ {
		nt.nodes = append(nt.nodes, fmt.Sprintf("%s-n%d", prefix, i))
	}

	var created []string // namespaces this call made, to undo on error
	fail := func(err error) (*Net, error) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		// Nodes first: their veths go with them, then the hub.
		for i := len(created) - 1; i >= 0; i-- {
			if derr := run(cctx, "ip", "netns", "del", created[i]); derr != nil {
				err = errors.Join(err, derr)
			}
		}
		return nil, err
	}

	if err := run(ctx, "ip", "netns", "add", nt.hub); err != nil {
		return fail(err)
	}
	created = append(created, nt.hub)
	for _, args := range [][]string{
		{"ip", "-n", nt.hub, "link", "set", "lo", "up"},
		{"ip", "-n", nt.hub, "link", "add", bridge, "type", "bridge"},
		{"ip", "-n", nt.hub, "addr", "add", nt.ip(1) + "/24", "dev", bridge},
		{"ip", "-n", nt.hub, "link", "set", bridge, "up"},
	} {
		if err := run(ctx, args[0], args[1:]...); err != nil {
			return fail(err)
		}
	}

	for i, ns := range nt.nodes {
		if err := run(ctx, "ip", "netns", "add", ns); err != nil {
			return fail(err)
		}
		created = append(created, ns)
		peer := "v" + strconv.Itoa(i+1) // lives in the hub: no clash across runs
		for _, args := range [][]string{
			{"ip", "-n", ns, "link", "set", "lo", "up"},
			{"ip", "-n", ns, "link", "add", nodeIf, "type", "veth", "peer", "name", peer, "netns", nt.hub},
			{"ip", "-n", nt.hub, "link", "set", peer, "master", bridge, "up"},
			{"ip", "-n", ns, "addr", "add", nt.Addr(i+1) + "/24", "dev", nodeIf},
			{"ip", "-n", ns, "link", "set", nodeIf, "up"},
			{"ip", "netns", "exec", ns, "iptables", "-w", "-N", partChain},
			{"ip", "netns", "exec", ns, "iptables", "-w", "-I", "INPUT", "-j", partChain},
		} {
			if err := run(ctx, args[0], args[1:]...); err != nil {
				return fail(err)
			}
		}
	}
	return nt, nil
}

func validPrefix(p string) error {
	if p == "" || len(p) > MaxPrefix {
		return fmt.Errorf("netns: prefix %q must be 1..%d characters", p, MaxPrefix)
	}
	for _, c := range p {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return fmt.Errorf("netns: prefix %q: only [a-zA-Z0-9_] allowed", p)
		}
	}
	return nil
}

// subnetFor derives 10.X.Y from the prefix. The namespaces of different
// runs are isolated anyway (each has its own hub); distinct subnets just
// keep logs and packet captures unambiguous.
func subnetFor(prefix string) [3]byte {
	h := fnv.New32a()
	h.Write([]byte(prefix))
	s := h.Sum32()
	return [3]byte{10, byte(s >> 8), byte(s)}
}

func (n *Net) ip(host int) string {
	return fmt.Sprintf("%d.%d.%d.%d", n.subnet[0], n.subnet[1], n.subnet[2], host)
}

// Len is the number of nodes.
func (n *Net) Len() int { return len(n.nodes) }

// Addr is node i's IPv4 address (i from 1 to Len). It panics on an index
// out of range.
func (n *Net) Addr(i int) string {
	n.check(i)
	return n.ip(10 + i)
}

// HubAddr is the bridge's address in the hub namespace, the source address
// of connections made with DialContext.
func (n *Net) HubAddr() string { return n.ip(1) }

// Names are the node namespaces' names, node i at index i-1. The hub's is
// Hub().
func (n *Net) Names() []string { return append([]string(nil), n.nodes...) }

// Hub is the hub namespace's name.
func (n *Net) Hub() string { return n.hub }

func (n *Net) check(i int) {
	if i < 1 || i > len(n.nodes) {
		panic(fmt.Sprintf("netns: node %d not in [1, %d]", i, len(n.nodes)))
	}
}

// Command returns a command running name with args inside node i's
// namespace, as `ip netns exec NS name args...`. ip(8) execs the program
// in place (it forks only in batch mode), so cmd.Process is the program
// itself: signals sent to it (SIGKILL, SIGSTOP, SIGCONT) reach the program
// and, with exec.CommandContext, cancelling ctx kills it. The program also
// gets a private mount namespace with /sys remounted for the netns. Set
// Env, Dir, Stdout etc. on the result as usual. An index out of range
// makes Start fail.
func (n *Net) Command(ctx context.Context, i int, name string, args ...string) *exec.Cmd {
	if i < 1 || i > len(n.nodes) {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Err = fmt.Errorf("netns: node %d not in [1, %d]", i, len(n.nodes))
		return cmd
	}
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.nodes[i-1], name}, args...)...)
}

// DialContext connects from the hub namespace, which reaches every node
// (unless a node's own rules drop the hub). Use it as
// http.Transport.DialContext, or for gRPC as
//
//	grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
//		return nt.DialContext(ctx, "tcp", a)
//	})
//
// The socket is made on a dedicated, locked OS thread switched into the hub
// namespace and back; a connected socket stays in the namespace it was made
// in. addr should be an IP literal: a host name would be resolved by
// goroutines outside the hub namespace.
func (n *Net) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if n.isClosed() {
		return nil, ErrClosed
	}
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	// A goroutine of our own, so that if the thread can't be switched
	// back it dies locked (the runtime then discards the thread) without
	// stranding the caller's goroutine in the hub namespace.
	go func() {
		c, err := dialIn(ctx, filepath.Join(netnsRunDir, n.hub), network, addr)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

func dialIn(ctx context.Context, nsPath, network, addr string) (net.Conn, error) {
	target, err := os.Open(nsPath)
	if err != nil {
		return nil, fmt.Errorf("netns: open %s: %w", nsPath, err)
	}
	defer target.Close()

	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("netns: open own netns: %w", err)
	}
	defer orig.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("netns: setns %s: %w", nsPath, err)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if rerr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); rerr != nil {
		// Leave the thread locked: it ends with this goroutine.
		if c != nil {
			c.Close()
		}
		return nil, fmt.Errorf("netns: setns back: %w", rerr)
	}
	runtime.UnlockOSThread()
	return c, err
}

// Cut drops all traffic between nodes a and b, both ways: node a's INPUT
// drops packets from b and node b's from a. Cutting an already cut pair is
// a no-op. Heal undoes every Cut.
func (n *Net) Cut(a, b int) error {
	n.check(a)
	n.check(b)
	if a == b {
		return fmt.Errorf("netns: cannot cut node %d from itself", a)
	}
	if n.isClosed() {
		return ErrClosed
	}
	ctx := context.Background()
	for _, p := range [][2]int{{a, b}, {b, a}} {
		ns, src := n.nodes[p[0]-1], n.Addr(p[1])
		rule := []string{partChain, "-s", src, "-j", "DROP"}
		check := append([]string{"netns", "exec", ns, "iptables", "-w", "-C"}, rule...)
		if run(ctx, "ip", check...) == nil {
			continue // already there
		}
		add := append([]string{"netns", "exec", ns, "iptables", "-w", "-A"}, rule...)
		if err := run(ctx, "ip", add...); err != nil {
			return err
		}
	}
	return nil
}

// Isolate cuts node i from every other node.
func (n *Net) Isolate(i int) error {
	for j := 1; j <= len(n.nodes); j++ {
		if j != i {
			if err := n.Cut(i, j); err != nil {
				return err
			}
		}
	}
	return nil
}

// Heal removes every partition rule in every node namespace. It leaves tc
// link faults alone (see ClearNetem).
func (n *Net) Heal() error {
	if n.isClosed() {
		return ErrClosed
	}
	var errs []error
	for _, ns := range n.nodes {
		errs = append(errs, run(context.Background(), "ip", "netns", "exec", ns, "iptables", "-w", "-F", partChain))
	}
	return errors.Join(errs...)
}

// SetNetem replaces node i's egress qdisc on eth0 with netem: every packet
// it sends is delayed by delay±jitter and lost with probability lossPct
// percent. Apply it to both ends to affect both directions. It returns an
// error wrapping ErrNetemUnsupported where the kernel lacks netem.
func (n *Net) SetNetem(i int, delay, jitter time.Duration, lossPct float64) error {
	n.check(i)
	if n.isClosed() {
		return ErrClosed
	}
	if delay < 0 || jitter < 0 || lossPct < 0 || lossPct > 100 {
		return fmt.Errorf("netns: bad netem parameters delay=%v jitter=%v loss=%v%%", delay, jitter, lossPct)
	}
	args := []string{"netns", "exec", n.nodes[i-1], "tc", "qdisc", "replace", "dev", nodeIf, "root", "netem",
		"delay", usec(delay)}
	if jitter > 0 {
		args = append(args, usec(jitter))
	}
	if lossPct > 0 {
		args = append(args, "loss", strconv.FormatFloat(lossPct, 'f', -1, 64)+"%")
	}
	err := run(context.Background(), "ip", args...)
	if err != nil && strings.Contains(err.Error(), "qdisc kind is unknown") {
		return fmt.Errorf("%w: %v", ErrNetemUnsupported, err)
	}
	return err
}

func usec(d time.Duration) string { return strconv.FormatInt(d.Microseconds(), 10) + "us" }

// ClearNetem restores node i's default qdisc. Clearing a node without
// netem is a no-op.
func (n *Net) ClearNetem(i int) error {
	n.check(i)
	if n.isClosed() {
		return ErrClosed
	}
	err := run(context.Background(), "ip", "netns", "exec", n.nodes[i-1], "tc", "qdisc", "del", "dev", nodeIf, "root")
	if err != nil && (strings.Contains(err.Error(), "handle of zero") || strings.Contains(err.Error(), "No such file")) {
		return nil // nothing to delete
	}
	return err
}

// Close deletes the node namespaces and the hub, and with them the veths,
// the bridge, and every rule and qdisc. Processes still running in a node
// namespace keep it alive, unnamed and disconnected, until they exit: stop
// them first. Close is safe to call more than once.
func (n *Net) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.closed {
		return nil
	}
	n.mu.closed = true
	var errs []error
	for _, ns := range append(n.Names(), n.hub) {
		errs = append(errs, delNS(ns))
	}
	return errors.Join(errs...)
}

func (n *Net) isClosed() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.closed
}

func delNS(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := run(ctx, "ip", "netns", "del", name)
	if err != nil {
		if _, serr := os.Stat(filepath.Join(netnsRunDir, name)); errors.Is(serr, os.ErrNotExist) {
			return nil
		}
	}
	return err
}

// Cleanup deletes every namespace named prefix-*: what a crashed run with
// that prefix left behind.
func Cleanup(prefix string) error {
	if err := validPrefix(prefix); err != nil {
		return err
	}
	names, err := list()
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range names {
		if strings.HasPrefix(name, prefix+"-") {
			errs = append(errs, delNS(name))
		}
	}
	return errors.Join(errs...)
}

// list returns the named namespaces.
func list() ([]string, error) {
	ents, err := os.ReadDir(netnsRunDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names, nil
}

// Available returns nil if this machine can run the backend, and otherwise
// an error wrapping ErrUnavailable that says why (for t.Skip). It creates
// and deletes one probe namespace, named smavail<pid>-probe.
func Available() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: needs root (euid %d)", ErrUnavailable, os.Geteuid())
	}
	for _, tool := range []string{"ip", "iptables", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%w: %s not found: %v", ErrUnavailable, tool, err)
		}
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		return fmt.Errorf("%w: kernel without network namespaces: %v", ErrUnavailable, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	probe := fmt.Sprintf("smavail%d-probe", os.Getpid())
	if err := run(ctx, "ip", "netns", "add", probe); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	err := run(ctx, "ip", "netns", "exec", probe, "iptables", "-w", "-N", partChain)
	if derr := delNS(probe); derr != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, derr)
	}
	if err != nil {
		return fmt.Errorf("%w: iptables in a namespace: %v", ErrUnavailable, err)
	}
	return nil
}

// run runs a command and returns its output in the error if it fails.
func run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("netns: %s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

// SetLoss drops each packet between nodes with probability p (0 < p < 1),
// both ways, by an iptables statistic rule in every node's partition
// chain; traffic from the hub (the harness's clients) is spared. It works
// without netem. Heal removes it with the partitions.
func (n *Net) SetLoss(p float64) error {
	if p <= 0 || p >= 1 {
		return fmt.Errorf("netns: loss probability %v not in (0, 1)", p)
	}
	if n.isClosed() {
		return ErrClosed
	}
	for _, ns := range n.nodes {
		rule := []string{"netns", "exec", ns, "iptables", "-w", "-A", partChain, "!", "-s", n.HubAddr(),
			"-m", "statistic", "--mode", "random", "--probability", strconv.FormatFloat(p, 'f', 4, 64), "-j", "DROP"}
		if err := run(context.Background(), "ip", rule...); err != nil {
			return err
		}
	}
	return nil
}

// Prefixes returns the prefixes of the networks that exist now (each
// Create makes a namespace prefix-hub), for sweeping what crashed runs
// left behind.
func Prefixes() ([]string, error) {
	names, err := list()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, name := range names {
		if p, ok := strings.CutSuffix(name, "-hub"); ok && validPrefix(p) == nil {
			out = append(out, p)
		}
	}
	return out, nil
}
