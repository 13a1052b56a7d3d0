package eventlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Errors returned by this package; match them with errors.Is.
var (
	// ErrCorrupt: a stored record does not decode. The error names the key.
	ErrCorrupt = errors.New("eventlog: corrupt record")
	// ErrWrongNode: the data directory belongs to another node.
	ErrWrongNode = errors.New("eventlog: data directory belongs to another node")
	// ErrClosed: the DB was closed.
	ErrClosed = errors.New("eventlog: closed")
	// ErrTooLarge: a key, value, event, state, request id or result
	// exceeds its limit (MaxKeyBytes, MaxValueBytes, MaxEventBytes,
	// MaxEventsPerAppend, MaxRequestIDBytes). Nothing was written.
	ErrTooLarge = errors.New("eventlog: key or value too large")
	// ErrInvalidEntity: an Entity fails Validate.
	ErrInvalidEntity = errors.New("eventlog: invalid entity")
	// ErrOutOfOrder: a write would move something backwards: the applied
	// index, or an entity snapshot (older than the stored one, or beyond
	// the entity's head). Nothing was written.
	ErrOutOfOrder = errors.New("eventlog: out of order")
	// ErrBatchTooLarge: a Shard.Update transaction outgrew Badger's
	// transaction limit. Nothing was written; split the batch and retry.
	ErrBatchTooLarge = errors.New("eventlog: batch too large for one transaction")
	// ErrBadStream: a shard snapshot stream (Shard.Restore) or a backup
	// (RestoreDir) is malformed, truncated, or for another shard.
	ErrBadStream = errors.New("eventlog: invalid stream")
	// ErrStopped: Shard.Save or Shard.Restore was stopped through its
	// stop channel.
	ErrStopped = errors.New("eventlog: stopped")
	// ErrShardPending: a Shard.Restore or Shard.Drop failed half way
	// through replacing the shard's data; the shard refuses reads and
	// writes until a Restore or Drop of it succeeds (or the DB is reopened,
	// which completes the interrupted operation).
	ErrShardPending = errors.New("eventlog: shard has an interrupted restore or drop")
	// ErrDirNotEmpty: RestoreDir's directory exists and is not empty.
	ErrDirNotEmpty = errors.New("eventlog: directory not empty")
)

// Table prefixes: the first byte of every Badger key (see the package
// documentation).
const (
	tableMeta byte = 'm'
	tableCRDT byte = 'c'

	// A shard's data (journal.go): each key continues with the 8-byte
	// big-endian shard id.
	tableApplied      byte = 'a' // applied index
	tableHead         byte = 'h' // entity -> seq of its last event
	tableJournal      byte = 'j' // entity, seq -> event
	tableRequestIndex byte = 'q' // request index, request id -> nothing
	tableRequest      byte = 'r' // request id -> index, result
	tableSnapshot     byte = 's' // entity -> seq, snapshot state
	tableValue        byte = 'v' // entity -> version, state or tombstone

	// Bookkeeping of Shard.Restore and Shard.Drop (shardsnap.go), per
	// shard too, but not part of its data.
	tablePending byte = 'p' // an interrupted restore or drop
	tableStaging byte = 'x' // a restore's staged copy: table byte, suffix -> value
)

// shardTables are the tables of a shard's data, in key order: what Save
// streams (in this order), Restore replaces and Drop deletes.
var shardTables = [...]byte{
	tableApplied, tableHead, tableJournal, tableRequestIndex, tableRequest, tableSnapshot, tableValue,
}

// layoutVersion is stored by Badger as its external magic number; Open
// fails on a directory written with another layout.
const layoutVersion uint16 = 1

// Limits on what a CRDTStore accepts.
const (
	// MaxKeyBytes bounds a CRDT key. Badger refuses keys over 65000 bytes,
	// so this is slightly less than 64 KiB (see the package documentation).
	MaxKeyBytes = 64000
	// MaxValueBytes bounds one encoded CRDT state. A DB's effective bound
	// is also at most Options.ValueLogFileSize (a value must fit one value
	// log file).
	MaxValueBytes = 64 << 20
)

