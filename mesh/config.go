package mesh

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/statemesh/statemesh/deltas"
	"github.com/statemesh/statemesh/eventlog"
	"github.com/statemesh/statemesh/internal/hlc"
	"github.com/statemesh/statemesh/internal/netfault"
)

// Durability says when a local write is on disk.
type Durability uint8

const (
	// WriteBehind (the default) acknowledges a write once it is applied in
	// memory; changed keys are written to the store in batches at most
	// FlushInterval later, without fsync. A process crash loses at most
	// the last FlushInterval of writes (Badger's writes are in the OS page
	// cache once written); a power loss may lose more. Because a crashed
	// node may have handed out dots it never persisted, a node that did
	// not stop cleanly restarts with a new replica incarnation.
	WriteBehind Durability = iota
	// Sync acknowledges a write only after it is on disk (fsync). Writes
	// that arrive together share one fsync (group commit). Remote writes
	// collected by MAJORITY and ALL are synced by every acknowledging node
	// that runs in Sync mode.
	Sync
)

func (d Durability) String() string {
	if d == Sync {
		return "sync"
	}
	return "write-behind"
}

// ParseDurability reads "write-behind" or "sync".
func ParseDurability(s string) (Durability, error) {
	switch s {
	case "write-behind", "":
		return WriteBehind, nil
	case "sync":
		return Sync, nil
	}
	return 0, fmt.Errorf("mesh: unknown durability %q (write-behind or sync)", s)
}

// Preset selects timing defaults for the network the mesh runs on.
type Preset uint8

const (
	// PresetLAN: one datacenter or region. Gossip as memberlist's
	// DefaultLANConfig (probe every 1 s, gossip to 3 nodes every 200 ms,
	// push-pull every 30 s); anti-entropy every 200 ms.
	PresetLAN Preset = iota
	// PresetWAN: nodes across regions with 100 ms-class round trips.
	// memberlist's DefaultWANConfig (probe 5 s, gossip 4 nodes every
	// 500 ms, push-pull 60 s); anti-entropy every 1 s.
	PresetWAN
	// PresetLocal: loopback, tests and demos. memberlist's DefaultLocalConfig
	// (probe 1 s, gossip 3 every 100 ms, push-pull 15 s) with faster
	// failure detection (probe 200 ms, timeout 100 ms, suspicion
	// multiplier 2) and push-pull every 2 s (a node that joined through a
	// seed which did not know everyone yet learns the rest from it);
	// anti-entropy every 100 ms.
	PresetLocal
)

