package tck

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/statemesh/statemesh/protocol/functionpb"
	"github.com/statemesh/statemesh/protocol/tckpb"
)

// crdtStream is an open CRDT entity stream, from the proxy's side.
type crdtStream struct {
	c       *checker
	s       functionpb.Crdt_HandleClient
	service string
	id      string
	nextCmd int64
}

// openCrdt opens a stream for a fresh entity of service and sends its
// init with state (nil: no state yet).
func (c *checker) openCrdt(service string, state *functionpb.CrdtState) *crdtStream {
	s, err := c.s.crdt.Handle(c.ctx)
	if err != nil {
		c.fatalf("opening a CRDT stream: %v", err)
	}
	cs := &crdtStream{c: c, s: s, service: service, id: c.entityID()}
	cs.send(&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Init{Init: &functionpb.CrdtInit{
		ServiceName: service, EntityId: cs.id, State: state,
	}}})
	return cs
}

func (cs *crdtStream) send(in *functionpb.CrdtStreamIn) {
	if err := cs.s.Send(in); err != nil {
		cs.c.fatalf("sending %v: %v", in, err)
	}
}

func (cs *crdtStream) recv() *functionpb.CrdtStreamOut {
	out, err := cs.s.Recv()
	if err != nil {
		cs.c.fatalf("%s %s: waiting for a message from the function: %v", cs.service, cs.id, err)
	}
	return out
}

// changed sends a delta made by another replica.
func (cs *crdtStream) changed(d *functionpb.CrdtDelta) {
	cs.send(&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Changed{Changed: d}})
}

// command sends a command and returns its id.
func (cs *crdtStream) command(name string, req proto.Message, streamed bool) int64 {
	cs.nextCmd++
	cs.send(&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Command{Command: &functionpb.Command{
		EntityId: cs.id, Id: cs.nextCmd, Name: name, Payload: mustAny(req), Streamed: streamed,
	}}})
	return cs.nextCmd
}

// process sends Process(actions) and returns the function's answer.
func (cs *crdtStream) process(actions ...*tckpb.CrdtAction) (int64, *functionpb.CrdtStreamOut) {
	id := cs.command("Process", &tckpb.CrdtRequest{Id: cs.id, Actions: actions}, false)
	return id, cs.recv()
}

// reply checks that out is a successful reply to command id and returns
// it with its state.
func (cs *crdtStream) reply(id int64, out *functionpb.CrdtStreamOut) (*functionpb.CrdtReply, *tckpb.CrdtValue) {
	r := out.GetReply()
	if r == nil || r.GetCommandId() != id {
		cs.c.fatalf("want a CrdtReply to command %d, got %v", id, out)
	}
	if r.GetClientAction().GetReply() == nil {
		cs.c.fatalf("command %d: want a client reply, got %v", id, r.GetClientAction())
	}
	resp := &tckpb.CrdtResponse{}
	cs.c.decode(r.GetClientAction().GetReply().GetPayload(), resp)
	return r, resp.GetState()
}

// ok sends Process(actions) and checks for a successful reply.
func (cs *crdtStream) ok(actions ...*tckpb.CrdtAction) (*functionpb.CrdtReply, *tckpb.CrdtValue) {
	id, out := cs.process(actions...)
	return cs.reply(id, out)
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err) // only the TCK's own messages are encoded
	}
	return a
}

// decode decodes a payload that must be of m's type.
func (c *checker) decode(a *anypb.Any, m proto.Message) {
	if a == nil {
		c.fatalf("missing payload, want a %s", m.ProtoReflect().Descriptor().FullName())
	}
	if err := a.UnmarshalTo(m); err != nil {
		c.fatalf("payload %q: want a %s: %v", a.GetTypeUrl(), m.ProtoReflect().Descriptor().FullName(), err)
	}
}

