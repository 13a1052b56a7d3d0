package consensus

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/lni/dragonboat/v4/config"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/statemesh/statemesh/eventlog"
)

// Config configures a Host. Start from DefaultConfig and set the required
// fields; Validate reports what is missing or out of range.
type Config struct {
	// NodeName is the mesh name of this node (required). It must be the
	// name the Directory reports for it.
	NodeName string
	// Dir holds Dragonboat's Raft log (LogDB) and this node's replica id.
	// It must survive restarts together with DB: losing one but not the
	// other loses acknowledged data. Required.
	Dir string
	// DB stores the state machines' data (journals, snapshots, values,
	// request results and applied indexes). Required; the caller owns it
	// and closes it after the Host.
	DB *eventlog.DB
	// RaftAddress is where this node's Raft transport listens, "host:port"
	// (required). It must be the address the Directory reports.
	RaftAddress string
	// Cluster names the deployment. Hosts of different clusters refuse
	// each other's Raft messages (Dragonboat's DeploymentID is derived
	// from it). Default "statemesh".
	Cluster string
	// Shards is how many Raft shards the entities are spread over. It is
	// fixed for the life of a cluster: every node must use the same value
	// (entities hash to shards by it). More shards spread leaderships
	// (and so the command path's work) over more nodes, but every shard is
	// a Raft group with its own heartbeats, proposals and apply batches:
	// on 3 nodes sharing 2 cores, bench consensus at 128 clients measured
	// 8,395 commands/s with 1 shard, 7,674 with 2, 7,135 with 4, 6,584
	// with 8 and 5,736 with 16. Default 8: leaderships spread over up to 8
	// nodes. Growing it later is not supported yet.
	Shards int
	// Replicas is how many replicas each shard aims for; a shard has fewer
	// while fewer nodes are alive. Default 3.
	Replicas int
	// Bootstrap creates every shard, with this node as its only replica,
	// when the node has none yet. Exactly one node of a new cluster
	// bootstraps (the one started without seeds); the others are added
	// to the shards by placement as they join. Default false.
	Bootstrap bool
	// RTT is Dragonboat's logical clock tick: roughly one round trip
	// between two nodes, queueing included. Default 10ms (loopback and
	// LAN); use about the real round trip across regions.
	RTT time.Duration
	// ElectionTicks is the election timeout in ticks of RTT: a follower
	// that hears nothing from its leader for this long starts an
	// election. Must exceed 2×HeartbeatTicks (Raft suggests 10×). Default
	// 50 (500ms with the default RTT; etcd's default is 1s).
	ElectionTicks uint64
	// HeartbeatTicks is the leader's heartbeat interval in ticks. Default
	// 5 (50ms with the default RTT; etcd's default is 100ms). Every shard
	// heartbeats on its own, so this is most of an idle node's CPU.
	HeartbeatTicks uint64
	// SnapshotEntries: a shard takes a Raft snapshot (and compacts its log)
	// every this many applied entries; 0 disables. Default 10000.
	SnapshotEntries uint64
	// CompactionOverhead is how many entries a shard keeps in its log
	// behind a snapshot, so that a slightly lagging follower catches up
	// from the log instead of a snapshot. Default 5000.
	CompactionOverhead uint64
	// DedupWindow is how many Raft entries a shard remembers request ids
	// for: a retry with the same request id within this window returns the
	// first result without applying again. A command retried later than
	// that is still protected by its expected sequence number. Default
	// 1,000,000 (at 10,000 commands/s per shard, over a minute and a half).
	DedupWindow uint64
	// EntityCacheBytes bounds the entity states a node keeps after running
	// their commands, so that the next command on the same entity skips
	// the linearizable read (see the command path in the package doc); 0
	// disables the cache. Default 32 MiB.
	EntityCacheBytes int
	// Handlers runs commands, by entity type. A command for a type with no
	// handler fails with ErrNoHandler.
	Handlers map[string]Handler
	// Directory tells the Host which nodes exist and how to reach them
	// (required).
	Directory Directory
	// PlacementInterval is how often a shard leader compares the shard's
	// replicas with the live nodes and makes at most one membership change.
	// Default 1s.
	PlacementInterval time.Duration
	// OpTimeout bounds one Raft round (a read or a proposal) inside an
	// operation whose context has no earlier deadline. Default 5s.
	OpTimeout time.Duration
	// DialOptions are used to dial other nodes' Consensus service (TLS
	// credentials, interceptors). Default: insecure credentials.
	DialOptions []grpc.DialOption
	// RaftTLS, if set, runs Dragonboat's Raft transport over mutual TLS:
	// each node presents its certificate and accepts only peers whose
	// certificates the CA signed, and a client checks that the server's
	// certificate names the host of the replica's Raft address. Nil: the
	// transport is plaintext (Dragonboat then warns "mutual TLS disabled"
	// at start). Ignored with RaftTransport.
	RaftTLS *RaftTLS
	// MaxForwardHops bounds how often one operation is forwarded between
	// nodes before the forwarding node gives up with ErrNotLeader.
	// Default 3.
	MaxForwardHops int

	// RaftTransport, if set, replaces Dragonboat's TCP transport (tests use
	// a fault-injecting wrapper of its channel transport).
	RaftTransport config.TransportFactory
	// Logger receives the Host's logs. Default: discard.
	Logger *slog.Logger
	// Registerer, if set, receives the Host's Prometheus metrics.
	Registerer prometheus.Registerer
}

