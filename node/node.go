// Package node assembles one statemesh node: its eventlog database, the
// mesh (membership, peer transport, replicated CRDT store), the consensus
// host (Raft shards for event-sourced and value entities), the admin gRPC
// service that `statemesh ctl` talks to, and an HTTP endpoint with
// Prometheus metrics, and the function proxy (proxy/) in front of the
// user function when one is configured.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/statemesh/statemesh/consensus"
	"github.com/statemesh/statemesh/eventlog"
	"github.com/statemesh/statemesh/internal/hlc"
	"github.com/statemesh/statemesh/mesh"
	"github.com/statemesh/statemesh/protocol/adminpb"
	"github.com/statemesh/statemesh/proxy"
)

// Config configures a node.
type Config struct {
	Mesh mesh.Config
	// AdminAddr is where the admin gRPC service listens ("host:port").
	// Keep it private: it reads and writes any key. Empty: no admin
	// service.
	AdminAddr string
	// HTTPAddr serves /metrics (Prometheus), /healthz and Go's profiler
	// (/debug/pprof/). Keep it private. Empty: none.
	HTTPAddr string
	// Consensus configures the Raft shards; RaftAddr empty disables them.
	Consensus ConsensusConfig
	// Function configures the proxy in front of a user function; Addr
	// empty runs none.
	Function FunctionConfig
	Logger   *slog.Logger
}

// FunctionConfig is the node's proxy: the user function it fronts and
// where it serves the function's services.
type FunctionConfig struct {
	// Addr is the function's gRPC address ("host:port").
	Addr string
	// GRPCAddr and HTTPAddr are where the function's services are served
	// to clients, over gRPC and HTTP/JSON ("" for none of that kind).
	GRPCAddr, HTTPAddr string
	// DiscoveryTimeout bounds the wait for the function to answer
	// discovery at start (it may start after the node). Default 60s.
	DiscoveryTimeout time.Duration
}

// ConsensusConfig is the node's part of consensus.Config; the rest comes
// from the mesh and the data directory.
type ConsensusConfig struct {
	// RaftAddr is where the Raft transport listens ("host:port"). Empty:
	// the node runs no consensus.
	RaftAddr string
	// Bootstrap creates the shards on this node if it has none: set it on
	// the one node that starts a new cluster (statemesh node does when it
	// is given no --join).
	Bootstrap bool
	// Shards and Replicas: see consensus.Config (0: its defaults).
	Shards, Replicas int
	// Handlers run commands by entity type, besides the built-in LogType.
	Handlers map[string]consensus.Handler
	// RaftTLS runs the Raft transport over mutual TLS (see
	// consensus.Config.RaftTLS); statemesh node sets it from the same
	// files as the peer service's TLS.
	RaftTLS *consensus.RaftTLS
	// Tweak, if set, edits the consensus config last (tests).
	Tweak func(*consensus.Config)
}

// Node is a running statemesh node.
type Node struct {
	Mesh *mesh.Node
	// Consensus is nil when the node runs no consensus.
	Consensus *consensus.Host
	// Proxy is nil when the node fronts no function.
	Proxy    *proxy.Proxy
	apiGRPC  net.Listener
	apiHTTP  net.Listener
	db       *eventlog.DB
	tmpDir   string // removed on close: the data dir of a node without one
	dir      *directory
	log      *slog.Logger
	admin    *grpc.Server
	adminLis net.Listener
	http     *http.Server
	httpLis  net.Listener
	// skew shifts the physical clock the mesh's hybrid logical clock
	// reads: the clock-skew fault (SetClockOffset), zero otherwise.
	skew atomic.Int64
}

