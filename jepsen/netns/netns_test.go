package netns

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The tests need programs to run inside the node namespaces. Rather than
// depend on nc or ping, the test binary re-executes itself through
// Net.Command with helperEnv set; TestMain then runs the helper instead of
// the tests:
//
//	helperEnv=echo addrEnv=IP:PORT  listen, print "ready PID", echo lines
//	helperEnv=dial addrEnv=IP:PORT  send one line, expect it back, exit 0
const (
	helperEnv = "STATEMESH_NETNS_TEST_HELPER"
	addrEnv   = "STATEMESH_NETNS_TEST_ADDR"
	echoPort  = "7000"
)

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "echo":
		os.Exit(echoServer(os.Getenv(addrEnv)))
	case "dial":
		os.Exit(dialOnce(os.Getenv(addrEnv)))
	default:
		fmt.Fprintln(os.Stderr, "unknown helper", os.Getenv(helperEnv))
		os.Exit(2)
	}
}

func echoServer(addr string) int {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("ready %d\n", os.Getpid())
	for {
		c, err := ln.Accept()
		if err != nil {
			return 1
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}

func dialOnce(addr string) int {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	if err := echoRoundTrip(c); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func echoRoundTrip(c net.Conn) error {
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "ping\n" {
		return fmt.Errorf("echo returned %q", line)
	}
	return nil
}

// testPrefix is unique per test process and name, and at most 8 chars.
func testPrefix(t *testing.T, tag string) string {
	t.Helper()
	p := fmt.Sprintf("%s%d", tag, os.Getpid()%100000)
	if err := Cleanup(p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := Cleanup(p); err != nil {
			t.Error(err)
		}
	})
	return p
}

func skipUnlessAvailable(t *testing.T) {
	t.Helper()
	if err := Available(); err != nil {
		t.Skip(err)
	}
}

func leftovers(t *testing.T, prefix string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	var left []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], prefix+"-") {
			left = append(left, f[0])
		}
	}
	return left
}

