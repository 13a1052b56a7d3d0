package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/mesh"
	"github.com/statemesh/statemesh/protocol/functionpb"
)

// copyFn is a function, written against the raw protocol, serving the
// Counter service with an ORMap of ORSets or a Vote: it keeps its copy
// as the protocol shows it, and Increment n answers the delta command(n)
// returns (applied to its copy first).
type copyFn struct {
	t       testing.TB
	command func(n int64) *functionpb.CrdtDelta
	mu      struct {
		sync.Mutex
		sets    map[string][]string // ORMap: key -> ORSet elements (sorted)
		vote    *functionpb.VoteState
		inits   int
		changes []*functionpb.CrdtDelta
	}
}

func (f *copyFn) load(st *functionpb.CrdtState) {
	f.mu.sets, f.mu.vote = map[string][]string{}, st.GetVote()
	for _, e := range st.GetOrmap().GetEntries() {
		f.mu.sets[string(e.GetKey())] = strs(e.GetValue().GetOrset().GetItems())
	}
}

func strs(bs [][]byte) []string {
	out := []string{}
	for _, b := range bs {
		out = append(out, string(b))
	}
	slices.Sort(out)
	return out
}

// apply applies d to the copy; own is true for the function's own delta.
func (f *copyFn) apply(d *functionpb.CrdtDelta, own bool) {
	switch x := d.GetDelta().(type) {
	case *functionpb.CrdtDelta_Ormap:
		if x.Ormap.GetCleared() {
			f.mu.sets = map[string][]string{}
		}
		for _, k := range x.Ormap.GetRemoved() {
			delete(f.mu.sets, string(k))
		}
		for _, e := range x.Ormap.GetUpdated() {
			k := string(e.GetKey())
			s := f.mu.sets[k]
			od := e.GetDelta().GetOrset()
			if od.GetCleared() {
				s = nil
			}
			s = slices.DeleteFunc(s, func(x string) bool { return slices.Contains(strs(od.GetRemoved()), x) })
			s = append(s, strs(od.GetAdded())...)
			slices.Sort(s)
			f.mu.sets[k] = slices.Compact(s)
		}
		for _, e := range x.Ormap.GetAdded() {
			f.mu.sets[string(e.GetKey())] = strs(e.GetValue().GetOrset().GetItems())
		}
	case *functionpb.CrdtDelta_Vote:
		v := x.Vote
		if !own {
			f.mu.vote = &functionpb.VoteState{SelfVote: v.GetSelfVote(), VotesFor: v.GetVotesFor(), TotalVoters: v.GetTotalVoters()}
			return
		}
		cur := f.mu.vote
		if cur == nil {
			cur = &functionpb.VoteState{TotalVoters: 1}
		}
		n := cur.GetVotesFor()
		if v.GetSelfVote() && !cur.GetSelfVote() {
			n++
		} else if !v.GetSelfVote() && cur.GetSelfVote() {
			n--
		}
		f.mu.vote = &functionpb.VoteState{SelfVote: v.GetSelfVote(), VotesFor: n, TotalVoters: cur.GetTotalVoters()}
	}
}

// view is the copy: "k=[a b],..." for a map, "self for/voters" for a vote.
func (f *copyFn) view() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mu.vote != nil {
		return fmt.Sprintf("%v %d/%d", f.mu.vote.GetSelfVote(), f.mu.vote.GetVotesFor(), f.mu.vote.GetTotalVoters())
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(f.mu.sets)) {
		parts = append(parts, fmt.Sprintf("%s=%v", k, f.mu.sets[k]))
	}
	return strings.Join(parts, ",")
}

func (f *copyFn) Handle(s grpc.BidiStreamingServer[functionpb.CrdtStreamIn, functionpb.CrdtStreamOut]) error {
	for {
		in, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		f.mu.Lock()
		var out *functionpb.CrdtStreamOut
		switch m := in.GetMessage().(type) {
		case *functionpb.CrdtStreamIn_Init:
			f.mu.inits++
			f.load(m.Init.GetState())
		case *functionpb.CrdtStreamIn_Changed:
			f.mu.changes = append(f.mu.changes, m.Changed)
			f.apply(m.Changed, false)
		case *functionpb.CrdtStreamIn_Command:
			c := m.Command
			r := &functionpb.CrdtReply{CommandId: c.GetId()}
			if c.GetName() == "Increment" {
				req := msg(f.t, "IncrementRequest", nil)
				if err := c.GetPayload().UnmarshalTo(req); err != nil {
					f.mu.Unlock()
					return err
				}
				if d := f.command(field(req, "value").Int()); d != nil {
					f.apply(d, true)
					r.StateAction = &functionpb.CrdtStateAction{Action: &functionpb.CrdtStateAction_Update{Update: d}}
				}
			}
			r.ClientAction = &functionpb.ClientAction{Action: &functionpb.ClientAction_Reply{Reply: &functionpb.Reply{
				Payload: mustAny(f.t, msg(f.t, "CounterValue", map[string]any{"value": int64(len(f.mu.sets))}))}}}
			out = &functionpb.CrdtStreamOut{Message: &functionpb.CrdtStreamOut_Reply{Reply: r}}
		}
		f.mu.Unlock()
		if out != nil {
			if err := s.Send(out); err != nil {
				return err
			}
		}
	}
}

