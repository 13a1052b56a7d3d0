package tck

import (
	"errors"
	"fmt"
	"io"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/statemesh/statemesh/protocol/functionpb"
	"github.com/statemesh/statemesh/protocol/tckpb"
)

// SnapshotEvery is the snapshot interval the event-sourced model must use.
const SnapshotEvery = 5

// ---- event-sourced entities ----

type esStream struct {
	c       *checker
	s       functionpb.EventSourced_HandleClient
	id      string
	nextCmd int64
}

// openES opens a stream for a fresh EventSourcedTck entity: init with snap
// (nil: none), then events numbered from the snapshot's sequence.
func (c *checker) openES(snap *functionpb.EventSourcedSnapshot, events ...string) *esStream {
	c.requireEntity(eventSourcedService, functionpb.Model_MODEL_EVENT_SOURCED)
	s, err := c.s.eventSourced.Handle(c.ctx)
	if err != nil {
		c.fatalf("opening an event-sourced stream: %v", err)
	}
	es := &esStream{c: c, s: s, id: c.entityID()}
	es.send(&functionpb.EventSourcedStreamIn{Message: &functionpb.EventSourcedStreamIn_Init{Init: &functionpb.EventSourcedInit{
		ServiceName: eventSourcedService, EntityId: es.id, Snapshot: snap,
	}}})
	seq := snap.GetSnapshotSequence()
	for _, ev := range events {
		seq++
		es.send(&functionpb.EventSourcedStreamIn{Message: &functionpb.EventSourcedStreamIn_Event{Event: &functionpb.EventSourcedEvent{
			Sequence: seq, Payload: mustAny(&tckpb.Persisted{Value: ev}),
		}}})
	}
	return es
}

func (es *esStream) send(in *functionpb.EventSourcedStreamIn) {
	if err := es.s.Send(in); err != nil {
		es.c.fatalf("sending %v: %v", in, err)
	}
}

// process sends Process(actions) and returns its id and the answer.
func (es *esStream) process(actions ...*tckpb.EventSourcedAction) (int64, *functionpb.EventSourcedStreamOut) {
	es.nextCmd++
	es.send(&functionpb.EventSourcedStreamIn{Message: &functionpb.EventSourcedStreamIn_Command{Command: &functionpb.Command{
		EntityId: es.id, Id: es.nextCmd, Name: "Process", Payload: mustAny(&tckpb.EventSourcedRequest{Id: es.id, Actions: actions}),
	}}})
	out, err := es.s.Recv()
	if err != nil {
		es.c.fatalf("event-sourced %s: waiting for the reply to %d: %v", es.id, es.nextCmd, err)
	}
	return es.nextCmd, out
}

// ok sends Process(actions), checks for a successful reply and returns it
// with the state it reports.
func (es *esStream) ok(actions ...*tckpb.EventSourcedAction) (*functionpb.EventSourcedReply, string) {
	id, out := es.process(actions...)
	r := out.GetReply()
	if r == nil || r.GetCommandId() != id || r.GetClientAction().GetReply() == nil {
		es.c.fatalf("want a successful reply to command %d, got %v", id, out)
	}
	resp := &tckpb.EventSourcedResponse{}
	es.c.decode(r.GetClientAction().GetReply().GetPayload(), resp)
	return r, resp.GetState()
}

func emit(v string) *tckpb.EventSourcedAction {
	return &tckpb.EventSourcedAction{Action: &tckpb.EventSourcedAction_Emit{Emit: v}}
}

func esEffects(e *tckpb.Effects) *tckpb.EventSourcedAction {
	return &tckpb.EventSourcedAction{Action: &tckpb.EventSourcedAction_Effects{Effects: e}}
}

// persisted decodes Persisted payloads.
func (c *checker) persisted(as ...*anypb.Any) []string {
	out := make([]string, 0, len(as))
	for _, a := range as {
		p := &tckpb.Persisted{}
		c.decode(a, p)
		out = append(out, p.GetValue())
	}
	return out
}

func (c *checker) wantEvents(what string, r *functionpb.EventSourcedReply, want ...string) {
	got := c.persisted(r.GetEvents()...)
	if !slices.Equal(got, want) {
		c.errorf("%s: events %q, want %q", what, got, want)
	}
}

