package sdk

import (
	"bytes"
	"fmt"
	"slices"

	"github.com/statemesh/statemesh/protocol/functionpb"
)

// Crdt is one of the CRDT values an entity can hold: *PNCounter,
// *GCounter, *GSet, *ORSet, *LWWRegister, *Flag, *Vote or *ORMap. It is
// the function's copy of the replica the proxy owns: the SDK sets it from
// the proxy's initial state and applies the changes the proxy reports.
//
// A command's mutations are pending until the command succeeds: reads
// (Value, Elements, ...) include them, so a handler sees its own writes;
// on success they become the reply's delta and part of the local copy, on
// failure they are discarded.
type Crdt interface {
	setState(*functionpb.CrdtState) error
	applyDelta(*functionpb.CrdtDelta) error
	// delta returns the pending mutations, nil if none.
	delta() *functionpb.CrdtDelta
	// state returns the value, including the pending mutations.
	state() *functionpb.CrdtState
	commit()
	discard()
}

var (
	_ Crdt = (*PNCounter)(nil)
	_ Crdt = (*GCounter)(nil)
	_ Crdt = (*GSet)(nil)
	_ Crdt = (*ORSet)(nil)
	_ Crdt = (*LWWRegister)(nil)
	_ Crdt = (*Flag)(nil)
	_ Crdt = (*ORMap)(nil)
	_ Crdt = (*Vote)(nil)
)

func crdtMismatch(want string, got any) error {
	return fmt.Errorf("sdk: the entity holds a %s, the proxy sent a %T", want, got)
}

// PNCounter is a counter that can go up and down.
type PNCounter struct {
	value, pending int64
}

// NewPNCounter returns a zero counter.
func NewPNCounter() *PNCounter { return &PNCounter{} }

// Value is the counter's value, including this command's changes.
func (c *PNCounter) Value() int64 { return c.value + c.pending }

// Increment adds n (which may be negative).
func (c *PNCounter) Increment(n int64) { c.pending += n }

// Decrement subtracts n.
func (c *PNCounter) Decrement(n int64) { c.pending -= n }

func (c *PNCounter) setState(s *functionpb.CrdtState) error {
	x, ok := s.GetState().(*functionpb.CrdtState_Pncounter)
	if !ok {
		return crdtMismatch("PNCounter", s.GetState())
	}
	c.value = x.Pncounter.GetValue()
	return nil
}

func (c *PNCounter) applyDelta(d *functionpb.CrdtDelta) error {
	x, ok := d.GetDelta().(*functionpb.CrdtDelta_Pncounter)
	if !ok {
		return crdtMismatch("PNCounter", d.GetDelta())
	}
	c.value += x.Pncounter.GetChange()
	return nil
}

func (c *PNCounter) delta() *functionpb.CrdtDelta {
	if c.pending == 0 {
		return nil
	}
	return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Pncounter{Pncounter: &functionpb.PNCounterDelta{Change: c.pending}}}
}

func (c *PNCounter) state() *functionpb.CrdtState {
	return &functionpb.CrdtState{State: &functionpb.CrdtState_Pncounter{Pncounter: &functionpb.PNCounterState{Value: c.Value()}}}
}

func (c *PNCounter) commit()  { c.value, c.pending = c.value+c.pending, 0 }
func (c *PNCounter) discard() { c.pending = 0 }

// GCounter is a grow-only counter.
type GCounter struct {
	value, pending uint64
}

// NewGCounter returns a zero counter.
func NewGCounter() *GCounter { return &GCounter{} }

// Value is the counter's value, including this command's changes.
func (c *GCounter) Value() uint64 { return c.value + c.pending }

// Increment adds n.
func (c *GCounter) Increment(n uint64) { c.pending += n }

func (c *GCounter) setState(s *functionpb.CrdtState) error {
	x, ok := s.GetState().(*functionpb.CrdtState_Gcounter)
	if !ok {
		return crdtMismatch("GCounter", s.GetState())
	}
	c.value = x.Gcounter.GetValue()
	return nil
}

func (c *GCounter) applyDelta(d *functionpb.CrdtDelta) error {
	x, ok := d.GetDelta().(*functionpb.CrdtDelta_Gcounter)
	if !ok {
		return crdtMismatch("GCounter", d.GetDelta())
	}
	c.value += x.Gcounter.GetIncrement()
	return nil
}

func (c *GCounter) delta() *functionpb.CrdtDelta {
	if c.pending == 0 {
		return nil
	}
	return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Gcounter{Gcounter: &functionpb.GCounterDelta{Increment: c.pending}}}
}

func (c *GCounter) state() *functionpb.CrdtState {
	return &functionpb.CrdtState{State: &functionpb.CrdtState_Gcounter{Gcounter: &functionpb.GCounterState{Value: c.Value()}}}
}

func (c *GCounter) commit()  { c.value, c.pending = c.value+c.pending, 0 }
func (c *GCounter) discard() { c.pending = 0 }

// byteSet is a set of byte strings.
type byteSet map[string]struct{}

