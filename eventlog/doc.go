// Package eventlog owns every Badger database a statemesh node opens: one
// DB per data directory, holding the node's durable CRDT state, its
// identity, and the data of the Raft shards it hosts (event journals,
// entity snapshots, value entities, request results, applied indexes).
//
// # Key layout
//
// Every Badger key is one table byte followed by the table's own key:
//
//	'm' meta       small records of the node itself: "identity" (Identity)
//	'c' CRDT state CRDT key (arbitrary bytes) -> encoded CRDT state (opaque)
//
// and, for the shards, the table byte, the 8-byte big-endian shard id, then:
//
//	'a' applied    (nothing)              -> applied index
//	'h' head       entity                 -> seq of the entity's last event
//	'j' journal    entity, seq (u64 BE)   -> event (its bytes, as they are)
//	'q' req. index index (u64 BE)         -> the requests one Update recorded
//	               index (u64 BE), id     -> nothing (legacy: one per request)
//	'r' requests   request id             -> index, result
//	's' snapshots  entity                 -> seq, snapshot state
//	'v' values     entity                 -> version, deleted flag, state
//	'p' pending    (nothing)              -> an interrupted Restore or Drop
//	'x' staging    table byte, key suffix -> value: a Restore's staged copy
//
// 'a' to 'v' are the shard's data; 'p' and 'x' are Restore's and Drop's
// bookkeeping, never streamed by Save.
//
// An entity is its Type and its ID, each as a 2-byte big-endian length and
// the bytes: prefix-free, so ("a", "bc") and ("ab", "c") never collide and
// one entity's journal prefix never matches another's keys; a journal
// prefix scan returns the events in seq order. The record encodings (one
// version byte, big-endian numbers) are listed in records.go; every record
// read is decoded with validation, and one that does not decode is
// ErrCorrupt naming its key (j/7/"cart"/"c1"/3: table/shard/entity/seq).
//
// Tables never share a prefix, so a table is one Badger prefix scan, and a
// shard is one prefix per table. New tables take a new byte (the shard
// tables were added to layout 1 without changing it: layout-1 directories
// had none of their keys). The layout version is Badger's external magic
// number (layoutVersion): a directory written with another layout refuses
// to open instead of being misread.
//
// # Limits
//
// A CRDT key is at most MaxKeyBytes and a value at most MaxValueBytes (and
// at most Options.ValueLogFileSize). Badger cannot store a true 64 KiB key:
// it refuses keys over 65000 bytes (a uint16 length with room for its
// 8-byte version suffix), so MaxKeyBytes is 64000, which leaves room for the
// table byte and for longer composite prefixes later. Limits are checked
// before anything is written and reported as ErrTooLarge.
//
// In a shard, an entity is at most MaxEntityBytes, a request id at most
// MaxRequestIDBytes, one Append at most MaxEventsPerAppend events, and an
// event, snapshot, value state or request result at most
// DB.MaxStateBytes: MaxEventBytes (1 MiB) with on-disk options, less in
// memory (about 600 KiB with 16 MiB memtables). Both that bound and
// whether an Update fits one Badger transaction (ErrBatchTooLarge, see
// Shard.Update) depend on the DB's options, so the replicas of a Raft shard
// must run with the same MemTableSize and the same in-memory choice, or the
// consensus layer must bound commands below the smallest replica's limits:
// a state machine that refuses on one replica what another accepts
// diverges.
//
// # Durability
//
// Writes are not synced one by one (Badger's SyncWrites is off): a
// committed write survives a crash of the process but not necessarily a
// power loss until Sync returns. Callers group commit: batch many writes
// into one CRDTStore.Apply with sync=true, or call DB.Sync.
//
// A caveat from Badger v4.9.6's source: DB.Sync syncs the active memtable's
// write-ahead log and the value log, but not the WAL of a memtable that
// became immutable since the last Sync and is still waiting to be flushed
// into an L0 table (the flush then makes it durable, typically within
// milliseconds). Against power loss there is therefore a short window after
// a memtable rotation in which a synced Apply may lose earlier writes,
// unless Options.SyncWrites is set (every commit is then synced; the mesh
// sets it in its sync durability mode). A process crash loses nothing that
// was committed.
//
// Value-log GC runs in a goroutine owned by the DB (Options.GCInterval);
// Close stops it before it closes Badger.
//
// # Shards: journals, values, requests
//
// DB.Shard(id) is one Raft shard's data; shards share the DB and are
// independent of each other. Its reads (Load, Events, Head, Value,
// Request, Applied) each run in one read-only transaction, so Load's
// snapshot and events are consistent. Shard.Update runs a function in one
// read-write transaction that reads its own writes and commits atomically:
// ShardTxn.Append gives events the seqs head+1, head+2, ... (gapless
// across transactions), PutSnapshot keeps the latest entity snapshot
// (events are kept; Load returns the events after it), PutValue and
// DeleteValue version value entities (a delete leaves a tombstone that
// keeps the version, so versions never go back), PutRequest records a
// request's result for deduplication, indexed by Raft index in 'q' so
// ForgetRequests is a range scan, and SetApplied sets the applied index.
//
// The 'q' index holds one record per Update that recorded requests, keyed
// by the lowest index among them and listing each one's index and id:
// one write per transaction rather than one per request. Shards written
// before (one empty 'q' entry per request, keyed by index and id) are
// read as they are: ForgetRequests handles both kinds, PutRequest deletes
// a re-recorded request's legacy entry, and Save and Restore stream both.
// A node of an earlier version refuses a stream with batch records (its
// Restore fails with ErrBadStream), so a Raft shard's replicas must run
// the same version. Which records a bounded ForgetRequestsN deletes now
// depends on how requests were grouped into transactions, which Raft
// replicas need not share: a state machine must judge a found record by
// its index (ShardTxn.RequestRecord), not by its presence.
//
// # The applied index
//
// The applied index is written in the same Badger transaction as the
// writes of the entries it covers, so after any crash the stored data is
// exactly the data of the entries up to the stored applied index (what
// Dragonboat's IOnDiskStateMachine.Open must return). It never goes
// backwards (ErrOutOfOrder), except through Restore or Drop. A commit is
// not synced (see Durability): a power loss may lose the latest commits,
// but the applied index and the data it covers are lost together, because
// each commit carries both and Badger replays only whole transactions.
//
// # Shard snapshots: Save and Restore
//
// Shard.PrepareSave takes a point-in-time view (a Badger read transaction:
// Dragonboat's PrepareSnapshot) and SavePoint.Save streams it later while
// Updates go on (SaveSnapshot). The stream holds every key of the shard in
// every shard table, the applied index included, in key order, framed with
// a magic, a format version, the shard id, and a trailer with the record
// count and a CRC-32C; it is deterministic.
//
// Shard.Restore replaces the shard's data with a stream's, all or nothing.
// It validates and stages the whole stream in the 'x' table first (bounded
// memory, any size), with the live data untouched and readable; any error
// there (a malformed, truncated, corrupt or other shard's stream:
// ErrBadStream; ErrStopped; a read error) deletes the staged copy and
// leaves the shard exactly as it was. Then a 'p' record commits the
// restore, and the live data is replaced under the shard's exclusive lock
// (readers wait, and never see a mix); the staged copy is deleted only
// after the new live data is synced. A crash after the commit point is
// completed by the next Open, which also deletes staged copies of restores
// that never committed. Shard.Drop deletes a shard the same way. Neither
// uses Badger's DropPrefix, which would block every other shard's writes.
//
// # Backup
//
// DB.Backup writes a consistent full backup of the whole DB (Badger's
// Backup) while it is in use. RestoreDir loads one into an empty or new
// directory, validating the backup's framing and keys before Badger sees
// them, leaving the directory as it was on error, and marking the restored
// identity not clean: the next Boot takes a new incarnation, because the
// node may have issued dots after the backup was taken.
//
// # Identity and incarnations
//
// Boot, called once at node start, decides the replica incarnation of the
// node's CRDT state. After a clean stop (MarkClean, then Close) the
// incarnation is kept; after anything else it is replaced by a fresh random
// one, because a node that may have lost unflushed writes must never
// reissue a dot or a counter value it handed out before (see
// crdt.ReplicaID and the deltas package's Durability section). A write
// through Apply after MarkClean un-marks the clean stop again.
package eventlog
