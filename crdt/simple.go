package crdt

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"slices"

	"github.com/statemesh/statemesh/internal/hlc"
)

// GSet is a grow-only set of opaque byte strings.
type GSet struct {
	m map[string]struct{}
}

// NewGSet returns an empty set.
func NewGSet() *GSet { return &GSet{m: map[string]struct{}{}} }

func (s *GSet) Type() Type { return TypeGSet }

// Add inserts e and returns the delta (bottom if e was present).
func (s *GSet) Add(e []byte) *GSet {
	d := NewGSet()
	if _, ok := s.m[string(e)]; ok {
		return d
	}
	s.m[string(e)] = struct{}{}
	d.m[string(e)] = struct{}{}
	return d
}

// Contains reports whether e is in the set.
func (s *GSet) Contains(e []byte) bool { _, ok := s.m[string(e)]; return ok }

// Elements returns the elements in byte order.
func (s *GSet) Elements() [][]byte { return sortedKeys(s.m) }

func (s *GSet) Clone() Value { return &GSet{m: maps.Clone(s.m)} }

func (s *GSet) Equal(o Value) bool {
	os, ok := o.(*GSet)
	return ok && maps.Equal(s.m, os.m)
}

func (s *GSet) IsBottom() bool { return len(s.m) == 0 }
func (s *GSet) Size() int      { return len(s.m) }

func (s *GSet) join(o Value) bool {
	grew := false
	for e := range o.(*GSet).m {
		if _, ok := s.m[e]; !ok {
			s.m[e] = struct{}{}
			grew = true
		}
	}
	return grew
}

func (s *GSet) extract(o Value) Value {
	d := NewGSet()
	for e := range o.(*GSet).m {
		if _, ok := s.m[e]; !ok {
			d.m[e] = struct{}{}
		}
	}
	return d
}

func sortedKeys[V any](m map[string]V) [][]byte {
	ks := slices.Sorted(maps.Keys(m))
	out := make([][]byte, len(ks))
	for i, k := range ks {
		out[i] = []byte(k)
	}
	return out
}

// LWWRegister is a last-writer-wins register. Writes are ordered by hybrid
// logical clock timestamp; equal timestamps are ordered by replica id, then
// by value bytes, so every replica picks the same winner.
type LWWRegister struct {
	set     bool
	ts      hlc.Timestamp
	replica ReplicaID
	value   []byte
}

// NewLWWRegister returns an unset register.
func NewLWWRegister() *LWWRegister { return &LWWRegister{} }

func (l *LWWRegister) Type() Type { return TypeLWWRegister }

// Set writes v at timestamp ts on behalf of r and returns the delta. If ts
// is not after the current write's timestamp (a clock behind a write this
// replica has seen), the write takes the smallest timestamp after it
// instead, so a local write always wins locally. Callers feed the returned
// timestamp back into their clock (hlc.Clock.Update).
func (l *LWWRegister) Set(r ReplicaID, ts hlc.Timestamp, v []byte) *LWWRegister {
	if l.set && ts.Compare(l.ts) <= 0 {
		ts = l.ts.Next()
	}
	*l = LWWRegister{set: true, ts: ts, replica: r, value: bytes.Clone(v)}
	d := *l
	d.value = bytes.Clone(v)
	return &d
}

// Get returns the value and whether the register was ever set.
func (l *LWWRegister) Get() ([]byte, bool) { return bytes.Clone(l.value), l.set }

// Timestamp returns the timestamp and writer of the current value.
func (l *LWWRegister) Timestamp() (hlc.Timestamp, ReplicaID) { return l.ts, l.replica }

func (l *LWWRegister) after(o *LWWRegister) bool {
	if !o.set {
		return l.set
	}
	if !l.set {
		return false
	}
	if c := l.ts.Compare(o.ts); c != 0 {
		return c > 0
	}
	if c := l.replica.Compare(o.replica); c != 0 {
		return c > 0
	}
	return bytes.Compare(l.value, o.value) > 0
}

func (l *LWWRegister) Clone() Value { c := *l; c.value = bytes.Clone(l.value); return &c }

func (l *LWWRegister) Equal(o Value) bool {
	ol, ok := o.(*LWWRegister)
	return ok && l.set == ol.set && l.ts == ol.ts && l.replica == ol.replica && bytes.Equal(l.value, ol.value)
}

func (l *LWWRegister) IsBottom() bool { return !l.set }

func (l *LWWRegister) Size() int {
	if l.set {
		return 1
	}
	return 0
}

func (l *LWWRegister) join(o Value) bool {
	ol := o.(*LWWRegister)
	if !ol.after(l) {
		return false
	}
	*l = *ol.Clone().(*LWWRegister)
	return true
}

func (l *LWWRegister) extract(o Value) Value {
	ol := o.(*LWWRegister)
	if !ol.after(l) {
		return NewLWWRegister()
	}
	return ol.Clone()
}