// Start starts the node's parts; on error nothing is left running.
func Start(cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mc := cfg.Mesh
	mc.Logger = cfg.Logger
	mc.Registerer = reg
	n := &Node{log: cfg.Logger}
	base := mc.PhysicalClock
	if base == nil {
		base = hlc.SystemClock
	}
	mc.PhysicalClock = hlc.Offset(base, func() time.Duration { return time.Duration(n.skew.Load()) })
	ok := false
	defer func() {
		if !ok {
			_ = n.stop(false)
		}
	}()
	// The node owns its database: the mesh and the consensus host share
	// it. Consensus needs a directory even without --data-dir, so such a
	// node keeps everything in a temporary one, removed when it stops.
	cc := cfg.Consensus
	dataDir := mc.DataDir
	if mc.DB == nil && (dataDir != "" || cc.RaftAddr != "") {
		if dataDir == "" {
			d, err := os.MkdirTemp("", "statemesh-"+mc.Name+"-")
			if err != nil {
				return nil, fmt.Errorf("node: %w", err)
			}
			n.tmpDir, dataDir = d, d
		}
		o := eventlog.DefaultOptions(filepath.Join(dataDir, "data"))
		o.SyncWrites = mc.Durability == mesh.Sync
		o.Logger = cfg.Logger
		db, err := eventlog.Open(o)
		if err != nil {
			return nil, err
		}
		n.db, mc.DB = db, db
	}
	var srv *consensus.Server
	if cc.RaftAddr != "" {
		rid, err := consensus.LoadReplicaID(filepath.Join(dataDir, "consensus"))
		if err != nil {
			return nil, err
		}
		srv = consensus.NewServer()
		mc.RaftAddr, mc.RaftReplicaID, mc.Services = cc.RaftAddr, rid, srv.Register
	}
	m, err := mesh.Start(mc)
	if err != nil {
		return nil, err
	}
	n.Mesh = m
	if cc.RaftAddr != "" {
		self := consensus.Member{Name: mc.Name, ReplicaID: mc.RaftReplicaID, RaftAddress: cc.RaftAddr,
			PeerAddress: m.PeerAddr(), Alive: true}
		n.dir = newDirectory(m, self)
		ccfg := consensus.DefaultConfig()
		ccfg.NodeName, ccfg.Dir, ccfg.DB, ccfg.RaftAddress = mc.Name, filepath.Join(dataDir, "consensus"), n.db, cc.RaftAddr
		ccfg.Bootstrap, ccfg.Directory, ccfg.Logger, ccfg.Registerer = cc.Bootstrap, n.dir, cfg.Logger, reg
		ccfg.RaftTLS = cc.RaftTLS
		if cc.Shards > 0 {
			ccfg.Shards = cc.Shards
		}
		if cc.Replicas > 0 {
			ccfg.Replicas = cc.Replicas
		}
		ccfg.Handlers = map[string]consensus.Handler{LogType: logHandler}
		for t, h := range cc.Handlers {
			ccfg.Handlers[t] = h
		}
		// The proxy's event-sourced handlers come from the function's
		// spec, so discovery runs before the consensus host starts.
		if err := n.discover(cfg); err != nil {
			return nil, err
		}
		if n.Proxy != nil {
			for t, h := range n.Proxy.Handlers() {
				if _, taken := ccfg.Handlers[t]; taken {
					return nil, fmt.Errorf("node: the function's entity type %q is reserved", t)
				}
				ccfg.Handlers[t] = h
			}
		}
		if mc.TLS != nil {
			ccfg.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(mc.TLS))}
		}
		if cc.Tweak != nil {
			cc.Tweak(&ccfg)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		h, err := consensus.Start(ctx, ccfg)
		cancel()
		if err != nil {
			return nil, err
		}
		n.Consensus = h
		srv.Bind(h)
		m.SetPruneClaimer(pruneClaimer{h})
	} else if err := n.discover(cfg); err != nil {
		return nil, err
	}
	if n.Proxy != nil {
		if err := n.startProxy(cfg.Function); err != nil {
			return nil, err
		}
	}
	if cfg.AdminAddr != "" {
		if n.adminLis, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
			return nil, fmt.Errorf("node: admin listener: %w", err)
		}
		n.admin = grpc.NewServer()
		adminpb.RegisterAdminServer(n.admin, &adminServer{m: m, c: n.Consensus, db: n.db, node: n})
		go func() { _ = n.admin.Serve(n.adminLis) }()
	}
	if cfg.HTTPAddr != "" {
		if n.httpLis, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return nil, fmt.Errorf("node: http listener: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
		// Go's profiler, for operators chasing CPU or memory: on the same
		// private address as the metrics.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		n.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = n.http.Serve(n.httpLis) }()
	}
	ok = true
	return n, nil
}

