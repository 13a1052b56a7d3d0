package consensus

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
	dblogger "github.com/lni/dragonboat/v4/logger"
	sm "github.com/lni/dragonboat/v4/statemachine"
	"google.golang.org/grpc"

	"github.com/statemesh/statemesh/eventlog"
)

// Host runs this node's replicas of the cluster's Raft shards: one
// Dragonboat NodeHost, one on-disk state machine per shard over the node's
// eventlog, the command path, forwarding to other nodes, and placement.
// Its methods are safe for concurrent use.
type Host struct {
	cfg       Config
	log       *slog.Logger
	nh        *dragonboat.NodeHost
	replicaID uint64
	met       *metrics

	// locks serialise commands on one entity on this node (striped), so
	// that a node's own concurrent commands do not conflict with each
	// other; commands arriving through other nodes are still correct
	// through the expected sequence number. A command holds its stripe
	// for a whole Raft round, so stripes are many: with 256, some 40
	// commands in flight on a leader (bench consensus, 128 clients) make
	// about one in twelve wait behind an unrelated entity's, by the
	// birthday estimate (32 KiB of mutexes per Host).
	locks [lockStripes]sync.Mutex
	// startMu serialises StartReplica requests.
	startMu sync.Mutex
	cache   *entityCache
	// proposers batch each shard's proposals (index: shard - 1).
	proposers []*proposer

	conns struct {
		sync.Mutex
		m map[string]*grpc.ClientConn
	}
	routes struct {
		sync.Mutex
		m map[uint64]string // shard -> peer address that last served it
	}

	stop     chan struct{}
	wg       sync.WaitGroup
	closeMu  sync.RWMutex // held for reading by operations, for writing by Close
	closed   bool
	closeErr error
}

// quietDragonboat turns Dragonboat's package loggers down once per
// process: they write to stderr and are very chatty at INFO. Elections,
// leader changes and unreachable peers (logged by "raft", "transport" and
// "dragonboat" as warnings) are routine here and shown only as errors;
// the other packages keep their warnings. Dragonboat's logger registry is
// process-wide; this is the only global state the package touches.
var quietDragonboat = sync.OnceFunc(func() {
	for _, name := range []string{"LogDB", "config", "gossip", "logdb", "pebblekv",
		"raft-mt", "raftpb", "registry", "rsm", "server", "settings", "tan", "tools"} {
		dblogger.GetLogger(name).SetLevel(dblogger.WARNING)
	}
	for _, name := range []string{"raft", "transport", "dragonboat"} {
		dblogger.GetLogger(name).SetLevel(dblogger.ERROR)
	}
})