// Options configures a DB. Start from DefaultOptions: the zero value of
// most fields is invalid.
type Options struct {
	// Dir is the data directory, created if missing. Required unless
	// InMemory; one directory belongs to one node (see DB.Boot) and is
	// locked by the process that opens it.
	Dir string
	// InMemory keeps everything in memory (tests only): nothing is
	// written to disk, Sync is a no-op, there is no value-log GC, and
	// values are bounded by the (small) value threshold of Badger's
	// in-memory mode. Dir must be empty.
	InMemory bool

	// MemTableSize is the size of one memtable. Default 16 MiB (Badger:
	// 64 MiB). It also bounds a Badger transaction to ~15% of it, which
	// CRDTStore.Apply handles by splitting; at least 1 MiB.
	MemTableSize int64
	// NumMemtables is how many memtables may be in memory, the active one
	// included, before writes stall on flushes. Default 2 (Badger: 5):
	// with 16 MiB memtables about 2 × 21 MiB of arena.
	NumMemtables int
	// ValueLogFileSize is the size of one value-log file; it bounds one
	// value. Default 64 MiB (Badger: 1 GiB): GC rewrites one file at a
	// time, so smaller files reclaim space in smaller steps. 1 MiB..2 GiB.
	ValueLogFileSize int64
	// BlockCacheSize is the cache of decompressed SSTable blocks. Default
	// 32 MiB (Badger: 256 MiB). Zero disables both the cache and block
	// compression (Badger needs a block cache to compress).
	BlockCacheSize int64
	// IndexCacheSize bounds the memory for SSTable indexes and bloom
	// filters. Default 16 MiB; zero keeps all of them in memory (Badger's
	// default), which grows with the data.
	IndexCacheSize int64
	// NumCompactors is the number of compaction goroutines. Default 2,
	// the minimum Badger accepts with compaction on (Badger: 4); one per
	// core on a 2-core machine.
	NumCompactors int

	// GCInterval is how often value-log GC runs; each run rewrites value
	// log files until Badger finds none worth rewriting. Default 5 minutes;
	// a negative value disables GC. GC only matters for values at or above
	// the value threshold (see valueThreshold): smaller ones live in the
	// LSM tree, and compaction reclaims them.
	GCInterval time.Duration
	// GCDiscardRatio is the fraction of a value-log file that must be
	// garbage before GC rewrites it. Default 0.5 (Badger's recommendation:
	// a rewrite then at least halves the file). In (0, 1).
	GCDiscardRatio float64

	// SyncWrites makes Badger fsync every commit (its write-ahead log and
	// value log), which closes the power-loss window described under
	// Durability in the package documentation. Callers that group commit
	// (one Apply per batch) pay one fsync per batch either way. Default
	// false.
	SyncWrites bool

	// Logger receives this package's and Badger's logs: Badger's Debug and
	// Info at Debug, its Warning and Error as they are. Nil discards.
	Logger *slog.Logger
}

// DefaultOptions returns options sized for a small machine (2 cores, a
// few GiB of RAM to share with the rest of the node): about 100 MiB of
// memory for Badger at steady state (2 × ~21 MiB memtable arenas, 32 MiB
// block cache, 16 MiB index cache) against Badger's ~600 MiB defaults.
func DefaultOptions(dir string) Options {
	return Options{
		Dir:              dir,
		MemTableSize:     16 << 20,
		NumMemtables:     2,
		ValueLogFileSize: 64 << 20,
		BlockCacheSize:   32 << 20,
		IndexCacheSize:   16 << 20,
		NumCompactors:    2,
		GCInterval:       5 * time.Minute,
		GCDiscardRatio:   0.5,
	}
}

// Validate reports the first invalid option.
func (o Options) Validate() error {
	switch {
	case o.InMemory && o.Dir != "":
		return errors.New("eventlog: Options.Dir must be empty when InMemory")
	case !o.InMemory && o.Dir == "":
		return errors.New("eventlog: Options.Dir is required")
	case o.MemTableSize < 1<<20 || o.MemTableSize > 1<<30:
		return fmt.Errorf("eventlog: Options.MemTableSize %d not in [1 MiB, 1 GiB]", o.MemTableSize)
	case o.NumMemtables < 1:
		return fmt.Errorf("eventlog: Options.NumMemtables %d < 1", o.NumMemtables)
	case o.ValueLogFileSize < 1<<20 || o.ValueLogFileSize >= 2<<30:
		return fmt.Errorf("eventlog: Options.ValueLogFileSize %d not in [1 MiB, 2 GiB)", o.ValueLogFileSize)
	case o.BlockCacheSize < 0:
		return fmt.Errorf("eventlog: Options.BlockCacheSize %d < 0", o.BlockCacheSize)
	case o.IndexCacheSize < 0:
		return fmt.Errorf("eventlog: Options.IndexCacheSize %d < 0", o.IndexCacheSize)
	case o.NumCompactors < 2:
		return fmt.Errorf("eventlog: Options.NumCompactors %d < 2", o.NumCompactors)
	case o.GCInterval == 0:
		return errors.New("eventlog: Options.GCInterval is 0 (negative disables GC)")
	case !(o.GCDiscardRatio > 0 && o.GCDiscardRatio < 1):
		return fmt.Errorf("eventlog: Options.GCDiscardRatio %v not in (0, 1)", o.GCDiscardRatio)
	}
	return nil
}

