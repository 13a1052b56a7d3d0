package sdk

import (
	"errors"
	"testing"

	"github.com/statemesh/statemesh/protocol/functionpb"
)

func pnState(v int64) *functionpb.CrdtState {
	return &functionpb.CrdtState{State: &functionpb.CrdtState_Pncounter{Pncounter: &functionpb.PNCounterState{Value: v}}}
}

func pnDelta(c int64) *functionpb.CrdtDelta {
	return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Pncounter{Pncounter: &functionpb.PNCounterDelta{Change: c}}}
}

func orsetState(items ...string) *functionpb.CrdtState {
	return &functionpb.CrdtState{State: &functionpb.CrdtState_Orset{Orset: &functionpb.ORSetState{Items: bs(items...)}}}
}

func mapState(entries ...*functionpb.ORMapEntry) *functionpb.CrdtState {
	return &functionpb.CrdtState{State: &functionpb.CrdtState_Ormap{Ormap: &functionpb.ORMapState{Entries: entries}}}
}

func mapDelta(d *functionpb.ORMapDelta) *functionpb.CrdtDelta {
	return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Ormap{Ormap: d}}
}

func entry(k string, v *functionpb.CrdtState) *functionpb.ORMapEntry {
	return &functionpb.ORMapEntry{Key: []byte(k), Value: v}
}

func counterOf(t *testing.T, m *ORMap, k string) int64 {
	t.Helper()
	c, ok := m.Get([]byte(k)).(*PNCounter)
	if !ok {
		t.Fatalf("key %q holds %T", k, m.Get([]byte(k)))
	}
	return c.Value()
}