func (s byteSet) sorted() [][]byte {
	out := make([][]byte, 0, len(s))
	for k := range s {
		out = append(out, []byte(k))
	}
	slices.SortFunc(out, bytes.Compare)
	return out
}

func setOf(items [][]byte) byteSet {
	s := make(byteSet, len(items))
	for _, it := range items {
		s[string(it)] = struct{}{}
	}
	return s
}

// GSet is a grow-only set of opaque elements (encode them as you like, for
// example as serialized protobuf messages).
type GSet struct {
	items, added byteSet
}

// NewGSet returns an empty set.
func NewGSet() *GSet { return &GSet{items: byteSet{}, added: byteSet{}} }

// Contains reports whether e is in the set.
func (s *GSet) Contains(e []byte) bool {
	_, a := s.items[string(e)]
	_, b := s.added[string(e)]
	return a || b
}

// Elements returns the elements, sorted.
func (s *GSet) Elements() [][]byte {
	all := maps2(s.items, s.added)
	return all.sorted()
}

// Len is the number of elements.
func (s *GSet) Len() int { return len(maps2(s.items, s.added)) }

// Add adds e.
func (s *GSet) Add(e []byte) {
	if !s.Contains(e) {
		s.added[string(e)] = struct{}{}
	}
}

func maps2(a, b byteSet) byteSet {
	out := make(byteSet, len(a)+len(b))
	for k := range a {
		out[k] = struct{}{}
	}
	for k := range b {
		out[k] = struct{}{}
	}
	return out
}

func (s *GSet) setState(st *functionpb.CrdtState) error {
	x, ok := st.GetState().(*functionpb.CrdtState_Gset)
	if !ok {
		return crdtMismatch("GSet", st.GetState())
	}
	s.items = setOf(x.Gset.GetItems())
	return nil
}

func (s *GSet) applyDelta(d *functionpb.CrdtDelta) error {
	x, ok := d.GetDelta().(*functionpb.CrdtDelta_Gset)
	if !ok {
		return crdtMismatch("GSet", d.GetDelta())
	}
	for _, it := range x.Gset.GetAdded() {
		s.items[string(it)] = struct{}{}
	}
	return nil
}

func (s *GSet) delta() *functionpb.CrdtDelta {
	if len(s.added) == 0 {
		return nil
	}
	return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Gset{Gset: &functionpb.GSetDelta{Added: s.added.sorted()}}}
}

func (s *GSet) state() *functionpb.CrdtState {
	return &functionpb.CrdtState{State: &functionpb.CrdtState_Gset{Gset: &functionpb.GSetState{Items: s.Elements()}}}
}

func (s *GSet) commit() {
	for k := range s.added {
		s.items[k] = struct{}{}
	}
	s.added = byteSet{}
}

func (s *GSet) discard() { s.added = byteSet{} }

// ORSet is an observed-remove set of opaque elements: a remove removes the
// adds it has seen, and an add concurrent with a remove wins.
type ORSet struct {
	items          byteSet
	cleared        bool
	removed, added byteSet
}

// NewORSet returns an empty set.
func NewORSet() *ORSet { return &ORSet{items: byteSet{}, removed: byteSet{}, added: byteSet{}} }

// Contains reports whether e is in the set.
func (s *ORSet) Contains(e []byte) bool {
	if _, ok := s.added[string(e)]; ok {
		return true
	}
	if _, ok := s.removed[string(e)]; ok || s.cleared {
		return false
	}
	_, ok := s.items[string(e)]
	return ok
}

func (s *ORSet) view() byteSet { return liveKeys(s.items, s.cleared, s.removed, s.added) }

// liveKeys are the keys of an observed-remove collection with this
// command's changes: the committed keys (none if cleared) less the removed
// ones, and the added ones.
func liveKeys[V, W any](committed map[string]V, cleared bool, removed byteSet, added map[string]W) byteSet {
	out := byteSet{}
	if !cleared {
		for k := range committed {
			if _, gone := removed[k]; !gone {
				out[k] = struct{}{}
			}
		}
	}
	for k := range added {
		out[k] = struct{}{}
	}
	return out
}

// Elements returns the elements, sorted.
func (s *ORSet) Elements() [][]byte { return s.view().sorted() }

// Len is the number of elements.
func (s *ORSet) Len() int { return len(s.view()) }

// Add adds e.
func (s *ORSet) Add(e []byte) {
	k := string(e)
	delete(s.removed, k)
	if _, ok := s.items[k]; ok && !s.cleared {
		return // already present, as far as this replica knows
	}
	s.added[k] = struct{}{}
}

// Remove removes e.
func (s *ORSet) Remove(e []byte) {
	k := string(e)
	delete(s.added, k)
	if _, ok := s.items[k]; ok && !s.cleared {
		s.removed[k] = struct{}{}
	}
}

// Clear removes every element.
func (s *ORSet) Clear() {
	s.cleared = true
	s.removed, s.added = byteSet{}, byteSet{}
}

func (s *ORSet) setState(st *functionpb.CrdtState) error {
	x, ok := st.GetState().(*functionpb.CrdtState_Orset)
	if !ok {
		return crdtMismatch("ORSet", st.GetState())
	}
	s.items = setOf(x.Orset.GetItems())
	return nil
}

