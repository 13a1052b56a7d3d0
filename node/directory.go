package node

import (
	"context"
	"sync"
	"time"

	"github.com/statemesh/statemesh/consensus"
	"github.com/statemesh/statemesh/mesh"
)

// directory is the consensus Directory over the mesh's membership. It
// keeps a copy refreshed every refreshInterval (the consensus host asks on
// every operation; the mesh answers through its loop) and remembers the
// Raft replica id of every member it has seen, so that a member the mesh
// removed for good (and then forgot) is still known to be removed.
type directory struct {
	m    *mesh.Node
	self consensus.Member

	mu struct {
		sync.Mutex
		members []consensus.Member
		seen    map[string]seenMember // name -> last metadata seen
		removed map[uint64]bool       // Raft replica ids of removed members
	}
	stop chan struct{}
	done chan struct{}
}

type seenMember struct {
	incarnation uint64
	raftID      uint64
}

const refreshInterval = 200 * time.Millisecond

func newDirectory(m *mesh.Node, self consensus.Member) *directory {
	d := &directory{m: m, self: self, stop: make(chan struct{}), done: make(chan struct{})}
	d.mu.seen = map[string]seenMember{}
	d.mu.removed = map[uint64]bool{}
	d.mu.members = []consensus.Member{self}
	d.refresh()
	go d.run()
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
	members := []consensus.Member{d.self}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, m := range ms {
		if m.RaftReplicaID != 0 {
			d.mu.seen[m.Name] = seenMember{incarnation: m.Incarnation, raftID: m.RaftReplicaID}
		}
		members = append(members, consensus.Member{Name: m.Name, ReplicaID: m.RaftReplicaID,
			RaftAddress: m.RaftAddr, PeerAddress: m.PeerAddr, Alive: m.Alive})
	}
	for _, r := range removed {
		if s, ok := d.mu.seen[r.Node]; ok && s.incarnation == r.Incarnation {
			d.mu.removed[s.raftID] = true
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