func TestORMap(t *testing.T) {
	m := NewORMap()
	if err := m.setState(mapState(entry("a", pnState(1)), entry("s", orsetState("x")))); err != nil {
		t.Fatal(err)
	}
	wantDelta(t, m, nil)
	if !sameBytes(m.Keys(), bs("a", "s")) || m.Len() != 2 || counterOf(t, m, "a") != 1 {
		t.Fatalf("after init: %q", m.Keys())
	}

	// Update an entry, create one, remove one.
	a, err := GetOrCreate(m, []byte("a"), NewPNCounter)
	if err != nil {
		t.Fatal(err)
	}
	a.Increment(2)
	b, err := GetOrCreate(m, []byte("b"), NewPNCounter)
	if err != nil {
		t.Fatal(err)
	}
	b.Increment(5)
	if _, err := GetOrCreate(m, []byte("nothing"), NewFlag); err != nil { // no change: no entry
		t.Fatal(err)
	}
	m.Remove([]byte("s"))
	if _, err := GetOrCreate(m, []byte("a"), NewORSet); !errors.Is(err, ErrMapValueType) {
		t.Fatalf("a counter as a set: %v", err)
	}
	if !sameBytes(m.Keys(), bs("a", "b", "nothing")) || counterOf(t, m, "a") != 3 || m.Contains([]byte("s")) {
		t.Fatalf("during the command: %q", m.Keys())
	}
	wantDelta(t, m, mapDelta(&functionpb.ORMapDelta{
		Removed: bs("s"),
		Updated: []*functionpb.ORMapEntryDelta{{Key: []byte("a"), Delta: pnDelta(2)}},
		Added:   []*functionpb.ORMapEntry{entry("b", pnState(5))},
	}))
	m.discard()
	if !sameBytes(m.Keys(), bs("a", "s")) || counterOf(t, m, "a") != 1 {
		t.Fatalf("after discard: %q", m.Keys())
	}
	wantDelta(t, m, nil)

	// Again, committed.
	a, _ = GetOrCreate(m, []byte("a"), NewPNCounter)
	a.Increment(2)
	b, _ = GetOrCreate(m, []byte("b"), NewPNCounter)
	b.Increment(5)
	_, _ = GetOrCreate(m, []byte("nothing"), NewFlag)
	m.Remove([]byte("s"))
	m.commit()
	wantDelta(t, m, nil)
	if !sameBytes(m.Keys(), bs("a", "b")) || counterOf(t, m, "a") != 3 || counterOf(t, m, "b") != 5 {
		t.Fatalf("after commit: %q", m.Keys())
	}

	// A remove then a create of one key is a remove and an add.
	m.Remove([]byte("a"))
	a, _ = GetOrCreate(m, []byte("a"), NewPNCounter)
	a.Increment(1)
	wantDelta(t, m, mapDelta(&functionpb.ORMapDelta{Removed: bs("a"), Added: []*functionpb.ORMapEntry{entry("a", pnState(1))}}))
	m.commit()
	if counterOf(t, m, "a") != 1 {
		t.Fatalf("recreated a: %d", counterOf(t, m, "a"))
	}

	// Emptying a set removes its entry.
	s, _ := GetOrCreate(m, []byte("s"), NewORSet)
	s.Add([]byte("x"))
	m.commit()
	s, _ = GetOrCreate(m, []byte("s"), NewORSet)
	s.Remove([]byte("x"))
	wantDelta(t, m, mapDelta(&functionpb.ORMapDelta{Updated: []*functionpb.ORMapEntryDelta{{Key: []byte("s"),
		Delta: &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Orset{Orset: &functionpb.ORSetDelta{Removed: bs("x")}}}}}}))
	m.commit()
	if m.Contains([]byte("s")) {
		t.Fatal("an emptied set stays in the map")
	}

	// Clear, then a new entry.
	m.Clear()
	f, _ := GetOrCreate(m, []byte("f"), NewFlag)
	f.Enable()
	if !sameBytes(m.Keys(), bs("f")) {
		t.Fatalf("after clear: %q", m.Keys())
	}
	wantDelta(t, m, mapDelta(&functionpb.ORMapDelta{Cleared: true, Added: []*functionpb.ORMapEntry{entry("f",
		&functionpb.CrdtState{State: &functionpb.CrdtState_Flag{Flag: &functionpb.FlagState{Value: true}}})}}))
	m.discard()
	if !sameBytes(m.Keys(), bs("a", "b")) {
		t.Fatalf("clear discarded: %q", m.Keys())
	}

	// Changes from other replicas: nested updates, removes, adds, clears.
	if err := m.applyDelta(mapDelta(&functionpb.ORMapDelta{
		Removed: bs("b"),
		Updated: []*functionpb.ORMapEntryDelta{{Key: []byte("a"), Delta: pnDelta(10)}},
		Added:   []*functionpb.ORMapEntry{entry("n", mapState(entry("in", orsetState("y"))))},
	})); err != nil {
		t.Fatal(err)
	}
	if !sameBytes(m.Keys(), bs("a", "n")) || counterOf(t, m, "a") != 11 {
		t.Fatalf("after a remote change: %q", m.Keys())
	}
	n, err := GetOrCreate(m, []byte("n"), NewORMap)
	if err != nil {
		t.Fatal(err)
	}
	in, err := GetOrCreate(n, []byte("in"), NewORSet)
	if err != nil || !sameBytes(in.Elements(), bs("y")) {
		t.Fatalf("nested map: %v %q", err, in.Elements())
	}
	in.Add([]byte("z"))
	wantDelta(t, m, mapDelta(&functionpb.ORMapDelta{Updated: []*functionpb.ORMapEntryDelta{{Key: []byte("n"),
		Delta: mapDelta(&functionpb.ORMapDelta{Updated: []*functionpb.ORMapEntryDelta{{Key: []byte("in"),
			Delta: &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Orset{Orset: &functionpb.ORSetDelta{Added: bs("z")}}}}}})}}}))
	m.commit()
	if err := m.applyDelta(mapDelta(&functionpb.ORMapDelta{Cleared: true})); err != nil || m.Len() != 0 {
		t.Fatalf("remote clear: %v, %q", err, m.Keys())
	}
}

