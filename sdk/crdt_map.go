package sdk

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"

	"github.com/statemesh/statemesh/protocol/functionpb"
)

// maxMapDepth bounds how deeply ORMaps nest (a map directly in the
// entity is depth 1). A state or change from the proxy nested deeper fails
// the stream.
const maxMapDepth = 16

// ErrMapValueType: an ORMap entry holds a value of another type than the
// one asked for.
var ErrMapValueType = errors.New("sdk: ORMap value of another type")

// ORMap is an observed-remove map from opaque keys (encode them as you
// like, as ORSet elements, for example as serialized protobuf messages) to
// nested CRDTs. Removing a key removes what this replica has seen of it: an
// update made concurrently elsewhere survives the remove.
//
// A nested value is the map's: mutate it in the command that got it
// (GetOrCreate, Get), and its mutations are part of the map's delta. Do not
// keep it across commands: a change from another replica may replace it.
//
// An entry comes into being with its value's first change: GetOrCreate
// without a mutation adds nothing. As in the mesh's map, an entry whose
// value a command empties (an ORSet or GSet without elements, a disabled
// Flag, an empty ORMap) is gone from the map after the command.
//
// The statemesh proxy stores ORSet, Flag and ORMap values in a map; other
// value types are protocol-valid but the proxy refuses them
// (Unimplemented).
type ORMap struct {
	entries map[string]Crdt // committed entries (holding their own pending mutations)
	cleared bool
	removed byteSet         // committed keys this command removed
	created map[string]Crdt // entries this command created
}

// NewORMap returns an empty map.
func NewORMap() *ORMap {
	return &ORMap{entries: map[string]Crdt{}, removed: byteSet{}, created: map[string]Crdt{}}
}

func (m *ORMap) lookup(k string) (Crdt, bool) {
	if v, ok := m.created[k]; ok {
		return v, true
	}
	if m.cleared {
		return nil, false
	}
	if _, gone := m.removed[k]; gone {
		return nil, false
	}
	v, ok := m.entries[k]
	return v, ok
}

// Get returns the value of key (nil if absent).
func (m *ORMap) Get(key []byte) Crdt {
	v, _ := m.lookup(string(key))
	return v
}

// Contains reports whether key is in the map.
func (m *ORMap) Contains(key []byte) bool {
	_, ok := m.lookup(string(key))
	return ok
}

func (m *ORMap) view() byteSet { return liveKeys(m.entries, m.cleared, m.removed, m.created) }

// Keys returns the keys, sorted.
func (m *ORMap) Keys() [][]byte { return m.view().sorted() }

// Len is the number of entries.
func (m *ORMap) Len() int { return len(m.view()) }

// Remove removes key and its value (and the value's pending mutations).
func (m *ORMap) Remove(key []byte) {
	k := string(key)
	if v, ok := m.created[k]; ok {
		v.discard()
		delete(m.created, k)
		return
	}
	if m.cleared {
		return
	}
	if v, ok := m.entries[k]; ok {
		v.discard()
		m.removed[k] = struct{}{}
	}
}

// Clear removes every entry.
func (m *ORMap) Clear() {
	for _, v := range m.entries {
		v.discard()
	}
	m.cleared = true
	m.removed, m.created = byteSet{}, map[string]Crdt{}
}

// GetOrCreate returns the value of key in m, creating it with create (for
// example NewPNCounter, NewORSet) if absent. It fails with ErrMapValueType
// if the entry holds a value of another type.
func GetOrCreate[T Crdt](m *ORMap, key []byte, create func() T) (T, error) {
	var zero T
	if v, ok := m.lookup(string(key)); ok {
		t, ok := v.(T)
		if !ok {
			return zero, fmt.Errorf("%w: key %q holds a %s, not a %s", ErrMapValueType, key, crdtName(v), reflect.TypeFor[T]())
		}
		return t, nil
	}
	v := create()
	if isNilCrdt(v) {
		return zero, errors.New("sdk: the ORMap value constructor returned nil")
	}
	m.created[string(key)] = v
	return v, nil
}

