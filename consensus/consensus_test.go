package consensus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// checkReplicasAgree waits until every running replica of e's shard holds
// exactly want (in order, gapless).
func (c *testCluster) checkReplicasAgree(e Entity, want [][]byte) {
	c.t.Helper()
	shard := ShardOf(e, c.shards)
	var last string
	eventually(c.t, 15*time.Second, "replicas of "+e.ID+" agree", func() bool {
		holders := 0
		for _, nd := range c.nodes {
			if nd.h == nil || !nd.h.hasShard(shard) {
				continue
			}
			holders++
			st, err := nd.db.Shard(shard).Load(e)
			if err != nil {
				last = err.Error()
				return false
			}
			if st.SnapshotSeq != 0 {
				last = "unexpected snapshot"
				return false
			}
			if len(st.Events) != len(want) || st.Seq != uint64(len(want)) {
				last = fmt.Sprintf("%s has %d events (seq %d), want %d", nd.name, len(st.Events), st.Seq, len(want))
				return false
			}
			for i, ev := range st.Events {
				if ev.Seq != uint64(i+1) || !bytes.Equal(ev.Data, want[i]) {
					last = fmt.Sprintf("%s event %d is %d:%q, want %d:%q", nd.name, i, ev.Seq, ev.Data, i+1, want[i])
					return false
				}
			}
		}
		return holders >= min(3, len(c.nodes))
	})
	_ = last
}

func TestCommandsReplicateFromEveryNode(t *testing.T) {
	c := newCluster(t, 3, 4, map[string]Handler{"log": appendHandler})
	ctx := ctxT(t, 30*time.Second)
	want := map[string][][]byte{}
	for i := range 60 {
		nd := c.nodes[i%3]
		e := Entity{Type: "log", ID: fmt.Sprintf("e%d", i%7)}
		payload := fmt.Appendf(nil, "event-%d", i)
		r, err := nd.h.Command(ctx, e, payload, nil)
		if err != nil {
			t.Fatalf("command %d via %s: %v", i, nd.name, err)
		}
		want[e.ID] = append(want[e.ID], payload)
		if r.Seq != uint64(len(want[e.ID])) || string(r.Data) != strconv.Itoa(len(want[e.ID])) {
			t.Fatalf("command %d: reply seq %d %q, want %d", i, r.Seq, r.Data, len(want[e.ID]))
		}
	}
	for id, evs := range want {
		e := Entity{Type: "log", ID: id}
		for _, nd := range c.nodes {
			st, err := nd.h.Load(ctx, e)
			if err != nil {
				t.Fatalf("load %s via %s: %v", id, nd.name, err)
			}
			if st.Seq != uint64(len(evs)) || len(st.Events) != len(evs) {
				t.Fatalf("load %s via %s: seq %d, %d events; want %d", id, nd.name, st.Seq, len(st.Events), len(evs))
			}
		}
		c.checkReplicasAgree(e, evs)
	}
}

func TestRetriedRequestIDAppliedOnce(t *testing.T) {
	c := newCluster(t, 3, 2, map[string]Handler{"log": appendHandler})
	ctx := ctxT(t, 20*time.Second)
	e := Entity{Type: "log", ID: "once"}
	id := []byte("request-1")
	first, err := c.nodes[0].h.Command(ctx, e, []byte("a"), id)
	if err != nil {
		t.Fatal(err)
	}
	// The same request id again, through every node, even with another
	// payload: the first reply, nothing applied.
	for _, nd := range c.nodes {
		again, err := nd.h.Command(ctx, e, []byte("b"), id)
		if err != nil {
			t.Fatalf("retry via %s: %v", nd.name, err)
		}
		if again.Seq != first.Seq || !bytes.Equal(again.Data, first.Data) {
			t.Fatalf("retry via %s: %+v, want the first reply %+v", nd.name, again, first)
		}
	}
	if _, err := c.nodes[1].h.Command(ctx, e, []byte("c"), []byte("request-2")); err != nil {
		t.Fatal(err)
	}
	c.checkReplicasAgree(e, [][]byte{[]byte("a"), []byte("c")})
}