// copyEnv starts a proxy whose function serves Counter with fn.
func copyEnv(t *testing.T, fn *copyFn) (*memStore, *grpc.ClientConn) {
	f := newFake(t)
	fn.t = t
	f.crdts.handle = fn.Handle
	f.spec.Entities = append(f.spec.Entities, &functionpb.Entity{Model: functionpb.Model_MODEL_CRDT, ServiceName: "proxytest.Counter"})
	store := newMemStore()
	_, conn, _ := startProxy(t, f, newMemHost().wire, store)
	return store, conn
}

// remoteMap applies fn to the ORMap at key in store, as a change made on
// another replica.
func remoteMap(t *testing.T, store *memStore, key mesh.Key, fn func(m *crdt.ORMap) (crdt.Value, error)) {
	t.Helper()
	if _, err := store.Update(context.Background(), key, crdt.TypeORMap, func(v crdt.Value) (crdt.Value, error) {
		return fn(v.(*crdt.ORMap))
	}, mesh.Options{}); err != nil {
		t.Fatal(err)
	}
}

// remoteAdd is another replica's adding elem to the ORSet at key set (for
// remoteMap).
func remoteAdd(set, elem string) func(m *crdt.ORMap) (crdt.Value, error) {
	other := crdt.ReplicaID{Node: "n2", Incarnation: 1}
	return func(m *crdt.ORMap) (crdt.Value, error) {
		return m.Update(other, []byte(set), crdt.TypeORSet, func(v crdt.Value) (crdt.Value, error) {
			return v.(*crdt.ORSet).Add(other, []byte(elem)), nil
		})
	}
}

func orsetD(removed []string, added ...string) *functionpb.CrdtDelta {
	return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Orset{Orset: &functionpb.ORSetDelta{Removed: bytesOf(removed...), Added: bytesOf(added...)}}}
}

func bytesOf(ss ...string) [][]byte {
	var out [][]byte
	for _, s := range ss {
		out = append(out, []byte(s))
	}
	return out
}

func mapD(md *functionpb.ORMapDelta) *functionpb.CrdtDelta {
	return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Ormap{Ormap: md}}
}

