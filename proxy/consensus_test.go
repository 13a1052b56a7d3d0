package proxy

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4/config"
	chantrans "github.com/lni/dragonboat/v4/plugin/chan"
	"github.com/lni/dragonboat/v4/raftio"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/statemesh/statemesh/consensus"
	"github.com/statemesh/statemesh/eventlog"
)

// chanFactory builds Dragonboat's in-process channel transport (its own
// factory's Validate panics, so it is wrapped as consensus' tests do).
type chanFactory struct{}

func (chanFactory) Create(c config.NodeHostConfig, h raftio.MessageHandler, ch raftio.ChunkHandler) raftio.ITransport {
	return chantrans.NewChanTransport(c, h, ch)
}
func (chanFactory) Validate(string) bool { return true }

// oneNode is the Directory of a single-node cluster.
type oneNode struct{ m consensus.Member }

func (d oneNode) Members() []consensus.Member { return []consensus.Member{d.m} }
func (oneNode) Removed(uint64) bool           { return false }

// startHost starts a one-node consensus cluster with the given handlers.
func startHost(t *testing.T, handlers map[string]consensus.Handler) *consensus.Host {
	t.Helper()
	dir := t.TempDir()
	o := eventlog.DefaultOptions(filepath.Join(dir, "data"))
	o.BlockCacheSize, o.IndexCacheSize = 1<<20, 1<<20
	db, err := eventlog.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	raftAddr := "127.0.0.1:" + strings.Split(lis.Addr().String(), ":")[1] // unique in this process
	cfg := consensus.DefaultConfig()
	cfg.NodeName = "n1"
	cfg.Dir = filepath.Join(dir, "consensus")
	cfg.DB = db
	cfg.RaftAddress = raftAddr
	cfg.Shards = 1
	cfg.Replicas = 1
	cfg.Bootstrap = true
	cfg.Handlers = handlers
	cfg.RTT = 5 * time.Millisecond
	cfg.OpTimeout = 2 * time.Second
	cfg.PlacementInterval = 50 * time.Millisecond
	cfg.RaftTransport = chanFactory{}
	d := &oneNode{m: consensus.Member{Name: "n1", RaftAddress: raftAddr, PeerAddress: lis.Addr().String(), Alive: true}}
	cfg.Directory = d
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h, err := consensus.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	d.m.ReplicaID = h.ReplicaID()
	srv := grpc.NewServer()
	h.Register(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() {
		_ = h.Close()
		srv.Stop()
		_ = db.Close()
	})
	return h
}

// TestRealConsensus runs event-sourced and value commands through a real
// one-node consensus Host, wired as node wires it: discovery, then the
// Host with the proxy's Handlers, then SetBackends and Start.
func TestRealConsensus(t *testing.T) {
	f := newFake(t)
	var host *consensus.Host
	_, conn, url := startProxy(t, f, func(h map[string]consensus.Handler) ESHost {
		if h["cart"] == nil {
			t.Fatalf("no handler for the cart entity type: %v", h)
		}
		host = startHost(t, h)
		return host
	})
	cart := consensus.Entity{Type: "cart", ID: "c1"}

	// The first command may meet a shard that is not ready yet: consensus
	// retries it within the call's deadline.
	out, err := addItem(t, conn, "c1", "apple", 2)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(items(out), ","); got != "apple" {
		t.Fatalf("first reply %s", got)
	}
	out, err = addItem(t, conn, "c1", "pear", 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(items(out), ","); got != "apple,pear" {
		t.Fatalf("second reply %s", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := host.Load(ctx, cart)
	if err != nil {
		t.Fatal(err)
	}
	if st.Seq != 2 || len(st.Events) != 2 {
		t.Fatalf("persisted %+v", st)
	}
	ev := msg(t, "ItemAdded", nil)
	if err := unmarshalStoredAny(st.Events[1].Data, ev); err != nil || field(ev, "item").String() != "pear" {
		t.Fatalf("second event %v %v", ev, err)
	}

	// A failure persists nothing and keeps the function's code.
	_, err = addItem(t, conn, "c1", "none", 0)
	wantCode(t, err, codes.InvalidArgument)
	if st, err := host.Load(ctx, cart); err != nil || st.Seq != 2 {
		t.Fatalf("after a failure: %+v %v", st, err)
	}

	// HTTP, through the same path.
	code, body := httpDo(t, "POST", url+"/carts/c1/items", "application/json", `{"item":"fig","quantity":1}`)
	if code != 200 || body["total"] != "4" {
		t.Fatalf("HTTP: %d %v", code, body)
	}
	code, body = httpDo(t, "POST", url+"/carts/c1/items", "application/json", `{"item":"fig","quantity":-1}`)
	if code != 400 {
		t.Fatalf("HTTP failure: %d %v", code, body)
	}

	// Value entities on the real host.
	for _, v := range []string{"x", "y"} {
		out, err := call(t, conn, "/proxytest.Register/Set", msg(t, "SetRequest", map[string]any{"id": "r", "value": v}), "RegisterValue")
		if err != nil || field(out, "value").String() != v {
			t.Fatalf("set %s: %v %v", v, out, err)
		}
	}
	if v, found, err := host.GetValue(ctx, consensus.Entity{Type: "proxytest.Register", ID: "r"}); err != nil || !found || v.Version != 2 {
		t.Fatalf("value %+v %v %v", v, found, err)
	}
}

func unmarshalStoredAny(b []byte, into proto.Message) error {
	a := &anypb.Any{}
	if err := proto.Unmarshal(b, a); err != nil {
		return err
	}
	return a.UnmarshalTo(into)
}