func isNilCrdt(c Crdt) bool {
	if c == nil {
		return true
	}
	rv := reflect.ValueOf(c)
	return rv.Kind() == reflect.Pointer && rv.IsNil()
}

func crdtName(c Crdt) string { return reflect.TypeOf(c).Elem().Name() }

// emptied reports whether c is a value the mesh's map drops: an empty set
// or map, a disabled flag.
func emptied(c Crdt) bool {
	switch x := c.(type) {
	case *ORSet:
		return x.Len() == 0
	case *GSet:
		return x.Len() == 0
	case *Flag:
		return !x.Enabled()
	case *ORMap:
		return x.Len() == 0
	}
	return false
}

// newCrdtFrom returns a value of st's type, holding st.
func newCrdtFrom(st *functionpb.CrdtState) (Crdt, error) {
	var v Crdt
	switch st.GetState().(type) {
	case *functionpb.CrdtState_Gcounter:
		v = NewGCounter()
	case *functionpb.CrdtState_Pncounter:
		v = NewPNCounter()
	case *functionpb.CrdtState_Gset:
		v = NewGSet()
	case *functionpb.CrdtState_Orset:
		v = NewORSet()
	case *functionpb.CrdtState_Lwwregister:
		v = NewLWWRegister()
	case *functionpb.CrdtState_Flag:
		v = NewFlag()
	case *functionpb.CrdtState_Ormap:
		v = NewORMap()
	case *functionpb.CrdtState_Vote:
		v = NewVote()
	default:
		return nil, errors.New("sdk: an ORMap value with no state")
	}
	if err := v.setState(st); err != nil {
		return nil, err
	}
	return v, nil
}

// checkState validates a state from the proxy before it is loaded: map
// depth, keys, vote tallies.
func checkState(st *functionpb.CrdtState, depth int) error {
	switch x := st.GetState().(type) {
	case nil:
		return errors.New("sdk: an empty CRDT state")
	case *functionpb.CrdtState_Ormap:
		if depth >= maxMapDepth {
			return fmt.Errorf("sdk: ORMaps nested deeper than %d", maxMapDepth)
		}
		return checkEntries(x.Ormap.GetEntries(), "state holds", func(e *functionpb.ORMapEntry) error { return checkState(e.GetValue(), depth+1) })
	case *functionpb.CrdtState_Vote:
		return checkVote(x.Vote.GetSelfVote(), x.Vote.GetVotesFor(), x.Vote.GetTotalVoters())
	}
	return nil
}

// checkDelta validates a change from the proxy before it is applied.
func checkDelta(d *functionpb.CrdtDelta, depth int) error {
	switch x := d.GetDelta().(type) {
	case nil:
		return errors.New("sdk: an empty CRDT delta")
	case *functionpb.CrdtDelta_Ormap:
		if depth >= maxMapDepth {
			return fmt.Errorf("sdk: ORMaps nested deeper than %d", maxMapDepth)
		}
		if err := checkEntries(x.Ormap.GetUpdated(), "delta updates", func(e *functionpb.ORMapEntryDelta) error { return checkDelta(e.GetDelta(), depth+1) }); err != nil {
			return err
		}
		return checkEntries(x.Ormap.GetAdded(), "delta adds", func(e *functionpb.ORMapEntry) error { return checkState(e.GetValue(), depth+1) })
	case *functionpb.CrdtDelta_Vote:
		return checkVote(x.Vote.GetSelfVote(), x.Vote.GetVotesFor(), x.Vote.GetTotalVoters())
	}
	return nil
}