// Actions, as short constructors.
func inc(n int64) *tckpb.CrdtAction {
	return &tckpb.CrdtAction{Action: &tckpb.CrdtAction_Increment{Increment: n}}
}
func add(e string) *tckpb.CrdtAction { return &tckpb.CrdtAction{Action: &tckpb.CrdtAction_Add{Add: e}} }
func remove(e string) *tckpb.CrdtAction {
	return &tckpb.CrdtAction{Action: &tckpb.CrdtAction_Remove{Remove: e}}
}
func clearSet() *tckpb.CrdtAction {
	return &tckpb.CrdtAction{Action: &tckpb.CrdtAction_Clear{Clear: true}}
}
func set(v string) *tckpb.CrdtAction { return &tckpb.CrdtAction{Action: &tckpb.CrdtAction_Set{Set: v}} }
func enable(on bool) *tckpb.CrdtAction {
	return &tckpb.CrdtAction{Action: &tckpb.CrdtAction_Enable{Enable: on}}
}
func vote(v bool) *tckpb.CrdtAction {
	return &tckpb.CrdtAction{Action: &tckpb.CrdtAction_Vote{Vote: v}}
}
func mapInc(k string, n int64) *tckpb.CrdtAction {
	return &tckpb.CrdtAction{Action: &tckpb.CrdtAction_Ormap{Ormap: &tckpb.ORMapAction{Key: k, Action: &tckpb.ORMapAction_Increment{Increment: n}}}}
}
func mapRemove(k string) *tckpb.CrdtAction {
	return &tckpb.CrdtAction{Action: &tckpb.CrdtAction_Ormap{Ormap: &tckpb.ORMapAction{Key: k, Action: &tckpb.ORMapAction_Remove{Remove: true}}}}
}
func deleteEntity() *tckpb.CrdtAction {
	return &tckpb.CrdtAction{Action: &tckpb.CrdtAction_Delete{Delete: true}}
}
func consistency(wc tckpb.Consistency) *tckpb.CrdtAction {
	return &tckpb.CrdtAction{Action: &tckpb.CrdtAction_Consistency{Consistency: wc}}
}
func effects(e *tckpb.Effects) *tckpb.CrdtAction {
	return &tckpb.CrdtAction{Action: &tckpb.CrdtAction_Effects{Effects: e}}
}

// States and deltas, as short constructors.
func pnState(v int64) *functionpb.CrdtState {
	return &functionpb.CrdtState{State: &functionpb.CrdtState_Pncounter{Pncounter: &functionpb.PNCounterState{Value: v}}}
}
func pnDelta(n int64) *functionpb.CrdtDelta {
	return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Pncounter{Pncounter: &functionpb.PNCounterDelta{Change: n}}}
}
func bs(ss ...string) [][]byte {
	out := make([][]byte, 0, len(ss))
	for _, s := range ss {
		out = append(out, []byte(s))
	}
	return out
}

// crdtStep is one command of an update check and what it must produce.
type crdtStep struct {
	actions []*tckpb.CrdtAction
	// The state after the command.
	want *tckpb.CrdtValue
	// The delta of the reply's state action; nil: no state action.
	delta *functionpb.CrdtDelta
	// checkDelta, if set, replaces the exact comparison with delta (for
	// types whose delta has several valid forms).
	checkDelta func(*functionpb.CrdtDelta) error
	// checkValue, if set, replaces the exact comparison with want.
	checkValue func(*tckpb.CrdtValue) error
}

// crdtType is the table that drives the checks of one CRDT type.
type crdtType struct {
	name     string // check name prefix, e.g. "pncounter"
	service  string
	optional bool
	// init is the state the entity starts with in the init, remote-delta
	// and delete checks; initValue is how the model must report it.
	init      *functionpb.CrdtState
	initValue *tckpb.CrdtValue
	// steps run in order on an entity that starts with no state.
	steps []crdtStep
	// remote is a delta from another replica sent after init; remoteValue
	// the state the model must then report.
	remote      *functionpb.CrdtDelta
	remoteValue *tckpb.CrdtValue
}

