package crdt

import (
	"cmp"
	"fmt"
	"strings"
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

// Dot identifies one event: the Seq-th event of Replica. Seq starts at 1.
type Dot struct {
	Replica ReplicaID
	Seq     uint64
}

func (d Dot) String() string { return fmt.Sprintf("%s:%d", d.Replica, d.Seq) }

// Compare orders dots by replica, then sequence number.
func (d Dot) Compare(o Dot) int {
	if c := d.Replica.Compare(o.Replica); c != 0 {
		return c
	}
	return cmp.Compare(d.Seq, o.Seq)
}