// checkEntries checks each of an ORMap's entries with check, and that no
// key occurs twice (what names the message: "state holds", ...).
func checkEntries[E interface{ GetKey() []byte }](entries []E, what string, check func(E) error) error {
	seen := make(byteSet, len(entries))
	for _, e := range entries {
		k := string(e.GetKey())
		if _, dup := seen[k]; dup {
			return fmt.Errorf("sdk: ORMap %s key %q twice", what, k)
		}
		seen[k] = struct{}{}
		if err := check(e); err != nil {
			return err
		}
	}
	return nil
}

func checkVote(self bool, votesFor, voters uint32) error {
	if votesFor > voters || (self && votesFor == 0) {
		return fmt.Errorf("sdk: impossible vote tally: %d for of %d voters, self vote %v", votesFor, voters, self)
	}
	return nil
}

func (m *ORMap) setState(st *functionpb.CrdtState) error {
	x, ok := st.GetState().(*functionpb.CrdtState_Ormap)
	if !ok {
		return crdtMismatch("ORMap", st.GetState())
	}
	if err := checkState(st, 0); err != nil {
		return err
	}
	entries := make(map[string]Crdt, len(x.Ormap.GetEntries()))
	for _, e := range x.Ormap.GetEntries() {
		v, err := newCrdtFrom(e.GetValue())
		if err != nil {
			return err
		}
		entries[string(e.GetKey())] = v
	}
	m.entries = entries
	return nil
}

func (m *ORMap) applyDelta(d *functionpb.CrdtDelta) error {
	x, ok := d.GetDelta().(*functionpb.CrdtDelta_Ormap)
	if !ok {
		return crdtMismatch("ORMap", d.GetDelta())
	}
	if err := checkDelta(d, 0); err != nil {
		return err
	}
	md := x.Ormap
	if md.GetCleared() {
		m.entries = map[string]Crdt{}
	}
	for _, k := range md.GetRemoved() {
		delete(m.entries, string(k))
	}
	for _, e := range md.GetUpdated() {
		v, ok := m.entries[string(e.GetKey())]
		if !ok {
			return fmt.Errorf("sdk: ORMap delta updates key %q, which the map does not hold", e.GetKey())
		}
		if err := v.applyDelta(e.GetDelta()); err != nil {
			return err
		}
	}
	for _, e := range md.GetAdded() {
		v, err := newCrdtFrom(e.GetValue())
		if err != nil {
			return err
		}
		m.entries[string(e.GetKey())] = v
	}
	return nil
}

