package proxy

import (
	"bytes"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/internal/hlc"
	"github.com/statemesh/statemesh/protocol/functionpb"
)

// ORMaps and Votes between the function protocol and the mesh's CRDTs.
//
// An ORMap entry of the protocol is a key (opaque bytes, as the function's
// SDK encodes it) and a nested CRDT value; in the mesh (crdt.ORMap) an
// entry is a key and a type, so one key may hold entries of several types
// (created concurrently with different types). The function sees one entry
// per key: the one of the smallest type number among those the protocol
// can show (ORSet, enable-wins Flag, ORMap). A function's remove of a key
// removes its entries of every type.
//
// The mesh's map holds causal values only, so a function's map values may
// be ORSets, Flags (enable-wins) and ORMaps; other value types are refused
// with errCRDTType (Unimplemented).
//
// A Vote shows this node's vote and the tallies. This node is always
// counted as a voter (voting false until it votes); other replicas count
// from their first vote.

// maxMapDepth bounds how deeply a function's ORMap deltas nest.
const maxMapDepth = 16

// nestableTypes are the crdt types an ORMap entry can have.
var nestableTypes = func() []crdt.Type {
	var ts []crdt.Type
	for t := range crdt.Type(255) {
		if crdt.Nestable(t) {
			ts = append(ts, t)
		}
	}
	return ts
}()

// nestedDeltaType is the crdt type of an ORMap value the function changes.
func nestedDeltaType(d *functionpb.CrdtDelta) (crdt.Type, error) {
	switch d.GetDelta().(type) {
	case *functionpb.CrdtDelta_Orset:
		return crdt.TypeORSet, nil
	case *functionpb.CrdtDelta_Flag:
		return crdt.TypeEWFlag, nil
	case *functionpb.CrdtDelta_Ormap:
		return crdt.TypeORMap, nil
	case nil:
		return 0, functionFailure("an ORMap entry with an empty delta")
	}
	return 0, errNested(d.GetDelta())
}

// nestedStateType is the crdt type of an ORMap value the function adds.
func nestedStateType(st *functionpb.CrdtState) (crdt.Type, error) {
	switch st.GetState().(type) {
	case *functionpb.CrdtState_Orset:
		return crdt.TypeORSet, nil
	case *functionpb.CrdtState_Flag:
		return crdt.TypeEWFlag, nil
	case *functionpb.CrdtState_Ormap:
		return crdt.TypeORMap, nil
	case nil:
		return 0, functionFailure("an ORMap entry with an empty value")
	}
	return 0, errNested(st.GetState())
}

func errNested(x any) error { return fmt.Errorf("%w: %s in an ORMap", errCRDTType, typeName(x)) }

func typeName(x any) string {
	switch x.(type) {
	case *functionpb.CrdtDelta_Gcounter, *functionpb.CrdtState_Gcounter:
		return "GCounter"
	case *functionpb.CrdtDelta_Pncounter, *functionpb.CrdtState_Pncounter:
		return "PNCounter"
	case *functionpb.CrdtDelta_Gset, *functionpb.CrdtState_Gset:
		return "GSet"
	case *functionpb.CrdtDelta_Lwwregister, *functionpb.CrdtState_Lwwregister:
		return "LWWRegister"
	case *functionpb.CrdtDelta_Vote, *functionpb.CrdtState_Vote:
		return "Vote"
	}
	return "CRDT of an unknown type"
}

// checkMapDelta checks a function's ORMap delta whole (types, depth)
// before anything is applied.
func checkMapDelta(d *functionpb.CrdtDelta, depth int) error {
	if depth >= maxMapDepth {
		return functionFailure("ORMaps nested deeper than %d", maxMapDepth)
	}
	md := d.GetOrmap()
	for _, e := range md.GetUpdated() {
		t, err := nestedDeltaType(e.GetDelta())
		if err != nil {
			return err
		}
		if t == crdt.TypeORMap {
			if err := checkMapDelta(e.GetDelta(), depth+1); err != nil {
				return err
			}
		}
	}
	for _, e := range md.GetAdded() {
		if err := checkMapState(e.GetValue(), depth+1); err != nil {
			return err
		}
	}
	return nil
}

func checkMapState(st *functionpb.CrdtState, depth int) error {
	t, err := nestedStateType(st)
	if err != nil || t != crdt.TypeORMap {
		return err
	}
	if depth >= maxMapDepth {
		return functionFailure("ORMaps nested deeper than %d", maxMapDepth)
	}
	for _, e := range st.GetOrmap().GetEntries() {
		if err := checkMapState(e.GetValue(), depth+1); err != nil {
			return err
		}
	}
	return nil
}