func crdtTypes() []crdtType {
	gcDelta := func(n uint64) *functionpb.CrdtDelta {
		return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Gcounter{Gcounter: &functionpb.GCounterDelta{Increment: n}}}
	}
	gsetDelta := func(added ...string) *functionpb.CrdtDelta {
		return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Gset{Gset: &functionpb.GSetDelta{Added: bs(added...)}}}
	}
	orsetDelta := func(cleared bool, removed, added []string) *functionpb.CrdtDelta {
		return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Orset{Orset: &functionpb.ORSetDelta{Cleared: cleared, Removed: bs(removed...), Added: bs(added...)}}}
	}
	lwwDelta := func(v string) *functionpb.CrdtDelta {
		return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Lwwregister{Lwwregister: &functionpb.LWWRegisterDelta{Value: []byte(v)}}}
	}
	flagDelta := func(v bool) *functionpb.CrdtDelta {
		return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Flag{Flag: &functionpb.FlagDelta{Value: v}}}
	}
	voteDelta := func(self bool, forN, total uint32) *functionpb.CrdtDelta {
		return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Vote{Vote: &functionpb.VoteDelta{SelfVote: self, VotesFor: forN, TotalVoters: total}}}
	}
	counter := func(n int64) *tckpb.CrdtValue { return &tckpb.CrdtValue{Counter: n} }
	elems := func(es ...string) *tckpb.CrdtValue { return &tckpb.CrdtValue{Elements: es} }
	entries := func(kv ...any) *tckpb.CrdtValue {
		v := &tckpb.CrdtValue{}
		for i := 0; i < len(kv); i += 2 {
			v.Entries = append(v.Entries, &tckpb.ORMapValue{Key: kv[i].(string), Counter: int64(kv[i+1].(int))})
		}
		return v
	}
	return []crdtType{
		{
			name: "gcounter", service: gcounterService,
			init:      &functionpb.CrdtState{State: &functionpb.CrdtState_Gcounter{Gcounter: &functionpb.GCounterState{Value: 5}}},
			initValue: counter(5),
			steps: []crdtStep{
				{actions: []*tckpb.CrdtAction{inc(3)}, want: counter(3), delta: gcDelta(3)},
				{actions: []*tckpb.CrdtAction{inc(2), inc(4)}, want: counter(9), delta: gcDelta(6)},
				{actions: nil, want: counter(9)},
			},
			remote: gcDelta(2), remoteValue: counter(7),
		},
		{
			name: "pncounter", service: pncounterService,
			init: pnState(5), initValue: counter(5),
			steps: []crdtStep{
				{actions: []*tckpb.CrdtAction{inc(3)}, want: counter(3), delta: pnDelta(3)},
				{actions: []*tckpb.CrdtAction{inc(-7)}, want: counter(-4), delta: pnDelta(-7)},
				{actions: []*tckpb.CrdtAction{inc(2), inc(-2)}, want: counter(-4)},
				{actions: nil, want: counter(-4)},
			},
			remote: pnDelta(-2), remoteValue: counter(3),
		},
		{
			name: "gset", service: gsetService,
			init:      &functionpb.CrdtState{State: &functionpb.CrdtState_Gset{Gset: &functionpb.GSetState{Items: bs("a", "b")}}},
			initValue: elems("a", "b"),
			steps: []crdtStep{
				{actions: []*tckpb.CrdtAction{add("x")}, want: elems("x"), delta: gsetDelta("x")},
				{actions: []*tckpb.CrdtAction{add("z"), add("y")}, want: elems("x", "y", "z"), delta: gsetDelta("y", "z")},
				{actions: nil, want: elems("x", "y", "z")},
			},
			remote: gsetDelta("c"), remoteValue: elems("a", "b", "c"),
		},
		{
			name: "orset", service: orsetService,
			init:      &functionpb.CrdtState{State: &functionpb.CrdtState_Orset{Orset: &functionpb.ORSetState{Items: bs("a", "b")}}},
			initValue: elems("a", "b"),
			steps: []crdtStep{
				{actions: []*tckpb.CrdtAction{add("x"), add("y")}, want: elems("x", "y"), delta: orsetDelta(false, nil, []string{"x", "y"})},
				{actions: []*tckpb.CrdtAction{remove("x"), add("z")}, want: elems("y", "z"), delta: orsetDelta(false, []string{"x"}, []string{"z"})},
				{actions: []*tckpb.CrdtAction{clearSet()}, want: elems(), delta: orsetDelta(true, nil, nil)},
				{actions: nil, want: elems()},
			},
			remote: orsetDelta(false, []string{"a"}, []string{"c"}), remoteValue: elems("b", "c"),
		},
		{
			name: "lwwregister", service: lwwregisterService,
			init:      &functionpb.CrdtState{State: &functionpb.CrdtState_Lwwregister{Lwwregister: &functionpb.LWWRegisterState{Value: []byte("one")}}},
			initValue: &tckpb.CrdtValue{Value: "one"},
			steps: []crdtStep{
				{actions: []*tckpb.CrdtAction{set("x")}, want: &tckpb.CrdtValue{Value: "x"}, delta: lwwDelta("x")},
				{actions: []*tckpb.CrdtAction{set("y"), set("z")}, want: &tckpb.CrdtValue{Value: "z"}, delta: lwwDelta("z")},
				{actions: nil, want: &tckpb.CrdtValue{Value: "z"}},
			},
			remote: lwwDelta("two"), remoteValue: &tckpb.CrdtValue{Value: "two"},
		},
		{
			name: "flag", service: flagService,
			init:      &functionpb.CrdtState{State: &functionpb.CrdtState_Flag{Flag: &functionpb.FlagState{Value: true}}},
			initValue: &tckpb.CrdtValue{Enabled: true},
			steps: []crdtStep{
				{actions: nil, want: &tckpb.CrdtValue{Enabled: false}},
				{actions: []*tckpb.CrdtAction{enable(true)}, want: &tckpb.CrdtValue{Enabled: true}, delta: flagDelta(true)},
				{actions: []*tckpb.CrdtAction{enable(false)}, want: &tckpb.CrdtValue{Enabled: false}, delta: flagDelta(false)},
			},
			remote: flagDelta(false), remoteValue: &tckpb.CrdtValue{Enabled: false},
		},
		{
			name: "ormap", service: ormapService, optional: true,
			init: &functionpb.CrdtState{State: &functionpb.CrdtState_Ormap{Ormap: &functionpb.ORMapState{Entries: []*functionpb.ORMapEntry{
				{Key: []byte("a"), Value: pnState(2)},
			}}}},
			initValue: entries("a", 2),
			steps: []crdtStep{
				{actions: []*tckpb.CrdtAction{mapInc("k", 4)}, want: entries("k", 4), checkDelta: ormapChange("k", 4)},
				{actions: []*tckpb.CrdtAction{mapInc("k", -1)}, want: entries("k", 3), checkDelta: ormapChange("k", -1)},
				{actions: []*tckpb.CrdtAction{mapRemove("k")}, want: entries(), checkDelta: ormapRemoved("k")},
			},
			remote: &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Ormap{Ormap: &functionpb.ORMapDelta{
				Updated: []*functionpb.ORMapEntryDelta{{Key: []byte("a"), Delta: pnDelta(3)}},
				Added:   []*functionpb.ORMapEntry{{Key: []byte("b"), Value: pnState(1)}},
			}}},
			remoteValue: entries("a", 5, "b", 1),
		},
		{
			name: "vote", service: voteService, optional: true,
			init:      &functionpb.CrdtState{State: &functionpb.CrdtState_Vote{Vote: &functionpb.VoteState{VotesFor: 1, TotalVoters: 3}}},
			initValue: &tckpb.CrdtValue{VotesFor: 1, TotalVoters: 3},
			steps: []crdtStep{
				{actions: []*tckpb.CrdtAction{vote(true)}, checkValue: votedValue(true), checkDelta: selfVote(true)},
				{actions: []*tckpb.CrdtAction{vote(false)}, checkValue: votedValue(false), checkDelta: selfVote(false)},
			},
			remote:      voteDelta(false, 2, 4),
			remoteValue: &tckpb.CrdtValue{VotesFor: 2, TotalVoters: 4},
		},
	}
}

