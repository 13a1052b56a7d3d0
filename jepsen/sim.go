package jepsen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/lni/dragonboat/v4/config"
	chantrans "github.com/lni/dragonboat/v4/plugin/chan"
	"github.com/lni/dragonboat/v4/raftio"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/statemesh/statemesh/consensus"
	"github.com/statemesh/statemesh/examples"
	"github.com/statemesh/statemesh/internal/freeport"
	"github.com/statemesh/statemesh/internal/netfault"
	"github.com/statemesh/statemesh/mesh"
	"github.com/statemesh/statemesh/node"
	"github.com/statemesh/statemesh/sdk"
)

// simCluster runs every node in this process, with the example functions
// on one loopback port. Faults go through internal/netfault: memberlist
// packets and streams, the peer gRPC transport, consensus forwarding and
// Raft (Dragonboat's channel transport) all pass the same Faults, so a cut
// link is cut for every protocol at once. Kill is node.Crash (write-behind
// state not yet persisted is lost, the data directory stays); a paused
// process cannot be simulated in one process, so Pause is unsupported.
type simCluster struct {
	cfg    ClusterConfig
	faults *netfault.Faults
	addrs  *netfault.AddrBook
	fn     *sdk.Service
	fnAddr string
	fnLog  *os.File
	client *http.Client

	mu    sync.Mutex
	nodes []*simNode
}

type simNode struct {
	info NodeInfo
	cfg  node.Config
	log  *os.File
	n    *node.Node // nil while killed
}

// chanFactory builds Dragonboat's in-process channel transport.
type chanFactory struct{}

func (chanFactory) Create(c config.NodeHostConfig, h raftio.MessageHandler, ch raftio.ChunkHandler) raftio.ITransport {
	return chantrans.NewChanTransport(c, h, ch)
}
func (chanFactory) Validate(string) bool { return true }

func startSim(ctx context.Context, cfg ClusterConfig, seed int64) (_ *simCluster, err error) {
	c := &simCluster{cfg: cfg, faults: netfault.New(seed), addrs: &netfault.AddrBook{},
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()
	logs := filepath.Join(cfg.Dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return nil, err
	}
	if c.fnLog, err = os.Create(filepath.Join(logs, "functions.log")); err != nil {
		return nil, err
	}
	c.fn, c.fnAddr, err = serveExamples(slog.New(slog.NewTextHandler(c.fnLog, nil)))
	if err != nil {
		return nil, err
	}
	var seeds []string
	for i := range cfg.Nodes {
		name := nodeName(i)
		// Raft runs on the channel transport: its address is a name that
		// is never bound, unique in this process. Everything else listens
		// on a port the kernel picks (no race with other tests for a
		// "free" port); a restarted node binds the same ones again.
		raftAddr, err := freeport.Addr()
		if err != nil {
			return nil, err
		}
		f, err := os.Create(filepath.Join(logs, name+".log"))
		if err != nil {
			return nil, err
		}
		log := slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", name)
		mc := mesh.Config{Name: name, Region: cfg.region(i), GossipAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0",
			DataDir: filepath.Join(cfg.Dir, "data", name), Join: append([]string(nil), seeds...),
			Preset: mesh.PresetLocal, Durability: durability(cfg.Sync), Faults: c.faults}
		c.addrs.Set(raftAddr, name)
		nc := node.Config{Mesh: mc, AdminAddr: "127.0.0.1:0", Logger: log,
			Consensus: node.ConsensusConfig{RaftAddr: raftAddr, Bootstrap: i == 0, Tweak: c.tweak(name)},
			Function:  node.FunctionConfig{Addr: c.fnAddr, HTTPAddr: "127.0.0.1:0"}}
		sn := &simNode{info: NodeInfo{Name: name, Region: mc.Region}, cfg: nc, log: f}
		c.nodes = append(c.nodes, sn)
		if err := c.start(ctx, sn); err != nil {
			return nil, err
		}
		seeds = append(seeds, sn.cfg.Mesh.GossipAddr)
		cfg.Progress("node %s up (%d/%d)", name, i+1, cfg.Nodes)
	}
	// Every node that restarts joins through every other.
	for _, sn := range c.nodes {
		sn.cfg.Mesh.Join = otherSeeds(seeds, sn.cfg.Mesh.GossipAddr)
	}
	return c, nil
}

func (c *simCluster) tweak(name string) func(*consensus.Config) {
	return func(cc *consensus.Config) {
		cc.RaftTransport = netfault.WrapRaft(chanFactory{}, name, c.faults, c.addrs.Lookup)
		cc.DialOptions = []grpc.DialOption{
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithUnaryInterceptor(netfault.UnaryClientInterceptor(name, c.faults, c.addrs.Lookup)),
		}
	}
}

func (c *simCluster) start(ctx context.Context, sn *simNode) error {
	n, err := node.Start(sn.cfg)
	if err != nil {
		return fmt.Errorf("jepsen: start %s: %w", sn.info.Name, err)
	}
	c.mu.Lock()
	sn.n = n
	// Pin the addresses the kernel picked, for a restart.
	sn.cfg.Mesh.GossipAddr, sn.cfg.Mesh.PeerAddr = n.Mesh.GossipAddr(), n.Mesh.PeerAddr()
	sn.cfg.AdminAddr, sn.cfg.Function.HTTPAddr = n.AdminAddr(), n.APIHTTPAddr()
	sn.info.HTTP = "http://" + n.APIHTTPAddr()
	c.mu.Unlock()
	c.addrs.Set(n.Mesh.PeerAddr(), sn.info.Name)
	return waitHTTP(ctx, c.client, sn.info.HTTP)
}

func (c *simCluster) Backend() string { return "sim" }

func (c *simCluster) Nodes() []NodeInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]NodeInfo, len(c.nodes))
	for i, sn := range c.nodes {
		out[i] = sn.info
	}
	return out
}

