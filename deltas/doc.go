// Package deltas is statemesh's delta-state anti-entropy engine: the
// causal delta-interval algorithm of Almeida, Shoker and Baquero ("Delta
// State Replicated Data Types", 2018, Algorithm 2), generalised to many keys
// and to peers that come and go, with the two optimisations of Enes et al.
// ("Efficient Synchronization of State-based CRDTs", ICDE 2019):
//
//   - BP (back-propagation avoidance): a delta is never sent back to the
//     peer it came from;
//   - RR (redundancy removal): of a received delta-group only the part that
//     inflates local state (crdt.Extract) is kept and forwarded.
//
// The Engine is a pure state machine in the style of etcd's raft package:
// no goroutines, no I/O, no clock. Its inputs are local updates (Update),
// received messages (Step), sync rounds (Tick) and peer liveness
// (PeerUp/PeerDown/RemovePeer); Ready returns the messages to send and the
// keys to persist. The mesh owns the goroutine that drives it.
//
// # Protocol
//
// Every local or received inflation is appended to a delta buffer under a
// sequence number. For each peer the engine remembers the sequence the peer
// acknowledged (acked) and the sequence it has sent up to (sent). Each tick
// it sends the delta-interval [sent, seq) joined per key (minus the peer's
// own deltas with BP); receivers acknowledge, piggybacked on their next
// message, the highest sequence below which they hold every delta. Sends
// are pipelined: an interval is sent once and resent from acked only after
// RetransmitTicks without progress (each further resend without progress
// waits twice as long, up to EvictTicks/2, so a slow peer is not buried
// under resends), so loss costs a retransmission and duplication or
// reordering cost nothing (joins are idempotent and commutative). Flush
// sends the due intervals between ticks (the mesh's eager push).
//
// Relay hold (Config.RelayHoldTicks, on in the mesh): with BP+RR every
// received inflation is relayed to the other peers, which in a mesh where
// each origin pushes to every peer only repeats what they got from the
// origin. Messages carry marks (Message.Marks: the sender holds every
// delta below Seq of peer P's buffer, in P's session), as piggybacked
// acknowledgements of third peers. An engine holds back the inflation of
// a Deltas message from P while every other peer due it has told a mark
// for P's current session; it drops the held inflation once their marks
// reach the message's ToSeq (they hold it, so relaying it sends nothing
// they lack), and buffers it, relaying as before, after RelayHoldTicks
// otherwise (a cut link to P, or P crashed after reaching this engine
// only). Relays to a peer that never heard P go out at once. A dropped
// inflation is in no buffer, so a new peer gets a full-state transfer.
// Marks cost bytes in every message, so HoldRelays turns the hold off
// where it seldom pays: the mesh keeps it on only in a full mesh.
//
// A peer learns of an engine, or of its restart, only from a message: until
// a new peer has answered, the engine sends it a bare message every
// RetransmitTicks even when it has nothing else to say.
//
// Delete removes a key for good: the deletion travels like a delta
// (KeyState.Deleted), absorbs every state of the key, earlier or
// concurrent, and later writes fail with ErrDeleted. Merge joins a state
// obtained outside the protocol (a replicated write, a remote read).
//
// The buffer is collected below the smallest acknowledgement of the peers
// in its horizon. A peer that acknowledges nothing for EvictTicks while
// deltas wait for it leaves the horizon. When it is heard from again (or
// joins anew, or restarts: every engine start has a larger Session) it gets
// a full-state transfer driven by per-key digests, so only differing keys
// move: Digest{Seq} (hash of every key's encoding, taken at sequence Seq)
// -> DigestReply{Seq} (the keys that differ, and the replier's own state of
// them) -> States{Seq} -> ack of Seq. After that, delta sync resumes from
// Seq. A reply carrying another Seq answers an earlier digest that timed
// out and is not taken for the current one. State installed with Restore
// is covered by no delta, so it reaches every peer this way.
//
// State-based sync (every tick, the whole state to every peer) and the
// other modes exist for comparison: `statemesh bench sync` measures them.
//
// # Durability
//
// Ready.Persist lists every key whose state changed. The engine's own
// bookkeeping (buffer, acknowledgements) is not persisted: a restarted
// engine starts a new session and re-syncs with digests. A caller that
// persists lazily must make sure a restarted node never reissues a dot or a
// counter value it handed out before it crashed: either every local update
// is persisted before it is acknowledged, or the node takes a new replica
// incarnation after an unclean stop (see crdt.ReplicaID).
package deltas