// ormapChange accepts a delta that creates or changes the PNCounter at
// key by n: either an added entry holding n or an updated entry with a
// change of n.
func ormapChange(key string, n int64) func(*functionpb.CrdtDelta) error {
	return func(d *functionpb.CrdtDelta) error {
		m := d.GetOrmap()
		if m == nil {
			return fmt.Errorf("want an ORMap delta, got %v", d)
		}
		var got int64
		found := false
		for _, e := range m.GetAdded() {
			if string(e.GetKey()) == key {
				got += e.GetValue().GetPncounter().GetValue()
				found = true
			}
		}
		for _, e := range m.GetUpdated() {
			if string(e.GetKey()) == key {
				got += e.GetDelta().GetPncounter().GetChange()
				found = true
			}
		}
		if !found || got != n || m.GetCleared() || len(m.GetRemoved()) > 0 {
			return fmt.Errorf("want an ORMap delta changing %q by %d only, got %v", key, n, m)
		}
		return nil
	}
}

func ormapRemoved(key string) func(*functionpb.CrdtDelta) error {
	return func(d *functionpb.CrdtDelta) error {
		m := d.GetOrmap()
		if m == nil || len(m.GetRemoved()) != 1 || string(m.GetRemoved()[0]) != key || len(m.GetAdded())+len(m.GetUpdated()) > 0 {
			return fmt.Errorf("want an ORMap delta removing %q only, got %v", key, d)
		}
		return nil
	}
}