// Config configures a mesh node. Zero fields take the documented defaults.
type Config struct {
	// Name identifies the node in the mesh; it must be unique and stable
	// across restarts (its data dir belongs to it).
	Name string
	// Region and Zone place the node; peer selection keeps most traffic
	// inside a region. Default region "default".
	Region, Zone string
	// GossipAddr is where memberlist listens, "host:port" (port 0 picks
	// one). Default "127.0.0.1:0".
	GossipAddr string
	// PeerAddr is where the Peer gRPC service listens. Default
	// "127.0.0.1:0".
	PeerAddr string
	// RaftAddr is published in the node's metadata for the consensus
	// layer; the mesh does not use it.
	RaftAddr string
	// RaftReplicaID is published with RaftAddr: the node's Raft replica id.
	RaftReplicaID uint64
	// Services, if set, registers more gRPC services on the peer server
	// before it starts serving (the consensus layer's forwarding service),
	// so they share its listener, TLS and message limits.
	Services func(*grpc.Server)
	// Join lists gossip addresses of existing members ("host:port"). The
	// node starts a new mesh if none answers and Join is empty; if Join
	// is not empty and no seed answers, Start fails.
	Join []string
	// JoinTimeout bounds how long Start retries the seeds (they may be
	// starting too). Default 10 s.
	JoinTimeout time.Duration

	// Preset picks the gossip and anti-entropy timing. Default PresetLAN.
	Preset Preset
	// ReconnectInterval: how often the node tries to rejoin members it
	// holds dead. memberlist never probes a dead node, so after a healed
	// partition both sides could hold each other dead until a periodic
	// push-pull happens to cross; an explicit join repairs it at once (as
	// serf's reconnect does). Default from Preset (LAN 5 s, WAN 30 s,
	// Local 500 ms).
	ReconnectInterval time.Duration
	// TickInterval is the anti-entropy period: acknowledgements,
	// retransmission, eviction and repair run once per tick. Default from
	// Preset (LAN 200 ms, WAN 1 s, Local 100 ms).
	TickInterval time.Duration
	// PushDelay batches eager pushes: fresh deltas go to the neighbours
	// at most this long after the first of them. Default 2 ms.
	PushDelay time.Duration
	// Neighbours is how many peers in its own region a node keeps as
	// anti-entropy neighbours (besides those that chose it). Default 3.
	Neighbours int
	// CrossRegion is how many neighbours a node keeps in other regions,
	// when there are any. Default 1.
	CrossRegion int
	// Engine configures the anti-entropy engine (ID and Session are set by
	// the node). Its tick counts are in units of TickInterval. The node
	// defaults Engine.RelayHoldTicks to 2 and holds relays only while
	// every live member is its peer (a full mesh): a delta received from
	// a peer is relayed only if another peer has not acknowledged it to
	// its origin within 1 to 2 ticks. Negative turns the hold off (every
	// received inflation is relayed at once, as in a sparse mesh).
	Engine deltas.Config

	// DB is the node's store. If nil, Start opens DataDir with
	// eventlog.DefaultOptions and closes it on Close.
	DB *eventlog.DB
	// DataDir is used when DB is nil. Empty means in memory: nothing
	// survives the process (tests and demos only).
	DataDir string
	// Durability of local writes. Default WriteBehind.
	Durability Durability
	// FlushInterval bounds how long a write-behind write stays in memory
	// only. Default 100 ms.
	FlushInterval time.Duration

	// RemoveDeadAfter: a member dead for longer than this is removed from
	// the mesh for good, as by Node.RemoveNode (0: never; members are then
	// removed only by hand, statemesh ctl remove-node). Default 0.
	RemoveDeadAfter time.Duration
	// PruneInterval is how often the node looks for removed replicas it
	// should prune (see SetPruneClaimer; without a claimer it prunes
	// nothing). Default 10 s.
	PruneInterval time.Duration

	// MaxLag is backpressure: while the furthest-behind live neighbour
	// has more than MaxLag deltas of this node unacknowledged, local
	// writes wait (in order) until the lag is down to half of it, and a
	// write whose context ends while it waits fails with ErrOverloaded,
	// not applied. Without it an overloaded node buffers deltas and
	// retransmits ever larger windows until it collapses. A neighbour that
	// stops acknowledging altogether is evicted after the engine's
	// EvictTicks and no longer holds writes back. Default 20000; negative
	// disables.
	MaxLag int

	// WriteTimeout bounds MAJORITY and ALL writes and reads that set no
	// deadline of their own. Default 5 s.
	WriteTimeout time.Duration
	// MaxFrameBytes bounds one gRPC frame of a Sync stream; larger
	// messages are chunked. Default 1 MiB.
	MaxFrameBytes int
	// Limits bound what the node accepts from peers. Default
	// deltas.DefaultLimits.
	Limits *deltas.Limits
	// SecretKey, if set (16, 24 or 32 bytes), encrypts and authenticates
	// gossip (AES-GCM, memberlist's keyring); a node with another key
	// cannot join, and its packets are dropped with a log line.
	SecretKey []byte
	// TLS, if set, secures the Peer gRPC service on both sides: the server
	// presents TLS.Certificates and, with ClientAuth set to
	// tls.RequireAndVerifyClientCert and ClientCAs, demands a client
	// certificate (mutual TLS); clients present the same certificate and
	// verify the server against RootCAs. A handshake that fails is logged
	// with its reason on both sides. MutualTLS builds such a config.
	TLS *tls.Config

	// PhysicalClock feeds the node's hybrid logical clock (LWW register
	// timestamps). Default hlc.SystemClock; the clock-skew fault wraps it.
	PhysicalClock hlc.PhysicalClock

	// Faults, if set, is the test seam: every message the node sends
	// (gossip and peer traffic) is subject to it.
	Faults *netfault.Faults
	// Logger receives the node's logs. Default: discard.
	Logger *slog.Logger
	// Registerer receives the node's Prometheus metrics. Default: a new
	// registry, available from Node.Registry.
	Registerer prometheus.Registerer
}

