package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/internal/freeport"
	"github.com/statemesh/statemesh/protocol/adminpb"
)

// binary is the statemesh binary built once for the process tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "statemesh-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "statemesh")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building statemesh: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a loopback address with a port free right now, below
// the ephemeral range (internal/freeport).
func freePort(t *testing.T) string {
	t.Helper()
	a, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// proc is one `statemesh node` process.
type proc struct {
	name, bind, peer, admin, raft, dir string
	extra                              []string
	cmd                                *exec.Cmd
	log                                *os.File
	client                             adminpb.AdminClient
	conn                               *grpc.ClientConn
}

// start starts the node and waits for its ready line. Ports come from
// freePort, which releases them before the node binds them, so a test
// running in parallel (another package's) may take one in between: a
// node that exits before it is ready is started again, on fresh ports the
// first time it starts, on the same ones (after a pause) when it restarts.
func (p *proc) start(t *testing.T, join []string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		ok, err := p.tryStart(join)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			break
		}
		if attempt == 4 {
			t.Fatalf("%s exited before it was ready, %d times; see %s", p.name, attempt, p.log.Name())
		}
		t.Logf("%s exited before it was ready (attempt %d; a port taken meanwhile?); starting it again", p.name, attempt)
		if p.conn == nil {
			p.bind, p.peer, p.admin, p.raft = freePort(t), freePort(t), freePort(t), freePort(t)
		} else {
			time.Sleep(200 * time.Millisecond)
		}
	}
	if p.conn == nil {
		cc, err := grpc.NewClient(p.admin, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		p.conn, p.client = cc, adminpb.NewAdminClient(cc)
	}
}

// tryStart runs the node once: ok is false if it exited before printing
// its ready line.
func (p *proc) tryStart(join []string) (ok bool, err error) {
	args := []string{"node", "--name", p.name, "--bind", p.bind, "--peer", p.peer, "--admin", p.admin,
		"--metrics", "off", "--raft", p.raft, "--data-dir", p.dir, "--durability", "sync", "--preset", "local"}
	args = append(args, p.extra...)
	if len(join) > 0 {
		args = append(args, "--join", strings.Join(join, ","))
	}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Stderr = p.log
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return false, err
	}
	if err := p.cmd.Start(); err != nil {
		return false, err
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "ready") {
				ready <- true
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			_ = p.cmd.Wait()
		}
		return ok, nil
	case <-time.After(20 * time.Second):
		return false, fmt.Errorf("%s not ready after 20 s; see %s", p.name, p.log.Name())
	}
}

// startProcs starts n node processes named prefix1..prefixN, each joining
// the ones before it (the first bootstraps the Raft shards), with extra
// flags; they are stopped when the test ends. Logs go to the test's
// temporary directory.
func startProcs(t *testing.T, prefix string, n int, extra ...string) []*proc {
	t.Helper()
	dir := t.TempDir()
	var procs []*proc
	t.Cleanup(func() { // runs last: the processes have stopped
		if !t.Failed() {
			return
		}
		for _, p := range procs {
			b, err := os.ReadFile(p.log.Name())
			if err != nil {
				continue
			}
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			t.Logf("last lines of %s's log:\n%s", p.name, strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	for i := range n {
		name := fmt.Sprintf("%s%d", prefix, i+1)
		lf, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { lf.Close() })
		p := &proc{name: name, bind: freePort(t), peer: freePort(t), admin: freePort(t), raft: freePort(t),
			dir: filepath.Join(dir, name), log: lf, extra: extra}
		procs = append(procs, p)
		t.Cleanup(p.stop)
	}
	for i, p := range procs {
		var join []string
		for _, q := range procs[:i] {
			join = append(join, q.bind)
		}
		p.start(t, join)
	}
	return procs
}

func (p *proc) kill9() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
}

func (p *proc) stop() {
	if p.cmd != nil && p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			p.kill9()
		}
	}
	if p.conn != nil {
		p.conn.Close()
	}
}