// votedValue accepts any tally consistent with this node's vote v (the
// tallies of an entity that has no state yet are the SDK's to choose).
func votedValue(v bool) func(*tckpb.CrdtValue) error {
	return func(got *tckpb.CrdtValue) error {
		if got.GetSelfVote() != v || got.GetVotesFor() > got.GetTotalVoters() || (v && got.GetVotesFor() == 0) {
			return fmt.Errorf("state %v, want self_vote %v and a consistent tally", got, v)
		}
		return nil
	}
}

func selfVote(v bool) func(*functionpb.CrdtDelta) error {
	return func(d *functionpb.CrdtDelta) error {
		x := d.GetVote()
		if x == nil || x.GetSelfVote() != v {
			return fmt.Errorf("want a Vote delta with self_vote %v, got %v", v, d)
		}
		return nil
	}
}

// normalize sorts the repeated byte strings of set deltas: their order
// carries no meaning.
func normalize(d *functionpb.CrdtDelta) *functionpb.CrdtDelta {
	d = proto.Clone(d).(*functionpb.CrdtDelta)
	sortBytes := func(b [][]byte) { slices.SortFunc(b, bytes.Compare) }
	switch x := d.GetDelta().(type) {
	case *functionpb.CrdtDelta_Gset:
		sortBytes(x.Gset.Added)
	case *functionpb.CrdtDelta_Orset:
		sortBytes(x.Orset.Added)
		sortBytes(x.Orset.Removed)
	}
	return d
}

// wantValue compares a reported state.
func (c *checker) wantValue(what string, got, want *tckpb.CrdtValue) {
	if got == nil {
		got = &tckpb.CrdtValue{}
	}
	if !proto.Equal(got, want) {
		c.errorf("%s: state %v, want %v", what, got, want)
	}
}