func TestHandlerErrorsAndLimits(t *testing.T) {
	c := newCluster(t, 1, 1, map[string]Handler{"log": appendHandler})
	ctx := ctxT(t, 10*time.Second)
	h := c.nodes[0].h
	if _, err := h.Command(ctx, Entity{Type: "log", ID: "x"}, nil, nil); !errors.Is(err, ErrRejected) {
		t.Fatalf("empty command: %v, want ErrRejected", err)
	}
	if _, err := h.Command(ctx, Entity{Type: "nope", ID: "x"}, []byte("a"), nil); !errors.Is(err, ErrNoHandler) {
		t.Fatalf("unknown type: %v, want ErrNoHandler", err)
	}
	if _, err := h.Command(ctx, Entity{Type: "log"}, []byte("a"), nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("empty id: %v, want ErrInvalid", err)
	}
	if _, err := h.Command(ctx, Entity{Type: "log", ID: "x"}, make([]byte, MaxCommandBytes+1), nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("huge command: %v, want ErrInvalid", err)
	}
	st, err := h.Load(ctx, Entity{Type: "log", ID: "x"})
	if err != nil || st.Seq != 0 {
		t.Fatalf("after refused commands: %+v, %v; want nothing applied", st, err)
	}
}

func TestValueEntities(t *testing.T) {
	c := newCluster(t, 3, 2, nil)
	ctx := ctxT(t, 20*time.Second)
	e := Entity{Type: "kv", ID: "k"}
	a, b := c.nodes[0].h, c.nodes[2].h
	if _, found, err := a.GetValue(ctx, e); err != nil || found {
		t.Fatalf("fresh value: found=%v err=%v", found, err)
	}
	v1, err := a.PutValue(ctx, e, []byte("one"), 0)
	if err != nil || v1 != 1 {
		t.Fatalf("create: v%d %v", v1, err)
	}
	if _, err := b.PutValue(ctx, e, []byte("stale"), 0); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale create: %v, want ErrConflict", err)
	}
	v2, err := b.PutValue(ctx, e, []byte("two"), 1)
	if err != nil || v2 != 2 {
		t.Fatalf("update: v%d %v", v2, err)
	}
	got, found, err := c.nodes[1].h.GetValue(ctx, e)
	if err != nil || !found || string(got.State) != "two" || got.Version != 2 {
		t.Fatalf("read: %+v found=%v %v", got, found, err)
	}
	if _, err := a.DeleteValue(ctx, e, 1); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale delete: %v, want ErrConflict", err)
	}
	v3, err := a.DeleteValue(ctx, e, 2)
	if err != nil || v3 != 3 {
		t.Fatalf("delete: v%d %v", v3, err)
	}
	got, found, err = b.GetValue(ctx, e)
	if err != nil || !found || !got.Deleted || got.Version != 3 || got.State != nil {
		t.Fatalf("read deleted: %+v found=%v %v", got, found, err)
	}
	// Versions never go back: a create that expects 0 after a delete fails.
	if _, err := b.PutValue(ctx, e, []byte("again"), 0); !errors.Is(err, ErrConflict) {
		t.Fatalf("create after delete expecting 0: %v, want ErrConflict", err)
	}
	if v, err := b.PutValue(ctx, e, []byte("again"), AnyVersion); err != nil || v != 4 {
		t.Fatalf("unconditional put: v%d %v", v, err)
	}
}

// mustAppend appends event "e<i>" to e through via and returns it.
func mustAppend(t *testing.T, ctx context.Context, via *testNode, e Entity, i int) []byte {
	t.Helper()
	p := fmt.Appendf(nil, "e%d", i)
	if _, err := via.h.Command(ctx, e, p, nil); err != nil {
		t.Fatalf("command %d via %s: %v", i, via.name, err)
	}
	return p
}

func TestLeaderCrashAndRestart(t *testing.T) {
	c := newCluster(t, 3, 1, map[string]Handler{"log": appendHandler})
	ctx := ctxT(t, 60*time.Second)
	e := Entity{Type: "log", ID: "crash"}
	var want [][]byte
	write := func(via *testNode, i int) { want = append(want, mustAppend(t, ctx, via, e, i)) }
	for i := range 10 {
		write(c.nodes[i%3], i)
	}
	leader := c.leaderOf(e)
	c.stop(leader)
	var others []*testNode
	for _, nd := range c.nodes {
		if nd != leader {
			others = append(others, nd)
		}
	}
	// A new leader is elected among the two others; commands through
	// either keep working.
	for i := 10; i < 30; i++ {
		write(others[i%2], i)
	}
	if nl := c.leaderOf(e); nl == leader {
		t.Fatalf("stopped node %s still leads", leader.name)
	}
	c.start(leader, false)
	for i := 30; i < 40; i++ {
		write(c.nodes[i%3], i)
	}
	c.checkReplicasAgree(e, want)
}