func (c *checker) wantSnapshot(what string, r *functionpb.EventSourcedReply, want string) {
	if want == "" {
		if r.GetSnapshot() != nil {
			c.errorf("%s: unexpected snapshot %v", what, r.GetSnapshot())
		}
		return
	}
	if r.GetSnapshot() == nil {
		c.errorf("%s: want a snapshot %q (the sequence crossed a multiple of %d), got none", what, want, SnapshotEvery)
		return
	}
	if got := c.persisted(r.GetSnapshot()); got[0] != want {
		c.errorf("%s: snapshot %q, want %q", what, got[0], want)
	}
}

func eventSourcedChecks() []check {
	return []check{
		{"eventsourced/replay-snapshot-then-events", func(c *checker) {
			es := c.openES(&functionpb.EventSourcedSnapshot{SnapshotSequence: 3, Snapshot: mustAny(&tckpb.Persisted{Value: "abc"})}, "d", "e")
			r, st := es.ok()
			if st != "abcde" {
				c.errorf("after snapshot %q (sequence 3) and events d, e: state %q, want %q", "abc", st, "abcde")
			}
			c.wantEvents("a read", r)
			c.wantSnapshot("a read", r, "")
		}},
		{"eventsourced/replay-events-only", func(c *checker) {
			es := c.openES(nil, "x", "y")
			if _, st := es.ok(); st != "xy" {
				c.errorf("after events x, y: state %q, want %q", st, "xy")
			}
		}},
		{"eventsourced/command-emits-events", func(c *checker) {
			es := c.openES(nil)
			r, st := es.ok(emit("a"), emit("b"))
			if st != "ab" {
				c.errorf("Process[emit a, emit b]: state %q, want %q", st, "ab")
			}
			c.wantEvents("Process[emit a, emit b]", r, "a", "b")
			c.wantSnapshot("Process[emit a, emit b] (sequence 2)", r, "")
			r, st = es.ok()
			if st != "ab" {
				c.errorf("a read after the events: state %q, want %q (the events were not applied)", st, "ab")
			}
			c.wantEvents("a read", r)
		}},
		{"eventsourced/snapshot", func(c *checker) {
			// Sequence 4 after replay; two events cross 5.
			es := c.openES(&functionpb.EventSourcedSnapshot{SnapshotSequence: 3, Snapshot: mustAny(&tckpb.Persisted{Value: "abc"})}, "d")
			r, _ := es.ok(emit("e"), emit("f"))
			c.wantEvents("Process[emit e, emit f] (sequence 4 to 6)", r, "e", "f")
			c.wantSnapshot("Process[emit e, emit f] (sequence 4 to 6)", r, "abcdef")
			r, _ = es.ok(emit("g"))
			c.wantSnapshot("Process[emit g] (sequence 7)", r, "")
			r, _ = es.ok(emit("h"), emit("i"), emit("j"))
			c.wantSnapshot("Process[emit h, i, j] (sequence 10)", r, "abcdefghij")
		}},
		{"eventsourced/failure-persists-nothing", func(c *checker) {
			es := c.openES(nil, "a")
			id, out := es.process(emit("b"), esEffects(&tckpb.Effects{Fail: "nope", SideEffects: []*tckpb.SideEffectTo{{Id: "s"}}}))
			f := out.GetFailure()
			if f == nil {
				f = out.GetReply().GetClientAction().GetFailure()
			}
			c.wantCommandFailure(id, "nope", f)
			if r := out.GetReply(); len(r.GetEvents()) > 0 || r.GetSnapshot() != nil || len(r.GetSideEffects()) > 0 {
				c.errorf("a failed command's reply carries events, a snapshot or side effects: %v", r)
			}
			if _, st := es.ok(); st != "a" {
				c.errorf("after a failed command: state %q, want %q", st, "a")
			}
		}},
		{"eventsourced/bad-command-fails-only-that-command", func(c *checker) {
			es := c.openES(nil, "a")
			es.nextCmd++
			id := es.nextCmd
			es.send(&functionpb.EventSourcedStreamIn{Message: &functionpb.EventSourcedStreamIn_Command{Command: &functionpb.Command{
				EntityId: es.id, Id: id, Name: "NoSuchMethod", Payload: mustAny(&tckpb.EventSourcedRequest{Id: es.id}),
			}}})
			out, err := es.s.Recv()
			if err != nil {
				c.fatalf("an unknown method failed the stream: %v", err)
			}
			f := out.GetFailure()
			if f == nil {
				f = out.GetReply().GetClientAction().GetFailure()
			}
			if f == nil || f.GetCommandId() != id {
				c.errorf("an unknown method: want a failure of command %d, got %v", id, out)
			}
			if len(out.GetReply().GetEvents()) > 0 {
				c.errorf("a failed command carried events: %v", out)
			}
			if _, st := es.ok(emit("b")); st != "ab" {
				c.errorf("the stream after a bad command: state %q, want %q", st, "ab")
			}
		}},
		{"eventsourced/forward", func(c *checker) {
			es := c.openES(nil)
			id, out := es.process(emit("x"), esEffects(&tckpb.Effects{Forward: "f1"}))
			r := out.GetReply()
			if r == nil || r.GetCommandId() != id {
				c.fatalf("want a reply to %d, got %v", id, out)
			}
			c.wantForward(r.GetClientAction(), "f1")
			c.wantEvents("a forwarding command", r, "x")
		}},
		{"eventsourced/side-effects", func(c *checker) {
			es := c.openES(nil)
			want := []*tckpb.SideEffectTo{{Id: "s1"}, {Id: "s2", Synchronous: true}}
			r, _ := es.ok(emit("x"), esEffects(&tckpb.Effects{SideEffects: want}))
			c.wantSideEffects(r.GetSideEffects(), want)
			c.wantEvents("a command with side effects", r, "x")
		}},
	}
}

