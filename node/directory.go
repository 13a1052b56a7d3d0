package node

import (
	"context"
	"sync"
	"time"

	"github.com/statemesh/statemesh/consensus"
	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/mesh"
)

// meshView is what the directory reads of the mesh (*mesh.Node).
type meshView interface {
	Members(ctx context.Context) ([]mesh.Member, error)
	RemovedReplicas(ctx context.Context) ([]crdt.ReplicaID, error)
}

// directory is the consensus Directory over the mesh's membership. It
// keeps a copy refreshed every refreshInterval (the consensus host asks on
// every operation; the mesh answers through its loop) and remembers the
// Raft replica id of every member incarnation it has seen, so that a
// member the mesh removed for good (and then forgot) is still known to be
// removed.
//
// A mesh replica (name, incarnation) removed for good removes its Raft
// replica only once, for removalGrace, no incarnation seen with the same
// Raft replica id has been outside the removed ones. A node restarted
// after a crash keeps its data directory, hence its Raft replica id,
// under a new mesh incarnation, and removes its previous incarnation
// itself as it starts; that removal may reach this node before the new
// incarnation's metadata does, and must not cost the node its Raft
// replicas.
type directory struct {
	m    meshView
	self consensus.Member
	now  func() time.Time

	mu struct {
		sync.Mutex
		members []consensus.Member
		seen    map[string]map[uint64]uint64 // name -> incarnation -> Raft replica id
		pending map[uint64]time.Time         // Raft replica id -> since when it looks removed
		removed map[uint64]bool              // Raft replica ids of removed members
	}
	stop chan struct{}
	done chan struct{}
}

const (
	refreshInterval = 200 * time.Millisecond
	// removalGrace is how long a removed incarnation's Raft replica id
	// must go unclaimed by another incarnation before it counts as
	// removed: much longer than gossip takes to spread a restarted
	// node's metadata.
	removalGrace = 5 * time.Second
)

func newDirectory(m meshView, self consensus.Member) *directory {
	d := newDirectoryAt(m, self, time.Now)
	d.refresh()
	go d.run()
	return d
}

// newDirectoryAt returns a directory that neither refreshes nor runs.
func newDirectoryAt(m meshView, self consensus.Member, now func() time.Time) *directory {
	d := &directory{m: m, self: self, now: now, stop: make(chan struct{}), done: make(chan struct{})}
	d.mu.seen = map[string]map[uint64]uint64{}
	d.mu.pending = map[uint64]time.Time{}
	d.mu.removed = map[uint64]bool{}
	d.mu.members = []consensus.Member{self}
	return d
}

func (d *directory) run() {
	defer close(d.done)
	t := time.NewTicker(refreshInterval)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
			d.refresh()
		}
	}
}

func (d *directory) close() {
	close(d.stop)
	<-d.done
}

func (d *directory) refresh() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	ms, err := d.m.Members(ctx)
	if err != nil {
		return
	}
	removed, err := d.m.RemovedReplicas(ctx)
	if err != nil {
		return
	}
	now := d.now()
	members := []consensus.Member{d.self}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, m := range ms {
		if m.RaftReplicaID != 0 {
			if d.mu.seen[m.Name] == nil {
				d.mu.seen[m.Name] = map[uint64]uint64{}
			}
			d.mu.seen[m.Name][m.Incarnation] = m.RaftReplicaID
		}
		members = append(members, consensus.Member{Name: m.Name, ReplicaID: m.RaftReplicaID,
			RaftAddress: m.RaftAddr, PeerAddress: m.PeerAddr, Alive: m.Alive})
	}
	isRemoved := make(map[crdt.ReplicaID]bool, len(removed))
	for _, r := range removed {
		isRemoved[r] = true
	}
	gone := map[uint64]bool{} // Raft ids of removed incarnations that no live one claims
	for _, r := range removed {
		id, ok := d.mu.seen[r.Node][r.Incarnation]
		if !ok || d.mu.removed[id] {
			continue
		}
		claimed := false
		for inc, other := range d.mu.seen[r.Node] {
			if other == id && !isRemoved[crdt.ReplicaID{Node: r.Node, Incarnation: inc}] {
				claimed = true
				break
			}
		}
		if !claimed {
			gone[id] = true
		}
	}
	for id, since := range d.mu.pending {
		if !gone[id] {
			delete(d.mu.pending, id)
		} else if now.Sub(since) >= removalGrace {
			d.mu.removed[id] = true
			delete(d.mu.pending, id)
		}
	}
	for id := range gone {
		if _, ok := d.mu.pending[id]; !ok && !d.mu.removed[id] {
			d.mu.pending[id] = now
		}
	}
	d.mu.members = members
}

func (d *directory) Members() []consensus.Member {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mu.members
}

func (d *directory) Removed(id uint64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mu.removed[id]
}

// LogType is the built-in event-sourced entity type whose command is
// appended as one event, replying with the new sequence number. `statemesh
// ctl append`, the process tests and `statemesh bench consensus` use it.
const LogType = "statemesh.log"

var logHandler = consensus.HandlerFunc(func(_ context.Context, c consensus.Command) (consensus.Effect, error) {
	return consensus.Effect{Events: [][]byte{c.Payload}}, nil
})