// wantUpdate checks a reply's state action: the delta (or none) with
// consistency LOCAL.
func (c *checker) wantUpdate(what string, r *functionpb.CrdtReply, st crdtStep) {
	sa := r.GetStateAction()
	if st.delta == nil && st.checkDelta == nil {
		if sa != nil {
			c.errorf("%s: want no state action (nothing changed), got %v", what, sa)
		}
		return
	}
	d := sa.GetUpdate()
	if d == nil {
		c.errorf("%s: want a state action with a delta, got %v", what, sa)
		return
	}
	if st.checkDelta != nil {
		if err := st.checkDelta(d); err != nil {
			c.errorf("%s: %v", what, err)
		}
	} else if !proto.Equal(normalize(d), normalize(st.delta)) {
		c.errorf("%s: delta %v, want %v", what, d, st.delta)
	}
	if wc := sa.GetWriteConsistency(); wc != functionpb.WriteConsistency_WRITE_CONSISTENCY_LOCAL {
		c.errorf("%s: write consistency %v, want the default LOCAL", what, wc)
	}
}

func actionsString(as []*tckpb.CrdtAction) string {
	var parts []string
	for _, a := range as {
		parts = append(parts, fmt.Sprint(a))
	}
	return "Process[" + strings.Join(parts, ", ") + "]"
}

// typeChecks are the checks every CRDT type gets.
func typeChecks(ty crdtType) []check {
	guard := func(c *checker) {
		if ty.optional {
			c.optionalEntity(ty.service, functionpb.Model_MODEL_CRDT)
		} else {
			c.requireEntity(ty.service, functionpb.Model_MODEL_CRDT)
		}
	}
	return []check{
		{"crdt/" + ty.name + "/init-state", func(c *checker) {
			guard(c)
			cs := c.openCrdt(ty.service, ty.init)
			r, v := cs.ok()
			c.wantValue("after init", v, ty.initValue)
			if r.GetStateAction() != nil {
				c.errorf("a read produced a state action: %v", r.GetStateAction())
			}
		}},
		{"crdt/" + ty.name + "/operations-produce-deltas", func(c *checker) {
			guard(c)
			cs := c.openCrdt(ty.service, nil)
			for _, st := range ty.steps {
				what := actionsString(st.actions)
				r, v := cs.ok(st.actions...)
				if st.checkValue != nil {
					if err := st.checkValue(v); err != nil {
						c.errorf("%s: %v", what, err)
					}
				} else {
					c.wantValue(what, v, st.want)
				}
				c.wantUpdate(what, r, st)
			}
		}},
		{"crdt/" + ty.name + "/delta-from-other-replica", func(c *checker) {
			guard(c)
			cs := c.openCrdt(ty.service, ty.init)
			cs.changed(ty.remote)
			r, v := cs.ok()
			c.wantValue("after a delta from another replica", v, ty.remoteValue)
			if r.GetStateAction() != nil {
				c.errorf("a delta from another replica was echoed in a state action: %v", r.GetStateAction())
			}
		}},
		{"crdt/" + ty.name + "/delete", func(c *checker) {
			guard(c)
			cs := c.openCrdt(ty.service, ty.init)
			r, _ := cs.ok(deleteEntity())
			if r.GetStateAction().GetDelete() == nil {
				c.errorf("Process[delete]: want a delete state action, got %v", r.GetStateAction())
			}
		}},
	}
}

