package consensus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4/config"
	chantrans "github.com/lni/dragonboat/v4/plugin/chan"
	"github.com/lni/dragonboat/v4/raftio"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/statemesh/statemesh/eventlog"
	"github.com/statemesh/statemesh/internal/netfault"
)

// chanFactory builds Dragonboat's in-process channel transport. Its own
// factory's Validate panics, so it is wrapped as Dragonboat's tests do.
type chanFactory struct{}

func (chanFactory) Create(c config.NodeHostConfig, h raftio.MessageHandler, ch raftio.ChunkHandler) raftio.ITransport {
	return chantrans.NewChanTransport(c, h, ch)
}
func (chanFactory) Validate(string) bool { return true }

// raftPorts hands out unique fake Raft addresses: the channel transport
// keys its process-wide listener table by address, so tests running one
// after another must never reuse one while an old NodeHost may linger.
var raftPorts atomic.Int64

func init() { raftPorts.Store(20000) }

// staticDirectory is a Directory the test controls.
type staticDirectory struct {
	mu      sync.Mutex
	members map[string]Member
	removed map[uint64]bool
}

func (d *staticDirectory) Members() []Member {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Member, 0, len(d.members))
	for _, m := range d.members {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (d *staticDirectory) Removed(id uint64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.removed[id]
}

// remove marks a node removed for good and forgets it, as the mesh does.
func (d *staticDirectory) remove(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.removed[d.members[name].ReplicaID] = true
	delete(d.members, name)
}

func (d *staticDirectory) set(m Member) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.members[m.Name] = m
}

func (d *staticDirectory) setAlive(name string, alive bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := d.members[name]
	m.Alive = alive
	d.members[name] = m
}

// testNode is one in-process node: an eventlog DB, a Host, and a gRPC
// server for the Consensus service on loopback.
type testNode struct {
	name     string
	dir      string
	raftAddr string
	rid      uint64
	db       *eventlog.DB
	h        *Host
	srv      *grpc.Server
	lis      net.Listener
}

type testCluster struct {
	t        testing.TB
	faults   *netfault.Faults
	dir      *staticDirectory
	addrs    *netfault.AddrBook
	nodes    []*testNode
	shards   int
	handlers map[string]Handler
	tweak    func(*Config)
}

// newCluster starts n nodes; the first bootstraps the shards, placement
// adds the others, and newCluster returns once every shard has
// min(n, 3) replicas and a leader.
func newCluster(t testing.TB, n, shards int, handlers map[string]Handler) *testCluster {
	t.Helper()
	return newClusterWith(t, n, shards, handlers, nil)
}

// newClusterWith is newCluster with tweak applied to every node's Config.
func newClusterWith(t testing.TB, n, shards int, handlers map[string]Handler, tweak func(*Config)) *testCluster {
	t.Helper()
	c := &testCluster{t: t, faults: netfault.New(1), addrs: &netfault.AddrBook{}, shards: shards, handlers: handlers, tweak: tweak,
		dir: &staticDirectory{members: map[string]Member{}, removed: map[uint64]bool{}}}
	root := t.TempDir()
	for i := range n {
		nd := &testNode{name: fmt.Sprintf("n%d", i+1), dir: filepath.Join(root, fmt.Sprintf("n%d", i+1)),
			raftAddr: fmt.Sprintf("127.0.0.1:%d", raftPorts.Add(1))}
		c.addrs.Set(nd.raftAddr, nd.name)
		c.nodes = append(c.nodes, nd)
		c.start(nd, i == 0)
	}
	t.Cleanup(func() {
		for _, nd := range c.nodes {
			c.stop(nd)
		}
	})
	c.waitReplicas(min(n, 3))
	return c
}

func (c *testCluster) config(nd *testNode, bootstrap bool) Config {
	cfg := DefaultConfig()
	cfg.NodeName = nd.name
	cfg.Dir = filepath.Join(nd.dir, "consensus")
	cfg.DB = nd.db
	cfg.RaftAddress = nd.raftAddr
	cfg.Shards = c.shards
	cfg.Bootstrap = bootstrap
	cfg.Handlers = c.handlers
	cfg.Directory = c.dir
	cfg.PlacementInterval = 50 * time.Millisecond
	cfg.OpTimeout = 2 * time.Second
	cfg.RTT = 5 * time.Millisecond
	cfg.RaftTransport = netfault.WrapRaft(chanFactory{}, nd.name, c.faults, c.addrs.Lookup)
	cfg.DialOptions = []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(netfault.UnaryClientInterceptor(nd.name, c.faults, c.addrs.Lookup)),
	}
	if os.Getenv("CONSENSUS_TEST_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", nd.name)
	}
	if c.tweak != nil {
		c.tweak(&cfg)
	}
	return cfg
}

