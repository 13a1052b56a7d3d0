package crdt

import (
	"cmp"
	"fmt"
	"strings"
	"unique"
)

// ReplicaID names one replica of CRDT state: the node that holds it and the
// incarnation of that node's state. A node that loses its state must come
// back with a new incarnation so that it never reuses a dot or a counter
// entry it handed out before.
type ReplicaID struct {
	Node        string
	Incarnation uint64
}

func (r ReplicaID) String() string { return fmt.Sprintf("%s#%d", r.Node, r.Incarnation) }

// Compare orders replica ids by node name, then incarnation.
func (r ReplicaID) Compare(o ReplicaID) int {
	if c := strings.Compare(r.Node, o.Node); c != 0 {
		return c
	}
	return cmp.Compare(r.Incarnation, o.Incarnation)
}

// replica is an interned ReplicaID (the standard library's unique
// package): equal ids share one handle, so comparing or hashing a replica
// costs a pointer's, not a string's. Dots and causal contexts, which the
// joins look up millions of times, hold replicas; values keyed by replica
// for other reasons (counters, votes, pruning markers) keep ReplicaIDs.
// The zero replica is no replica: only error paths return it.
type replica struct{ h unique.Handle[ReplicaID] }

func intern(r ReplicaID) replica { return replica{unique.Make(r)} }

// ID returns the replica's id.
func (r replica) ID() ReplicaID { return r.h.Value() }

func (r replica) String() string { return r.ID().String() }

// compare orders replicas as their ids, without reading an id when the
// replicas are one.
func (r replica) compare(o replica) int {
	if r == o {
		return 0
	}
	return r.ID().Compare(o.ID())
}

// Dot identifies one event: the Seq-th event of Replica. Seq starts at 1.
type Dot struct {
	Replica replica
	Seq     uint64
}

func (d Dot) String() string { return fmt.Sprintf("%s:%d", d.Replica, d.Seq) }

// Compare orders dots by replica, then sequence number.
func (d Dot) Compare(o Dot) int {
	if c := d.Replica.compare(o.Replica); c != 0 {
		return c
	}
	return cmp.Compare(d.Seq, o.Seq)
}