func (m *ORMap) delta() *functionpb.CrdtDelta {
	md := &functionpb.ORMapDelta{Cleared: m.cleared}
	if !m.cleared {
		md.Removed = m.removed.sorted()
		for _, k := range slices.Sorted(maps.Keys(m.entries)) {
			if _, gone := m.removed[k]; gone {
				continue
			}
			if d := m.entries[k].delta(); d != nil {
				md.Updated = append(md.Updated, &functionpb.ORMapEntryDelta{Key: []byte(k), Delta: d})
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(m.created)) {
		if v := m.created[k]; v.delta() != nil {
			md.Added = append(md.Added, &functionpb.ORMapEntry{Key: []byte(k), Value: v.state()})
		}
	}
	if !md.Cleared && len(md.Removed) == 0 && len(md.Updated) == 0 && len(md.Added) == 0 {
		return nil
	}
	return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Ormap{Ormap: md}}
}

func (m *ORMap) state() *functionpb.CrdtState {
	ms := &functionpb.ORMapState{}
	for _, k := range m.Keys() {
		v, _ := m.lookup(string(k))
		ms.Entries = append(ms.Entries, &functionpb.ORMapEntry{Key: k, Value: v.state()})
	}
	return &functionpb.CrdtState{State: &functionpb.CrdtState_Ormap{Ormap: ms}}
}

func (m *ORMap) commit() {
	if m.cleared {
		m.entries = map[string]Crdt{}
	}
	for k := range m.removed {
		delete(m.entries, k)
	}
	for k, v := range m.entries {
		changed := v.delta() != nil
		v.commit()
		if changed && emptied(v) {
			delete(m.entries, k)
		}
	}
	for k, v := range m.created {
		if v.delta() == nil {
			continue
		}
		v.commit()
		if !emptied(v) {
			m.entries[k] = v
		}
	}
	m.cleared = false
	m.removed, m.created = byteSet{}, map[string]Crdt{}
}

func (m *ORMap) discard() {
	for _, v := range m.entries {
		v.discard()
	}
	m.cleared = false
	m.removed, m.created = byteSet{}, map[string]Crdt{}
}

// Vote is a vote of the nodes that hold the entity: each node has one
// boolean vote, which only it changes. This node is always a voter: until
// it votes, its vote counts as false. Other nodes count from their first
// vote.
type Vote struct {
	self            bool
	votesFor        uint32
	voters          uint32
	pending, pended bool
}

// NewVote returns a vote whose only voter is this node, voting false.
func NewVote() *Vote { return &Vote{voters: 1} }

// SelfVote is this node's vote, including this command's change.
func (v *Vote) SelfVote() bool {
	if v.pended {
		return v.pending
	}
	return v.self
}

// Vote sets this node's vote.
func (v *Vote) Vote(vote bool) { v.pending, v.pended = vote, true }

// VotesFor is the number of voters voting true, including this node's
// pending vote.
func (v *Vote) VotesFor() int {
	n := int(v.votesFor)
	if s := v.SelfVote(); s != v.self {
		if s {
			n++
		} else {
			n--
		}
	}
	return n
}

// Voters is the number of voters, this node included.
func (v *Vote) Voters() int { return max(int(v.voters), 1) }

// AtLeastOne reports whether at least one voter votes true.
func (v *Vote) AtLeastOne() bool { return v.VotesFor() > 0 }

// Majority reports whether more than half of the voters vote true.
func (v *Vote) Majority() bool { return 2*v.VotesFor() > v.Voters() }

// All reports whether every voter votes true.
func (v *Vote) All() bool { return v.VotesFor() == v.Voters() }

func (v *Vote) set(self bool, votesFor, voters uint32) error {
	if err := checkVote(self, votesFor, voters); err != nil {
		return err
	}
	v.self, v.votesFor, v.voters = self, votesFor, voters
	return nil
}

func (v *Vote) setState(st *functionpb.CrdtState) error {
	x, ok := st.GetState().(*functionpb.CrdtState_Vote)
	if !ok {
		return crdtMismatch("Vote", st.GetState())
	}
	return v.set(x.Vote.GetSelfVote(), x.Vote.GetVotesFor(), x.Vote.GetTotalVoters())
}

// applyDelta: the proxy's vote deltas carry the tallies after the change.
func (v *Vote) applyDelta(d *functionpb.CrdtDelta) error {
	x, ok := d.GetDelta().(*functionpb.CrdtDelta_Vote)
	if !ok {
		return crdtMismatch("Vote", d.GetDelta())
	}
	return v.set(x.Vote.GetSelfVote(), x.Vote.GetVotesFor(), x.Vote.GetTotalVoters())
}

func (v *Vote) delta() *functionpb.CrdtDelta {
	if !v.pended || v.pending == v.self {
		return nil
	}
	return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Vote{Vote: &functionpb.VoteDelta{SelfVote: v.pending}}}
}

func (v *Vote) state() *functionpb.CrdtState {
	return &functionpb.CrdtState{State: &functionpb.CrdtState_Vote{Vote: &functionpb.VoteState{
		SelfVote: v.SelfVote(), VotesFor: uint32(v.VotesFor()), TotalVoters: uint32(v.Voters()),
	}}}
}

func (v *Vote) commit() {
	v.votesFor, v.self = uint32(v.VotesFor()), v.SelfVote()
	v.voters = uint32(v.Voters())
	v.discard()
}

func (v *Vote) discard() { v.pending, v.pended = false, false }
