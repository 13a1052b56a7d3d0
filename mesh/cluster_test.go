package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/internal/netfault"
)

// cluster is an in-process mesh on loopback with a shared fault seam.
type cluster struct {
	t      *testing.T
	faults *netfault.Faults
	dir    string
	nodes  map[string]*Node
	names  []string
	tune   func(*Config)
	// addrs keeps each node's gossip and peer addresses: a node restarts
	// where it ran before, as a configured node would.
	addrs map[string][2]string
}

func newCluster(t *testing.T, size int, tune func(*Config)) *cluster {
	t.Helper()
	c := &cluster{t: t, faults: netfault.New(1), dir: t.TempDir(), nodes: map[string]*Node{}, tune: tune,
		addrs: map[string][2]string{}}
	for i := range size {
		name := fmt.Sprintf("n%d", i+1)
		c.names = append(c.names, name)
		c.start(name)
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			_ = n.Close()
		}
	})
	c.waitMembers()
	return c
}

func (c *cluster) config(name string) Config {
	cfg := Config{
		Name: name, Preset: PresetLocal, DataDir: filepath.Join(c.dir, name),
		Faults: c.faults, WriteTimeout: 2 * time.Second,
	}
	if a, ok := c.addrs[name]; ok {
		cfg.GossipAddr, cfg.PeerAddr = a[0], a[1]
	}
	if os.Getenv("MESH_TEST_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	for _, n := range c.nodes {
		cfg.Join = append(cfg.Join, n.GossipAddr())
	}
	if c.tune != nil {
		c.tune(&cfg)
	}
	return cfg
}

func (c *cluster) start(name string) *Node {
	c.t.Helper()
	n, err := Start(c.config(name))
	if err != nil {
		c.t.Fatalf("start %s: %v", name, err)
	}
	c.nodes[name] = n
	c.addrs[name] = [2]string{n.GossipAddr(), n.PeerAddr()}
	return n
}