func TestNet(t *testing.T) {
	skipUnlessAvailable(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prefix := testPrefix(t, "smt")

	nt, err := Create(ctx, prefix, 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nt.Close() })
	if got, want := nt.Names(), []string{prefix + "-n1", prefix + "-n2", prefix + "-n3"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
	if a := nt.Addr(2); !strings.HasPrefix(a, "10.") || !strings.HasSuffix(a, ".12") {
		t.Fatalf("Addr(2) = %q", a)
	}
	if len(leftovers(t, prefix)) != 4 {
		t.Fatalf("namespaces: %v", leftovers(t, prefix))
	}

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	target := net.JoinHostPort(nt.Addr(2), echoPort)

	// Echo server in node 2. Its PID must be cmd.Process's: ip netns exec
	// execs the program rather than forking it.
	srv := nt.Command(ctx, 2, self)
	srv.Env = append(os.Environ(), helperEnv+"=echo", addrEnv+"="+target)
	srv.Stderr = os.Stderr
	stdout, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("echo server: %v", err)
	}
	if pid, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "ready "))); pid != srv.Process.Pid {
		t.Fatalf("helper pid %d, cmd.Process.Pid %d: ip netns exec did not exec in place", pid, srv.Process.Pid)
	}

	hubDial := func() error {
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		c, err := nt.DialContext(dctx, "tcp", target)
		if err != nil {
			return err
		}
		defer c.Close()
		return echoRoundTrip(c)
	}
	// reach runs a client in node from and reports whether it got an echo.
	reach := func(from int) bool {
		cl := nt.Command(ctx, from, self)
		cl.Env = append(os.Environ(), helperEnv+"=dial", addrEnv+"="+target)
		return cl.Run() == nil
	}
	expect := func(when string, want1, want3 bool) {
		t.Helper()
		if err := hubDial(); err != nil {
			t.Errorf("%s: hub -> n2: %v", when, err)
		}
		if got := reach(1); got != want1 {
			t.Errorf("%s: n1 -> n2 reachable = %v, want %v", when, got, want1)
		}
		if got := reach(3); got != want3 {
			t.Errorf("%s: n3 -> n2 reachable = %v, want %v", when, got, want3)
		}
	}

	expect("initially", true, true)

	// The root namespace does not reach the echo server: DialContext works
	// because it dials from the hub. (Only the echo proves it: some
	// sandboxes accept any outbound TCP connect with a transparent proxy.)
	if c, err := net.DialTimeout("tcp", target, 200*time.Millisecond); err == nil {
		if echoRoundTrip(c) == nil {
			t.Errorf("%s answers from the root namespace", target)
		}
		c.Close()
	}

	for range 2 { // idempotent
		if err := nt.Cut(1, 2); err != nil {
			t.Fatal(err)
		}
	}
	expect("after Cut(1,2)", false, true)

	for range 2 {
		if err := nt.Heal(); err != nil {
			t.Fatal(err)
		}
	}
	expect("after Heal", true, true)

	// Loss between nodes, not from the hub: at 99.99% n1 and n3 cannot
	// finish a TCP handshake with n2 in the dial's second.
	if err := nt.SetLoss(0.9999); err != nil {
		t.Fatal(err)
	}
	expect("with loss", false, false)
	if err := nt.Heal(); err != nil {
		t.Fatal(err)
	}
	expect("after Heal of loss", true, true)
	if err := nt.SetLoss(1.5); err == nil {
		t.Error("SetLoss(1.5) accepted")
	}

	t.Run("netem", func(t *testing.T) {
		if err := nt.ClearNetem(1); err != nil {
			t.Fatalf("ClearNetem without netem: %v", err)
		}
		err := nt.SetNetem(1, 20*time.Millisecond, 5*time.Millisecond, 0)
		if errors.Is(err, ErrNetemUnsupported) {
			t.Skip(err)
		}
		if err != nil {
			t.Fatal(err)
		}
		if !reach(1) {
			t.Error("n1 -> n2 unreachable with 20ms delay")
		}
		if err := nt.ClearNetem(1); err != nil {
			t.Fatal(err)
		}
	})

	// Signals on cmd.Process reach the program itself.
	if err := srv.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := srv.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("echo server after SIGKILL: Wait() = %v", err)
	}
	if hubDial() == nil {
		t.Error("echo server still answers after SIGKILL")
	}

	if err := nt.Close(); err != nil {
		t.Fatal(err)
	}
	if err := nt.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if left := leftovers(t, prefix); len(left) > 0 {
		t.Fatalf("left after Close: %v", left)
	}
	if _, err := nt.DialContext(ctx, "tcp", target); !errors.Is(err, ErrClosed) {
		t.Fatalf("DialContext after Close: %v", err)
	}
}

func TestCreateFailureCleansUp(t *testing.T) {
	skipUnlessAvailable(t)
	ctx := context.Background()
	prefix := testPrefix(t, "smf")

	for _, tc := range []struct {
		prefix string
		n      int
	}{{prefix, 0}, {prefix, MaxNodes + 1}, {"", 1}, {"toolongprefix", 1}, {"a-b", 1}} {
		if nt, err := Create(ctx, tc.prefix, tc.n); err == nil {
			nt.Close()
			t.Errorf("Create(%q, %d) succeeded", tc.prefix, tc.n)
		}
	}

	// Someone else's namespace where node 2's would go: Create must fail
	// at node 2, remove the hub and node 1, and leave the stranger alone.
	stranger := prefix + "-n2"
	if out, err := exec.Command("ip", "netns", "add", stranger).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	nt, err := Create(ctx, prefix, 3)
	if err == nil {
		nt.Close()
		t.Fatal("Create succeeded over an existing namespace")
	}
	t.Logf("Create: %v", err)
	if left := leftovers(t, prefix); len(left) != 1 || left[0] != stranger {
		t.Fatalf("after failed Create: %v, want only %s", left, stranger)
	}
	if err := Cleanup(prefix); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(t, prefix); len(left) > 0 {
		t.Fatalf("after Cleanup: %v", left)
	}
}