// valueThreshold is the size from which Badger stores a value in the value
// log instead of inline in the LSM tree. Badger's default is 1 MiB, but it
// must stay below its transaction limit (15% of the memtable) with room for
// a maximal key, so it is capped at a quarter of that limit: 614 KiB with
// 16 MiB memtables, 38 KiB with the 1 MiB minimum.
func valueThreshold(memTableSize int64) int64 {
	return min(1<<20, memTableSize*15/100/4)
}

func (o Options) badger() badger.Options {
	bo := badger.DefaultOptions(o.Dir).
		WithInMemory(o.InMemory).
		WithMemTableSize(o.MemTableSize).
		WithNumMemtables(o.NumMemtables).
		WithValueLogFileSize(o.ValueLogFileSize).
		WithValueThreshold(valueThreshold(o.MemTableSize)).
		WithBlockCacheSize(o.BlockCacheSize).
		WithIndexCacheSize(o.IndexCacheSize).
		WithNumCompactors(o.NumCompactors).
		WithMetricsEnabled(false).
		WithSyncWrites(o.SyncWrites).
		WithExternalMagic(layoutVersion).
		WithLogger(badgerLogger{o.logger()})
	if o.BlockCacheSize == 0 {
		bo = bo.WithCompression(options.None)
	}
	return bo
}

func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

// DB is one open Badger database. Its methods are safe for concurrent use.
type DB struct {
	bdb      *badger.DB
	log      *slog.Logger
	maxValue int // effective value bound: MaxValueBytes and Badger's own

	// Value-log GC goroutine: stopGC asks it to stop, gcDone is closed when
	// it has. gcRuns counts RunValueLogGC calls (for tests).
	stopGC chan struct{}
	gcDone chan struct{}
	gcRuns atomic.Int64

	// idMu serialises the identity's read-modify-write cycles (Boot,
	// MarkClean, and Apply's un-marking); markedClean is true between a
	// MarkClean and the next write.
	idMu        sync.Mutex
	markedClean atomic.Bool

	// shards holds the lock state of every shard a Shard handle was made
	// for (a few words each, never removed: shards are few and long-lived).
	shards struct {
		sync.Mutex
		m map[uint64]*shardState
	}

	// savePoints are the SavePoints neither saved nor released: Close
	// discards their read transactions.
	savePoints struct {
		sync.Mutex
		m map[*SavePoint]struct{}
	}

	closeOnce sync.Once
	closeErr  error
	mu        struct {
		sync.Mutex
		closed   bool
		inflight int           // operations between enter and exit
		drained  chan struct{} // closed when closed && inflight == 0
	}
}

// Open validates o, opens (or creates) the database, finishes any shard
// Restore or Drop a crash interrupted (see Shard.Restore) and starts
// value-log GC. The caller must Close it.
func Open(o Options) (*DB, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	bdb, err := badger.Open(o.badger())
	if err != nil {
		return nil, fmt.Errorf("eventlog: open %q: %w", o.Dir, err)
	}
	db := &DB{
		bdb:      bdb,
		log:      o.logger(),
		maxValue: int(min(MaxValueBytes, o.ValueLogFileSize)),
		stopGC:   make(chan struct{}),
		gcDone:   make(chan struct{}),
	}
	if o.InMemory {
		// Badger's in-memory mode refuses values above the threshold.
		db.maxValue = int(valueThreshold(o.MemTableSize)) - 1
	}
	db.mu.drained = make(chan struct{})
	// Complete what a crash interrupted before anyone reads a shard.
	if err := db.recoverShards(); err != nil {
		_ = bdb.Close()
		return nil, err
	}
	if o.InMemory || o.GCInterval < 0 {
		close(db.gcDone) // Badger has no value log to collect
	} else {
		go db.runGC(o.GCInterval, o.GCDiscardRatio)
	}
	return db, nil
}

