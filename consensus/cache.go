package consensus

import (
	"container/list"
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
	m        map[Entity]*list.Element // of *cacheEntry, oldest at the front
	order    *list.List
	bytes    int
	maxBytes int
	maxEntry int
}

type cacheEntry struct {
	entity Entity
	state  EntityState
	size   int
}

func newEntityCache(maxBytes int) *entityCache {
	return &entityCache{m: map[Entity]*list.Element{}, order: list.New(), maxBytes: maxBytes, maxEntry: maxBytes / 64}
}

// get returns e's cached state: the caller may read it but not modify it.
func (c *entityCache) get(e Entity) (EntityState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[e]
	if !ok {
		return EntityState{}, false
	}
	return el.Value.(*cacheEntry).state, true
}

func (c *entityCache) drop(e Entity) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.remove(e)
}

// remove forgets e; the caller holds mu.
func (c *entityCache) remove(e Entity) {
	if el, ok := c.m[e]; ok {
		c.bytes -= el.Value.(*cacheEntry).size
		c.order.Remove(el)
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
	c.remove(e)
	if size > c.maxEntry {
		return
	}
	c.m[e] = c.order.PushBack(&cacheEntry{entity: e, state: next, size: size})
	c.bytes += size
	for c.bytes > c.maxBytes {
		c.remove(c.order.Front().Value.(*cacheEntry).entity)
	}
}