func TestORMapBadInput(t *testing.T) {
	deep := mapState()
	for range maxMapDepth {
		deep = mapState(entry("k", deep))
	}
	for name, st := range map[string]*functionpb.CrdtState{
		"duplicate key": mapState(entry("a", pnState(1)), entry("a", pnState(2))),
		"empty value":   mapState(entry("a", &functionpb.CrdtState{})),
		"nil value":     mapState(entry("a", nil)),
		"too deep":      deep,
		"bad vote":      mapState(entry("v", &functionpb.CrdtState{State: &functionpb.CrdtState_Vote{Vote: &functionpb.VoteState{VotesFor: 3, TotalVoters: 2}}})),
		"wrong type":    orsetState("x"),
	} {
		if err := NewORMap().setState(st); err == nil {
			t.Errorf("%s: state accepted", name)
		}
	}
	for name, d := range map[string]*functionpb.CrdtDelta{
		"update of an absent key": mapDelta(&functionpb.ORMapDelta{Updated: []*functionpb.ORMapEntryDelta{{Key: []byte("q"), Delta: pnDelta(1)}}}),
		"update of another type":  mapDelta(&functionpb.ORMapDelta{Updated: []*functionpb.ORMapEntryDelta{{Key: []byte("a"), Delta: pnDelta(1)}}}),
		"empty nested delta":      mapDelta(&functionpb.ORMapDelta{Updated: []*functionpb.ORMapEntryDelta{{Key: []byte("a")}}}),
		"empty added value":       mapDelta(&functionpb.ORMapDelta{Added: []*functionpb.ORMapEntry{entry("b", nil)}}),
		"duplicate update":        mapDelta(&functionpb.ORMapDelta{Updated: []*functionpb.ORMapEntryDelta{{Key: []byte("a"), Delta: pnDelta(1)}, {Key: []byte("a"), Delta: pnDelta(1)}}}),
		"too deep":                mapDelta(&functionpb.ORMapDelta{Added: []*functionpb.ORMapEntry{entry("d", deep)}}),
		"wrong type":              pnDelta(1),
	} {
		m := NewORMap()
		if err := m.setState(mapState(entry("a", orsetState("x")))); err != nil {
			t.Fatal(err)
		}
		if err := m.applyDelta(d); err == nil {
			t.Errorf("%s: delta accepted", name)
		}
	}
	var nilSet func() *ORSet = func() *ORSet { return nil }
	if _, err := GetOrCreate(NewORMap(), []byte("k"), nilSet); err == nil {
		t.Error("a nil value was created")
	}
}

func voteState(self bool, votesFor, voters uint32) *functionpb.CrdtState {
	return &functionpb.CrdtState{State: &functionpb.CrdtState_Vote{Vote: &functionpb.VoteState{SelfVote: self, VotesFor: votesFor, TotalVoters: voters}}}
}

func TestVote(t *testing.T) {
	v := NewVote()
	if v.SelfVote() || v.VotesFor() != 0 || v.Voters() != 1 || v.AtLeastOne() || v.Majority() || v.All() {
		t.Fatalf("new vote: %v %d/%d", v.SelfVote(), v.VotesFor(), v.Voters())
	}
	v.Vote(false)
	wantDelta(t, v, nil)
	v.Vote(true)
	if !v.SelfVote() || v.VotesFor() != 1 || !v.All() {
		t.Fatalf("after voting: %d/%d", v.VotesFor(), v.Voters())
	}
	wantDelta(t, v, &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Vote{Vote: &functionpb.VoteDelta{SelfVote: true}}})
	v.discard()
	if v.SelfVote() || v.VotesFor() != 0 {
		t.Fatal("discard kept the vote")
	}

	if err := v.setState(voteState(false, 2, 5)); err != nil {
		t.Fatal(err)
	}
	if !v.AtLeastOne() || v.Majority() || v.All() {
		t.Fatalf("2 of 5: %d/%d", v.VotesFor(), v.Voters())
	}
	v.Vote(true)
	if !v.Majority() || v.VotesFor() != 3 {
		t.Fatalf("3 of 5: %d/%d", v.VotesFor(), v.Voters())
	}
	v.commit()
	wantDelta(t, v, nil)
	if !v.SelfVote() || v.VotesFor() != 3 || v.Voters() != 5 {
		t.Fatalf("after commit: %v %d/%d", v.SelfVote(), v.VotesFor(), v.Voters())
	}
	v.Vote(false)
	if v.VotesFor() != 2 {
		t.Fatalf("withdrawn: %d", v.VotesFor())
	}
	wantDelta(t, v, &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Vote{Vote: &functionpb.VoteDelta{SelfVote: false}}})
	v.discard()

	// The proxy's deltas carry the tallies.
	if err := v.applyDelta(&functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Vote{Vote: &functionpb.VoteDelta{SelfVote: true, VotesFor: 5, TotalVoters: 5}}}); err != nil {
		t.Fatal(err)
	}
	if !v.All() {
		t.Fatalf("all: %d/%d", v.VotesFor(), v.Voters())
	}
	for name, st := range map[string]*functionpb.CrdtState{
		"more for than voters": voteState(false, 3, 2),
		"self for, none for":   voteState(true, 0, 2),
		"wrong type":           pnState(1),
	} {
		if err := NewVote().setState(st); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := v.applyDelta(&functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Vote{Vote: &functionpb.VoteDelta{SelfVote: true}}}); err == nil {
		t.Error("self vote with no votes for accepted")
	}
}
