package netfault

import (
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

var mlVerbose = flag.Bool("netfault.mlverbose", false, "send memberlist's logs to stderr")

// mlNode is one memberlist instance on 127.0.0.1 behind a faulted transport.
type mlNode struct {
	name string
	addr string
	wrap *mlTransport
	ml   *memberlist.Memberlist
}

func startNode(t *testing.T, name string, f *Faults, book *AddrBook) *mlNode {
	t.Helper()
	var logOut io.Writer = io.Discard
	if *mlVerbose {
		logOut = os.Stderr
	}
	logger := log.New(logOut, name+" ", log.Lmicroseconds)

	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{"127.0.0.1"},
		BindPort:  0,
		Logger:    logger,
	})
	if err != nil {
		t.Fatalf("%s: NewNetTransport: %v", name, err)
	}
	port := nt.GetAutoBindPort()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	book.Set(addr, name)

	conf := memberlist.DefaultLocalConfig()
	conf.Name = name
	conf.BindAddr = "127.0.0.1"
	conf.BindPort = port // the transport is bound already; these only inform memberlist
	conf.AdvertisePort = port
	wrap := WrapMemberlist(nt, name, f, book.Lookup)
	conf.Transport = wrap
	conf.Logger = logger // LogOutput must stay nil when Logger is set
	// Failure detection in about a second: a probe every 100 ms, suspicion
	// for SuspicionMult × ProbeInterval (× log10 n, but at least 1) before
	// dead when no one confirms it.
	conf.ProbeInterval = 100 * time.Millisecond
	conf.ProbeTimeout = 50 * time.Millisecond
	conf.GossipInterval = 20 * time.Millisecond
	conf.SuspicionMult = 2
	conf.TCPTimeout = 500 * time.Millisecond

	ml, err := memberlist.Create(conf)
	if err != nil {
		nt.Shutdown()
		t.Fatalf("%s: Create: %v", name, err)
	}
	return &mlNode{name: name, addr: addr, wrap: wrap.(*mlTransport), ml: ml}
}

func (n *mlNode) stop(t *testing.T) {
	if err := n.ml.Leave(time.Second); err != nil {
		t.Logf("%s: Leave: %v", n.name, err)
	}
	if err := n.ml.Shutdown(); err != nil {
		t.Errorf("%s: Shutdown: %v", n.name, err)
	}
}

// alive returns the names n sees as alive, sorted.
func (n *mlNode) alive() []string {
	var names []string
	for _, m := range n.ml.Members() { // Members omits dead and left nodes
		if m.State == memberlist.StateAlive {
			names = append(names, m.Name)
		}
	}
	slices.Sort(names)
	return names
}