// stateDelta is what a function's added ORMap entry does: the delta that
// takes an empty value to st (st is nestable, checkMapState).
func stateDelta(st *functionpb.CrdtState) *functionpb.CrdtDelta {
	switch x := st.GetState().(type) {
	case *functionpb.CrdtState_Orset:
		return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Orset{Orset: &functionpb.ORSetDelta{Added: x.Orset.GetItems()}}}
	case *functionpb.CrdtState_Flag:
		return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Flag{Flag: &functionpb.FlagDelta{Value: x.Flag.GetValue()}}}
	case *functionpb.CrdtState_Ormap:
		return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Ormap{Ormap: &functionpb.ORMapDelta{Added: x.Ormap.GetEntries()}}}
	}
	return &functionpb.CrdtDelta{}
}

// applyMapDelta applies a function's (checked) ORMap delta to m: clear,
// removes, updates of entries, added entries, in that order; it returns
// the join of the mutators' deltas.
func applyMapDelta(m *crdt.ORMap, md *functionpb.ORMapDelta, r crdt.ReplicaID, clock *hlc.Clock) (crdt.Value, error) {
	acc := crdt.NewORMap()
	join := func(d crdt.Value) error {
		_, err := crdt.Join(acc, d)
		return err
	}
	if md.GetCleared() {
		for _, k := range m.Keys() {
			if err := join(m.Remove(k.Key, k.Type)); err != nil {
				return nil, err
			}
		}
	}
	for _, key := range md.GetRemoved() {
		for _, t := range nestableTypes {
			if err := join(m.Remove(key, t)); err != nil {
				return nil, err
			}
		}
	}
	update := func(key []byte, d *functionpb.CrdtDelta) error {
		t, err := nestedDeltaType(d)
		if err != nil {
			return err
		}
		delta, err := m.Update(r, key, t, func(v crdt.Value) (crdt.Value, error) { return applyDelta(v, d, r, clock) })
		if err != nil {
			return err
		}
		return join(delta)
	}
	for _, e := range md.GetUpdated() {
		if err := update(e.GetKey(), e.GetDelta()); err != nil {
			return nil, err
		}
	}
	for _, e := range md.GetAdded() {
		if err := update(e.GetKey(), stateDelta(e.GetValue())); err != nil {
			return nil, err
		}
	}
	return acc, nil
}

// ormapView is m as the function sees it: one entry per key.
func ormapView(m *crdt.ORMap, self crdt.ReplicaID) (*functionpb.CrdtState, error) {
	ms := &functionpb.ORMapState{}
	for _, k := range m.Keys() {
		if n := len(ms.Entries); n > 0 && bytes.Equal(ms.Entries[n-1].GetKey(), k.Key) {
			continue // a key's entry of a larger type
		}
		switch k.Type {
		case crdt.TypeORSet, crdt.TypeEWFlag, crdt.TypeORMap:
		default:
			continue // no function protocol form (MVRegister)
		}
		v, err := crdtView(m.Get(k.Key, k.Type), self)
		if err != nil {
			return nil, err
		}
		ms.Entries = append(ms.Entries, &functionpb.ORMapEntry{Key: k.Key, Value: v})
	}
	return &functionpb.CrdtState{State: &functionpb.CrdtState_Ormap{Ormap: ms}}, nil
}

// voteView is v as the function on replica self sees it.
func voteView(v *crdt.Vote, self crdt.ReplicaID) *functionpb.CrdtState {
	vote, ok := v.VoteOf(self)
	voters := v.Voters()
	if !ok {
		voters++ // self is a voter, voting false until it votes
	}
	return &functionpb.CrdtState{State: &functionpb.CrdtState_Vote{Vote: &functionpb.VoteState{
		VotesFor: uint32(v.VotesFor()), TotalVoters: uint32(voters), SelfVote: vote && ok}}}
}

// ormapViewDelta is the delta taking the function's map from old to cur:
// removed keys, nested deltas of changed entries, added entries; an entry
// whose change no delta can say (another type) is removed and added.
func ormapViewDelta(old, cur *functionpb.ORMapState) (*functionpb.CrdtDelta, bool) {
	prev := make(map[string]*functionpb.CrdtState, len(old.GetEntries()))
	for _, e := range old.GetEntries() {
		prev[string(e.GetKey())] = e.GetValue()
	}
	md := &functionpb.ORMapDelta{}
	seen := make(map[string]bool, len(cur.GetEntries()))
	for _, e := range cur.GetEntries() {
		k := string(e.GetKey())
		seen[k] = true
		pv, had := prev[k]
		switch {
		case !had:
			md.Added = append(md.Added, e)
		case proto.Equal(pv, e.GetValue()):
		default:
			d, ok := viewDelta(pv, e.GetValue())
			switch {
			case !ok:
				md.Removed = append(md.Removed, e.GetKey())
				md.Added = append(md.Added, e)
			case d != nil:
				md.Updated = append(md.Updated, &functionpb.ORMapEntryDelta{Key: e.GetKey(), Delta: d})
			}
		}
	}
	for _, e := range old.GetEntries() {
		if !seen[string(e.GetKey())] {
			md.Removed = append(md.Removed, e.GetKey())
		}
	}
	if len(md.Removed) == 0 && len(md.Updated) == 0 && len(md.Added) == 0 {
		return nil, true
	}
	return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Ormap{Ormap: md}}, true
}
