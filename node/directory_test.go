package node

import (
	"context"
	"testing"
	"time"

	"github.com/statemesh/statemesh/consensus"
	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/mesh"
)

// fakeMesh is a mesh membership set by hand.
type fakeMesh struct {
	members []mesh.Member
	removed []crdt.ReplicaID
}

func (f *fakeMesh) Members(context.Context) ([]mesh.Member, error) { return f.members, nil }
func (f *fakeMesh) RemovedReplicas(context.Context) ([]crdt.ReplicaID, error) {
	return f.removed, nil
}

func member(name string, inc, raft uint64) mesh.Member {
	return mesh.Member{Name: name, Incarnation: inc, RaftReplicaID: raft, RaftAddr: "r-" + name, PeerAddr: "p-" + name, Alive: true}
}

// dirAt returns a directory over f whose clock the test moves.
func dirAt(f *fakeMesh) (*directory, *time.Time) {
	now := time.Unix(1000, 0)
	d := newDirectoryAt(f, consensus.Member{Name: "self", ReplicaID: 1}, func() time.Time { return now })
	return d, &now
}

func TestDirectoryRemovesAReplicaAfterTheGrace(t *testing.T) {
	// A node removed for good (statemesh ctl remove-node): the mesh
	// forgets it and lists its incarnation as removed.
	f := &fakeMesh{members: []mesh.Member{member("a", 7, 70)}}
	d, now := dirAt(f)
	d.refresh()
	f.members, f.removed = nil, []crdt.ReplicaID{{Node: "a", Incarnation: 7}}
	d.refresh()
	if d.Removed(70) {
		t.Fatal("removed at once, before the grace")
	}
	*now = now.Add(removalGrace)
	d.refresh()
	if !d.Removed(70) {
		t.Fatal("not removed after the grace")
	}
	*now = now.Add(time.Hour)
	f.removed = nil // forgotten by the mesh
	d.refresh()
	if !d.Removed(70) {
		t.Fatal("a removal does not last")
	}
}

func TestDirectoryKeepsTheReplicaOfARestartedNode(t *testing.T) {
	// A node restarted after a crash: a new mesh incarnation, the same
	// Raft replica id, and its previous incarnation removed by itself;
	// the removal arrives before the new incarnation's metadata.
	f := &fakeMesh{members: []mesh.Member{member("a", 7, 70)}}
	d, now := dirAt(f)
	d.refresh()
	f.members, f.removed = nil, []crdt.ReplicaID{{Node: "a", Incarnation: 7}}
	d.refresh()
	*now = now.Add(removalGrace / 2)
	f.members = []mesh.Member{member("a", 8, 70)}
	d.refresh()
	*now = now.Add(2 * removalGrace)
	d.refresh()
	if d.Removed(70) {
		t.Fatal("the Raft replica of a node that came back under a new incarnation was removed")
	}
	// Later it is removed for good, current incarnation included.
	f.members = nil
	f.removed = append(f.removed, crdt.ReplicaID{Node: "a", Incarnation: 8})
	d.refresh()
	*now = now.Add(removalGrace)
	d.refresh()
	if !d.Removed(70) {
		t.Fatal("not removed once every incarnation that claimed it was")
	}
}

func TestDirectoryRemovesTheOldReplicaOfANodeThatLostItsData(t *testing.T) {
	// A node that lost its data dir: a new incarnation and a new Raft
	// replica id; the old one is gone for good.
	f := &fakeMesh{members: []mesh.Member{member("a", 7, 70)}}
	d, now := dirAt(f)
	d.refresh()
	f.members, f.removed = []mesh.Member{member("a", 8, 80)}, []crdt.ReplicaID{{Node: "a", Incarnation: 7}}
	d.refresh()
	*now = now.Add(removalGrace)
	d.refresh()
	if !d.Removed(70) || d.Removed(80) {
		t.Fatalf("Removed(70) = %v, Removed(80) = %v; want true, false", d.Removed(70), d.Removed(80))
	}
	if ms := d.Members(); len(ms) != 2 || ms[1].ReplicaID != 80 {
		t.Fatalf("members %+v", ms)
	}
}