func crdtChecks() []check {
	var out []check
	for _, ty := range crdtTypes() {
		out = append(out, typeChecks(ty)...)
	}
	pn := func(c *checker) *crdtStream {
		c.requireEntity(pncounterService, functionpb.Model_MODEL_CRDT)
		return c.openCrdt(pncounterService, pnState(5))
	}
	out = append(out,
		check{"crdt/write-consistency", func(c *checker) {
			cs := pn(c)
			for _, tc := range []struct {
				set  *tckpb.CrdtAction
				want functionpb.WriteConsistency
			}{
				{consistency(tckpb.Consistency_CONSISTENCY_MAJORITY), functionpb.WriteConsistency_WRITE_CONSISTENCY_MAJORITY},
				{consistency(tckpb.Consistency_CONSISTENCY_ALL), functionpb.WriteConsistency_WRITE_CONSISTENCY_ALL},
				{consistency(tckpb.Consistency_CONSISTENCY_LOCAL), functionpb.WriteConsistency_WRITE_CONSISTENCY_LOCAL},
			} {
				r, _ := cs.ok(tc.set, inc(1))
				if sa := r.GetStateAction(); !proto.Equal(sa.GetUpdate(), pnDelta(1)) || sa.GetWriteConsistency() != tc.want {
					c.errorf("Process[%v, increment 1]: state action %v, want delta +1 with %v", tc.set, sa, tc.want)
				}
			}
			r, _ := cs.ok(consistency(tckpb.Consistency_CONSISTENCY_ALL), deleteEntity())
			if sa := r.GetStateAction(); sa.GetDelete() == nil || sa.GetWriteConsistency() != functionpb.WriteConsistency_WRITE_CONSISTENCY_ALL {
				c.errorf("Process[consistency ALL, delete]: state action %v, want delete with ALL", sa)
			}
		}},
		check{"crdt/failure-changes-nothing", func(c *checker) {
			cs := pn(c)
			id, out := cs.process(inc(3), effects(&tckpb.Effects{Fail: "boom", SideEffects: []*tckpb.SideEffectTo{{Id: "s"}}}))
			c.wantCommandFailure(id, "boom", crdtFailureOf(out))
			if r := out.GetReply(); r.GetStateAction() != nil || len(r.GetSideEffects()) > 0 {
				c.errorf("a failed command carried a state action or side effects: %v", r)
			}
			_, v := cs.ok()
			c.wantValue("after a failed increment", v, &tckpb.CrdtValue{Counter: 5})
		}},
		check{"crdt/forward", func(c *checker) {
			cs := pn(c)
			id, out := cs.process(inc(2), effects(&tckpb.Effects{Forward: "f1"}))
			r := out.GetReply()
			if r.GetCommandId() != id {
				c.fatalf("want a CrdtReply to %d, got %v", id, out)
			}
			c.wantForward(r.GetClientAction(), "f1")
			if !proto.Equal(r.GetStateAction().GetUpdate(), pnDelta(2)) {
				c.errorf("a forwarding command's own change was lost: state action %v, want delta +2", r.GetStateAction())
			}
		}},
		check{"crdt/side-effects", func(c *checker) {
			cs := pn(c)
			r, v := cs.ok(inc(1), effects(&tckpb.Effects{SideEffects: []*tckpb.SideEffectTo{{Id: "s1", Synchronous: true}, {Id: "s2"}}}))
			c.wantValue("Process[increment 1, side effects]", v, &tckpb.CrdtValue{Counter: 6})
			c.wantSideEffects(r.GetSideEffects(), []*tckpb.SideEffectTo{{Id: "s1", Synchronous: true}, {Id: "s2"}})
		}},
		check{"crdt/deleted-by-proxy", func(c *checker) {
			cs := pn(c)
			cs.ok()
			cs.send(&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Deleted{Deleted: &functionpb.CrdtDeleted{}}})
			if err := cs.s.CloseSend(); err != nil {
				c.fatalf("CloseSend: %v", err)
			}
			out, err := cs.s.Recv()
			switch {
			case err == nil:
				c.errorf("after CrdtDeleted and the end of the proxy's stream the function sent %v; want the stream to end", out)
			case !errors.Is(err, io.EOF):
				c.errorf("after CrdtDeleted the stream ended with %v, want a clean end", err)
			}
		}},
		check{"crdt/bad-command-fails-only-that-command", func(c *checker) {
			cs := pn(c)
			for _, bad := range []struct {
				what, method string
				req          proto.Message
			}{
				{"an unknown method", "NoSuchMethod", &tckpb.CrdtRequest{Id: cs.id}},
				{"a payload of the wrong type", "Process", &tckpb.SinkRequest{Id: cs.id}},
			} {
				id := cs.command(bad.method, bad.req, false)
				out := cs.recv()
				if f := crdtFailureOf(out); f == nil || f.GetCommandId() != id {
					c.errorf("%s: want a failure of command %d, got %v", bad.what, id, out)
				}
				if sa := out.GetReply().GetStateAction(); sa != nil {
					c.errorf("%s: a failed command carried a state action: %v", bad.what, sa)
				}
			}
			_, v := cs.ok(inc(1))
			c.wantValue("the stream after bad commands", v, &tckpb.CrdtValue{Counter: 6})
		}},
		check{"crdt/init-with-wrong-type-fails-stream", func(c *checker) {
			c.requireEntity(gcounterService, functionpb.Model_MODEL_CRDT)
			cs := c.openCrdt(gcounterService, pnState(1))
			// The function may fail the stream before the command arrives:
			// then Send reports the end of the stream, and Recv the Failure.
			_ = cs.s.Send(&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Command{Command: &functionpb.Command{
				EntityId: cs.id, Id: 1, Name: "Process", Payload: mustAny(&tckpb.CrdtRequest{Id: cs.id}),
			}}})
			out, err := cs.s.Recv()
			if err == nil && out.GetReply().GetClientAction().GetReply() != nil {
				c.errorf("a GCounter entity initialised with a PNCounter state answered a command: %v", out)
			} else if err == nil && out.GetFailure() == nil && out.GetReply().GetClientAction().GetFailure() == nil {
				c.errorf("want a Failure (or the stream to fail), got %v", out)
			}
		}},
	)
	out = append(out, streamedChecks()...)
	return out
}

