package proxy

import (
	"sync"
	"time"
)

// stream is an entity's open stream to the function.
type stream interface{ close() }

// registry keeps one slot per live entity (per service and entity id).
// A slot's mutex serialises the entity's commands on this node and guards
// its stream; an idle slot is passivated (its stream closed, the slot
// forgotten) after its timeout. Lock order: registry, then slot (the
// passivation timer only tries the slot's lock).
type registry[S stream] struct {
	mu struct {
		sync.Mutex
		slots  map[string]*slot[S]
		closed bool
	}
}

type slot[S stream] struct {
	mu      sync.Mutex
	s       S
	ok      bool // s is an open stream
	dead    bool
	lastUse time.Time
	timer   *time.Timer
}

// slotKey is the registry key of entity id of service s.
func slotKey(s *service, id string) string { return string(s.desc.FullName()) + "\x00" + id }

func newRegistry[S stream]() *registry[S] {
	r := &registry[S]{}
	r.mu.slots = map[string]*slot[S]{}
	return r
}

// acquire returns the key's slot, locked; release it with release.
func (r *registry[S]) acquire(key string, passivation time.Duration) (*slot[S], error) {
	for {
		r.mu.Lock()
		if r.mu.closed {
			r.mu.Unlock()
			return nil, ErrClosed
		}
		sl := r.mu.slots[key]
		if sl == nil {
			sl = &slot[S]{}
			r.mu.slots[key] = sl
			sl.timer = time.AfterFunc(passivation, func() { r.passivate(key, sl, passivation) })
		}
		r.mu.Unlock()
		sl.mu.Lock()
		if !sl.dead {
			return sl, nil
		}
		sl.mu.Unlock()
	}
}

func (r *registry[S]) release(sl *slot[S]) {
	sl.lastUse = time.Now()
	sl.mu.Unlock()
}

// passivate closes an idle slot, or looks again later.
func (r *registry[S]) passivate(key string, sl *slot[S], after time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mu.closed || r.mu.slots[key] != sl {
		return
	}
	if !sl.mu.TryLock() {
		sl.timer.Reset(after)
		return
	}
	defer sl.mu.Unlock()
	if b, ok := any(sl.s).(interface{ busy() bool }); ok && sl.ok && b.busy() {
		sl.timer.Reset(after) // a stream serving streamed commands stays
		return
	}
	if idle := time.Since(sl.lastUse); idle < after {
		sl.timer.Reset(after - idle)
		return
	}
	sl.drop()
	sl.dead = true
	delete(r.mu.slots, key)
}

// set installs an open stream; the slot's lock is held.
func (sl *slot[S]) set(s S) { sl.s, sl.ok = s, true }

// drop closes the slot's stream; the slot's lock is held.
func (sl *slot[S]) drop() {
	if sl.ok {
		sl.s.close()
		var zero S
		sl.s, sl.ok = zero, false
	}
}

// closeAll closes every stream; later acquires fail with ErrClosed.
func (r *registry[S]) closeAll() {
	r.mu.Lock()
	r.mu.closed = true
	slots := r.mu.slots
	r.mu.slots = map[string]*slot[S]{}
	r.mu.Unlock()
	for _, sl := range slots {
		sl.timer.Stop()
		sl.mu.Lock()
		sl.drop()
		sl.dead = true
		sl.mu.Unlock()
	}
}
