package node

import (
	"context"

	"github.com/statemesh/statemesh/consensus"
	"github.com/statemesh/statemesh/crdt"
)

// pruneOwnerType is the value-entity type under which consensus records
// which node prunes each removed replica (mesh.PruneClaimer).
const pruneOwnerType = "statemesh.prune-owner"

// pruneClaimer decides the owner of a pruning through consensus: the
// first claim is written, linearizably, and every later one reads it.
type pruneClaimer struct{ h *consensus.Host }

func (c pruneClaimer) ClaimPrune(ctx context.Context, removed crdt.ReplicaID, node, over string) (string, error) {
	var o []byte
	if over != "" {
		o = []byte(over)
	}
	owner, err := c.h.Claim(ctx, consensus.Entity{Type: pruneOwnerType, ID: removed.String()}, []byte(node), o)
	return string(owner), err
}
