package tck

import (
	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/protocol/functionpb"
	"github.com/statemesh/statemesh/protocol/tckpb"
)

// streamed sends ProcessStreamed and checks its first reply: the current
// state, with the stream kept open when streamed is set.
func (cs *crdtStream) streamed(end *tckpb.CrdtValue, streamed bool, want *tckpb.CrdtValue) int64 {
	c := cs.c
	id := cs.command("ProcessStreamed", &tckpb.CrdtStreamedRequest{Id: cs.id, EndState: end}, streamed)
	r, v := cs.reply(id, cs.recv())
	c.wantValue("ProcessStreamed's first reply", v, want)
	if r.GetStreamed() != streamed {
		c.errorf("ProcessStreamed (Command.streamed %v): reply.streamed = %v, want %v", streamed, r.GetStreamed(), streamed)
	}
	if r.GetStateAction() != nil {
		c.errorf("ProcessStreamed changed nothing but carried a state action: %v", r.GetStateAction())
	}
	return id
}

// wantStreamed checks a streamed message for command id.
func (c *checker) wantStreamed(out *functionpb.CrdtStreamOut, id int64, want *tckpb.CrdtValue, end bool) {
	sm := out.GetStreamedMessage()
	if sm == nil || sm.GetCommandId() != id {
		c.fatalf("want a streamed message for command %d, got %v", id, out)
	}
	if sm.GetClientAction().GetReply() == nil {
		c.fatalf("streamed message for %d: want a reply, got %v", id, sm.GetClientAction())
	}
	resp := &tckpb.CrdtResponse{}
	c.decode(sm.GetClientAction().GetReply().GetPayload(), resp)
	c.wantValue("streamed message", resp.GetState(), want)
	if sm.GetEndStream() != end {
		c.errorf("streamed message %v: end_stream %v, want %v", resp.GetState(), sm.GetEndStream(), end)
	}
}

// quiet checks that the function sent nothing since the last message: the
// next message must be the reply to a fresh read, with the given state.
func (cs *crdtStream) quiet(what string, want *tckpb.CrdtValue) {
	id, out := cs.process()
	if out.GetReply() == nil || out.GetReply().GetCommandId() != id {
		cs.c.fatalf("%s: the function sent %v; want nothing (the next message must be the reply to command %d)", what, out, id)
	}
	_, v := cs.reply(id, out)
	cs.c.wantValue(what, v, want)
}

func streamedChecks() []check {
	open := func(c *checker) *crdtStream {
		c.requireEntity(pncounterService, functionpb.Model_MODEL_CRDT)
		return c.openCrdt(pncounterService, nil)
	}
	counter := func(n int64) *tckpb.CrdtValue { return &tckpb.CrdtValue{Counter: n} }
	return []check{
		{"crdt/streamed/changes-from-other-replicas", func(c *checker) {
			cs := open(c)
			id := cs.streamed(counter(5), true, counter(0))
			cs.changed(pnDelta(2))
			c.wantStreamed(cs.recv(), id, counter(2), false)
			cs.changed(pnDelta(3))
			c.wantStreamed(cs.recv(), id, counter(5), true)
			cs.changed(pnDelta(1))
			cs.quiet("a change after the streamed command ended", counter(6))
		}},
		{"crdt/streamed/own-commands-changes", func(c *checker) {
			cs := open(c)
			sid := cs.streamed(nil, true, counter(0))
			id, first := cs.process(inc(4))
			second := cs.recv()
			if first.GetStreamedMessage() != nil {
				first, second = second, first
			}
			r, v := cs.reply(id, first)
			c.wantValue("Process[increment 4]", v, counter(4))
			if !proto.Equal(r.GetStateAction().GetUpdate(), pnDelta(4)) {
				c.errorf("Process[increment 4]: state action %v, want delta +4", r.GetStateAction())
			}
			c.wantStreamed(second, sid, counter(4), false)
		}},
		{"crdt/streamed/cancelled", func(c *checker) {
			cs := open(c)
			id := cs.streamed(nil, true, counter(0))
			cs.send(&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_StreamCancelled{StreamCancelled: &functionpb.StreamCancelled{EntityId: cs.id, Id: id}}})
			out := cs.recv()
			if r := out.GetStreamCancelledResponse(); r == nil || r.GetCommandId() != id {
				c.fatalf("StreamCancelled{id %d}: want a StreamCancelledResponse for %d, got %v", id, id, out)
			}
			cs.changed(pnDelta(7))
			cs.quiet("a change after the streamed command was cancelled", counter(7))
		}},
		{"crdt/streamed/unstreamed-call-ends", func(c *checker) {
			cs := open(c)
			cs.streamed(nil, false, counter(0))
			cs.changed(pnDelta(1))
			cs.quiet("a change after a call of a streaming method without Command.streamed", counter(1))
		}},
	}
}
