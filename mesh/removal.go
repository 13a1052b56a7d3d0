package mesh

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/statemesh/statemesh/crdt"
)

// SystemService is the service of the mesh's own keys; user writes to it
// are refused.
const SystemService = "statemesh.system"

// removedKey holds the replicas removed from the mesh for good, as a GSet
// of "name#incarnation": removal is forever and every node learns of it
// by the same anti-entropy as user data.
var (
	removedKey       = Key{Service: SystemService, ID: "removed-replicas"}
	removedEngineKey = removedKey.engineKey()
)

// ErrMemberAlive: RemoveNode refuses a member that is alive, unless forced.
var ErrMemberAlive = errors.New("mesh: member is alive")

// checkUserKey refuses keys of the system service.
func checkUserKey(k Key) error {
	if err := k.Validate(); err != nil {
		return err
	}
	if k.Service == SystemService {
		return fmt.Errorf("%w: service %q is reserved", ErrInvalidKey, SystemService)
	}
	return nil
}

func replicaElement(r crdt.ReplicaID) []byte {
	return []byte(r.Node + "#" + strconv.FormatUint(r.Incarnation, 10))
}

func parseReplicaElement(b []byte) (crdt.ReplicaID, bool) {
	s := string(b)
	i := strings.LastIndexByte(s, '#')
	if i <= 0 {
		return crdt.ReplicaID{}, false
	}
	inc, err := strconv.ParseUint(s[i+1:], 10, 64)
	if err != nil {
		return crdt.ReplicaID{}, false
	}
	return crdt.ReplicaID{Node: s[:i], Incarnation: inc}, true
}

// RemoveNode removes the member name (its current incarnation) from the
// mesh for good: every node stops counting it for MAJORITY and ALL and
// stops syncing with it. A node that comes back under that name must have
// lost its data (a new incarnation). A live member is refused unless
// force is set. Its contributions to CRDT state are then pruned (see
// prune.go); a live member removed by force loses whatever it writes
// after the pruning.
func (n *Node) RemoveNode(ctx context.Context, name string, force bool) error {
	var rerr error
	_, err := n.do(ctx, func() {
		m, ok := n.members[name]
		switch {
		case !ok:
			rerr = fmt.Errorf("mesh: no member %q", name)
		case m.Alive && !force:
			rerr = fmt.Errorf("%w: %q (stop it first, or force)", ErrMemberAlive, name)
		default:
			rerr = n.markRemoved(crdt.ReplicaID{Node: name, Incarnation: m.Incarnation})
		}
	})
	if err != nil {
		return err
	}
	return rerr
}

// markRemoved adds r to the removed set. Runs on the loop; drain applies
// it.
func (n *Node) markRemoved(r crdt.ReplicaID) error {
	_, err := n.eng.Update(removedEngineKey, crdt.TypeGSet, func(v crdt.Value) (crdt.Value, error) {
		return v.(*crdt.GSet).Add(replicaElement(r)), nil
	})
	if err == nil {
		n.log.Warn("member removed from the mesh for good", "replica", r.String())
	}
	return err
}

// removeLongDead removes members dead for longer than
// Config.RemoveDeadAfter. Runs on the loop.
func (n *Node) removeLongDead(now time.Time) {
	if n.cfg.RemoveDeadAfter <= 0 {
		return
	}
	for name, since := range n.deadSince {
		if m, ok := n.members[name]; ok && !m.Alive && now.Sub(since) > n.cfg.RemoveDeadAfter {
			if err := n.markRemoved(crdt.ReplicaID{Node: name, Incarnation: m.Incarnation}); err != nil {
				n.log.Error("could not remove a long-dead member", "member", name, "err", err)
			}
		}
	}
}

// applyRemoved takes the removed set from the system key's state and
// forgets the members it names. Runs on the loop.
func (n *Node) applyRemoved(v crdt.Value) {
	s, ok := v.(*crdt.GSet)
	if !ok {
		n.log.Error("the removed-replicas key holds a " + v.Type().String())
		return
	}
	for _, e := range s.Elements() {
		r, ok := parseReplicaElement(e)
		if !ok || n.removed[r] {
			continue
		}
		n.removed[r] = true
		if r.Node == n.cfg.Name && r.Incarnation == n.replica.Incarnation {
			n.log.Error("this node was removed from the mesh; the others ignore it")
		}
		if m, ok := n.members[r.Node]; ok && m.Incarnation == r.Incarnation {
			n.forget(r.Node)
		}
	}
	if n.rng != nil { // running, not restoring
		n.topUp()
	}
}
