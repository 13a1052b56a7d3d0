// Package hlc implements a hybrid logical clock (Kulkarni et al., "Logical
// Physical Clocks and Consistent Snapshots in Globally Distributed
// Databases", 2014).
//
// A Clock never reads the system time itself: it is given a PhysicalClock,
// so tests can skew, freeze or rewind physical time and check that the
// timestamps it issues still never go backwards.
package hlc

import (
	"cmp"
	"fmt"
	"sync"
	"time"
)

// Timestamp is a hybrid logical clock reading: physical nanoseconds since
// the Unix epoch and a logical counter that orders events within one
// physical reading.
type Timestamp struct {
	WallNanos int64
	Logical   uint32
}

// Compare orders timestamps by wall time, then logical counter.
func (t Timestamp) Compare(o Timestamp) int {
	if c := cmp.Compare(t.WallNanos, o.WallNanos); c != 0 {
		return c
	}
	return cmp.Compare(t.Logical, o.Logical)
}

// IsZero reports whether t is the zero timestamp.
func (t Timestamp) IsZero() bool { return t == Timestamp{} }

// Next returns the smallest timestamp after t.
func (t Timestamp) Next() Timestamp {
	if t.Logical == ^uint32(0) {
		return Timestamp{WallNanos: t.WallNanos + 1}
	}
	return Timestamp{WallNanos: t.WallNanos, Logical: t.Logical + 1}
}

func (t Timestamp) String() string {
	return fmt.Sprintf("%s+%d", time.Unix(0, t.WallNanos).UTC().Format(time.RFC3339Nano), t.Logical)
}

// PhysicalClock returns the current physical time in nanoseconds since the
// Unix epoch.
type PhysicalClock func() int64

// SystemClock reads the machine's wall clock.
func SystemClock() int64 { return time.Now().UnixNano() }

// Offset returns a physical clock that reads base shifted by the value
// *offset holds at each call; tests and the clock-skew fault use it.
func Offset(base PhysicalClock, offset func() time.Duration) PhysicalClock {
	return func() int64 { return base() + int64(offset()) }
}

// Clock is a hybrid logical clock. It is safe for concurrent use.
type Clock struct {
	phys PhysicalClock
	mu   struct {
		sync.Mutex
		last Timestamp
	}
}

// New returns a clock over the physical clock phys.
func New(phys PhysicalClock) *Clock { return &Clock{phys: phys} }

// Now returns a timestamp greater than every timestamp this clock issued or
// observed before, and not behind the physical clock.
func (c *Clock) Now() Timestamp {
	pt := c.phys()
	c.mu.Lock()
	defer c.mu.Unlock()
	if pt > c.mu.last.WallNanos {
		c.mu.last = Timestamp{WallNanos: pt}
	} else {
		c.mu.last = c.mu.last.Next()
	}
	return c.mu.last
}

// Update folds a timestamp received from elsewhere into the clock, so that
// later readings are after it, and returns a timestamp after both.
func (c *Clock) Update(remote Timestamp) Timestamp {
	pt := c.phys()
	c.mu.Lock()
	defer c.mu.Unlock()
	latest := c.mu.last
	if remote.Compare(latest) > 0 {
		latest = remote
	}
	if pt > latest.WallNanos {
		c.mu.last = Timestamp{WallNanos: pt}
	} else {
		c.mu.last = latest.Next()
	}
	return c.mu.last
}

// Last returns the latest timestamp issued or observed, without advancing.
func (c *Clock) Last() Timestamp {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.last
}
