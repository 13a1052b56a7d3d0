// Package netfault is the in-process fault seam between named nodes: tests
// (and the Jepsen-style harness) cut, drop, delay and duplicate the traffic
// one node sends to another.
//
// A Faults value is the controller shared by every node of one test. It only
// decides; the wrappers in this package (WrapMemberlist, and later the gRPC
// ones) apply its decisions on the sending side. A symmetric cut is two
// one-way cuts, and each side drops what it sends.
//
// Randomness is deterministic given the seed: every directed link from -> to
// draws from its own generator, seeded from the seed and the link's names, and
// every decision on a link consumes the same number of draws whatever the
// settings. The n-th message on a link therefore meets the same dice in every
// run with that seed, however goroutines interleave traffic on other links,
// and turning duplication on does not change which messages are dropped.
package netfault

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// ErrCut is wrapped by the errors the wrappers return for an operation over a
// cut link (a dial, an RPC).
var ErrCut = errors.New("netfault: link cut")

// Verdict is what to do with one message.
type Verdict struct {
	// Drop: do not deliver the message at all. Duplicate and Delay are then
	// zero.
	Drop bool
	// Duplicate: deliver the message twice.
	Duplicate bool
	// Delay: deliver (each copy of) the message this much later.
	Delay time.Duration
}

type link struct{ from, to string }

// Faults decides the fate of messages between named nodes. The zero value is
// not usable: call New. All methods are safe for concurrent use.
type Faults struct {
	seed int64

	mu struct {
		sync.Mutex
		cut      map[link]struct{}
		loss     float64
		dup      float64
		delayMin time.Duration
		delayMax time.Duration
		rngs     map[link]*rand.Rand
	}

	dropped, duplicated, delayed atomic.Uint64
}

// New returns a controller with no faults whose random decisions are
// determined by seed. Log the seed so that a failing run can be replayed.
func New(seed int64) *Faults {
	f := &Faults{seed: seed}
	f.mu.cut = make(map[link]struct{})
	f.mu.rngs = make(map[link]*rand.Rand)
	return f
}

// Seed returns the seed f was created with.
func (f *Faults) Seed() int64 { return f.seed }

// Cut cuts both directions between nodes a and b.
func (f *Faults) Cut(a, b string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mu.cut[link{a, b}] = struct{}{}
	f.mu.cut[link{b, a}] = struct{}{}
}

// CutOneWay cuts the direction from -> to only: messages from `to` still
// reach `from`.
func (f *Faults) CutOneWay(from, to string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mu.cut[link{from, to}] = struct{}{}
}

// Partition cuts, in both directions, every pair of nodes that are in
// different groups. Nodes not listed in any group are unaffected, and so are
// links inside a group. Cuts add to those already in place; call Heal first
// to replace them.
func (f *Faults) Partition(groups ...[]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, g := range groups {
		for _, h := range groups[i+1:] {
			for _, a := range g {
				for _, b := range h {
					if a == b {
						continue // listed in two groups: never cut from itself
					}
					f.mu.cut[link{a, b}] = struct{}{}
					f.mu.cut[link{b, a}] = struct{}{}
				}
			}
		}
	}
}

// Isolate cuts node off from every other node in all (which may include
// node itself).
func (f *Faults) Isolate(node string, all []string) {
	others := make([]string, 0, len(all))
	for _, n := range all {
		if n != node {
			others = append(others, n)
		}
	}
	f.Partition([]string{node}, others)
}

// Heal removes every cut and resets loss, duplication and delay to none.
// The random streams and the counters carry on.
func (f *Faults) Heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.mu.cut)
	f.mu.loss, f.mu.dup = 0, 0
	f.mu.delayMin, f.mu.delayMax = 0, 0
}

// SetLoss sets the probability that a message on any link is dropped. It
// panics unless 0 <= p <= 1.
func (f *Faults) SetLoss(p float64) {
	checkProb("SetLoss", p)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mu.loss = p
}

// SetDuplicate sets the probability that a message (not dropped) is delivered
// twice. It panics unless 0 <= p <= 1.
func (f *Faults) SetDuplicate(p float64) {
	checkProb("SetDuplicate", p)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mu.dup = p
}

// SetDelay makes every message (not dropped) wait an extra delay drawn
// uniformly from [lo, hi]. SetDelay(0, 0) turns delay off. It panics
// unless 0 <= lo <= hi.
func (f *Faults) SetDelay(lo, hi time.Duration) {
	if lo < 0 || hi < lo {
		panic(fmt.Sprintf("netfault: SetDelay(%v, %v): want 0 <= min <= max", lo, hi))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mu.delayMin, f.mu.delayMax = lo, hi
}

func checkProb(op string, p float64) {
	if !(p >= 0 && p <= 1) { // also rejects NaN
		panic(fmt.Sprintf("netfault: %s(%v): want a probability in [0, 1]", op, p))
	}
}

// Decide returns what to do with one message from -> to, and counts it. A
// message over a cut link is dropped.
func (f *Faults) Decide(from, to string) Verdict {
	f.mu.Lock()
	l := link{from, to}
	rng := f.mu.rngs[l]
	if rng == nil {
		rng = rand.New(rand.NewPCG(uint64(f.seed), linkHash(l)))
		f.mu.rngs[l] = rng
	}
	// Always three draws, so that each message on a link meets the same dice
	// whatever the settings.
	rLoss, rDup, rDelay := rng.Float64(), rng.Float64(), rng.Uint64()
	_, cut := f.mu.cut[l]
	loss, dup := f.mu.loss, f.mu.dup
	dmin, dmax := f.mu.delayMin, f.mu.delayMax
	f.mu.Unlock()

	if cut || rLoss < loss {
		f.dropped.Add(1)
		return Verdict{Drop: true}
	}
	var v Verdict
	if rDup < dup {
		v.Duplicate = true
		f.duplicated.Add(1)
	}
	if dmax > 0 {
		span := uint64(dmax-dmin) + 1
		// dmax-dmin <= MaxInt64, so span cannot overflow; the modulo bias is
		// below span/2^64.
		v.Delay = dmin + time.Duration(rDelay%span)
		if v.Delay > 0 {
			f.delayed.Add(1)
		}
	}
	return v
}

// Blocked reports whether the link from -> to is cut. Connection-oriented
// paths (dials, RPCs) use it: they fail rather than lose, duplicate or delay
// individual messages.
func (f *Faults) Blocked(from, to string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, cut := f.mu.cut[link{from, to}]
	return cut
}

// Counters returns how many messages Decide has dropped (cut or lost),
// duplicated, and given a non-zero delay since New.
func (f *Faults) Counters() (dropped, duplicated, delayed uint64) {
	return f.dropped.Load(), f.duplicated.Load(), f.delayed.Load()
}

func linkHash(l link) uint64 {
	h := fnv.New64a()
	h.Write([]byte(l.from))
	h.Write([]byte{0})
	h.Write([]byte(l.to))
	return h.Sum64()
}
