package consensus

import (
	"context"
	"hash/fnv"
	"sort"
	"time"

	"github.com/lni/dragonboat/v4"

	"github.com/statemesh/statemesh/protocol/consensuspb"
)

// Placement: every PlacementInterval, for each shard this node leads, the
// leader compares the shard's replicas with the Directory and makes at
// most one membership change:
//
//  1. a replica whose node was removed for good is deleted from the shard;
//  2. else, if the shard has fewer replicas than Config.Replicas and a
//     live node runs none, that node is asked to start a joining replica
//     (StartReplica) and is then added as a voting member.
//
// Only the leader changes a shard's membership, one change at a time, and
// each change names the configuration it was computed from (Dragonboat's
// ConfigChangeID), so two concurrent attempts cannot both apply. Nodes that
// are merely dead keep their replicas: they may come back, and a majority
// of a 3-replica shard survives one of them.
//
// Among candidates, the node with the highest rendezvous hash of (shard,
// node) is chosen (Thaler and Ravishankar, "Using Name-Based Mappings to
// Increase Hit Rates", 1998), so replicas spread evenly over nodes and
// every leader would pick the same one.
func (h *Host) placementLoop() {
	defer h.wg.Done()
	t := time.NewTicker(h.cfg.PlacementInterval)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		for s := uint64(1); s <= uint64(h.cfg.Shards); s++ {
			select {
			case <-h.stop:
				return
			default:
			}
			leader, _, valid, err := h.nh.GetLeaderID(s)
			if err != nil || !valid || leader != h.replicaID {
				continue
			}
			if err := h.placeShard(s); err != nil {
				h.log.Debug("placement", "shard", s, "err", err)
			}
		}
		h.balanceLeaders()
	}
}

// balanceLeaders moves shards' leaderships away from this node while it
// leads more than its share, as many per round as it leads too many. Leaders do the command
// path's work (handlers, reads, proposals), so a node that leads every
// shard (the bootstrap node, at first) would do nearly all of it. The share
// is ⌈shards with a leader / nodes holding voting replicas⌉, and the new
// leader is the live replica of the shard that leads the fewest shards, so
// only overloaded nodes act and the moves converge.
func (h *Host) balanceLeaders() {
	info := h.nh.GetNodeHostInfo(dragonboat.NodeHostInfoOption{SkipLogInfo: true})
	alive := map[uint64]bool{}
	for _, m := range h.cfg.Directory.Members() {
		if m.Alive && m.ReplicaID != 0 {
			alive[m.ReplicaID] = true
		}
	}
	led := map[uint64]int{}
	voters := map[uint64]bool{}
	total := 0
	for _, si := range info.ShardInfoList {
		for id := range si.Replicas {
			voters[id] = true
		}
		if si.LeaderID != 0 {
			led[si.LeaderID]++
			total++
		}
	}
	if len(voters) < 2 {
		return
	}
	share := (total + len(voters) - 1) / len(voters)
	for _, si := range info.ShardInfoList {
		if led[h.replicaID] <= share {
			return
		}
		if si.LeaderID != h.replicaID {
			continue
		}
		var target uint64
		for id := range si.Replicas {
			if id != h.replicaID && alive[id] && led[id] < share && (target == 0 || led[id] < led[target]) {
				target = id
			}
		}
		if target == 0 {
			continue
		}
		if err := h.nh.RequestLeaderTransfer(si.ShardID, target); err == nil {
			h.log.Debug("placement: moving leadership", "shard", si.ShardID, "to", target)
			h.met.placement.WithLabelValues("leader").Inc()
			led[h.replicaID]--
			led[target]++
		}
	}
}

func (h *Host) placeShard(shard uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.OpTimeout)
	defer cancel()
	go func() {
		select {
		case <-h.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	m, err := h.nh.SyncGetShardMembership(ctx, shard)
	if err != nil {
		return err
	}
	members := h.cfg.Directory.Members()
	// 1. Replace replicas of removed nodes.
	for id := range m.Nodes {
		if id != h.replicaID && h.cfg.Directory.Removed(id) {
			h.log.Info("placement: removing replica of a removed node", "shard", shard, "replica", id)
			h.met.placement.WithLabelValues("remove").Inc()
			return h.nh.SyncRequestDeleteReplica(ctx, shard, id, m.ConfigChangeID)
		}
	}
	// 2. Grow towards Config.Replicas.
	if len(m.Nodes) >= h.cfg.Replicas {
		return nil
	}
	var candidates []Member
	for _, mb := range members {
		if _, in := m.Nodes[mb.ReplicaID]; in {
			continue
		}
		if _, gone := m.Removed[mb.ReplicaID]; gone {
			continue
		}
		if mb.ReplicaID == 0 || !mb.Alive || mb.RaftAddress == "" || mb.PeerAddress == "" || h.cfg.Directory.Removed(mb.ReplicaID) {
			continue
		}
		candidates = append(candidates, mb)
	}
	if len(candidates) == 0 {
		return nil
	}
	sort.Slice(candidates, func(i, j int) bool {
		return rendezvous(shard, candidates[i].Name) > rendezvous(shard, candidates[j].Name)
	})
	c := candidates[0]
	client, err := h.client(c.PeerAddress)
	if err != nil {
		return err
	}
	if _, err := client.StartReplica(ctx, &consensuspb.StartReplicaRequest{Shard: shard, ReplicaId: c.ReplicaID}); err != nil {
		return err
	}
	h.log.Info("placement: adding replica", "shard", shard, "node", c.Name, "replica", c.ReplicaID)
	h.met.placement.WithLabelValues("add").Inc()
	return h.nh.SyncRequestAddReplica(ctx, shard, c.ReplicaID, dragonboat.Target(c.RaftAddress), m.ConfigChangeID)
}

func rendezvous(shard uint64, node string) uint64 {
	h := fnv.New64a()
	var b [8]byte
	for i := range b {
		b[i] = byte(shard >> (8 * i))
	}
	h.Write(b[:])
	h.Write([]byte(node))
	return h.Sum64()
}