// crdtFailureOf returns the failure a CRDT stream reported for a command,
// in a reply's client action or as a stream message.
func crdtFailureOf(out *functionpb.CrdtStreamOut) *functionpb.Failure {
	if f := out.GetFailure(); f != nil {
		return f
	}
	return out.GetReply().GetClientAction().GetFailure()
}

// wantCommandFailure checks the failure of command id.
func (c *checker) wantCommandFailure(id int64, desc string, f *functionpb.Failure) {
	if f == nil {
		c.fatalf("command %d: want a failure %q, got none", id, desc)
	}
	if f.GetCommandId() != id && f.GetCommandId() != 0 {
		c.errorf("failure names command %d, want %d", f.GetCommandId(), id)
	}
	if f.GetDescription() != desc {
		c.errorf("failure description %q, want %q", f.GetDescription(), desc)
	}
}

// wantForward checks a forward to TckSink.Call{id}.
func (c *checker) wantForward(a *functionpb.ClientAction, id string) {
	fw := a.GetForward()
	if fw == nil {
		c.fatalf("want a forward, got %v", a)
	}
	if fw.GetServiceName() != sinkService || fw.GetCommandName() != "Call" {
		c.errorf("forward to %s/%s, want %s/Call", fw.GetServiceName(), fw.GetCommandName(), sinkService)
	}
	req := &tckpb.SinkRequest{}
	c.decode(fw.GetPayload(), req)
	if req.GetId() != id {
		c.errorf("forward payload id %q, want %q", req.GetId(), id)
	}
}

// wantSideEffects checks side effects to TckSink.Call, in order.
func (c *checker) wantSideEffects(got []*functionpb.SideEffect, want []*tckpb.SideEffectTo) {
	if len(got) != len(want) {
		c.fatalf("%d side effects, want %d: %v", len(got), len(want), got)
	}
	for i, se := range got {
		if se.GetServiceName() != sinkService || se.GetCommandName() != "Call" {
			c.errorf("side effect %d to %s/%s, want %s/Call", i, se.GetServiceName(), se.GetCommandName(), sinkService)
		}
		req := &tckpb.SinkRequest{}
		c.decode(se.GetPayload(), req)
		if req.GetId() != want[i].GetId() || se.GetSynchronous() != want[i].GetSynchronous() {
			c.errorf("side effect %d: id %q synchronous %v, want id %q synchronous %v", i, req.GetId(), se.GetSynchronous(), want[i].GetId(), want[i].GetSynchronous())
		}
	}
}