// start opens the node's DB and Host and serves its gRPC service.
func (c *testCluster) start(nd *testNode, bootstrap bool) {
	t := c.t
	t.Helper()
	o := eventlog.DefaultOptions(filepath.Join(nd.dir, "data"))
	o.BlockCacheSize, o.IndexCacheSize = 1<<20, 1<<20
	db, err := eventlog.Open(o)
	if err != nil {
		t.Fatalf("open %s: %v", nd.name, err)
	}
	nd.db = db
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nd.lis = lis
	c.addrs.Set(lis.Addr().String(), nd.name)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := Start(ctx, c.config(nd, bootstrap))
	if err != nil {
		t.Fatalf("start %s: %v", nd.name, err)
	}
	nd.h = h
	nd.rid = h.ReplicaID()
	nd.srv = grpc.NewServer()
	h.Register(nd.srv)
	go func() { _ = nd.srv.Serve(lis) }()
	c.dir.set(Member{Name: nd.name, ReplicaID: h.ReplicaID(), RaftAddress: nd.raftAddr, PeerAddress: lis.Addr().String(), Alive: true})
}

// stop closes the node's Host, server and DB (a clean stop; Raft's log
// and the DB are on disk, so it is also what a crash leaves behind, minus
// unsynced writes).
func (c *testCluster) stop(nd *testNode) {
	if nd.h == nil {
		return
	}
	c.dir.setAlive(nd.name, false)
	_ = nd.h.Close()
	nd.srv.Stop()
	_ = nd.db.Close()
	nd.h = nil
}

func (c *testCluster) node(name string) *testNode {
	for _, nd := range c.nodes {
		if nd.name == name {
			return nd
		}
	}
	c.t.Fatalf("no node %s", name)
	return nil
}

func (c *testCluster) names() []string {
	var out []string
	for _, nd := range c.nodes {
		out = append(out, nd.name)
	}
	return out
}

// waitReplicas waits until every shard has want voting replicas and every
// running node that holds a replica knows a leader.
func (c *testCluster) waitReplicas(want int) {
	c.t.Helper()
	eventually(c.t, 30*time.Second, fmt.Sprintf("every shard has %d replicas and a leader", want), func() bool {
		for s := uint64(1); s <= uint64(c.shards); s++ {
			count := 0
			for _, nd := range c.nodes {
				if nd.h == nil {
					continue
				}
				_, _, valid, err := nd.h.nh.GetLeaderID(s)
				if err == nil {
					if !valid {
						return false
					}
					count++
				}
			}
			if count < want {
				return false
			}
		}
		return true
	})
}

// leaderOf returns the node that leads the entity's shard.
func (c *testCluster) leaderOf(e Entity) *testNode {
	c.t.Helper()
	var out *testNode
	eventually(c.t, 10*time.Second, "a leader for "+e.ID, func() bool {
		for _, nd := range c.nodes {
			if nd.h == nil {
				continue
			}
			id, _, valid, err := nd.h.nh.GetLeaderID(nd.h.ShardOf(e))
			if err != nil || !valid {
				continue
			}
			for _, m := range c.dir.Members() {
				if m.ReplicaID == id && c.node(m.Name).h != nil {
					out = c.node(m.Name)
					return true
				}
			}
		}
		return false
	})
	return out
}

// eventually retries cond until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// appendHandler appends its command as one event and replies with the
// entity's new event count (the bench's and the process test's handler
// has the same shape).
var appendHandler = HandlerFunc(func(_ context.Context, c Command) (Effect, error) {
	if len(c.Payload) == 0 {
		return Effect{}, errors.New("empty command")
	}
	return Effect{Events: [][]byte{c.Payload}, Reply: fmt.Appendf(nil, "%d", c.State.Seq+1)}, nil
})