// ---- value entities ----

type valueStream struct {
	c       *checker
	s       functionpb.ValueEntity_HandleClient
	id      string
	nextCmd int64
}

func (c *checker) openValue(state string) *valueStream {
	c.requireEntity(valueService, functionpb.Model_MODEL_VALUE)
	s, err := c.s.value.Handle(c.ctx)
	if err != nil {
		c.fatalf("opening a value entity stream: %v", err)
	}
	vs := &valueStream{c: c, s: s, id: c.entityID()}
	init := &functionpb.ValueEntityInit{ServiceName: valueService, EntityId: vs.id}
	if state != "" {
		init.State = mustAny(&tckpb.Persisted{Value: state})
	}
	vs.send(&functionpb.ValueEntityStreamIn{Message: &functionpb.ValueEntityStreamIn_Init{Init: init}})
	return vs
}

func (vs *valueStream) send(in *functionpb.ValueEntityStreamIn) {
	if err := vs.s.Send(in); err != nil {
		vs.c.fatalf("sending %v: %v", in, err)
	}
}

func (vs *valueStream) process(actions ...*tckpb.ValueAction) (int64, *functionpb.ValueEntityStreamOut) {
	vs.nextCmd++
	vs.send(&functionpb.ValueEntityStreamIn{Message: &functionpb.ValueEntityStreamIn_Command{Command: &functionpb.Command{
		EntityId: vs.id, Id: vs.nextCmd, Name: "Process", Payload: mustAny(&tckpb.ValueRequest{Id: vs.id, Actions: actions}),
	}}})
	out, err := vs.s.Recv()
	if err != nil {
		vs.c.fatalf("value entity %s: waiting for the reply to %d: %v", vs.id, vs.nextCmd, err)
	}
	return vs.nextCmd, out
}

func (vs *valueStream) ok(actions ...*tckpb.ValueAction) (*functionpb.ValueEntityReply, string) {
	id, out := vs.process(actions...)
	r := out.GetReply()
	if r == nil || r.GetCommandId() != id || r.GetClientAction().GetReply() == nil {
		vs.c.fatalf("want a successful reply to command %d, got %v", id, out)
	}
	resp := &tckpb.ValueResponse{}
	vs.c.decode(r.GetClientAction().GetReply().GetPayload(), resp)
	return r, resp.GetState()
}

func update(v string) *tckpb.ValueAction {
	return &tckpb.ValueAction{Action: &tckpb.ValueAction_Update{Update: v}}
}

func valueDelete() *tckpb.ValueAction {
	return &tckpb.ValueAction{Action: &tckpb.ValueAction_Delete{Delete: true}}
}

func valueEffects(e *tckpb.Effects) *tckpb.ValueAction {
	return &tckpb.ValueAction{Action: &tckpb.ValueAction_Effects{Effects: e}}
}