func TestMinorityRefusesMajorityServes(t *testing.T) {
	c := newCluster(t, 3, 1, map[string]Handler{"log": appendHandler})
	ctx := ctxT(t, 60*time.Second)
	e := Entity{Type: "log", ID: "split"}
	if _, err := c.nodes[0].h.Command(ctx, e, []byte("before"), nil); err != nil {
		t.Fatal(err)
	}
	// Isolate the leader, so the minority side is the one that led.
	minority := c.leaderOf(e)
	c.faults.Isolate(minority.name, c.names())
	var majority []*testNode
	for _, nd := range c.nodes {
		if nd != minority {
			majority = append(majority, nd)
		}
	}
	want := [][]byte{[]byte("before")}
	for i := range 10 {
		p := fmt.Appendf(nil, "majority-%d", i)
		if _, err := majority[i%2].h.Command(ctx, e, p, nil); err != nil {
			t.Fatalf("majority command %d: %v", i, err)
		}
		want = append(want, p)
	}
	// The minority refuses: within a short deadline it neither applies
	// nor acknowledges anything.
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err := minority.h.Command(short, e, []byte("minority"), []byte("minority-req"))
	cancel()
	if err == nil {
		t.Fatal("the isolated node acknowledged a command")
	}
	if !errors.Is(err, ErrTimeout) && !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrNotLeader) {
		t.Fatalf("minority command: %v, want a timeout, unavailable or not-leader error", err)
	}
	c.faults.Heal()
	// After healing, the minority node catches up; its refused command
	// (ambiguous from its caller's point of view) was never applied,
	// because no majority could have accepted it.
	for i := range 5 {
		p := fmt.Appendf(nil, "healed-%d", i)
		if _, err := minority.h.Command(ctx, e, p, nil); err != nil {
			t.Fatalf("command after heal: %v", err)
		}
		want = append(want, p)
	}
	c.checkReplicasAgree(e, want)
}

// TestSnapshotCatchUp makes shards snapshot and compact their logs every
// few entries, so that a replica that was down catches up from a streamed
// snapshot of the shard's eventlog data (SaveSnapshot on the leader,
// RecoverFromSnapshot on the follower), then from the log.
func TestSnapshotCatchUp(t *testing.T) {
	c := newClusterWith(t, 3, 1, map[string]Handler{"log": appendHandler}, func(cfg *Config) {
		cfg.SnapshotEntries = 10
		cfg.CompactionOverhead = 2
	})
	ctx := ctxT(t, 60*time.Second)
	e := Entity{Type: "log", ID: "snap"}
	var want [][]byte
	write := func(via *testNode, i int) { want = append(want, mustAppend(t, ctx, via, e, i)) }
	write(c.nodes[0], 0)
	lagging := c.nodes[2]
	if c.leaderOf(e) == lagging {
		lagging = c.nodes[1]
	}
	c.stop(lagging)
	for i := 1; i < 80; i++ {
		if c.nodes[i%3] != lagging {
			write(c.nodes[i%3], i)
		}
	}
	c.start(lagging, false)
	c.checkReplicasAgree(e, want)
	// Values and request results travel in the snapshot too.
	if _, err := lagging.h.Command(ctx, e, []byte("retry"), []byte("dup")); err != nil {
		t.Fatal(err)
	}
	want = append(want, []byte("retry"))
	c.checkReplicasAgree(e, want)
}

