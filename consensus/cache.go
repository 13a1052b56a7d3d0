package consensus

import (
	"sync"

	"github.com/statemesh/statemesh/eventlog"
)

// entityCache keeps the state of recently commanded entities on the node
// that ran their commands, so that the next command can skip the
// linearizable read (one ReadIndex round plus a journal scan). A cached
// state may be stale (another node's leader wrote since); that is safe
// because the proposal carries the sequence number the handler saw, and
// the state machine refuses it as a conflict unless it is still the
// entity's latest: the Host then drops the entry and reads afresh. A
// command that decides no events is answered from a fresh linearizable
// read only, never from the cache.
//
// The cache is bounded in bytes; entries are evicted oldest first, and an
// entity whose state is larger than maxEntry bytes is not cached.
type entityCache struct {
	mu       sync.Mutex
	m        map[Entity]*cacheEntry
	fifo     []Entity // insertion order, for eviction; may hold stale names
	bytes    int
	maxBytes int
	maxEntry int
}

type cacheEntry struct {
	state EntityState
	size  int
}

func newEntityCache(maxBytes int) *entityCache {
	return &entityCache{m: map[Entity]*cacheEntry{}, maxBytes: maxBytes, maxEntry: maxBytes / 64}
}

// get returns a copy-safe view of e's cached state: the caller may read it
// but not modify it.
func (c *entityCache) get(e Entity) (EntityState, bool) {
	if c.maxBytes <= 0 {
		return EntityState{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ce, ok := c.m[e]
	if !ok {
		return EntityState{}, false
	}
	return ce.state, true
}

func (c *entityCache) drop(e Entity) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ce, ok := c.m[e]; ok {
		c.bytes -= ce.size
		delete(c.m, e)
	}
}

// advance records that events (and maybe a snapshot) were applied to e
// on top of st, the state the handler saw.
func (c *entityCache) advance(e Entity, st EntityState, events [][]byte, hasSnapshot bool, snapshot []byte) {
	if c.maxBytes <= 0 {
		return
	}
	next := EntityState{Seq: st.Seq, SnapshotSeq: st.SnapshotSeq, Snapshot: st.Snapshot}
	// A new slice: the old state's may be shared with a handler still
	// holding it.
	next.Events = make([]eventlog.Event, len(st.Events), len(st.Events)+len(events))
	copy(next.Events, st.Events)
	for _, ev := range events {
		next.Seq++
		next.Events = append(next.Events, eventlog.Event{Seq: next.Seq, Data: ev})
	}
	if hasSnapshot && next.Seq > 0 {
		next.SnapshotSeq, next.Snapshot, next.Events = next.Seq, snapshot, nil
	}
	size := len(e.Type) + len(e.ID) + len(next.Snapshot) + 64
	for _, ev := range next.Events {
		size += len(ev.Data) + 32
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.m[e]; ok {
		c.bytes -= old.size
		delete(c.m, e)
	}
	if size > c.maxEntry {
		return
	}
	c.m[e] = &cacheEntry{state: next, size: size}
	c.fifo = append(c.fifo, e)
	c.bytes += size
	for c.bytes > c.maxBytes && len(c.fifo) > 0 {
		victim := c.fifo[0]
		c.fifo = c.fifo[1:]
		if ce, ok := c.m[victim]; ok {
			c.bytes -= ce.size
			delete(c.m, victim)
		}
	}
	if len(c.fifo) > 4*len(c.m)+1024 {
		// Compact the order list of names already evicted or replaced.
		live := c.fifo[:0]
		seen := map[Entity]bool{}
		for i := len(c.fifo) - 1; i >= 0; i-- {
			if n := c.fifo[i]; c.m[n] != nil && !seen[n] {
				seen[n] = true
				live = append(live, n)
			}
		}
		for i, j := 0, len(live)-1; i < j; i, j = i+1, j-1 {
			live[i], live[j] = live[j], live[i]
		}
		c.fifo = live
	}
}