// runGC rewrites value-log files every interval until Badger finds none
// worth rewriting. It stops when stopGC is closed.
func (db *DB) runGC(interval time.Duration, ratio float64) {
	defer close(db.gcDone)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-db.stopGC:
			return
		case <-t.C:
		}
		db.collect(ratio)
	}
}

// collect runs one GC cycle: it rewrites value-log files until Badger finds
// none worth rewriting (ErrNoRewrite; at most one file per call) or Close
// asks it to stop.
func (db *DB) collect(ratio float64) {
	for rewrites := 0; ; rewrites++ {
		db.gcRuns.Add(1)
		err := db.bdb.RunValueLogGC(ratio)
		switch {
		case err == nil:
			select {
			case <-db.stopGC:
				return
			default:
				continue
			}
		case errors.Is(err, badger.ErrNoRewrite), errors.Is(err, badger.ErrRejected):
			if rewrites > 0 {
				db.log.Debug("eventlog: value-log GC", "rewritten_files", rewrites)
			}
		default:
			db.log.Warn("eventlog: value-log GC failed", "err", err, "rewritten_files", rewrites)
		}
		return
	}
}

// Close stops value-log GC, waits for operations in flight, discards the
// SavePoints never saved or released, and closes Badger. It is idempotent: later calls
// return the first call's result. It must not be called from a callback of
// this DB (CRDTStore.Load, Shard.Update).
func (db *DB) Close() error {
	db.closeOnce.Do(func() {
		db.mu.Lock()
		db.mu.closed = true
		wait := db.mu.inflight > 0
		if !wait {
			close(db.mu.drained)
		}
		db.mu.Unlock()
		close(db.stopGC)
		<-db.gcDone
		if wait {
			<-db.mu.drained
		}
		db.discardSavePoints()
		if err := db.bdb.Close(); err != nil {
			db.closeErr = fmt.Errorf("eventlog: close: %w", err)
		}
	})
	return db.closeErr
}

// enter registers an operation; it fails once Close has begun. Every
// successful enter is paired with an exit.
func (db *DB) enter() error {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.mu.closed {
		return ErrClosed
	}
	db.mu.inflight++
	return nil
}

func (db *DB) exit() {
	db.mu.Lock()
	defer db.mu.Unlock()
	db.mu.inflight--
	if db.mu.closed && db.mu.inflight == 0 {
		close(db.mu.drained)
	}
}

// Sync flushes Badger's write-ahead log and value log to disk (see the
// package documentation for the one window it does not cover).
func (db *DB) Sync() error {
	if err := db.enter(); err != nil {
		return err
	}
	defer db.exit()
	return db.sync()
}

func (db *DB) sync() error {
	if err := db.bdb.Sync(); err != nil {
		return fmt.Errorf("eventlog: sync: %w", err)
	}
	return nil
}

// badgerLogger routes Badger's logs to slog: Debug and Info at Debug (Badger
// is chatty at Info), Warning and Error as they are.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.log(slog.LevelError, f, a) }
func (b badgerLogger) Warningf(f string, a ...any) { b.log(slog.LevelWarn, f, a) }
func (b badgerLogger) Infof(f string, a ...any)    { b.log(slog.LevelDebug, f, a) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.log(slog.LevelDebug, f, a) }

func (b badgerLogger) log(level slog.Level, f string, a []any) {
	ctx := context.Background()
	if !b.l.Enabled(ctx, level) {
		return
	}
	b.l.Log(ctx, level, strings.TrimSpace(fmt.Sprintf(f, a...)), "lib", "badger")
}

// checkKey reports whether a CRDT key is within MaxKeyBytes.
func checkKey(key string) error {
	if len(key) > MaxKeyBytes {
		return fmt.Errorf("%w: key of %d bytes (max %d)", ErrTooLarge, len(key), MaxKeyBytes)
	}
	return nil
}

// tableKey returns table followed by key, in a new slice.
func tableKey(table byte, key string) []byte {
	b := make([]byte, 0, 1+len(key))
	return append(append(b, table), key...)
}