// membership returns a shard's voting replicas as a running holder sees
// them (nil if it cannot tell yet).
func (c *testCluster) membership(shard uint64) map[uint64]string {
	for _, nd := range c.nodes {
		if nd.h == nil || !nd.h.hasShard(shard) {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		m, err := nd.h.nh.SyncGetShardMembership(ctx, shard)
		cancel()
		if err == nil {
			return m.Nodes
		}
	}
	return nil
}

// replicaHolders returns the nodes that run a replica of shard.
func (c *testCluster) replicaHolders(shard uint64) []string {
	var out []string
	for _, nd := range c.nodes {
		if nd.h != nil && nd.h.hasShard(shard) {
			out = append(out, nd.name)
		}
	}
	return out
}

// TestPlacement starts 4 nodes: each shard gets exactly 3 replicas, and
// when a holder is removed for good its replicas move to the fourth node
// with the data.
func TestPlacementReplacesRemovedNode(t *testing.T) {
	c := newCluster(t, 4, 2, map[string]Handler{"log": appendHandler})
	ctx := ctxT(t, 60*time.Second)
	for s := uint64(1); s <= 2; s++ {
		eventually(t, 10*time.Second, "3 replicas per shard", func() bool { return len(c.replicaHolders(s)) == 3 })
	}
	e := Entity{Type: "log", ID: "moving"}
	shard := ShardOf(e, 2)
	var want [][]byte
	for i := range 5 {
		p := fmt.Appendf(nil, "e%d", i)
		if _, err := c.nodes[i%4].h.Command(ctx, e, p, nil); err != nil {
			t.Fatal(err)
		}
		want = append(want, p)
	}
	holders := c.replicaHolders(shard)
	victim := c.node(holders[len(holders)-1])
	if c.leaderOf(e) == victim {
		victim = c.node(holders[0])
	}
	var spare string
	for _, nd := range c.nodes {
		if !slices.Contains(holders, nd.name) {
			spare = nd.name
		}
	}
	c.stop(victim)
	c.dir.remove(victim.name)
	eventually(t, 20*time.Second, "the spare node holds a replica", func() bool {
		return slices.Contains(c.replicaHolders(shard), spare)
	})
	eventually(t, 20*time.Second, "the removed replica leaves the shard", func() bool {
		nodes := c.membership(shard)
		_, still := nodes[victim.rid]
		return !still && len(nodes) == 3
	})
	for i := 5; i < 10; i++ {
		p := fmt.Appendf(nil, "e%d", i)
		if _, err := c.node(spare).h.Command(ctx, e, p, nil); err != nil {
			t.Fatal(err)
		}
		want = append(want, p)
	}
	c.checkReplicasAgree(e, want)
}

// TestStaleCacheIsNeverTrusted plants stale entity states in a node's
// cache: a command with events is refused by the state machine as a
// conflict and re-run on fresh state; a command without events (a read)
// is answered from a linearizable read, not from the cache.
func TestStaleCacheIsNeverTrusted(t *testing.T) {
	c := newCluster(t, 3, 1, map[string]Handler{"log": appendHandler, "reg": registerHandler})
	ctx := ctxT(t, 20*time.Second)
	h := c.nodes[0].h
	e := Entity{Type: "log", ID: "stale"}
	var want [][]byte
	for i := range 3 {
		p := fmt.Appendf(nil, "e%d", i)
		if _, err := c.nodes[1].h.Command(ctx, e, p, nil); err != nil {
			t.Fatal(err)
		}
		want = append(want, p)
	}
	h.cache.advance(e, EntityState{}, [][]byte{[]byte("e0")}, false, nil) // seq 1: stale
	r, err := h.Command(ctx, e, []byte("e3"), nil)
	if err != nil || r.Seq != 4 || string(r.Data) != "4" {
		t.Fatalf("command on a stale cache: %+v %v, want seq 4", r, err)
	}
	want = append(want, []byte("e3"))
	c.checkReplicasAgree(e, want)

	reg := Entity{Type: "reg", ID: "r"}
	if _, err := c.nodes[2].h.Command(ctx, reg, []byte("w\x00new"), nil); err != nil {
		t.Fatal(err)
	}
	h.cache.advance(reg, EntityState{}, [][]byte{[]byte("old")}, false, nil)
	r, err = h.Command(ctx, reg, []byte("r"), nil)
	if err != nil || string(r.Data) != "new" {
		t.Fatalf("read through a stale cache: %q %v, want \"new\"", r.Data, err)
	}
}

// TestLeadersSpreadOverNodes: the bootstrap node leads every shard at
// first; placement moves leaderships until no node leads more than its
// share.
func TestLeadersSpreadOverNodes(t *testing.T) {
	const shards = 6
	c := newCluster(t, 3, shards, nil)
	eventually(t, 20*time.Second, "each node leads 2 of 6 shards", func() bool {
		led := map[string]int{}
		for s := uint64(1); s <= shards; s++ {
			for _, nd := range c.nodes {
				id, _, valid, err := nd.h.nh.GetLeaderID(s)
				if err == nil && valid && id == nd.rid {
					led[nd.name]++
				}
			}
		}
		return led["n1"] == 2 && led["n2"] == 2 && led["n3"] == 2
	})
}

// TestRejectionKeepsHandlerStatus: a handler's status error reaches the
// caller as a Rejection with its code and message, whichever node the
// command entered by (two of three forward it to the leader).
func TestRejectionKeepsHandlerStatus(t *testing.T) {
	refuse := HandlerFunc(func(context.Context, Command) (Effect, error) {
		return Effect{}, status.Error(codes.NotFound, "no such thing")
	})
	c := newCluster(t, 3, 1, map[string]Handler{"refuse": refuse})
	ctx := ctxT(t, 20*time.Second)
	for _, nd := range c.nodes {
		_, err := nd.h.Command(ctx, Entity{Type: "refuse", ID: "x"}, []byte("a"), nil)
		var r *Rejection
		if !errors.Is(err, ErrRejected) || !errors.As(err, &r) || r.Code != codes.NotFound || r.Message != "no such thing" {
			t.Fatalf("via %s: %v (%#v), want a NotFound rejection", nd.name, err, r)
		}
	}
}