func valueChecks() []check {
	return []check{
		{"value/init-state", func(c *checker) {
			vs := c.openValue("abc")
			r, st := vs.ok()
			if st != "abc" {
				c.errorf("after init with %q: state %q", "abc", st)
			}
			if r.GetStateAction() != nil {
				c.errorf("a read carried a state action: %v", r.GetStateAction())
			}
		}},
		{"value/update", func(c *checker) {
			vs := c.openValue("")
			if _, st := vs.ok(); st != "" {
				c.errorf("an entity without state reports %q", st)
			}
			r, st := vs.ok(update("x"), update("y"))
			if st != "y" {
				c.errorf("Process[update x, update y]: state %q, want %q", st, "y")
			}
			if u := r.GetStateAction().GetUpdate(); u == nil {
				c.errorf("Process[update x, update y]: want an update state action, got %v", r.GetStateAction())
			} else if got := c.persisted(u); got[0] != "y" {
				c.errorf("Process[update x, update y]: update to %q, want %q", got[0], "y")
			}
			r, st = vs.ok()
			if st != "y" || r.GetStateAction() != nil {
				c.errorf("a read after the update: state %q, state action %v; want %q and none", st, r.GetStateAction(), "y")
			}
		}},
		{"value/delete", func(c *checker) {
			vs := c.openValue("abc")
			r, st := vs.ok(valueDelete())
			if r.GetStateAction().GetDelete() == nil {
				c.errorf("Process[delete]: want a delete state action, got %v", r.GetStateAction())
			}
			if st != "" {
				c.errorf("Process[delete]: state %q, want none", st)
			}
			if _, st := vs.ok(); st != "" {
				c.errorf("a read after delete: state %q, want none", st)
			}
		}},
		{"value/failure-persists-nothing", func(c *checker) {
			vs := c.openValue("abc")
			id, out := vs.process(update("x"), valueEffects(&tckpb.Effects{Fail: "no"}))
			f := out.GetFailure()
			if f == nil {
				f = out.GetReply().GetClientAction().GetFailure()
			}
			c.wantCommandFailure(id, "no", f)
			if sa := out.GetReply().GetStateAction(); sa != nil {
				c.errorf("a failed command carried a state action: %v", sa)
			}
			if _, st := vs.ok(); st != "abc" {
				c.errorf("after a failed update: state %q, want %q", st, "abc")
			}
		}},
		{"value/forward-and-side-effects", func(c *checker) {
			vs := c.openValue("")
			want := []*tckpb.SideEffectTo{{Id: "s1", Synchronous: true}}
			id, out := vs.process(update("x"), valueEffects(&tckpb.Effects{Forward: "f1", SideEffects: want}))
			r := out.GetReply()
			if r == nil || r.GetCommandId() != id {
				c.fatalf("want a reply to %d, got %v", id, out)
			}
			c.wantForward(r.GetClientAction(), "f1")
			c.wantSideEffects(r.GetSideEffects(), want)
			if r.GetStateAction().GetUpdate() == nil {
				c.errorf("a forwarding command's update was lost: %v", r.GetStateAction())
			}
		}},
	}
}

// ---- actions ----

func (c *checker) unary(service, method string, req proto.Message) *functionpb.ActionResponse {
	resp, err := c.s.action.HandleUnary(c.ctx, &functionpb.ActionCommand{ServiceName: service, Name: method, Payload: mustAny(req)})
	if err != nil {
		c.fatalf("HandleUnary %s/%s: %v", service, method, err)
	}
	return resp
}