// Flag is a monotonic flag: once enabled it stays enabled.
type Flag struct{ on bool }

// NewFlag returns a disabled flag.
func NewFlag() *Flag { return &Flag{} }

func (f *Flag) Type() Type { return TypeFlag }

// Enable sets the flag and returns the delta.
func (f *Flag) Enable() *Flag {
	if f.on {
		return &Flag{}
	}
	f.on = true
	return &Flag{on: true}
}

// Enabled reports whether the flag is set.
func (f *Flag) Enabled() bool { return f.on }

func (f *Flag) Clone() Value       { c := *f; return &c }
func (f *Flag) Equal(o Value) bool { of, ok := o.(*Flag); return ok && f.on == of.on }
func (f *Flag) IsBottom() bool     { return !f.on }

func (f *Flag) Size() int {
	if f.on {
		return 1
	}
	return 0
}

func (f *Flag) join(o Value) bool {
	if o.(*Flag).on && !f.on {
		f.on = true
		return true
	}
	return false
}

func (f *Flag) extract(o Value) Value {
	if o.(*Flag).on && !f.on {
		return &Flag{on: true}
	}
	return &Flag{}
}

// ballot is one replica's vote. Ballots are ordered by (removed, version,
// vote): a removal beats every vote, and a later vote beats an earlier one.
type ballot struct {
	version uint64
	vote    bool
	removed bool
}

func (b ballot) compare(o ballot) int {
	if b.removed != o.removed {
		if b.removed {
			return 1
		}
		return -1
	}
	if c := cmp.Compare(b.version, o.version); c != 0 {
		return c
	}
	if b.vote != o.vote {
		if b.vote {
			return 1
		}
		return -1
	}
	return 0
}

// Vote holds one boolean vote per replica. A replica changes only its own
// vote; any replica may remove another from the electorate (for example
// when its node is gone for good), after which that replica's vote neither
// counts nor can be cast again.
type Vote struct {
	m      map[ReplicaID]ballot
	pruned markers // see Prune
}

// NewVote returns a vote with no voters.
func NewVote() *Vote { return &Vote{m: map[ReplicaID]ballot{}} }

func (v *Vote) Type() Type { return TypeVote }

// Set casts r's vote and returns the delta. It fails for a removed replica.
func (v *Vote) Set(r ReplicaID, vote bool) (*Vote, error) {
	b := v.m[r]
	if b.removed || v.pruned.has(r) {
		return nil, fmt.Errorf("%w: replica %s was removed from the vote", ErrInvalidArg, r)
	}
	b.version++
	b.vote = vote
	v.m[r] = b
	return &Vote{m: map[ReplicaID]ballot{r: b}}, nil
}

// Remove takes r out of the electorate and returns the delta.
func (v *Vote) Remove(r ReplicaID) *Vote {
	b := v.m[r]
	if b.removed || v.pruned.has(r) {
		return NewVote()
	}
	b.removed = true
	v.m[r] = b
	return &Vote{m: map[ReplicaID]ballot{r: b}}
}

// VotesFor returns how many voters voted true.
func (v *Vote) VotesFor() int {
	n := 0
	for _, b := range v.m {
		if !b.removed && b.vote {
			n++
		}
	}
	return n
}

// Voters returns how many replicas have voted and not been removed.
func (v *Vote) Voters() int {
	n := 0
	for _, b := range v.m {
		if !b.removed {
			n++
		}
	}
	return n
}

// VoteOf returns r's current vote and whether r is a voter.
func (v *Vote) VoteOf(r ReplicaID) (vote, ok bool) {
	b, ok := v.m[r]
	return b.vote, ok && !b.removed
}

func (v *Vote) Clone() Value { return &Vote{m: maps.Clone(v.m), pruned: v.pruned.clone()} }

func (v *Vote) Equal(o Value) bool {
	ov, ok := o.(*Vote)
	return ok && maps.Equal(v.m, ov.m) && maps.Equal(v.pruned, ov.pruned)
}

func (v *Vote) IsBottom() bool { return len(v.m) == 0 && len(v.pruned) == 0 }
func (v *Vote) Size() int      { return len(v.m) }

func (v *Vote) join(o Value) bool {
	ov := o.(*Vote)
	grew := v.pruned.union(ov.pruned)
	if grew {
		v.forget(v.pruned.has)
	}
	for r, b := range ov.m {
		if v.pruned.has(r) {
			continue
		}
		if cur, ok := v.m[r]; !ok || b.compare(cur) > 0 {
			v.m[r] = b
			grew = true
		}
	}
	return grew
}

func (v *Vote) extract(o Value) Value {
	ov := o.(*Vote)
	d := NewVote()
	d.pruned = v.pruned.newer(ov.pruned)
	for r, b := range ov.m {
		if v.pruned.has(r) {
			continue
		}
		if cur, ok := v.m[r]; !ok || b.compare(cur) > 0 {
			d.m[r] = b
		}
	}
	return d
}