// Start starts the NodeHost, restarts the replicas this node had, and,
// with Config.Bootstrap on a node that has none, creates every shard.
// The caller must Close the Host (before closing Config.DB) and must
// serve its gRPC service (Register) at the address the Directory reports.
func Start(ctx context.Context, cfg Config) (*Host, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	quietDragonboat()
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("consensus: %w", err)
	}
	rid, err := loadReplicaID(cfg.Dir)
	if err != nil {
		return nil, err
	}
	nhc := config.NodeHostConfig{
		NodeHostDir:    filepath.Join(cfg.Dir, "raft"),
		RTTMillisecond: uint64(cfg.RTT / time.Millisecond),
		RaftAddress:    cfg.RaftAddress,
		DeploymentID:   deploymentID(cfg.Cluster),
	}
	if t := cfg.RaftTLS; t != nil {
		nhc.MutualTLS, nhc.CAFile, nhc.CertFile, nhc.KeyFile = true, t.CAFile, t.CertFile, t.KeyFile
	}
	nhc.Expert.LogDB = config.GetTinyMemLogDBConfig()
	// One LogDB shard, so that the Raft entries of every shard on this node
	// share one write-ahead log and one fsync per batch. Dragonboat's
	// default (16) gives each group of Raft shards its own log file and
	// fsync: with 16 shards bench consensus made about one fsync per write
	// per node and ran at 0.55x the throughput of a single LogDB shard.
	// Fixed after the first start of a directory (Dragonboat refuses to
	// open it with another value).
	nhc.Expert.LogDB.Shards = 1
	nhc.Expert.Engine = engineConfig
	if cfg.RaftTransport != nil {
		nhc.Expert.TransportFactory = cfg.RaftTransport
	}
	nh, err := dragonboat.NewNodeHost(nhc)
	if err != nil {
		return nil, fmt.Errorf("consensus: start NodeHost at %s: %w", cfg.RaftAddress, err)
	}
	h := &Host{cfg: cfg, log: cfg.logger(), nh: nh, replicaID: rid, stop: make(chan struct{})}
	h.conns.m = map[string]*grpc.ClientConn{}
	h.routes.m = map[uint64]string{}
	h.met = newMetrics(cfg.Registerer)
	h.cache = newEntityCache(cfg.EntityCacheBytes)
	for s := uint64(1); s <= uint64(cfg.Shards); s++ {
		h.proposers = append(h.proposers, newProposer(h, s))
	}

	started := 0
	for s := uint64(1); s <= uint64(cfg.Shards); s++ {
		if !nh.HasNodeInfo(s, rid) {
			continue
		}
		if err := nh.StartOnDiskReplica(nil, false, h.newSM, h.shardConfig(s)); err != nil {
			nh.Close()
			return nil, fmt.Errorf("consensus: restart shard %d: %w", s, err)
		}
		started++
	}
	if started == 0 && cfg.Bootstrap {
		members := map[uint64]dragonboat.Target{rid: cfg.RaftAddress}
		for s := uint64(1); s <= uint64(cfg.Shards); s++ {
			// A new Raft log counts entries from 1: data restored from a
			// backup is kept, but its applied index must not make the
			// state machine skip the new log's entries.
			if err := cfg.DB.Shard(s).Update(func(tx *eventlog.ShardTxn) error { return tx.ResetApplied() }); err != nil {
				nh.Close()
				return nil, fmt.Errorf("consensus: bootstrap shard %d: %w", s, err)
			}
			if err := nh.StartOnDiskReplica(members, false, h.newSM, h.shardConfig(s)); err != nil {
				nh.Close()
				return nil, fmt.Errorf("consensus: bootstrap shard %d: %w", s, err)
			}
		}
		h.log.Info("bootstrapped shards", "shards", cfg.Shards, "replica", rid)
	}
	h.log.Info("consensus started", "replica", rid, "raft", cfg.RaftAddress, "restarted_shards", started)
	h.wg.Add(1)
	go h.placementLoop()
	return h, nil
}

// engineConfig sizes Dragonboat's worker pools for small machines.
var engineConfig = config.EngineConfig{ExecShards: 1, CommitShards: 1, ApplyShards: 4, SnapshotShards: 4, CloseShards: 4}

// ReplicaID is this node's Raft replica id, the same in every shard. It
// is chosen at random when the node's consensus directory is created and
// kept with it, so a node that loses its data comes back as a new replica
// (Raft must never see a replica id reused with different state).
func (h *Host) ReplicaID() uint64 { return h.replicaID }

// Shards is the configured number of shards.
func (h *Host) Shards() int { return h.cfg.Shards }

// ShardOf returns the shard that holds an entity.
func (h *Host) ShardOf(e Entity) uint64 { return ShardOf(e, h.cfg.Shards) }

// Register serves the Consensus service (forwarded operations and
// placement requests) on s.
func (h *Host) Register(s *grpc.Server) {
	srv := NewServer()
	srv.Bind(h)
	srv.Register(s)
}

// Close stops placement, waits for operations in flight to return, closes
// connections and stops the NodeHost. It is idempotent.
func (h *Host) Close() error {
	h.closeMu.Lock()
	if h.closed {
		h.closeMu.Unlock()
		return h.closeErr
	}
	h.closed = true
	close(h.stop)
	h.closeMu.Unlock()
	h.wg.Wait()
	h.conns.Lock()
	for _, c := range h.conns.m {
		_ = c.Close()
	}
	h.conns.m = nil
	h.conns.Unlock()
	h.nh.Close()
	return nil
}

