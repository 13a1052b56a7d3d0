package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/statemesh/statemesh/consensus"
	"github.com/statemesh/statemesh/node"
	"github.com/statemesh/statemesh/protocol/adminpb"
)

// TestKill9ShardLeaderDuringCommands runs three real node processes,
// streams commands for a few event-sourced entities through all three,
// kills the leader of one entity's shard with SIGKILL in the middle, and
// restarts it. Afterwards every acknowledged event is present exactly
// once on every node, sequences are gapless, and all replicas agree.
// Commands that failed are possibly applied: each may appear at most once.
func TestKill9ShardLeaderDuringCommands(t *testing.T) {
	const shards = 2
	procs := startProcs(t, "c", 3, "--shards", fmt.Sprint(shards))
	leaders := func(p *proc) []*adminpb.ShardLeader {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		r, err := p.client.ShardLeaders(ctx, &adminpb.ShardLeadersRequest{})
		if err != nil {
			return nil
		}
		return r.Leaders
	}
	// Placement brings every shard to three replicas.
	waitFor(t, 60*time.Second, "every shard replicated on every node with a leader", func() bool {
		for _, p := range procs {
			ls := leaders(p)
			if len(ls) != shards {
				return false
			}
			for _, l := range ls {
				if !l.Local || l.ReplicaId == 0 {
					return false
				}
			}
		}
		return true
	})

	entities := []string{"e0", "e1", "e2", "e3"}
	var (
		mu        sync.Mutex
		acked     = map[string]bool{} // payloads acknowledged
		ambiguous = map[string]bool{} // payloads whose command failed
	)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				id := entities[i%len(entities)]
				payload := fmt.Sprintf("%s-%d", p.name, i)
				cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
				_, err := p.client.Command(cctx, &adminpb.CommandRequest{Type: node.LogType, Id: id, Command: []byte(payload)})
				ccancel()
				mu.Lock()
				if err == nil {
					acked[payload] = true
				} else {
					ambiguous[payload] = true
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	waitAcked := func(n int) {
		waitFor(t, 30*time.Second, fmt.Sprintf("%d acknowledged commands", n), func() bool { return count() >= n })
	}
	waitAcked(100)
	// Kill the leader of e0's shard.
	shard := consensus.ShardOf(consensus.Entity{Type: node.LogType, ID: "e0"}, shards)
	var victim *proc
	for _, l := range leaders(procs[0]) {
		if l.Shard == shard {
			for _, p := range procs {
				if p.name == l.Node {
					victim = p
				}
			}
		}
	}
	if victim == nil {
		t.Fatalf("no known leader for shard %d", shard)
	}
	victim.kill9()
	t.Logf("killed %s, the leader of shard %d, after %d acknowledged commands", victim.name, shard, count())
	waitAcked(count() + 100) // the two others elect a new leader and go on
	victim.start(t, []string{procs[0].bind, procs[1].bind, procs[2].bind})
	waitAcked(count() + 100)
	cancel()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	var reference map[string][]string
	disagreement := ""
	t.Cleanup(func() {
		if t.Failed() && disagreement != "" {
			t.Logf("last disagreement seen: %s", disagreement)
		}
	})
	waitFor(t, 30*time.Second, "all replicas agree", func() bool {
		reference = map[string][]string{}
		for _, p := range procs {
			for _, id := range entities {
				ectx, ecancel := context.WithTimeout(context.Background(), 3*time.Second)
				r, err := p.client.Events(ectx, &adminpb.EventsRequest{Type: node.LogType, Id: id})
				ecancel()
				if err != nil || r.SnapshotSeq != 0 || r.Seq != uint64(len(r.Events)) {
					disagreement = fmt.Sprintf("%s's events of %s: err %v, snapshot seq %d, seq %d, %d events", p.name, id, err, r.GetSnapshotSeq(), r.GetSeq(), len(r.GetEvents()))
					return false
				}
				var evs []string
				for _, e := range r.Events {
					evs = append(evs, string(e))
				}
				if ref, ok := reference[id]; ok && !slices.Equal(ref, evs) {
					disagreement = fmt.Sprintf("%s holds %d events of %s, another replica %d", p.name, len(evs), id, len(ref))
					return false
				}
				reference[id] = evs
			}
		}
		return true
	})
	seen := map[string]int{}
	for _, evs := range reference {
		for _, e := range evs {
			seen[e]++
		}
	}
	for e, n := range seen {
		if n != 1 {
			t.Errorf("event %q applied %d times", e, n)
		}
		if !acked[e] && !ambiguous[e] {
			t.Errorf("event %q was never submitted", e)
		}
	}
	for e := range acked {
		if seen[e] != 1 {
			t.Errorf("acknowledged event %q present %d times", e, seen[e])
		}
	}
	t.Logf("%d acknowledged, %d failed (possibly applied), %d events on every node", len(acked), len(ambiguous), len(seen))
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
