package consensus

import (
	"context"
	"encoding/binary"
	"hash/fnv"

	"github.com/statemesh/statemesh/eventlog"
)

// Entity names an event-sourced or value entity: its type (the service
// that owns it) and its id.
type Entity = eventlog.Entity

// EntityState is an event-sourced entity as its handler sees it: the
// latest snapshot and the events after it.
type EntityState = eventlog.EntityState

// Value is a value entity's state and version.
type Value = eventlog.Value

// AnyVersion, as the expected version of a value write, writes whatever
// the current version is.
const AnyVersion = ^uint64(0)

// Command is one command for an event-sourced entity, with the entity's
// state as of the last applied event.
type Command struct {
	Entity  Entity
	State   EntityState
	Payload []byte
}

// Effect is what a handler decides: the events to persist (possibly none),
// an optional snapshot of the state after them, and the reply for the
// caller. Nothing of it is visible to anyone before the events are applied.
type Effect struct {
	Events      [][]byte
	HasSnapshot bool
	Snapshot    []byte
	Reply       []byte
}

// Handler runs the commands of one entity type. The Host calls it on the
// shard leader, with the entity's state read linearizably. Handle must
// decide from the Command alone and have no other effect: after a conflict
// or a leader change the Host runs it again on fresher state and keeps only
// the Effect whose events were applied. A returned error fails the command
// with ErrRejected and persists nothing.
type Handler interface {
	Handle(ctx context.Context, c Command) (Effect, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, c Command) (Effect, error)

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, c Command) (Effect, error) { return f(ctx, c) }

// Reply is a command's outcome: the entity's last sequence number after
// its events, and the handler's reply.
type Reply struct {
	Seq  uint64
	Data []byte
}

// Member is a node as the Directory reports it.
type Member struct {
	Name string
	// ReplicaID is the node's Raft replica id (the same in every shard);
	// 0 if the node runs no consensus.
	ReplicaID   uint64
	RaftAddress string
	// PeerAddress is where the node serves the Consensus gRPC service.
	PeerAddress string
	// Alive is false while the failure detector holds the node dead.
	Alive bool
}

// Directory reports the nodes of the mesh. The node package implements it
// over the mesh's membership; tests use a static one.
type Directory interface {
	// Members returns every known node, this one included.
	Members() []Member
	// Removed reports whether the node that ran a replica id was removed
	// for good, so that its replicas must be replaced. It must keep
	// answering after the node has left Members.
	Removed(replicaID uint64) bool
}

// ShardOf returns the shard (1..shards) of an entity. It is Lamping and
// Veach's jump consistent hash ("A Fast, Minimal Memory, Consistent Hash
// Algorithm", 2014) of a 64-bit FNV-1a hash of the length-prefixed type
// and id, so that a cluster that grows its shard count would move only
// 1/n of the entities (growing it is not supported yet).
func ShardOf(e Entity, shards int) uint64 {
	h := fnv.New64a()
	var n [binary.MaxVarintLen64]byte
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(e.Type)))])
	h.Write([]byte(e.Type))
	h.Write([]byte(e.ID))
	return uint64(jump(h.Sum64(), shards)) + 1
}

func jump(key uint64, buckets int) int32 {
	var b, j int64 = -1, 0
	for j < int64(buckets) {
		b = j
		key = key*2862933555777941757 + 1
		j = int64(float64(b+1) * (float64(int64(1)<<31) / float64((key>>33)+1)))
	}
	return int32(b)
}