// eventually polls cond until it returns nil or the deadline passes.
func eventually(t *testing.T, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitMembers waits until every running node sees every other as alive.
func (c *cluster) waitMembers() {
	c.t.Helper()
	eventually(c.t, 10*time.Second, func() error {
		for name, n := range c.nodes {
			ms, err := n.Members(context.Background())
			if err != nil {
				return err
			}
			alive := 0
			for _, m := range ms {
				// The member must be the running node, not an earlier run.
				if o, ok := c.nodes[m.Name]; ok && m.Alive && m.Incarnation == o.Replica().Incarnation {
					alive++
				}
			}
			if alive != len(c.nodes)-1 {
				return fmt.Errorf("%s sees %d of %d others alive", name, alive, len(c.nodes)-1)
			}
		}
		return nil
	})
}

// waitDead waits until observer sees name dead (or gone).
func (c *cluster) waitDead(observer, name string) {
	c.t.Helper()
	eventually(c.t, 10*time.Second, func() error {
		ms, err := c.nodes[observer].Members(context.Background())
		if err != nil {
			return err
		}
		for _, m := range ms {
			if m.Name == name && m.Alive {
				return fmt.Errorf("%s sees %s alive", observer, name)
			}
		}
		return nil
	})
}

var counterKey = Key{Service: "test.Counter", ID: "c1"}

func increment(n *Node, by uint64) Mutator {
	return func(v crdt.Value) (crdt.Value, error) { return v.(*crdt.GCounter).Increment(n.Replica(), by) }
}

// counterValue reads a GCounter's value on n (0 when absent).
func counterValue(t *testing.T, n *Node, k Key) uint64 {
	t.Helper()
	v, err := n.Get(context.Background(), k, Options{})
	if err != nil {
		t.Fatalf("%s: Get: %v", n.Name(), err)
	}
	if v == nil {
		return 0
	}
	return v.(*crdt.GCounter).Value()
}

// waitValue waits until every node in names sees the counter at want.
func (c *cluster) waitValue(k Key, want uint64, names ...string) {
	c.t.Helper()
	if len(names) == 0 {
		for name := range c.nodes {
			names = append(names, name)
		}
	}
	eventually(c.t, 10*time.Second, func() error {
		for _, name := range names {
			if got := counterValue(c.t, c.nodes[name], k); got != want {
				return fmt.Errorf("%s: counter %d, want %d", name, got, want)
			}
		}
		return nil
	})
}

func TestLocalWriteReachesEveryNode(t *testing.T) {
	c := newCluster(t, 3, nil)
	n1 := c.nodes["n1"]
	v, err := n1.Update(context.Background(), counterKey, crdt.TypeGCounter, increment(n1, 5), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := v.(*crdt.GCounter).Value(); got != 5 {
		t.Fatalf("Update returned a counter of %d, want 5", got)
	}
	// With DiscardState the write is the same; only the copy is left out.
	v, err = n1.Update(context.Background(), counterKey, crdt.TypeGCounter, increment(n1, 2), Options{DiscardState: true})
	if err != nil || v != nil {
		t.Fatalf("Update with DiscardState = %v, %v; want nil, nil", v, err)
	}
	c.waitValue(counterKey, 7)
}

func (c *cluster) update(name string, k Key, by uint64, o Options) error {
	n := c.nodes[name]
	_, err := n.Update(context.Background(), k, crdt.TypeGCounter, increment(n, by), o)
	return err
}

func TestPartitionHealConverges(t *testing.T) {
	c := newCluster(t, 5, nil)
	minority, majority := []string{"n1", "n2"}, []string{"n3", "n4", "n5"}
	c.faults.Partition(minority, majority)
	// Each side keeps accepting LOCAL writes.
	var want uint64
	for i, name := range c.names {
		if err := c.update(name, counterKey, uint64(i+1), Options{}); err != nil {
			t.Fatalf("%s: LOCAL write during a partition: %v", name, err)
		}
		want += uint64(i + 1)
	}
	// MAJORITY fails cleanly on the minority side, succeeds on the majority.
	err := c.update("n1", counterKey, 100, Options{Consistency: Majority, Timeout: 500 * time.Millisecond})
	if !errors.Is(err, ErrTimeout) && !errors.Is(err, ErrUnavailable) {
		t.Fatalf("MAJORITY write on the minority side: %v, want ErrTimeout or ErrUnavailable", err)
	}
	if errors.Is(err, ErrTimeout) {
		want += 100 // applied locally, will spread after the heal
	}
	if err := c.update("n3", counterKey, 1000, Options{Consistency: Majority}); err != nil {
		t.Fatalf("MAJORITY write on the majority side: %v", err)
	}
	want += 1000
	// ALL cannot succeed anywhere.
	err = c.update("n4", counterKey, 10000, Options{Consistency: All, Timeout: 300 * time.Millisecond})
	if !errors.Is(err, ErrTimeout) && !errors.Is(err, ErrUnavailable) {
		t.Fatalf("ALL write during a partition: %v", err)
	}
	if errors.Is(err, ErrTimeout) {
		want += 10000
	}
	// The sides do not see each other's writes.
	if got := counterValue(t, c.nodes["n1"], counterKey); got >= want {
		t.Fatalf("minority sees %d of %d during the partition", got, want)
	}
	c.faults.Heal()
	c.waitMembers()
	c.waitValue(counterKey, want)
	// Every replica holds exactly the same state.
	ref, _ := c.nodes["n1"].Get(context.Background(), counterKey, Options{})
	for _, name := range c.names[1:] {
		v, _ := c.nodes[name].Get(context.Background(), counterKey, Options{})
		if !v.Equal(ref) {
			t.Fatalf("%s's state differs from n1's after the heal", name)
		}
	}
}

func TestMajorityUnavailableWhenMinorityAlive(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.faults.Isolate("n1", c.names)
	// Once the failure detector has marked the others dead, MAJORITY fails
	// at once, without applying the write.
	eventually(t, 10*time.Second, func() error {
		ms, _ := c.nodes["n1"].Members(context.Background())
		for _, m := range ms {
			if m.Alive {
				return fmt.Errorf("n1 still sees %s alive", m.Name)
			}
		}
		return nil
	})
	err := c.update("n1", counterKey, 7, Options{Consistency: Majority})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("MAJORITY with only itself alive: %v, want ErrUnavailable", err)
	}
	if got := counterValue(t, c.nodes["n1"], counterKey); got != 0 {
		t.Fatalf("an unavailable write was applied: counter %d", got)
	}
	// Reads too.
	if _, err := c.nodes["n1"].Get(context.Background(), counterKey, Options{Consistency: Majority}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("MAJORITY read with only itself alive: %v, want ErrUnavailable", err)
	}
	c.faults.Heal()
	c.waitMembers()
	if err := c.update("n1", counterKey, 7, Options{Consistency: All}); err != nil {
		t.Fatalf("ALL write after the heal: %v", err)
	}
	// ALL means every replica holds it when the write returns.
	for _, name := range c.names {
		if got := counterValue(t, c.nodes[name], counterKey); got != 7 {
			t.Fatalf("%s: %d right after an ALL write of 7", name, got)
		}
	}
}

func TestMajorityReadMergesReplicas(t *testing.T) {
	c := newCluster(t, 3, nil)
	// n1's write cannot spread to n2 by itself (one-way cut)...
	c.faults.CutOneWay("n1", "n2")
	c.faults.CutOneWay("n3", "n2")
	if err := c.update("n1", counterKey, 4, Options{}); err != nil {
		t.Fatal(err)
	}
	c.waitValue(counterKey, 4, "n3")
	if got := counterValue(t, c.nodes["n2"], counterKey); got != 0 {
		t.Fatalf("n2 sees %d through a cut", got)
	}
	// ...but a MAJORITY read on n2 asks another replica and merges. n2 can
	// still send to n1 and n3; their replies come back on the same call.
	v, err := c.nodes["n2"].Get(context.Background(), counterKey, Options{Consistency: Majority, Timeout: time.Second})
	if err != nil {
		t.Fatalf("MAJORITY read: %v", err)
	}
	if v == nil || v.(*crdt.GCounter).Value() != 4 {
		t.Fatalf("MAJORITY read returned %v, want the counter at 4", v)
	}
}

func TestRestartFromDataDir(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx := context.Background()
	if err := c.update("n2", counterKey, 3, Options{}); err != nil {
		t.Fatal(err)
	}
	c.waitValue(counterKey, 3)
	before := c.nodes["n2"].Replica()

	// A clean stop keeps the replica incarnation.
	if err := c.nodes["n2"].Close(); err != nil {
		t.Fatal(err)
	}
	delete(c.nodes, "n2")
	n2 := c.start("n2")
	if n2.Replica() != before {
		t.Fatalf("after a clean stop the replica is %s, want %s", n2.Replica(), before)
	}
	if got := counterValue(t, n2, counterKey); got != 3 {
		t.Fatalf("after a clean restart n2 reads %d, want 3 from its own disk", got)
	}
	c.waitMembers()

	// A crash after the write reached the disk: the state survives, and the
	// node takes a new incarnation so that it never reissues a dot.
	if err := c.update("n2", counterKey, 4, Options{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() error { // write-behind: wait for the flush
		b, ok, err := dbGet(n2, counterKey)
		if err != nil || !ok {
			return fmt.Errorf("not on disk yet: %v", err)
		}
		v, err := crdt.Decode(b, crdt.DefaultLimits)
		if err != nil {
			return err
		}
		if got := v.(*crdt.GCounter).Value(); got != 7 {
			return fmt.Errorf("on disk %d, want 7", got)
		}
		return nil
	})
	if err := n2.Crash(); err != nil {
		t.Fatal(err)
	}
	delete(c.nodes, "n2")
	n2 = c.start("n2")
	if n2.Replica() == before {
		t.Fatalf("after a crash the replica kept incarnation %d", before.Incarnation)
	}
	if got := counterValue(t, n2, counterKey); got != 7 {
		t.Fatalf("after a crash restart n2 reads %d, want 7", got)
	}
	c.waitMembers()
	if err := c.update("n2", counterKey, 1, Options{}); err != nil {
		t.Fatal(err)
	}
	c.waitValue(counterKey, 8)
	_ = ctx
}

func TestLostDataDirRejoinsWithNewIncarnation(t *testing.T) {
	c := newCluster(t, 3, nil)
	if err := c.update("n3", counterKey, 10, Options{}); err != nil {
		t.Fatal(err)
	}
	c.waitValue(counterKey, 10)
	old := c.nodes["n3"].Replica()
	if err := c.nodes["n3"].Crash(); err != nil {
		t.Fatal(err)
	}
	delete(c.nodes, "n3")
	if err := os.RemoveAll(filepath.Join(c.dir, "n3")); err != nil {
		t.Fatal(err)
	}
	n3 := c.start("n3")
	if n3.Replica() == old {
		t.Fatal("a node without its data dir reused its incarnation")
	}
	c.waitMembers()
	// It gets the state back from its peers (full-state transfer), and its
	// new writes add to, never replace, what its old incarnation wrote.
	c.waitValue(counterKey, 10, "n3")
	if err := c.update("n3", counterKey, 5, Options{}); err != nil {
		t.Fatal(err)
	}
	c.waitValue(counterKey, 15)
}

func TestSyncDurabilityWritesBeforeAck(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) {
		cfg.Durability = Sync
		cfg.FlushInterval = time.Hour // only sync-mode commits write
	})
	for i := range 20 {
		name := c.names[i%3]
		n := c.nodes[name]
		after, err := n.Update(context.Background(), counterKey, crdt.TypeGCounter, increment(n, 1), Options{Consistency: Majority})
		if err != nil {
			t.Fatal(err)
		}
		// Acknowledged means on disk here, before any flush interval.
		b, ok, err := dbGet(c.nodes[name], counterKey)
		if err != nil || !ok {
			t.Fatalf("write %d acknowledged by %s but not on its disk: %v", i, name, err)
		}
		v, err := crdt.Decode(b, crdt.DefaultLimits)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := v.(*crdt.GCounter).Value(), after.(*crdt.GCounter).Value(); got < want {
			t.Fatalf("write %d acknowledged by %s at %d, but its disk holds %d", i, name, want, got)
		}
	}
	// Crash everything, restart: every acknowledged write is there.
	for _, name := range c.names {
		if err := c.nodes[name].Crash(); err != nil {
			t.Fatal(err)
		}
		delete(c.nodes, name)
	}
	for _, name := range c.names {
		c.start(name)
	}
	c.waitMembers()
	c.waitValue(counterKey, 20)
}