func (s *ORSet) applyDelta(d *functionpb.CrdtDelta) error {
	x, ok := d.GetDelta().(*functionpb.CrdtDelta_Orset)
	if !ok {
		return crdtMismatch("ORSet", d.GetDelta())
	}
	if x.Orset.GetCleared() {
		s.items = byteSet{}
	}
	for _, it := range x.Orset.GetRemoved() {
		delete(s.items, string(it))
	}
	for _, it := range x.Orset.GetAdded() {
		s.items[string(it)] = struct{}{}
	}
	return nil
}

func (s *ORSet) delta() *functionpb.CrdtDelta {
	if !s.cleared && len(s.removed) == 0 && len(s.added) == 0 {
		return nil
	}
	return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Orset{Orset: &functionpb.ORSetDelta{
		Cleared: s.cleared, Removed: s.removed.sorted(), Added: s.added.sorted(),
	}}}
}

func (s *ORSet) state() *functionpb.CrdtState {
	return &functionpb.CrdtState{State: &functionpb.CrdtState_Orset{Orset: &functionpb.ORSetState{Items: s.Elements()}}}
}

func (s *ORSet) commit() {
	s.items = s.view()
	s.discard()
}

func (s *ORSet) discard() {
	s.cleared = false
	s.removed, s.added = byteSet{}, byteSet{}
}

// LWWRegister is a last-writer-wins register of an opaque value.
type LWWRegister struct {
	value   []byte
	pending []byte
	set     bool
}

// NewLWWRegister returns an empty register.
func NewLWWRegister() *LWWRegister { return &LWWRegister{} }

// Value is the register's value (nil if never set), including this
// command's write.
func (r *LWWRegister) Value() []byte {
	if r.set {
		return slices.Clone(r.pending)
	}
	return slices.Clone(r.value)
}

// Set writes v.
func (r *LWWRegister) Set(v []byte) { r.pending, r.set = slices.Clone(v), true }

func (r *LWWRegister) setState(st *functionpb.CrdtState) error {
	x, ok := st.GetState().(*functionpb.CrdtState_Lwwregister)
	if !ok {
		return crdtMismatch("LWWRegister", st.GetState())
	}
	r.value = slices.Clone(x.Lwwregister.GetValue())
	return nil
}

func (r *LWWRegister) applyDelta(d *functionpb.CrdtDelta) error {
	x, ok := d.GetDelta().(*functionpb.CrdtDelta_Lwwregister)
	if !ok {
		return crdtMismatch("LWWRegister", d.GetDelta())
	}
	r.value = slices.Clone(x.Lwwregister.GetValue())
	return nil
}

func (r *LWWRegister) delta() *functionpb.CrdtDelta {
	if !r.set {
		return nil
	}
	return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Lwwregister{Lwwregister: &functionpb.LWWRegisterDelta{Value: slices.Clone(r.pending)}}}
}

func (r *LWWRegister) state() *functionpb.CrdtState {
	return &functionpb.CrdtState{State: &functionpb.CrdtState_Lwwregister{Lwwregister: &functionpb.LWWRegisterState{Value: r.Value()}}}
}

func (r *LWWRegister) commit() {
	if r.set {
		r.value = r.pending
	}
	r.discard()
}

func (r *LWWRegister) discard() { r.pending, r.set = nil, false }

// Flag is an enable-wins flag: enabled unless every enable was followed by
// a disable.
type Flag struct {
	value, pending, set bool
}

// NewFlag returns a disabled flag.
func NewFlag() *Flag { return &Flag{} }

// Enabled reports the flag's value, including this command's change.
func (f *Flag) Enabled() bool {
	if f.set {
		return f.pending
	}
	return f.value
}

// Enable enables the flag.
func (f *Flag) Enable() { f.pending, f.set = true, true }

// Disable disables the flag (a concurrent enable wins).
func (f *Flag) Disable() { f.pending, f.set = false, true }

func (f *Flag) setState(st *functionpb.CrdtState) error {
	x, ok := st.GetState().(*functionpb.CrdtState_Flag)
	if !ok {
		return crdtMismatch("Flag", st.GetState())
	}
	f.value = x.Flag.GetValue()
	return nil
}

func (f *Flag) applyDelta(d *functionpb.CrdtDelta) error {
	x, ok := d.GetDelta().(*functionpb.CrdtDelta_Flag)
	if !ok {
		return crdtMismatch("Flag", d.GetDelta())
	}
	f.value = x.Flag.GetValue()
	return nil
}

func (f *Flag) delta() *functionpb.CrdtDelta {
	if !f.set || f.pending == f.value {
		return nil
	}
	return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Flag{Flag: &functionpb.FlagDelta{Value: f.pending}}}
}

func (f *Flag) state() *functionpb.CrdtState {
	return &functionpb.CrdtState{State: &functionpb.CrdtState_Flag{Flag: &functionpb.FlagState{Value: f.Enabled()}}}
}

func (f *Flag) commit() {
	if f.set {
		f.value = f.pending
	}
	f.discard()
}

func (f *Flag) discard() { f.pending, f.set = false, false }
