package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/statemesh/statemesh/consensus"
	"github.com/statemesh/statemesh/mesh"
	"github.com/statemesh/statemesh/node"
)

// runNode runs `statemesh node` until SIGINT or SIGTERM, then leaves the
// mesh cleanly.
func runNode(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("statemesh node", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "", "node name, unique and stable across restarts (required)")
	bind := fs.String("bind", "127.0.0.1:7946", "gossip (memberlist) address host:port")
	peer := fs.String("peer", "", "peer gRPC address (default: bind port + 1)")
	admin := fs.String("admin", "", "admin gRPC address for statemesh ctl (default: bind port + 2; \"off\" to disable)")
	metricsAddr := fs.String("metrics", "", "HTTP address for /metrics, /healthz and /debug/pprof (default: bind port + 3; \"off\" to disable)")
	function := fs.String("function", "", "gRPC address of the user function to front (empty: no proxy)")
	apiHTTP := fs.String("http", "", "HTTP/JSON address serving the function's services (default: bind port + 5; \"off\" to disable)")
	apiGRPC := fs.String("grpc", "", "gRPC address serving the function's services (default: bind port + 6; \"off\" to disable)")
	join := fs.String("join", "", "comma-separated gossip addresses of existing members")
	region := fs.String("region", "default", "region of the node")
	zone := fs.String("zone", "", "zone of the node")
	dataDir := fs.String("data-dir", "", "data directory (empty: in memory, nothing survives a restart)")
	durability := fs.String("durability", "write-behind", "write-behind or sync (acknowledge local writes after fsync)")
	preset := fs.String("preset", "lan", "timing preset: lan, wan or local")
	gossipKey := fs.String("gossip-key", "", "hex-encoded 16, 24 or 32-byte key that encrypts gossip (AES-GCM); every member needs the same")
	tlsCert := fs.String("tls-cert", "", "PEM certificate for mutual TLS between nodes, on the peer service and the Raft transport (with --tls-key and --tls-ca); it must name the hosts of --peer and --raft")
	tlsKey := fs.String("tls-key", "", "PEM private key of --tls-cert")
	tlsCA := fs.String("tls-ca", "", "PEM CA bundle: peers must present a certificate it signed")
	removeDead := fs.Duration("remove-dead-after", 0, "remove members dead for longer than this for good (0: only by hand, statemesh ctl remove-node)")
	pruneEvery := fs.Duration("prune-interval", 10*time.Second, "how often to look for removed members' data to prune (fold into a live node's) and pruned ones to forget")
	raft := fs.String("raft", "", "Raft transport address for event-sourced and value entities (default: bind port + 4; \"off\" to disable)")
	shards := fs.Int("shards", 0, "number of Raft shards; the same on every node, fixed for the cluster's life (default 8)")
	bootstrap := fs.String("bootstrap", "auto", "create the Raft shards on this node: auto (when --join is empty), true or false")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "statemesh node: "+format+"\n", a...)
		return 2
	}
	if *name == "" {
		return fail("--name is required")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fail("--log-level: %v", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg := mesh.Config{Name: *name, Region: *region, Zone: *zone, GossipAddr: *bind, DataDir: *dataDir, RemoveDeadAfter: *removeDead,
		PruneInterval: *pruneEvery}
	var err error
	if cfg.PeerAddr, err = addrOrOffset(*peer, *bind, 1); err != nil {
		return fail("--peer: %v", err)
	}
	if cfg.Durability, err = mesh.ParseDurability(*durability); err != nil {
		return fail("%v", err)
	}
	switch strings.ToLower(*preset) {
	case "lan":
		cfg.Preset = mesh.PresetLAN
	case "wan":
		cfg.Preset = mesh.PresetWAN
	case "local":
		cfg.Preset = mesh.PresetLocal
	default:
		return fail("--preset %q: lan, wan or local", *preset)
	}
	if *join != "" {
		cfg.Join = strings.Split(*join, ",")
	}
	if *gossipKey != "" {
		if cfg.SecretKey, err = hex.DecodeString(*gossipKey); err != nil {
			return fail("--gossip-key: %v", err)
		}
	}
	if *tlsCert != "" || *tlsKey != "" || *tlsCA != "" {
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			return fail("--tls-cert/--tls-key: %v", err)
		}
		pem, err := os.ReadFile(*tlsCA)
		if err != nil {
			return fail("--tls-ca: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fail("--tls-ca: no certificate in %s", *tlsCA)
		}
		cfg.TLS = mesh.MutualTLS(cert, pool)
	}
	nc := node.Config{Mesh: cfg, Logger: log}
	if nc.AdminAddr, err = addrOrOffset(*admin, *bind, 2); err != nil {
		return fail("--admin: %v", err)
	}
	if nc.HTTPAddr, err = addrOrOffset(*metricsAddr, *bind, 3); err != nil {
		return fail("--metrics: %v", err)
	}
	if *function != "" {
		nc.Function.Addr = *function
		if nc.Function.HTTPAddr, err = addrOrOffset(*apiHTTP, *bind, 5); err != nil {
			return fail("--http: %v", err)
		}
		if nc.Function.GRPCAddr, err = addrOrOffset(*apiGRPC, *bind, 6); err != nil {
			return fail("--grpc: %v", err)
		}
	}
	if cfg.TLS != nil {
		nc.Consensus.RaftTLS = &consensus.RaftTLS{CAFile: *tlsCA, CertFile: *tlsCert, KeyFile: *tlsKey}
	}
	if nc.Consensus.RaftAddr, err = addrOrOffset(*raft, *bind, 4); err != nil {
		return fail("--raft: %v", err)
	}
	nc.Consensus.Shards = *shards
	switch *bootstrap {
	case "auto":
		nc.Consensus.Bootstrap = *join == ""
	case "true", "false":
		nc.Consensus.Bootstrap = *bootstrap == "true"
	default:
		return fail("--bootstrap %q: auto, true or false", *bootstrap)
	}
	if *dataDir == "" {
		log.Warn("no --data-dir: state is kept in memory (or a temporary directory) only")
	}
	n, err := node.Start(nc)
	if err != nil {
		fmt.Fprintf(stderr, "statemesh node: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "statemesh node %s ready: gossip %s, peer %s, admin %s, metrics %s, raft %s, replica %s\n",
		*name, n.Mesh.GossipAddr(), n.Mesh.PeerAddr(), n.AdminAddr(), n.HTTPAddr(), nc.Consensus.RaftAddr, n.Mesh.Replica())
	if n.Proxy != nil {
		fmt.Fprintf(stdout, "statemesh node %s serves the function at %s: gRPC %s, HTTP %s\n",
			*name, *function, n.APIGRPCAddr(), n.APIHTTPAddr())
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	s := <-sig
	log.Info("stopping", "signal", s.String())
	if err := n.Close(); err != nil {
		fmt.Fprintf(stderr, "statemesh node: stop: %v\n", err)
		return 1
	}
	return 0
}

// addrOrOffset returns addr, or base's host with base's port + off when
// addr is empty; "off" returns "".
func addrOrOffset(addr, base string, off int) (string, error) {
	switch addr {
	case "off":
		return "", nil
	case "":
	default:
		return addr, nil
	}
	host, port, err := net.SplitHostPort(base)
	if err != nil {
		return "", err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p == 0 {
		return net.JoinHostPort(host, "0"), nil
	}
	return net.JoinHostPort(host, strconv.Itoa(p+off)), nil
}