func TestWatch(t *testing.T) {
	c := newCluster(t, 2, nil)
	ctx := context.Background()
	ch, cancel, err := c.nodes["n2"].Watch(ctx, counterKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.update("n1", counterKey, 2, Options{}); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-ch:
		if got := v.(*crdt.GCounter).Value(); got != 2 {
			t.Fatalf("watch delivered %d, want 2", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no change delivered to the watcher")
	}
	cancel()
	if _, open := <-ch; open {
		t.Fatal("the watch channel is open after cancel")
	}
}

// dbGet reads key's stored state from n's store.
func dbGet(n *Node, k Key) ([]byte, bool, error) { return n.db.CRDT().Get(k.engineKey()) }

func TestDeleteWinsAndReplicates(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx := context.Background()
	if err := c.update("n1", counterKey, 3, Options{}); err != nil {
		t.Fatal(err)
	}
	c.waitValue(counterKey, 3)
	ch, cancel, err := c.nodes["n3"].Watch(ctx, counterKey)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	// n2 is cut off while n1 deletes and n2 writes: the deletion wins.
	c.faults.Isolate("n2", c.names)
	if err := c.nodes["n1"].Delete(ctx, counterKey, Options{}); err != nil {
		t.Fatal(err)
	}
	if err := c.update("n2", counterKey, 100, Options{}); err != nil {
		t.Fatalf("n2's concurrent write: %v", err)
	}
	c.faults.Heal()
	eventually(t, 10*time.Second, func() error {
		for _, name := range c.names {
			v, err := c.nodes[name].Get(ctx, counterKey, Options{})
			if err != nil || v != nil {
				return fmt.Errorf("%s still reads %v (err %v)", name, v, err)
			}
		}
		return nil
	})
	for _, name := range c.names {
		if err := c.update(name, counterKey, 1, Options{}); !errors.Is(err, ErrDeleted) {
			t.Fatalf("%s: write after delete: %v, want ErrDeleted", name, err)
		}
	}
	// The watcher saw the deletion as a nil state.
	deadline := time.After(5 * time.Second)
	for seen := false; !seen; {
		select {
		case v := <-ch:
			seen = v == nil
		case <-deadline:
			t.Fatal("the watcher never saw the deletion")
		}
	}
	// The deletion survives a restart.
	if err := c.nodes["n3"].Close(); err != nil {
		t.Fatal(err)
	}
	delete(c.nodes, "n3")
	n3 := c.start("n3")
	if err := c.update("n3", counterKey, 1, Options{}); !errors.Is(err, ErrDeleted) {
		t.Fatalf("after a restart, write to the deleted key: %v, want ErrDeleted", err)
	}
	if v, _ := n3.Get(ctx, counterKey, Options{}); v != nil {
		t.Fatal("the deleted key is back after a restart")
	}
}

func TestRemoveNode(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx := context.Background()
	if err := c.RemoveNodeWants(ctx, "n1", "n3", ErrMemberAlive); err != nil {
		t.Fatal(err)
	}
	// n3 dies; while it counts, ALL cannot succeed.
	if err := c.nodes["n3"].Crash(); err != nil {
		t.Fatal(err)
	}
	delete(c.nodes, "n3")
	c.waitDead("n1", "n3")
	if err := c.update("n1", counterKey, 1, Options{Consistency: All}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("ALL with a dead member: %v, want ErrUnavailable", err)
	}
	// Removed for good: it no longer counts anywhere, ALL works again.
	if err := c.nodes["n1"].RemoveNode(ctx, "n3", false); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		for _, name := range []string{"n1", "n2"} {
			ms, _ := c.nodes[name].Members(ctx)
			for _, m := range ms {
				if m.Name == "n3" {
					return fmt.Errorf("%s still lists n3", name)
				}
			}
		}
		return nil
	})
	if err := c.update("n2", counterKey, 1, Options{Consistency: All}); err != nil {
		t.Fatalf("ALL after the removal: %v", err)
	}
	// The system key is not the users'.
	if _, err := c.nodes["n1"].Update(ctx, removedKey, crdt.TypeGSet, func(v crdt.Value) (crdt.Value, error) {
		return v.(*crdt.GSet).Add([]byte("n1#1")), nil
	}, Options{}); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("user write to the system key: %v, want ErrInvalidKey", err)
	}
	// The removal survives a restart of a node.
	if err := c.nodes["n2"].Close(); err != nil {
		t.Fatal(err)
	}
	delete(c.nodes, "n2")
	c.start("n2")
	c.waitMembers()
	ms, _ := c.nodes["n2"].Members(ctx)
	for _, m := range ms {
		if m.Name == "n3" {
			t.Fatal("n2 lists the removed n3 after a restart")
		}
	}
}