// storedMap renders the store's ORMap of ORSets as copyFn.view does.
func storedMap(t *testing.T, store *memStore, key mesh.Key) string {
	t.Helper()
	v, err := store.Get(context.Background(), key, mesh.Options{})
	if err != nil || v == nil {
		t.Fatalf("stored: %v %v", v, err)
	}
	m := v.(*crdt.ORMap)
	var parts []string
	for _, k := range m.Keys() {
		s, ok := m.Get(k.Key, k.Type).(*crdt.ORSet)
		if !ok {
			parts = append(parts, fmt.Sprintf("%s=%v", k.Key, k.Type))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s=%v", k.Key, strs(s.Elements())))
	}
	return strings.Join(parts, ",")
}

func TestCRDTORMap(t *testing.T) {
	// Increment n: 1 adds a to set s, 2 adds b to s and c to set t, 3
	// removes key s, 5 puts a counter in the map (refused), 6 adds a
	// nested map.
	fn := &copyFn{command: func(n int64) *functionpb.CrdtDelta {
		switch n {
		case 1:
			return mapD(&functionpb.ORMapDelta{Added: []*functionpb.ORMapEntry{{Key: []byte("s"),
				Value: &functionpb.CrdtState{State: &functionpb.CrdtState_Orset{Orset: &functionpb.ORSetState{Items: bytesOf("a")}}}}}})
		case 2:
			return mapD(&functionpb.ORMapDelta{
				Updated: []*functionpb.ORMapEntryDelta{{Key: []byte("s"), Delta: orsetD(nil, "b")}},
				Added: []*functionpb.ORMapEntry{{Key: []byte("t"),
					Value: &functionpb.CrdtState{State: &functionpb.CrdtState_Orset{Orset: &functionpb.ORSetState{Items: bytesOf("c")}}}}},
			})
		case 3:
			return mapD(&functionpb.ORMapDelta{Removed: bytesOf("s")})
		case 5:
			return mapD(&functionpb.ORMapDelta{Added: []*functionpb.ORMapEntry{{Key: []byte("n"),
				Value: &functionpb.CrdtState{State: &functionpb.CrdtState_Pncounter{Pncounter: &functionpb.PNCounterState{Value: 1}}}}}})
		case 6:
			return mapD(&functionpb.ORMapDelta{Updated: []*functionpb.ORMapEntryDelta{{Key: []byte("m"), Delta: mapD(&functionpb.ORMapDelta{
				Added: []*functionpb.ORMapEntry{{Key: []byte("in"), Value: &functionpb.CrdtState{State: &functionpb.CrdtState_Flag{Flag: &functionpb.FlagState{Value: true}}}}},
			})}}})
		}
		return nil
	}}
	store, conn := copyEnv(t, fn)
	key := mesh.Key{Service: "proxytest.Counter", ID: "m1"}
	inc := func(n int64) error {
		_, err := call(t, conn, "/proxytest.Counter/Increment", msg(t, "IncrementRequest", map[string]any{"id": "m1", "value": n}), "CounterValue")
		return err
	}
	get := func() {
		t.Helper()
		if _, err := call(t, conn, "/proxytest.Counter/GetCounter", msg(t, "GetCounterRequest", map[string]any{"id": "m1"}), "CounterValue"); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []int64{1, 2} {
		if err := inc(n); err != nil {
			t.Fatalf("inc %d: %v", n, err)
		}
	}
	if got := storedMap(t, store, key); got != "s=[a b],t=[c]" {
		t.Fatalf("stored %q", got)
	}
	// A remove.
	if err := inc(3); err != nil {
		t.Fatal(err)
	}
	if got := storedMap(t, store, key); got != "t=[c]" {
		t.Fatalf("after the remove: %q", got)
	}

	// Another replica's changes reach the function: an element added to
	// an entry, a new entry, and (next) the removal of an entry.
	remote := func(fn func(m *crdt.ORMap) (crdt.Value, error)) {
		t.Helper()
		remoteMap(t, store, key, fn)
	}
	remote(remoteAdd("t", "r"))
	remote(remoteAdd("u", "x"))
	get()
	if got := fn.view(); got != "t=[c r],u=[x]" {
		t.Fatalf("function's copy after remote changes: %q", got)
	}
	remote(func(m *crdt.ORMap) (crdt.Value, error) { return m.Remove([]byte("u"), crdt.TypeORSet), nil })
	get()
	if got := fn.view(); got != "t=[c r]" {
		t.Fatalf("function's copy after a remote remove: %q", got)
	}
	fn.mu.Lock()
	inits, last := fn.mu.inits, fn.mu.changes[len(fn.mu.changes)-1]
	fn.mu.Unlock()
	if inits != 1 || string(last.GetOrmap().GetRemoved()[0]) != "u" {
		t.Fatalf("%d inits, last change %v", inits, last)
	}

	// A value the mesh's map cannot hold is refused, and nothing is
	// written; the entity goes on (on a new stream).
	wantCode(t, inc(5), codes.Unimplemented)
	if got := storedMap(t, store, key); got != "t=[c r]" {
		t.Fatalf("after a refused delta: %q", got)
	}
	// A nested map with a flag in it.
	if err := inc(6); err != nil {
		t.Fatal(err)
	}
	v, _ := store.Get(context.Background(), key, mesh.Options{})
	nested, ok := v.(*crdt.ORMap).Get([]byte("m"), crdt.TypeORMap).(*crdt.ORMap)
	if !ok {
		t.Fatalf("no nested map: %q", storedMap(t, store, key))
	}
	if f, ok := nested.Get([]byte("in"), crdt.TypeEWFlag).(*crdt.EWFlag); !ok || !f.Enabled() {
		t.Fatalf("nested flag %v", nested.Keys())
	}
}

func TestCRDTORMapViewDelta(t *testing.T) {
	set := func(items ...string) *functionpb.CrdtState {
		return &functionpb.CrdtState{State: &functionpb.CrdtState_Orset{Orset: &functionpb.ORSetState{Items: bytesOf(items...)}}}
	}
	state := func(es ...*functionpb.ORMapEntry) *functionpb.CrdtState {
		return &functionpb.CrdtState{State: &functionpb.CrdtState_Ormap{Ormap: &functionpb.ORMapState{Entries: es}}}
	}
	flag := &functionpb.CrdtState{State: &functionpb.CrdtState_Flag{Flag: &functionpb.FlagState{Value: true}}}
	old := state(&functionpb.ORMapEntry{Key: []byte("a"), Value: set("x")}, &functionpb.ORMapEntry{Key: []byte("b"), Value: set("y")},
		&functionpb.ORMapEntry{Key: []byte("c"), Value: set("z")})
	cur := state(&functionpb.ORMapEntry{Key: []byte("a"), Value: set("x", "w")}, &functionpb.ORMapEntry{Key: []byte("c"), Value: flag},
		&functionpb.ORMapEntry{Key: []byte("d"), Value: set("v")})
	d, ok := viewDelta(old, cur)
	if !ok {
		t.Fatal("no delta")
	}
	md := d.GetOrmap()
	if got := strs(md.GetRemoved()); !slices.Equal(got, []string{"b", "c"}) {
		t.Fatalf("removed %v", got)
	}
	if len(md.GetUpdated()) != 1 || string(md.GetUpdated()[0].GetKey()) != "a" || strs(md.GetUpdated()[0].GetDelta().GetOrset().GetAdded())[0] != "w" {
		t.Fatalf("updated %v", md.GetUpdated())
	}
	if len(md.GetAdded()) != 2 || string(md.GetAdded()[0].GetKey()) != "c" || string(md.GetAdded()[1].GetKey()) != "d" {
		t.Fatalf("added %v", md.GetAdded())
	}
	if d, ok := viewDelta(cur, cur); !ok || d != nil {
		t.Fatalf("no change: %v %v", d, ok)
	}

	// One entry per key: the smallest type the protocol can show.
	m := crdt.NewORMap()
	r := crdt.ReplicaID{Node: "n1", Incarnation: 1}
	for _, ty := range []crdt.Type{crdt.TypeEWFlag, crdt.TypeORSet, crdt.TypeMVRegister} {
		if _, err := m.Update(r, []byte("k"), ty, func(v crdt.Value) (crdt.Value, error) {
			switch x := v.(type) {
			case *crdt.EWFlag:
				return x.Enable(r), nil
			case *crdt.ORSet:
				return x.Add(r, []byte("e")), nil
			case *crdt.MVRegister:
				return x.Assign(r, []byte("v")), nil
			}
			return nil, errors.New("unexpected type")
		}); err != nil {
			t.Fatal(err)
		}
	}
	view, err := crdtView(m, r)
	if err != nil {
		t.Fatal(err)
	}
	if es := view.GetOrmap().GetEntries(); len(es) != 1 || es[0].GetValue().GetOrset() == nil {
		t.Fatalf("view %v", view)
	}
	// A remove of the key removes every type.
	rd, err := applyDelta(m, mapD(&functionpb.ORMapDelta{Removed: bytesOf("k")}), r, newMemStore().clock)
	if err != nil || m.Len() != 0 || rd.IsBottom() {
		t.Fatalf("remove: %v, %v left", err, m.Keys())
	}
}

func TestCRDTORMapRefused(t *testing.T) {
	deep := &functionpb.CrdtState{State: &functionpb.CrdtState_Orset{Orset: &functionpb.ORSetState{}}}
	for range maxMapDepth + 1 {
		deep = &functionpb.CrdtState{State: &functionpb.CrdtState_Ormap{Ormap: &functionpb.ORMapState{Entries: []*functionpb.ORMapEntry{{Key: []byte("k"), Value: deep}}}}}
	}
	for name, c := range map[string]struct {
		d    *functionpb.CrdtDelta
		want error // nil: a function failure (Internal)
	}{
		"counter in a map": {mapD(&functionpb.ORMapDelta{Updated: []*functionpb.ORMapEntryDelta{{Key: []byte("k"),
			Delta: &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Pncounter{Pncounter: &functionpb.PNCounterDelta{Change: 1}}}}}}), ErrNotSupported},
		"vote in a nested map": {mapD(&functionpb.ORMapDelta{Added: []*functionpb.ORMapEntry{{Key: []byte("k"), Value: &functionpb.CrdtState{
			State: &functionpb.CrdtState_Ormap{Ormap: &functionpb.ORMapState{Entries: []*functionpb.ORMapEntry{{Key: []byte("v"),
				Value: &functionpb.CrdtState{State: &functionpb.CrdtState_Vote{Vote: &functionpb.VoteState{}}}}}}}}}}}), ErrNotSupported},
		"empty nested delta": {mapD(&functionpb.ORMapDelta{Updated: []*functionpb.ORMapEntryDelta{{Key: []byte("k")}}}), nil},
		"empty added value":  {mapD(&functionpb.ORMapDelta{Added: []*functionpb.ORMapEntry{{Key: []byte("k")}}}), nil},
		"too deep":           {mapD(&functionpb.ORMapDelta{Added: []*functionpb.ORMapEntry{{Key: []byte("k"), Value: deep}}}), nil},
		"vote with tallies":  {&functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Vote{Vote: &functionpb.VoteDelta{SelfVote: true, VotesFor: 3}}}, nil},
	} {
		_, err := deltaType(c.d)
		var fe *failureError
		switch {
		case c.want != nil && !errors.Is(err, c.want):
			t.Errorf("%s: %v, want %v", name, err, c.want)
		case c.want == nil && (!errors.As(err, &fe) || fe.code != codes.Internal):
			t.Errorf("%s: %v, want a function failure", name, err)
		}
	}
}