// TestKill9LosesNoAcknowledgedSyncWrite runs three real node processes in
// sync durability, writes to all of them, kills one with SIGKILL in the
// middle of the writes and restarts it from its data dir: every
// acknowledged write must be on every node in the end.
func TestKill9LosesNoAcknowledgedSyncWrite(t *testing.T) {
	procs := startProcs(t, "p", 3)
	setKey := &adminpb.Key{Service: "test.Set", Id: "s"}

	// Writers: each adds unique elements through one node's admin
	// service (LOCAL, sync durability: acknowledged after fsync there).
	var (
		mu    sync.Mutex
		acked []string
	)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				el := fmt.Sprintf("%s-%d", p.name, i)
				cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := p.client.Update(cctx, &adminpb.UpdateRequest{Key: setKey, Type: "orset", Op: "add", Arg: el})
				ccancel()
				if err == nil {
					mu.Lock()
					acked = append(acked, el)
					mu.Unlock()
				} else {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	countAcked := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	waitAcked := func(n int) {
		deadline := time.Now().Add(20 * time.Second)
		for countAcked() < n {
			if time.Now().After(deadline) {
				t.Fatalf("only %d writes acknowledged", countAcked())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitAcked(60)
	victim := procs[1]
	victim.kill9()
	before := countAcked()
	waitAcked(before + 30) // the others go on
	victim.start(t, []string{procs[0].bind, procs[2].bind})
	waitAcked(countAcked() + 60)
	cancel()
	wg.Wait()

	mu.Lock()
	want := append([]string(nil), acked...)
	mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for _, p := range procs {
		for {
			missing, err := missingElements(p, setKey, want)
			if err == nil && len(missing) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s lacks %d of %d acknowledged elements (err %v), e.g. %v", p.name, len(missing), len(want), err, missing[:min(5, len(missing))])
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	t.Logf("%d acknowledged writes, all present on all 3 nodes after a kill -9 and restart", len(want))
}

func missingElements(p *proc, k *adminpb.Key, want []string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r, err := p.client.Get(ctx, &adminpb.GetRequest{Key: k})
	if err != nil {
		return want, err
	}
	if !r.Found {
		return want, nil
	}
	v, err := crdt.Decode(r.State, crdt.DefaultLimits)
	if err != nil {
		return want, err
	}
	s, ok := v.(*crdt.ORSet)
	if !ok {
		return want, fmt.Errorf("%s holds a %s", p.name, v.Type())
	}
	var missing []string
	for _, el := range want {
		if !s.Contains([]byte(el)) {
			missing = append(missing, el)
		}
	}
	return missing, nil
}

// TestRemovedNodeIsPrunedAcrossProcesses runs three node processes as
// deployed (consensus on): the third counts and adds a set element, dies
// by SIGKILL and is removed; one of the others claims the pruning through
// Raft and folds the third's data into its own, and in the end neither
// survivor holds anything of the removed replica, markers included, while
// the values read as before.
func TestRemovedNodeIsPrunedAcrossProcesses(t *testing.T) {
	procs := startProcs(t, "q", 3, "--prune-interval", "300ms")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	counter := &adminpb.Key{Service: "test.Counter", Id: "c"}
	set := &adminpb.Key{Service: "test.Set", Id: "s"}
	for i, p := range procs {
		for _, u := range []*adminpb.UpdateRequest{
			{Key: counter, Type: "gcounter", Op: "increment", Arg: fmt.Sprint(i + 1), Consistency: "ALL"},
			{Key: set, Type: "orset", Op: "add", Arg: p.name, Consistency: "ALL"},
		} {
			if _, err := p.client.Update(ctx, u); err != nil {
				t.Fatalf("%s: %v", p.name, err)
			}
		}
	}
	ms, err := procs[0].client.Members(ctx, &adminpb.MembersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var gone crdt.ReplicaID
	for _, m := range ms.Members {
		if m.Name == "q3" {
			gone = crdt.ReplicaID{Node: m.Name, Incarnation: m.Incarnation}
		}
	}
	procs[2].kill9()
	for {
		_, err := procs[0].client.RemoveNode(ctx, &adminpb.RemoveNodeRequest{Name: "q3"})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("remove-node: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // until q1 sees q3 dead
	}
	read := func(p *proc, k *adminpb.Key) (crdt.Value, error) {
		r, err := p.client.Get(ctx, &adminpb.GetRequest{Key: k})
		if err != nil {
			return nil, err
		}
		return crdt.Decode(r.State, crdt.DefaultLimits)
	}
	for _, p := range procs[:2] {
		for {
			c, err1 := read(p, counter)
			s, err2 := read(p, set)
			if err := errors.Join(err1, err2); err != nil {
				t.Fatal(err)
			}
			if got := c.(*crdt.GCounter).Value(); got != 6 {
				t.Fatalf("%s: counter %d, want 6", p.name, got)
			}
			if got := s.(*crdt.ORSet).Len(); got != 3 {
				t.Fatalf("%s: %d set elements, want 3", p.name, got)
			}
			rs := map[crdt.ReplicaID]bool{gone: true}
			if !crdt.Mentions(c, rs) && !crdt.Mentions(s, rs) {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("%s still holds something of %s", p.name, gone)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}