func (c Config) withDefaults() Config {
	if c.Region == "" {
		c.Region = "default"
	}
	if c.GossipAddr == "" {
		c.GossipAddr = "127.0.0.1:0"
	}
	if c.PeerAddr == "" {
		c.PeerAddr = "127.0.0.1:0"
	}
	if c.PruneInterval <= 0 {
		c.PruneInterval = 10 * time.Second
	}
	if c.TickInterval <= 0 {
		c.TickInterval = map[Preset]time.Duration{PresetLAN: 200 * time.Millisecond, PresetWAN: time.Second, PresetLocal: 100 * time.Millisecond}[c.Preset]
	}
	if c.JoinTimeout <= 0 {
		c.JoinTimeout = 10 * time.Second
	}
	if c.ReconnectInterval <= 0 {
		c.ReconnectInterval = map[Preset]time.Duration{PresetLAN: 5 * time.Second, PresetWAN: 30 * time.Second, PresetLocal: 500 * time.Millisecond}[c.Preset]
	}
	if c.PushDelay <= 0 {
		c.PushDelay = 2 * time.Millisecond
	}
	if c.Neighbours <= 0 {
		c.Neighbours = 3
	}
	if c.CrossRegion <= 0 {
		c.CrossRegion = 1
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = 100 * time.Millisecond
	}
	if c.MaxLag == 0 {
		c.MaxLag = 20000
	}
	if c.Engine.RelayHoldTicks == 0 {
		c.Engine.RelayHoldTicks = 2
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 5 * time.Second
	}
	if c.MaxFrameBytes <= 0 {
		c.MaxFrameBytes = 1 << 20
	}
	if c.Limits == nil {
		l := deltas.DefaultLimits
		c.Limits = &l
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.PhysicalClock == nil {
		c.PhysicalClock = hlc.SystemClock
	}
	return c
}

// Validate checks the configuration (after defaults).
func (c Config) Validate() error {
	if c.Name == "" {
		return errors.New("mesh: Config.Name is empty")
	}
	if len(c.Name) > 128 {
		return errors.New("mesh: Config.Name longer than 128 bytes")
	}
	for _, a := range []string{c.GossipAddr, c.PeerAddr} {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("mesh: address %q: %w", a, err)
		}
	}
	if c.Preset > PresetLocal {
		return fmt.Errorf("mesh: unknown preset %d", c.Preset)
	}
	if c.Durability > Sync {
		return fmt.Errorf("mesh: unknown durability %d", c.Durability)
	}
	if n := len(c.SecretKey); n != 0 && n != 16 && n != 24 && n != 32 {
		return fmt.Errorf("mesh: SecretKey of %d bytes (16, 24 or 32)", n)
	}
	if c.MaxFrameBytes < 1024 {
		return fmt.Errorf("mesh: MaxFrameBytes %d below 1024", c.MaxFrameBytes)
	}
	return nil
}

// MutualTLS returns a TLS configuration for the Peer service where every
// node presents cert and accepts only peers whose certificates the CA
// pool signed.
func MutualTLS(cert tls.Certificate, ca *x509.CertPool) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      ca,
		ClientCAs:    ca,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}
}

// memberlistConfig builds memberlist's configuration from the preset.
func (c Config) memberlistConfig() *memberlist.Config {
	var mc *memberlist.Config
	switch c.Preset {
	case PresetWAN:
		mc = memberlist.DefaultWANConfig()
	case PresetLocal:
		mc = memberlist.DefaultLocalConfig()
		mc.ProbeInterval = 200 * time.Millisecond
		mc.ProbeTimeout = 100 * time.Millisecond
		mc.SuspicionMult = 2
		mc.PushPullInterval = 2 * time.Second
	default:
		mc = memberlist.DefaultLANConfig()
	}
	mc.Name = c.Name
	// A node restarting under its name (possibly from another address)
	// may take its name back once the old entry has been dead this long.
	mc.DeadNodeReclaimTime = 3 * mc.ProbeInterval
	if len(c.SecretKey) > 0 {
		mc.SecretKey = c.SecretKey
	}
	return mc
}