func TestCRDTVote(t *testing.T) {
	// Increment n votes n > 0.
	fn := &copyFn{command: func(n int64) *functionpb.CrdtDelta {
		return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Vote{Vote: &functionpb.VoteDelta{SelfVote: n > 0}}}
	}}
	store, conn := copyEnv(t, fn)
	key := mesh.Key{Service: "proxytest.Counter", ID: "v1"}
	vote := func(n int64) {
		t.Helper()
		if _, err := call(t, conn, "/proxytest.Counter/Increment", msg(t, "IncrementRequest", map[string]any{"id": "v1", "value": n}), "CounterValue"); err != nil {
			t.Fatal(err)
		}
	}
	get := func() {
		t.Helper()
		if _, err := call(t, conn, "/proxytest.Counter/GetCounter", msg(t, "GetCounterRequest", map[string]any{"id": "v1"}), "CounterValue"); err != nil {
			t.Fatal(err)
		}
	}
	stored := func() *crdt.Vote {
		t.Helper()
		v, err := store.Get(context.Background(), key, mesh.Options{})
		if err != nil || v == nil {
			t.Fatalf("stored %v %v", v, err)
		}
		return v.(*crdt.Vote)
	}
	vote(1)
	if v := stored(); v.VotesFor() != 1 || v.Voters() != 1 {
		t.Fatalf("stored %d/%d", v.VotesFor(), v.Voters())
	}
	if got := fn.view(); got != "true 1/1" {
		t.Fatalf("function's copy %q", got)
	}
	// A second voter, on another replica.
	other := crdt.ReplicaID{Node: "n2", Incarnation: 1}
	remote := func(b bool) {
		t.Helper()
		if _, err := store.Update(context.Background(), key, crdt.TypeVote, func(v crdt.Value) (crdt.Value, error) {
			return v.(*crdt.Vote).Set(other, b)
		}, mesh.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	remote(false)
	get()
	if got := fn.view(); got != "true 1/2" {
		t.Fatalf("after n2 votes false: %q", got)
	}
	remote(true)
	get()
	if got := fn.view(); got != "true 2/2" {
		t.Fatalf("after n2 votes true: %q", got)
	}
	vote(-1)
	if v := stored(); v.VotesFor() != 1 || v.Voters() != 2 {
		t.Fatalf("stored after withdrawing %d/%d", v.VotesFor(), v.Voters())
	}
	if self, ok := stored().VoteOf(store.Replica()); !ok || self {
		t.Fatalf("self vote %v %v", self, ok)
	}
	get()
	if got := fn.view(); got != "false 1/2" {
		t.Fatalf("after withdrawing: %q", got)
	}

	// A node that has not voted sees itself as a voter voting false.
	v := crdt.NewVote()
	if _, err := v.Set(other, true); err != nil {
		t.Fatal(err)
	}
	if st := voteView(v, store.Replica()).GetVote(); st.GetSelfVote() || st.GetVotesFor() != 1 || st.GetTotalVoters() != 2 {
		t.Fatalf("view of a non-voter %v", st)
	}
}