// discover starts the proxy's discovery of the function, if one is
// configured.
func (n *Node) discover(cfg Config) error {
	fc := cfg.Function
	if fc.Addr == "" {
		return nil
	}
	d := fc.DiscoveryTimeout
	if d <= 0 {
		d = 60 * time.Second
	}
	pc := proxy.DefaultConfig()
	pc.FunctionAddr, pc.Logger = fc.Addr, cfg.Logger
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	p, err := proxy.New(ctx, pc)
	if err != nil {
		return fmt.Errorf("node: function at %s: %w", fc.Addr, err)
	}
	n.Proxy = p
	return nil
}

// startProxy gives the proxy its backends and starts serving the
// function's services.
func (n *Node) startProxy(fc FunctionConfig) error {
	var es proxy.ESHost
	if n.Consensus != nil {
		es = n.Consensus
	}
	n.Proxy.SetBackends(es, n.Mesh)
	var err error
	if fc.GRPCAddr != "" {
		if n.apiGRPC, err = net.Listen("tcp", fc.GRPCAddr); err != nil {
			return fmt.Errorf("node: gRPC listener: %w", err)
		}
	}
	if fc.HTTPAddr != "" {
		if n.apiHTTP, err = net.Listen("tcp", fc.HTTPAddr); err != nil {
			return fmt.Errorf("node: HTTP listener: %w", err)
		}
	}
	return n.Proxy.Start(n.apiGRPC, n.apiHTTP)
}

// APIGRPCAddr and APIHTTPAddr are where the function's services are
// served ("" if not).
func (n *Node) APIGRPCAddr() string { return addrOf(n.apiGRPC) }

// APIHTTPAddr: see APIGRPCAddr.
func (n *Node) APIHTTPAddr() string { return addrOf(n.apiHTTP) }

func addrOf(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}

// AdminAddr is the admin service's address ("" if none).
func (n *Node) AdminAddr() string {
	if n.adminLis == nil {
		return ""
	}
	return n.adminLis.Addr().String()
}

// HTTPAddr is the metrics endpoint's address ("" if none).
func (n *Node) HTTPAddr() string {
	if n.httpLis == nil {
		return ""
	}
	return n.httpLis.Addr().String()
}

// Close stops the node cleanly: it leaves the mesh and flushes its state.
func (n *Node) Close() error { return n.stop(true) }

// Crash stops the node as a crash would, as far as a process can: it does
// not leave the mesh (peers find it dead) nor flush write-behind state
// (what was not yet persisted is lost; sync-mode writes were persisted
// before they were acknowledged). In-process tests and the jepsen
// harness's sim backend use it in place of kill -9.
func (n *Node) Crash() error { return n.stop(false) }

// AddrInUse reports whether Start failed because an address it was to
// listen on is taken (callers that chose a "free" port may retry).
func AddrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || (err != nil && strings.Contains(err.Error(), "address already in use"))
}

// MaxClockOffset bounds SetClockOffset.
const MaxClockOffset = time.Hour

// SetClockOffset shifts the physical clock under the node's hybrid
// logical clock (LWW register timestamps) by d; 0 restores it. It is a
// fault-injection hook for the jepsen harness's clock-skew nemesis; the
// hybrid clock itself never goes backwards, whatever the offset.
func (n *Node) SetClockOffset(d time.Duration) error {
	if d > MaxClockOffset || d < -MaxClockOffset {
		return fmt.Errorf("node: clock offset %v beyond ±%v", d, MaxClockOffset)
	}
	n.skew.Store(int64(d))
	return nil
}

func (n *Node) stop(clean bool) error {
	var errs []error
	if n.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		errs = append(errs, n.http.Shutdown(ctx))
		cancel()
	}
	if n.admin != nil {
		n.admin.Stop()
	}
	if n.Proxy != nil {
		errs = append(errs, n.Proxy.Close())
	}
	if n.Consensus != nil {
		errs = append(errs, n.Consensus.Close())
	}
	if n.dir != nil {
		n.dir.close()
	}
	if n.Mesh != nil {
		if clean {
			errs = append(errs, n.Mesh.Close())
		} else {
			errs = append(errs, n.Mesh.Crash())
		}
	}
	if n.db != nil {
		errs = append(errs, n.db.Close())
	}
	if n.tmpDir != "" {
		errs = append(errs, os.RemoveAll(n.tmpDir))
	}
	return errors.Join(errs...)
}