// RaftTLS names the PEM files of the Raft transport's mutual TLS;
// Dragonboat reads them when the Host starts.
type RaftTLS struct {
	CAFile, CertFile, KeyFile string
}

// DefaultConfig returns a Config with every default set and the required
// fields empty.
func DefaultConfig() Config {
	return Config{
		Cluster:            "statemesh",
		Shards:             8,
		Replicas:           3,
		RTT:                10 * time.Millisecond,
		ElectionTicks:      50,
		HeartbeatTicks:     5,
		SnapshotEntries:    10000,
		CompactionOverhead: 5000,
		DedupWindow:        1_000_000,
		EntityCacheBytes:   32 << 20,
		PlacementInterval:  time.Second,
		OpTimeout:          5 * time.Second,
		MaxForwardHops:     3,
	}
}

// MaxShards bounds Config.Shards: every shard is a Raft group with its own
// heartbeats, and a small machine runs all of them.
const MaxShards = 1024

// Validate reports the first invalid field.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.NodeName == "" {
		bad("NodeName is required")
	}
	if c.Dir == "" {
		bad("Dir is required")
	}
	if c.DB == nil {
		bad("DB is required")
	}
	if c.RaftAddress == "" {
		bad("RaftAddress is required")
	}
	if c.Directory == nil {
		bad("Directory is required")
	}
	if c.Cluster == "" {
		bad("Cluster is required")
	}
	if c.Shards < 1 || c.Shards > MaxShards {
		bad("Shards %d out of [1, %d]", c.Shards, MaxShards)
	}
	if c.Replicas < 1 || c.Replicas > 7 {
		bad("Replicas %d out of [1, 7]", c.Replicas)
	}
	if c.RTT < time.Millisecond {
		bad("RTT %v below 1ms", c.RTT)
	}
	if c.HeartbeatTicks < 1 {
		bad("HeartbeatTicks must be at least 1")
	}
	if c.ElectionTicks <= 2*c.HeartbeatTicks {
		bad("ElectionTicks %d must exceed 2×HeartbeatTicks (%d)", c.ElectionTicks, 2*c.HeartbeatTicks)
	}
	if c.DedupWindow < 1000 {
		bad("DedupWindow %d below 1000 entries", c.DedupWindow)
	}
	if c.PlacementInterval <= 0 || c.OpTimeout <= 0 {
		bad("PlacementInterval and OpTimeout must be positive")
	}
	if c.OpTimeout < 2*c.RTT {
		bad("OpTimeout %v must be at least 2×RTT", c.OpTimeout)
	}
	if c.MaxForwardHops < 1 {
		bad("MaxForwardHops must be at least 1")
	}
	for t, h := range c.Handlers {
		if h == nil {
			bad("handler for %q is nil", t)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("consensus: invalid config: %w", err)
	}
	return nil
}

func (c Config) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}
