// Package mesh is statemesh's replicated CRDT store: membership over
// memberlist (SWIM with Lifeguard), the Peer gRPC service between nodes,
// and the goroutine that drives the deltas engine against real networks
// and a real disk.
//
// # Keys and values
//
// A key is (service, entity id) and holds one CRDT type for its life
// (Delete ends it for good: a tombstone that wins over every state);
// writing it as another type fails with ErrTypeMismatch, on the writer and
// on every peer (a peer that sends a conflicting type is refused and
// logged, and nothing changes).
//
// # Dissemination
//
// Every node keeps a few anti-entropy neighbours: Config.Neighbours random
// members of its own region and Config.CrossRegion in others, topped up
// when members die or leave. A node that is chosen takes the chooser as a
// peer too, so the overlay is symmetric and, as a random k-out graph with
// k >= 2, connected with high probability. Fresh deltas (local writes and
// received inflations) are pushed to the neighbours at most PushDelay
// after they appear (eager push), so a write crosses the mesh at network
// speed; every TickInterval the engine acknowledges, retransmits what was
// lost, evicts silent peers and runs digest-driven full-state transfers
// for new, restarted and long-absent peers (see package deltas).
//
// # Consistency
//
// Update and Get take a Consistency:
//
//   - LOCAL: this replica only.
//   - MAJORITY: ⌊N/2⌋+1 replicas, this one included. N counts every
//     member not known to have left, dead ones included, so the minority
//     side of a partition cannot form a majority.
//   - ALL: every member.
//
// A MAJORITY or ALL write is applied locally, then sent directly to the
// other reachable members (Peer.Write), and acknowledged when enough of
// them merged it (and, in sync durability, wrote it to disk). If fewer
// members are reachable than needed, it fails with ErrUnavailable and is
// not applied anywhere. If they are reachable but do not all answer in
// time, it fails with ErrTimeout: the write is applied locally and keeps
// spreading by anti-entropy; it is never rolled back. A MAJORITY or ALL
// read merges the states of that many replicas into the local one first.
//
// # Durability
//
// CRDT state and the node identity live in the node's eventlog database.
// In WriteBehind mode (the default) changed keys are written every
// FlushInterval; in Sync mode a write is acknowledged only after an fsync
// that it shares with the writes around it (group commit). A node that
// did not stop cleanly restarts with a new replica incarnation, because it
// may have handed out dots it never persisted; a node that lost its data
// directory also gets a new incarnation and its state back from its peers.
//
// What a crash costs in WriteBehind mode: the writes the node acknowledged
// in its last FlushInterval are lost unless they had already spread (a
// MAJORITY or ALL write had). Those that had spread come back by
// anti-entropy, but until they do the restarted node does not see its own
// acknowledged writes, and a remove it serves in that window removes
// nothing (an observed-remove removes only what the replica has observed).
// Sync mode has neither effect. The jepsen harness found this
// (jepsen/FINDINGS.md, finding 1) and tests crash guarantees in Sync mode.
//
// # Backpressure, membership and removal
//
// While the furthest-behind live neighbour has more than Config.MaxLag
// deltas unacknowledged, local writes wait until the lag is half that; a
// write whose context ends while it waits fails with ErrOverloaded and is
// not applied. Only members may open Sync streams or call Write and Read,
// and every key a peer names must be a valid mesh key. RemoveNode (or
// Config.RemoveDeadAfter) removes a member's replica for good through a
// GSet under the reserved SystemService, which spreads like user data:
// it then counts for no consistency level and is no peer. Its
// contributions to CRDT state are then pruned: one node, decided through
// a PruneClaimer (the node wires consensus), pulls what every member holds
// of the replica and folds it into its own (see prune.go for the protocol
// and its conditions; crdt.Prune for what it means per type).
//
// # Faults
//
// With Config.Faults set, everything the node sends (memberlist packets
// and dials, Sync streams, Write and Read calls) passes through the
// internal/netfault seam, so tests can cut, drop, delay and duplicate
// traffic between chosen nodes.
package mesh
