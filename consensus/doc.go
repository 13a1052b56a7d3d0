// Package consensus runs statemesh's strongly consistent entities
// (event-sourced and value entities) on Raft shards, with Dragonboat v4 as
// the Raft implementation and package eventlog as the state machines'
// storage.
//
// # Shards and replicas
//
// Entities are spread over Config.Shards Raft shards by a consistent hash
// of (entity type, id) (ShardOf). Each node runs one Dragonboat NodeHost
// and a replica of some shards, all with the node's replica id (random,
// kept in Config.Dir, new when the directory is lost, never reused). A new
// cluster starts on the one node with Config.Bootstrap, whose shards begin
// with one replica; placement then adds live nodes until each shard has
// Config.Replicas replicas (or as many as there are nodes), and replaces
// the replicas of nodes removed for good. Only a shard's leader changes
// its membership, one change at a time, and a node that leads more than
// its share of shards hands one leadership per round to the replica that
// leads fewest (see placement.go).
//
// Raft timing is in ticks of Config.RTT: a leader heartbeats every
// HeartbeatTicks and a follower that hears nothing for ElectionTicks
// starts an election (with pre-vote and check-quorum, so a partitioned
// node neither disrupts the majority when it returns nor keeps believing
// it leads). The defaults (10ms, 5, 50) suit loopback and LAN; across
// regions set RTT near the real round trip. Dragonboat's LogDB uses its
// "tiny" configuration (about 256 MB of memory at most), sized for small
// machines. Config.RaftTLS runs the Raft transport over mutual TLS (statemesh
// node sets it from --tls-cert, --tls-key and --tls-ca, as the peer
// service's); without it the transport is plaintext.
//
// # The command path
//
// Host.Command runs an event-sourced entity's command:
//
//  1. Route. If this node holds a replica of the entity's shard and it
//     leads (or no leader is known yet), the command runs here; if another
//     node leads, it is forwarded to that node over the Consensus gRPC
//     service; a node without a replica forwards to one that has one. A
//     forwarded request carries a hop count and is refused past
//     Config.MaxForwardHops, so a stale view of the leader cannot loop.
//  2. Load. The entity (latest snapshot and the events after it) comes,
//     on the first attempt, from the state this node kept after the
//     entity's previous command (entityCache, bounded by
//     Config.EntityCacheBytes) or else from the local replica's applied
//     data, with no Raft round. On the leader that is nearly always
//     current; step 4 catches the rare stale state. Every later attempt
//     reads linearizably (Raft ReadIndex, then a local lookup). The read
//     also reports whether the command's request id was applied before;
//     if so, the recorded reply is returned and nothing else happens.
//  3. Handle. The Handler for the entity type decides the events, an
//     optional snapshot and the reply. A command that decides no events
//     replies at once if its state came from a linearizable read, and is
//     re-run on one otherwise: a reply is never computed from state that
//     might be stale. A handler error on unverified state is re-checked
//     the same way before the command fails.
//  4. Propose. One Raft entry carries the entity, the expected sequence
//     number (the entity's last one at step 2), the events, the snapshot,
//     the reply and the request id. The reply is returned only after the
//     entry is applied. If another writer got there first (or the kept
//     state was stale), the state machine answers "conflict" and the path
//     goes back to step 2 with a linearizable read (a few times, then
//     ErrConflict). Because the entry is applied only if the entity's
//     sequence number is still the one the handler saw, the handler's
//     decision is linearized at the entry's application.
//
// Proposals are grouped per shard (proposer.go): at most two are in
// flight on a node, and the operations that arrive meanwhile go into the
// next one together, as one Batch entry whose operations the state
// machine applies in order, each with its own expectation, request id and
// result, exactly as if each were an entry of its own at the batch's
// index. Without load an operation is proposed at once, alone; under load
// the Raft round, log write, replication and apply transaction are shared
// (in bench consensus at 128 clients, about 3.5 operations per proposal
// with 8 shards and 23 with one). A batch changes no outcome: one
// operation's conflict or refusal does not affect the others, and every
// replica of a shard must run a version that knows batches (an older one
// would apply a batch as an invalid entry).
//
// Commands on one entity are serialised on each node, so one node's
// concurrent commands do not conflict with each other. Leader changes, an
// unready shard and unknown outcomes are retried with backoff until the
// caller's deadline (Config.OpTimeout if it has none), always with the same
// request id, so a retry is never applied twice: the state machine keeps
// the result of every applied request id for Config.DedupWindow entries.
// Whether an entry's request id counts as applied depends only on the
// indexes (the recorded one within DedupWindow entries of the entry's),
// never on whether this replica has deleted the record yet: replicas
// delete them in batches that follow their own apply batches.
//
// Value entities (GetValue, PutValue, DeleteValue) take the same route
// without a handler: reads are linearizable reads, writes are one entry
// with the expected version. A deleted value keeps its version, so
// versions never repeat.
//
// # The determinism rule
//
// The state machine (statemachine.go) must produce the same data on every
// replica from the same entries. Its Update reads nothing but the entries
// and the shard's stored data: no clock, no randomness, no map iteration
// order, no node-local configuration except DedupWindow (which every node
// of a cluster must share). Everything that may differ between nodes
// happens before the proposal: the handler runs once, on one node, and its
// result is what is replicated. Entries that do not decode or exceed a
// limit are refused in the same way on every replica (CODE_INVALID), never
// with a panic. The applied index is committed in the same eventlog
// transaction as the data it covers, so a restart resumes exactly after
// the last applied entry.
//
// Raft snapshots stream the shard's eventlog data as of the snapshot's
// index (eventlog.Shard.PrepareSave, then SavePoint.Save while updates go
// on); a replica recovering from one replaces its shard data all or
// nothing (eventlog.Shard.Restore) and resumes after the stream's applied
// index. Update skips entries at or below the stored applied index, so
// replays never apply an entry twice.
//
// # Errors
//
// Every error matches one sentinel (errors.Is), which tells the caller
// whether the operation was applied:
//
//	ErrConflict     not applied: the expected sequence number or version did not match
//	ErrRejected     not applied: the handler returned an error (a *Rejection,
//	                with the error's gRPC status code when it had one)
//	ErrNoHandler    not applied: no handler for the entity type
//	ErrInvalid      not applied: malformed, or over a limit
//	ErrUnavailable  not applied: no quorum or no ready shard before the deadline
//	ErrNotLeader    not applied: no node that holds the shard could be reached
//	ErrTimeout      unknown: it may have been applied, or may still be; retry
//	                with the same request id to find out (applied at most once)
//	ErrClosed       the Host is closing
//
// # Faults
//
// Config.RaftTransport replaces Dragonboat's TCP transport; tests wrap its
// in-process channel transport with internal/netfault.WrapRaft to cut,
// drop, delay and duplicate Raft messages, and Config.DialOptions carry
// netfault's gRPC interceptor to cut forwarding. Between real processes,
// links are cut at the network level.
package consensus
