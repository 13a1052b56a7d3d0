package hlc

import (
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// fakeClock is a physical clock the test sets.
type fakeClock struct{ now atomic.Int64 }

func (f *fakeClock) read() int64 { return f.now.Load() }

func TestTimestampOrder(t *testing.T) {
	a := Timestamp{WallNanos: 5, Logical: 1}
	for _, c := range []struct {
		x, y Timestamp
		want int
	}{
		{a, a, 0},
		{a, Timestamp{5, 2}, -1},
		{a, Timestamp{6, 0}, -1},
		{Timestamp{-1, 9}, Timestamp{0, 0}, -1},
		{Timestamp{math.MaxInt64, 0}, Timestamp{math.MinInt64, math.MaxUint32}, 1},
	} {
		if got := c.x.Compare(c.y); got != c.want {
			t.Errorf("%v.Compare(%v) = %d, want %d", c.x, c.y, got, c.want)
		}
		if got := c.y.Compare(c.x); got != -c.want {
			t.Errorf("%v.Compare(%v) = %d, want %d", c.y, c.x, got, -c.want)
		}
	}
	if n := a.Next(); n != (Timestamp{5, 2}) || n.Compare(a) <= 0 {
		t.Errorf("Next %v", n)
	}
	if n := (Timestamp{5, math.MaxUint32}).Next(); n != (Timestamp{6, 0}) {
		t.Errorf("Next at the logical limit: %v", n)
	}
	if !(Timestamp{}).IsZero() || a.IsZero() || (Timestamp{0, 1}).IsZero() {
		t.Errorf("IsZero")
	}
	if s := (Timestamp{WallNanos: 1_500_000_000, Logical: 3}).String(); s != "1970-01-01T00:00:01.5Z+3" {
		t.Errorf("String %q", s)
	}
}

func TestMonotonicWhenPhysicalClockGoesBack(t *testing.T) {
	var pc fakeClock
	c := New(pc.read)
	readings := []int64{1000, 1000, 500, 2000, 1999, 0, -50, 2000, 2001, 3000, 10}
	var prev Timestamp
	for i, p := range readings {
		pc.now.Store(p)
		ts := c.Now()
		if i > 0 && ts.Compare(prev) <= 0 {
			t.Fatalf("reading %d (physical %d): %v not after %v", i, p, ts, prev)
		}
		if ts.WallNanos < p {
			t.Fatalf("timestamp %v behind the physical clock %d", ts, p)
		}
		if c.Last() != ts {
			t.Fatalf("Last %v, Now returned %v", c.Last(), ts)
		}
		prev = ts
	}
	// once physical time passes the clock, the logical part resets
	pc.now.Store(5000)
	if ts := c.Now(); ts != (Timestamp{5000, 0}) {
		t.Fatalf("after physical time caught up: %v", ts)
	}
	// a frozen clock counts logically, and rolls the wall over at the limit
	c2 := New(pc.read)
	c2.Update(Timestamp{WallNanos: 5000, Logical: math.MaxUint32 - 1})
	if ts := c2.Now(); ts != (Timestamp{5001, 0}) {
		t.Fatalf("logical overflow: %v", ts)
	}
}

func TestUpdateRemoteFarAhead(t *testing.T) {
	var pc fakeClock
	pc.now.Store(int64(time.Hour))
	c := New(pc.read)
	local := c.Now()
	remote := Timestamp{WallNanos: int64(100 * time.Hour), Logical: 7}
	got := c.Update(remote)
	if got.Compare(remote) <= 0 || got.Compare(local) <= 0 {
		t.Fatalf("Update(%v) = %v, not after the remote and local timestamps", remote, got)
	}
	if got != (Timestamp{remote.WallNanos, 8}) {
		t.Fatalf("Update(%v) = %v, want the smallest timestamp after it", remote, got)
	}
	if c.Last() != got {
		t.Fatalf("Last %v", c.Last())
	}
	// later readings stay after it although the physical clock is far behind
	prev := got
	for range 5 {
		pc.now.Add(int64(time.Second))
		ts := c.Now()
		if ts.Compare(prev) <= 0 || ts.WallNanos != remote.WallNanos {
			t.Fatalf("Now %v after %v", ts, prev)
		}
		prev = ts
	}
	// a remote timestamp behind the clock changes nothing but the tick
	if ts := c.Update(Timestamp{WallNanos: 1}); ts.Compare(prev) <= 0 {
		t.Fatalf("Update with an old remote went back: %v", ts)
	}
	// physical time passing the remote one takes over again
	pc.now.Store(int64(101 * time.Hour))
	if ts := c.Now(); ts != (Timestamp{int64(101 * time.Hour), 0}) {
		t.Fatalf("Now %v", ts)
	}
	// an Update when the physical clock is ahead of everything reads it
	pc.now.Store(int64(200 * time.Hour))
	if ts := c.Update(Timestamp{WallNanos: int64(150 * time.Hour)}); ts != (Timestamp{int64(200 * time.Hour), 0}) {
		t.Fatalf("Update %v", ts)
	}
}

func TestOffsetSkew(t *testing.T) {
	var pc fakeClock
	pc.now.Store(1_000_000)
	var skew atomic.Int64
	skewed := Offset(pc.read, func() time.Duration { return time.Duration(skew.Load()) })
	if got := skewed(); got != 1_000_000 {
		t.Fatalf("no skew: %d", got)
	}
	skew.Store(int64(-300 * time.Microsecond))
	if got := skewed(); got != 700_000 {
		t.Fatalf("skew -300µs: %d", got)
	}
	skew.Store(int64(2 * time.Millisecond))
	if got := skewed(); got != 3_000_000 {
		t.Fatalf("skew +2ms: %d", got)
	}
	// the offset is read at every call
	pc.now.Store(2_000_000)
	if got := skewed(); got != 4_000_000 {
		t.Fatalf("base moved: %d", got)
	}

	// Two nodes, one 1s behind. Messages carry timestamps; each receive is
	// ordered after its send although the receiver's clock is behind.
	var behind atomic.Int64
	behind.Store(int64(-time.Second))
	a := New(pc.read)
	b := New(Offset(pc.read, func() time.Duration { return time.Duration(behind.Load()) }))
	for i := range 20 {
		pc.now.Add(1000)
		from, to := a, b
		if i%2 == 1 {
			from, to = b, a
		}
		sent := from.Now()
		recv := to.Update(sent)
		if recv.Compare(sent) <= 0 {
			t.Fatalf("receive %v not after send %v", recv, sent)
		}
		if i == 10 { // the skew changes sign mid-run: still monotonic
			behind.Store(int64(time.Second))
		}
		if next := to.Now(); next.Compare(recv) <= 0 {
			t.Fatalf("Now %v after receive %v", next, recv)
		}
	}
}

func TestConcurrentNowDistinct(t *testing.T) {
	const goroutines, each = 8, 2000
	for _, phys := range []struct {
		name string
		pc   PhysicalClock
	}{
		{"system", SystemClock},
		{"frozen", func() int64 { return 42 }},
	} {
		t.Run(phys.name, func(t *testing.T) {
			c := New(phys.pc)
			out := make([][]Timestamp, goroutines)
			var wg sync.WaitGroup
			for g := range goroutines {
				wg.Go(func() {
					ts := make([]Timestamp, 0, each)
					for i := range each {
						if i%100 == 99 {
							ts = append(ts, c.Update(Timestamp{WallNanos: 43, Logical: uint32(i)}))
							continue
						}
						ts = append(ts, c.Now())
					}
					out[g] = ts
				})
			}
			wg.Wait()
			seen := make(map[Timestamp]bool, goroutines*each)
			for g, ts := range out {
				for i, x := range ts {
					if seen[x] {
						t.Fatalf("timestamp %v issued twice", x)
					}
					seen[x] = true
					if i > 0 && x.Compare(ts[i-1]) <= 0 {
						t.Fatalf("goroutine %d: %v after %v", g, x, ts[i-1])
					}
				}
			}
			for x := range seen {
				if x.Compare(c.Last()) > 0 {
					t.Fatalf("Last %v behind issued %v", c.Last(), x)
				}
			}
		})
	}
}

// Any interleaving of physical readings, local events and received
// timestamps yields strictly increasing timestamps, each after every
// timestamp received before it and never behind the physical clock.
func TestClockProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var pc fakeClock
		c := New(pc.read)
		var last Timestamp
		first := true
		for range rapid.IntRange(1, 50).Draw(t, "steps") {
			pc.now.Store(rapid.Int64Range(-10, 10).Draw(t, "physical"))
			var ts Timestamp
			var floor Timestamp
			if rapid.Bool().Draw(t, "update") {
				floor = Timestamp{
					WallNanos: rapid.Int64Range(-10, 20).Draw(t, "remote wall"),
					Logical:   rapid.SampledFrom([]uint32{0, 1, math.MaxUint32}).Draw(t, "remote logical"),
				}
				ts = c.Update(floor)
				if ts.Compare(floor) <= 0 {
					t.Fatalf("Update(%v) = %v", floor, ts)
				}
			} else {
				ts = c.Now()
			}
			if !first && ts.Compare(last) <= 0 {
				t.Fatalf("%v not after %v", ts, last)
			}
			if ts.WallNanos < pc.read() {
				t.Fatalf("%v behind the physical clock %d", ts, pc.read())
			}
			if c.Last() != ts {
				t.Fatalf("Last %v, issued %v", c.Last(), ts)
			}
			last, first = ts, false
		}
	})
}