func actionChecks() []check {
	require := func(c *checker) { c.requireEntity(actionService, functionpb.Model_MODEL_ACTION) }
	return []check{
		{"action/unary-reply", func(c *checker) {
			require(c)
			resp := c.unary(actionService, "Process", &tckpb.ActionRequest{Message: "hello"})
			if resp.GetReply() == nil {
				c.fatalf("want a reply, got %v", resp)
			}
			got := &tckpb.ActionResponse{}
			c.decode(resp.GetReply().GetPayload(), got)
			if got.GetMessage() != "hello" {
				c.errorf("reply %q, want %q", got.GetMessage(), "hello")
			}
		}},
		{"action/failure", func(c *checker) {
			require(c)
			resp := c.unary(actionService, "Process", &tckpb.ActionRequest{Message: "m", Effects: &tckpb.Effects{Fail: "bad", SideEffects: []*tckpb.SideEffectTo{{Id: "s"}}}})
			if f := resp.GetFailure(); f == nil || f.GetDescription() != "bad" {
				c.errorf("want a failure %q, got %v", "bad", resp)
			}
			if len(resp.GetSideEffects()) > 0 {
				c.errorf("a failed action carried side effects: %v", resp.GetSideEffects())
			}
		}},
		{"action/forward", func(c *checker) {
			require(c)
			resp := c.unary(actionService, "Process", &tckpb.ActionRequest{Effects: &tckpb.Effects{Forward: "f1"}})
			fw := resp.GetForward()
			if fw == nil {
				c.fatalf("want a forward, got %v", resp)
			}
			c.wantForward(&functionpb.ClientAction{Action: &functionpb.ClientAction_Forward{Forward: fw}}, "f1")
		}},
		{"action/side-effects", func(c *checker) {
			require(c)
			want := []*tckpb.SideEffectTo{{Id: "s1"}, {Id: "s2", Synchronous: true}}
			resp := c.unary(actionService, "Process", &tckpb.ActionRequest{Message: "m", Effects: &tckpb.Effects{SideEffects: want}})
			if resp.GetReply() == nil {
				c.errorf("want a reply, got %v", resp)
			}
			c.wantSideEffects(resp.GetSideEffects(), want)
		}},
		{"action/sink", func(c *checker) {
			c.requireEntity(sinkService, functionpb.Model_MODEL_ACTION)
			resp := c.unary(sinkService, "Call", &tckpb.SinkRequest{Id: "k"})
			got := &tckpb.SinkResponse{}
			if resp.GetReply() == nil {
				c.fatalf("want a reply, got %v", resp)
			}
			c.decode(resp.GetReply().GetPayload(), got)
			if got.GetId() != "k" {
				c.errorf("TckSink.Call{id k} answered %q", got.GetId())
			}
		}},
		{"action/streamed-out", func(c *checker) {
			c.optionalEntity(streamedAction, functionpb.Model_MODEL_ACTION)
			s, err := c.s.action.HandleStreamedOut(c.ctx, &functionpb.ActionCommand{
				ServiceName: streamedAction, Name: "ProcessStreamedOut", Payload: mustAny(&tckpb.ActionRequest{Message: "m", Count: 3}),
			})
			if err != nil {
				c.fatalf("HandleStreamedOut: %v", err)
			}
			for i := 0; ; i++ {
				resp, err := s.Recv()
				if errors.Is(err, io.EOF) {
					if i != 3 {
						c.errorf("%d messages, want 3", i)
					}
					return
				}
				if err != nil {
					c.fatalf("HandleStreamedOut: message %d: %v", i, err)
				}
				got := &tckpb.ActionResponse{}
				if resp.GetReply() == nil {
					c.fatalf("message %d: want a reply, got %v", i, resp)
				}
				c.decode(resp.GetReply().GetPayload(), got)
				if want := fmt.Sprintf("m-%d", i); got.GetMessage() != want {
					c.errorf("message %d: %q, want %q", i, got.GetMessage(), want)
				}
			}
		}},
		{"action/streamed-in", func(c *checker) {
			c.optionalEntity(streamedInAction, functionpb.Model_MODEL_ACTION)
			effects := []*tckpb.SideEffectTo{{Id: "s1", Synchronous: true}}
			resp := c.streamedIn(&tckpb.ActionRequest{Message: "a", Effects: &tckpb.Effects{SideEffects: effects}},
				&tckpb.ActionRequest{Message: "b"}, &tckpb.ActionRequest{Message: "c"})
			if resp.GetReply() == nil {
				c.fatalf("want a reply, got %v", resp)
			}
			got := &tckpb.ActionResponse{}
			c.decode(resp.GetReply().GetPayload(), got)
			if got.GetMessage() != "a,b,c" {
				c.errorf("reply %q, want %q", got.GetMessage(), "a,b,c")
			}
			c.wantSideEffects(resp.GetSideEffects(), effects)
		}},
		{"action/streamed-in-failure", func(c *checker) {
			c.optionalEntity(streamedInAction, functionpb.Model_MODEL_ACTION)
			resp := c.streamedIn(&tckpb.ActionRequest{Message: "a", Effects: &tckpb.Effects{SideEffects: []*tckpb.SideEffectTo{{Id: "s"}}}},
				&tckpb.ActionRequest{Effects: &tckpb.Effects{Fail: "bad"}}, &tckpb.ActionRequest{Message: "c"})
			if f := resp.GetFailure(); f == nil || f.GetDescription() != "bad" {
				c.errorf("want a failure %q, got %v", "bad", resp)
			}
			if len(resp.GetSideEffects()) > 0 {
				c.errorf("a failed action carried side effects: %v", resp.GetSideEffects())
			}
		}},
		{"action/streamed", func(c *checker) {
			c.optionalEntity(bidiAction, functionpb.Model_MODEL_ACTION)
			s := c.bidi()
			c.bidiSend(s, &tckpb.ActionRequest{Message: "a"})
			c.wantBidiReply(s, "a")
			effects := []*tckpb.SideEffectTo{{Id: "s2", Synchronous: true}}
			c.bidiSend(s, &tckpb.ActionRequest{Message: "b", Effects: &tckpb.Effects{SideEffects: effects}})
			c.wantSideEffects(c.wantBidiReply(s, "b").GetSideEffects(), effects)
			c.bidiSend(s, &tckpb.ActionRequest{Effects: &tckpb.Effects{Forward: "f2"}})
			resp := c.bidiRecv(s)
			if resp.GetForward() == nil {
				c.fatalf("want a forward, got %v", resp)
			}
			c.wantForward(&functionpb.ClientAction{Action: &functionpb.ClientAction_Forward{Forward: resp.GetForward()}}, "f2")
			if err := s.CloseSend(); err != nil {
				c.fatalf("CloseSend: %v", err)
			}
			c.wantBidiEnd(s)
		}},
		{"action/streamed-failure", func(c *checker) {
			c.optionalEntity(bidiAction, functionpb.Model_MODEL_ACTION)
			s := c.bidi()
			c.bidiSend(s, &tckpb.ActionRequest{Message: "a"})
			c.wantBidiReply(s, "a")
			c.bidiSend(s, &tckpb.ActionRequest{Effects: &tckpb.Effects{Fail: "bad"}})
			if f := c.bidiRecv(s).GetFailure(); f == nil || f.GetDescription() != "bad" {
				c.errorf("want a failure %q, got %v", "bad", f)
			}
			c.wantBidiEnd(s)
		}},
	}
}