// eventually polls cond every 20 ms until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(within)
	for {
		ok, state := cond()
		if ok {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s never happened; last state: %s", within, what, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMemberlistPartitionAndHeal(t *testing.T) {
	goroutinesBefore := runtime.NumGoroutine()
	t.Logf("seed %d", testSeed)
	f := New(testSeed)
	var book AddrBook
	names := []string{"n1", "n2", "n3"}
	nodes := make([]*mlNode, len(names))
	for i, name := range names {
		nodes[i] = startNode(t, name, f, &book)
	}
	stopped := false
	stopAll := func() {
		if stopped {
			return
		}
		stopped = true
		for _, n := range nodes {
			n.stop(t)
		}
	}
	defer stopAll()

	allSeeAll := func() (bool, string) {
		var b strings.Builder
		ok := true
		for _, n := range nodes {
			got := n.alive()
			fmt.Fprintf(&b, "%s sees %v; ", n.name, got)
			ok = ok && slices.Equal(got, names)
		}
		return ok, b.String()
	}

	// Mild jitter and duplication throughout, so that the wrapper's delayed
	// and duplicated paths carry real memberlist traffic.
	f.SetDelay(0, 5*time.Millisecond)
	f.SetDuplicate(0.25)

	// untilAllSeeAll waits for every node to see every other alive,
	// calling rejoin every 500 ms meanwhile. memberlist never probes or
	// push-pulls a node it holds dead, so once a node is (even falsely)
	// held dead, as a 50 ms probe timeout allows under -race on a loaded
	// machine, only a periodic push-pull or an explicit Join repairs it.
	untilAllSeeAll := func(what string, rejoin func() error) {
		t.Helper()
		var joins int
		var lastJoin time.Time
		took := eventually(t, 5*time.Second, what, func() (bool, string) {
			if ok, state := allSeeAll(); ok {
				return true, state
			}
			if time.Since(lastJoin) > 500*time.Millisecond {
				joins++
				lastJoin = time.Now()
				if err := rejoin(); err != nil {
					t.Logf("join %d: %v", joins, err)
				}
			}
			return allSeeAll()
		})
		t.Logf("%s in %v with %d Join round(s)", what, took, joins)
	}
	untilAllSeeAll("all three alive after join", func() error {
		for _, n := range nodes[1:] {
			if _, err := n.ml.Join([]string{nodes[0].addr}); err != nil {
				return fmt.Errorf("%s: %w", n.name, err)
			}
		}
		return nil
	})

	isolated, rest := nodes[2], nodes[:2]
	f.Isolate(isolated.name, names)
	took := eventually(t, 5*time.Second, "n1 and n2 mark n3 dead", func() (bool, string) {
		var b strings.Builder
		ok := true
		for _, n := range rest {
			got := n.alive()
			fmt.Fprintf(&b, "%s sees %v; ", n.name, got)
			ok = ok && slices.Equal(got, []string{"n1", "n2"})
		}
		return ok, b.String()
	})
	t.Logf("isolated n3 marked dead by n1 and n2 after %v", took)
	// The isolated side sees the others fail too.
	eventually(t, 5*time.Second, "n3 marks n1 and n2 dead", func() (bool, string) {
		got := isolated.alive()
		return slices.Equal(got, []string{"n3"}), fmt.Sprintf("n3 sees %v", got)
	})

	// memberlist never probes or push-pulls a node it holds dead, so after a
	// heal the two sides can keep each other dead until a periodic push-pull
	// happens to cross the old cut (seen: ~24 s with PushPullInterval 15 s).
	// Rejoin explicitly, as serf's reconnect loop does: Join push-pulls with
	// every address given, whatever its state; each side learns it is held
	// dead, refutes with a higher incarnation and gossips that (gossip still
	// reaches dead nodes for GossipToTheDeadTime). After GossipToTheDeadTime
	// dead nodes are reaped from the member map and Join is a fresh join.
	// One Join has sufficed in every run; repeat it in case a refutation is
	// lost.
	f.Heal()
	untilAllSeeAll("all three alive after heal", func() error {
		_, err := isolated.ml.Join([]string{rest[0].addr, rest[1].addr})
		return err
	})

	dropped, duplicated, delayed := f.Counters()
	t.Logf("counters: dropped %d, duplicated %d, delayed %d", dropped, duplicated, delayed)
	if dropped == 0 || duplicated == 0 || delayed == 0 {
		t.Error("some fault was never applied")
	}

	// Leave and shut down with long delays pending: Shutdown must stop them.
	f.SetDelay(time.Second, 2*time.Second)
	stopAll()
	for _, n := range nodes {
		if p := n.wrap.pending(); p != 0 {
			t.Errorf("%s: %d delayed sends still pending after Shutdown", n.name, p)
		}
	}
	// Leak check: every goroutine of memberlist, its transports and our
	// wrappers ends soon after Shutdown.
	eventually(t, 5*time.Second, "goroutines back to the baseline", func() (bool, string) {
		n := runtime.NumGoroutine()
		return n <= goroutinesBefore, fmt.Sprintf("%d goroutines, %d before", n, goroutinesBefore)
	})
}