func TestRemoveDeadAfterHorizon(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.RemoveDeadAfter = 500 * time.Millisecond })
	ctx := context.Background()
	if err := c.nodes["n2"].Crash(); err != nil {
		t.Fatal(err)
	}
	delete(c.nodes, "n2")
	eventually(t, 15*time.Second, func() error {
		for _, name := range []string{"n1", "n3"} {
			ms, _ := c.nodes[name].Members(ctx)
			if len(ms) != 1 {
				return fmt.Errorf("%s lists %d members, want 1", name, len(ms))
			}
		}
		return nil
	})
	if err := c.update("n1", counterKey, 1, Options{Consistency: All}); err != nil {
		t.Fatalf("ALL once the dead member is removed: %v", err)
	}
}

// RemoveNodeWants calls RemoveNode on node for target and checks the error.
func (c *cluster) RemoveNodeWants(ctx context.Context, node, target string, want error) error {
	err := c.nodes[node].RemoveNode(ctx, target, false)
	if !errors.Is(err, want) {
		return fmt.Errorf("RemoveNode(%s) = %v, want %v", target, err, want)
	}
	return nil
}

func TestBackpressureHoldsWritesWhileReplicationLags(t *testing.T) {
	c := newCluster(t, 2, func(cfg *Config) { cfg.MaxLag = 5 })
	ctx := context.Background()
	n1, n2 := c.nodes["n1"], c.nodes["n2"]
	// Stall n2's loop: it neither applies nor acknowledges anything.
	stall, stalled := make(chan struct{}), make(chan struct{})
	go func() {
		_, _ = n2.do(ctx, func() { close(stalled); <-stall })
	}()
	<-stalled
	// n1 writes until its lag passes the bound; then writes wait.
	var applied uint64
	for i := 0; ; i++ {
		wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, err := n1.Update(wctx, counterKey, crdt.TypeGCounter, increment(n1, 1), Options{})
		cancel()
		if errors.Is(err, ErrOverloaded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		applied++
		if i > 1000 {
			t.Fatal("writes never held back although n2 acknowledges nothing")
		}
	}
	if applied < 5 {
		t.Fatalf("held back after %d writes, MaxLag is 5", applied)
	}
	// The refused write was not applied.
	if got := counterValue(t, n1, counterKey); got != applied {
		t.Fatalf("n1 reads %d after %d acknowledged writes: a refused write was applied", got, applied)
	}
	// A write that waits completes once n2 catches up.
	done := make(chan error, 1)
	go func() {
		_, err := n1.Update(ctx, counterKey, crdt.TypeGCounter, increment(n1, 1), Options{})
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("a write went through while n2 was stalled: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(stall)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the held-back write never completed after n2 caught up")
	}
	c.waitValue(counterKey, applied+1)
}

func TestTwoRegionsConverge(t *testing.T) {
	c := newCluster(t, 4, func(cfg *Config) {
		cfg.Region = map[string]string{"n1": "eu", "n2": "eu", "n3": "us", "n4": "us"}[cfg.Name]
		cfg.Neighbours, cfg.CrossRegion = 1, 1
	})
	ms, err := c.nodes["n3"].Members(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	regions := map[string]string{}
	for _, m := range ms {
		regions[m.Name] = m.Region
	}
	if regions["n1"] != "eu" || regions["n4"] != "us" {
		t.Fatalf("n3 sees regions %v", regions)
	}
	for i, name := range c.names {
		if err := c.update(name, counterKey, uint64(i+1), Options{}); err != nil {
			t.Fatal(err)
		}
	}
	c.waitValue(counterKey, 10)
}
