// Package eventlog owns every Badger database a statemesh node opens: one
// DB per data directory, holding the node's durable CRDT state and its
// identity, and (in a later step) its event journals and snapshots.
//
// # Key layout
//
// Every Badger key is one table byte followed by the table's own key:
//
//	'm' meta       small records of the node itself: "identity" (Identity)
//	'c' CRDT state CRDT key (arbitrary bytes) -> encoded CRDT state (opaque)
//	'j' journal    reserved for event journals (next step)
//	's' snapshots  reserved for journal snapshots (next step)
//	'a' applied    reserved for the applied index of each journal (next step)
//
// Tables never share a prefix, so a table is one Badger prefix scan and one
// DropPrefix. New tables take a new byte; the reserved ones must not be
// used for anything else. The layout version is Badger's external magic
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