// enter marks an operation in flight; it fails once Close has begun.
func (h *Host) enter() error {
	h.closeMu.RLock()
	if h.closed {
		h.closeMu.RUnlock()
		return ErrClosed
	}
	h.wg.Add(1)
	h.closeMu.RUnlock()
	return nil
}

func (h *Host) exit() { h.wg.Done() }

func (h *Host) newSM(shard, _ uint64) sm.IOnDiskStateMachine {
	return newStateMachine(h.cfg.DB, shard, h.cfg.DedupWindow)
}

func (h *Host) shardConfig(shard uint64) config.Config {
	return config.Config{
		ReplicaID:          h.replicaID,
		ShardID:            shard,
		CheckQuorum:        true,
		PreVote:            true,
		ElectionRTT:        h.cfg.ElectionTicks,
		HeartbeatRTT:       h.cfg.HeartbeatTicks,
		SnapshotEntries:    h.cfg.SnapshotEntries,
		CompactionOverhead: h.cfg.CompactionOverhead,
		MaxInMemLogSize:    64 << 20,
	}
}

// hasShard reports whether this node runs a replica of shard.
func (h *Host) hasShard(shard uint64) bool {
	_, _, _, err := h.nh.GetLeaderID(shard)
	return err == nil
}

// Leader describes who leads one shard, as this node knows it.
type Leader struct {
	Shard     uint64
	ReplicaID uint64 // 0: no leader known
	Node      string // "" if the replica is not in the Directory
	Term      uint64
	Local     bool // this node runs a replica of the shard
}

// Leaders reports, for every shard, the leader this node knows of.
func (h *Host) Leaders() []Leader {
	byID := map[uint64]string{}
	for _, m := range h.cfg.Directory.Members() {
		byID[m.ReplicaID] = m.Name
	}
	out := make([]Leader, 0, h.cfg.Shards)
	for s := uint64(1); s <= uint64(h.cfg.Shards); s++ {
		l := Leader{Shard: s}
		id, term, valid, err := h.nh.GetLeaderID(s)
		l.Local = err == nil
		if err == nil && valid {
			l.ReplicaID, l.Term, l.Node = id, term, byID[id]
		}
		out = append(out, l)
	}
	return out
}

// LoadReplicaID returns the replica id a Host started with dir as its
// Config.Dir uses, creating it the first time (the node publishes it in
// its mesh metadata before the Host starts).
func LoadReplicaID(dir string) (uint64, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, fmt.Errorf("consensus: %w", err)
	}
	return loadReplicaID(dir)
}

// loadReplicaID reads the replica id kept in dir, creating a random one
// the first time.
func loadReplicaID(dir string) (uint64, error) {
	path := filepath.Join(dir, "replica-id")
	b, err := os.ReadFile(path)
	if err == nil {
		id, perr := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if perr != nil || id == 0 {
			return 0, fmt.Errorf("consensus: %s holds %q, not a replica id", path, truncate(string(b)))
		}
		return id, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("consensus: %w", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "raft")); len(entries) > 0 {
		// A Raft log without its replica id: starting as a new replica
		// over an old log would corrupt the shards.
		return 0, fmt.Errorf("consensus: %s is missing but %s holds a Raft log", path, filepath.Join(dir, "raft"))
	}
	var r [8]byte
	if _, err := rand.Read(r[:]); err != nil {
		return 0, err
	}
	id := binary.BigEndian.Uint64(r[:])>>1 | 1 // nonzero, fits an int64
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.FormatUint(id, 10)+"\n"), 0o644); err != nil {
		return 0, fmt.Errorf("consensus: %w", err)
	}
	if err := syncFile(tmp); err != nil {
		return 0, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return 0, fmt.Errorf("consensus: %w", err)
	}
	return id, syncFile(dir)
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("consensus: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("consensus: sync %s: %w", path, err)
	}
	return nil
}

func deploymentID(cluster string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(cluster))
	return h.Sum64()>>1 | 1
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