func (c *simCluster) Caps() Caps {
	return Caps{Partition: true, Kill: true, ClockSkew: true, LinkFaults: true}
}

func (c *simCluster) HTTPClient() *http.Client { return c.client }

func (c *simCluster) Cut(pairs [][2]string) error {
	for _, p := range pairs {
		c.faults.Cut(p[0], p[1])
	}
	return nil
}

func (c *simCluster) Heal() error {
	c.faults.Heal()
	c.faults.SetLoss(0)
	c.faults.SetDelay(0, 0)
	return nil
}

func (c *simCluster) node(name string) (*simNode, error) {
	for _, sn := range c.nodes {
		if sn.info.Name == name {
			return sn, nil
		}
	}
	return nil, fmt.Errorf("jepsen: no node %q", name)
}

func (c *simCluster) Kill(_ context.Context, name string) error {
	sn, err := c.node(name)
	if err != nil {
		return err
	}
	c.mu.Lock()
	n := sn.n
	sn.n = nil
	c.mu.Unlock()
	if n == nil {
		return nil
	}
	return n.Crash()
}

func (c *simCluster) Restart(ctx context.Context, name string) error {
	sn, err := c.node(name)
	if err != nil {
		return err
	}
	c.mu.Lock()
	running := sn.n != nil
	c.mu.Unlock()
	if running {
		return nil
	}
	// A restarted node never bootstraps: the shards exist.
	sn.cfg.Consensus.Bootstrap = false
	return c.start(ctx, sn)
}

func (c *simCluster) Pause(string) error {
	return unsupported("sim", "pause a node", "its nodes share one process; use local or netns")
}

func (c *simCluster) Resume(string) error { return nil }

func (c *simCluster) SetClockOffset(_ context.Context, name string, d time.Duration) error {
	sn, err := c.node(name)
	if err != nil {
		return err
	}
	c.mu.Lock()
	n := sn.n
	c.mu.Unlock()
	if n == nil {
		return nil // killed: it restarts with its own clock
	}
	return n.SetClockOffset(d)
}

func (c *simCluster) SetLinkFaults(delay time.Duration, loss float64) error {
	c.faults.SetDelay(0, delay)
	c.faults.SetLoss(loss)
	return nil
}

func (c *simCluster) Close() error {
	var errs []error
	c.faults.Heal()
	for i := len(c.nodes) - 1; i >= 0; i-- {
		sn := c.nodes[i]
		if sn.n != nil {
			errs = append(errs, sn.n.Close())
			sn.n = nil
		}
		if sn.log != nil {
			errs = append(errs, sn.log.Close())
		}
	}
	if c.fn != nil {
		c.fn.Stop()
	}
	if c.fnLog != nil {
		errs = append(errs, c.fnLog.Close())
	}
	c.client.CloseIdleConnections()
	return errors.Join(errs...)
}

// serveExamples serves the example functions on a loopback port.
func serveExamples(log *slog.Logger) (*sdk.Service, string, error) {
	svc := sdk.New(sdk.WithLogger(log), sdk.WithServiceName("statemesh-examples"))
	if err := examples.Register(svc); err != nil {
		return nil, "", err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	go func() { _ = svc.Serve(lis) }()
	return svc, lis.Addr().String(), nil
}