// streamedIn calls StreamedInActionTck.ProcessStreamedIn with reqs and
// returns its response. Sending may stop early: the function may answer
// before the last request.
func (c *checker) streamedIn(reqs ...*tckpb.ActionRequest) *functionpb.ActionResponse {
	s, err := c.s.action.HandleStreamedIn(c.ctx)
	if err != nil {
		c.fatalf("HandleStreamedIn: %v", err)
	}
	if err := s.Send(&functionpb.ActionCommand{ServiceName: streamedInAction, Name: "ProcessStreamedIn"}); err != nil {
		c.fatalf("HandleStreamedIn: sending the first message: %v", err)
	}
	for _, r := range reqs {
		if err := s.Send(&functionpb.ActionCommand{Payload: mustAny(r)}); err != nil {
			break // the function answered: CloseAndRecv has it
		}
	}
	resp, err := s.CloseAndRecv()
	if err != nil {
		c.fatalf("HandleStreamedIn: %v", err)
	}
	return resp
}

type bidiStream = grpc.BidiStreamingClient[functionpb.ActionCommand, functionpb.ActionResponse]

// bidi opens a BidiActionTck.ProcessStreamed call.
func (c *checker) bidi() bidiStream {
	s, err := c.s.action.HandleStreamed(c.ctx)
	if err != nil {
		c.fatalf("HandleStreamed: %v", err)
	}
	if err := s.Send(&functionpb.ActionCommand{ServiceName: bidiAction, Name: "ProcessStreamed"}); err != nil {
		c.fatalf("HandleStreamed: sending the first message: %v", err)
	}
	return s
}

func (c *checker) bidiSend(s bidiStream, r *tckpb.ActionRequest) {
	if err := s.Send(&functionpb.ActionCommand{Payload: mustAny(r)}); err != nil {
		c.fatalf("HandleStreamed: sending %v: %v", r, err)
	}
}

func (c *checker) bidiRecv(s bidiStream) *functionpb.ActionResponse {
	resp, err := s.Recv()
	if err != nil {
		c.fatalf("HandleStreamed: %v", err)
	}
	return resp
}

// wantBidiReply receives a reply with message msg.
func (c *checker) wantBidiReply(s bidiStream, msg string) *functionpb.ActionResponse {
	resp := c.bidiRecv(s)
	if resp.GetReply() == nil {
		c.fatalf("want a reply %q, got %v", msg, resp)
	}
	got := &tckpb.ActionResponse{}
	c.decode(resp.GetReply().GetPayload(), got)
	if got.GetMessage() != msg {
		c.fatalf("reply %q, want %q", got.GetMessage(), msg)
	}
	return resp
}

func (c *checker) wantBidiEnd(s bidiStream) {
	if resp, err := s.Recv(); !errors.Is(err, io.EOF) {
		c.errorf("HandleStreamed: got %v, %v; want the end of the stream", resp, err)
	}
}
