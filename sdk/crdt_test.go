package sdk_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/protocol/functionpb"
	"github.com/statemesh/statemesh/sdk"
	"github.com/statemesh/statemesh/sdk/sdktest"
)

// votes is a PNCounter: Inc adds n with the consistency named by text
// ("fail" increments, then fails).
type votes struct{ c *sdk.PNCounter }

func (v *votes) CRDT() sdk.Crdt { return v.c }

func (v *votes) HandleCommand(ctx *sdk.CrdtContext, cmd proto.Message) (proto.Message, error) {
	if ctx.CommandName() == "Inc" {
		v.c.Increment(fieldN(cmd))
		if fieldText(cmd) == "fail" {
			return nil, sdk.Fail(codes.ResourceExhausted, "too many")
		}
		if wc, ok := functionpb.WriteConsistency_value["WRITE_CONSISTENCY_"+fieldText(cmd)]; ok {
			ctx.SetWriteConsistency(functionpb.WriteConsistency(wc))
		}
	}
	return newMsg(ctx.EntityID(), "", v.c.Value()), nil
}

// tags is an ORSet of strings; Watch streams the elements after every
// change until the set holds "end".
type tags struct{ s *sdk.ORSet }

func (g *tags) CRDT() sdk.Crdt { return g.s }

func (g *tags) elements() proto.Message {
	var es []string
	for _, e := range g.s.Elements() {
		es = append(es, string(e))
	}
	return newMsg("", strings.Join(es, ","), int64(g.s.Len()))
}

func (g *tags) HandleCommand(ctx *sdk.CrdtContext, cmd proto.Message) (proto.Message, error) {
	switch ctx.CommandName() {
	case "Add":
		g.s.Add([]byte(fieldText(cmd)))
	case "Remove":
		g.s.Remove([]byte(fieldText(cmd)))
	case "Watch":
		ctx.OnChange(func() (proto.Message, bool, error) {
			return g.elements(), g.s.Contains([]byte("end")), nil
		})
	}
	return g.elements(), nil
}

type crdtStream struct {
	t *testing.T
	s functionpb.Crdt_HandleClient
}

func openCrdt(t *testing.T, init *functionpb.CrdtInit) *crdtStream {
	t.Helper()
	p := sdktest.Start(t, allModels(t))
	s, err := p.Crdt.Handle(sdktest.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	c := &crdtStream{t, s}
	if init != nil {
		c.send(&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Init{Init: init}})
	}
	return c
}

func (c *crdtStream) send(in *functionpb.CrdtStreamIn) {
	c.t.Helper()
	if err := c.s.Send(in); err != nil {
		c.t.Fatal(err)
	}
}

func (c *crdtStream) recv() *functionpb.CrdtStreamOut {
	c.t.Helper()
	out, err := c.s.Recv()
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

func (c *crdtStream) changed(d *functionpb.CrdtDelta) {
	c.t.Helper()
	c.send(&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Changed{Changed: d}})
}

func (c *crdtStream) command(cmd *functionpb.Command) *functionpb.CrdtStreamOut {
	c.t.Helper()
	c.send(&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Command{Command: cmd}})
	return c.recv()
}

// reply checks a successful reply and returns its payload.
func (c *crdtStream) reply(out *functionpb.CrdtStreamOut, id int64) (*functionpb.CrdtReply, proto.Message) {
	c.t.Helper()
	r := out.GetReply()
	if r.GetCommandId() != id || r.GetClientAction().GetReply() == nil {
		c.t.Fatalf("want a reply to %d, got %v", id, out)
	}
	return r, decodeMsg(c.t, r.GetClientAction().GetReply().GetPayload())
}

func TestCrdtPNCounter(t *testing.T) {
	c := openCrdt(t, &functionpb.CrdtInit{ServiceName: "sdk.test.Votes", EntityId: "v1", State: &functionpb.CrdtState{
		State: &functionpb.CrdtState_Pncounter{Pncounter: &functionpb.PNCounterState{Value: 5}},
	}})
	c.changed(&functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Pncounter{Pncounter: &functionpb.PNCounterDelta{Change: 2}}})
	if r, m := c.reply(c.command(sdktest.Command(t, 1, "v1", "Get", newMsg("v1", "", 0))), 1); fieldN(m) != 7 || r.GetStateAction() != nil {
		t.Fatalf("Get after init 5 and change +2: %v", r)
	}

	r, m := c.reply(c.command(sdktest.Command(t, 2, "v1", "Inc", newMsg("v1", "MAJORITY", 3))), 2)
	sa := r.GetStateAction()
	if fieldN(m) != 10 || sa.GetUpdate().GetPncounter().GetChange() != 3 ||
		sa.GetWriteConsistency() != functionpb.WriteConsistency_WRITE_CONSISTENCY_MAJORITY {
		t.Fatalf("Inc 3 MAJORITY: value %d, state action %v", fieldN(m), sa)
	}

	// A failed command's mutations are discarded.
	out := c.command(sdktest.Command(t, 3, "v1", "Inc", newMsg("v1", "fail", 100)))
	if out.GetReply().GetStateAction() != nil {
		t.Fatalf("failed command has a state action: %v", out)
	}
	wantFailure(t, out.GetReply().GetClientAction().GetFailure(), 3, codes.ResourceExhausted)

	// Bad input fails the command; the entity goes on.
	wantFailure(t, c.command(sdktest.Command(t, 4, "v1", "Nope", newMsg("v1", "", 0))).GetFailure(), 4, codes.NotFound)
	wantFailure(t, c.command(&functionpb.Command{Id: 5, Name: "Inc", Payload: anyOf(t, &functionpb.Failure{})}).GetFailure(), 5, codes.InvalidArgument)

	if _, m := c.reply(c.command(sdktest.Command(t, 6, "v1", "Get", newMsg("v1", "", 0))), 6); fieldN(m) != 10 {
		t.Fatalf("Get: %d, want 10", fieldN(m))
	}
}

func TestCrdtCommandBeforeInit(t *testing.T) {
	c := openCrdt(t, nil)
	wantFailure(t, c.command(sdktest.Command(t, 1, "v1", "Get", newMsg("v1", "", 0))).GetFailure(), 1, codes.FailedPrecondition)
	c.send(&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Init{Init: &functionpb.CrdtInit{ServiceName: "sdk.test.Votes", EntityId: "v1"}}})
	if _, m := c.reply(c.command(sdktest.Command(t, 2, "v1", "Inc", newMsg("v1", "", 1))), 2); fieldN(m) != 1 {
		t.Fatalf("Inc from no state: %d", fieldN(m))
	}
}

func TestCrdtFatal(t *testing.T) {
	orset := &functionpb.CrdtState{State: &functionpb.CrdtState_Orset{Orset: &functionpb.ORSetState{}}}
	for name, msgs := range map[string][]*functionpb.CrdtStreamIn{
		"wrong state type": {{Message: &functionpb.CrdtStreamIn_Init{Init: &functionpb.CrdtInit{ServiceName: "sdk.test.Votes", State: orset}}}},
		"wrong delta type": {
			{Message: &functionpb.CrdtStreamIn_Init{Init: &functionpb.CrdtInit{ServiceName: "sdk.test.Votes"}}},
			{Message: &functionpb.CrdtStreamIn_Changed{Changed: &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Flag{Flag: &functionpb.FlagDelta{}}}}},
		},
		"change before init": {{Message: &functionpb.CrdtStreamIn_Changed{Changed: &functionpb.CrdtDelta{}}}},
		"unknown service":    {{Message: &functionpb.CrdtStreamIn_Init{Init: &functionpb.CrdtInit{ServiceName: "sdk.test.Ledger"}}}},
		"empty message":      {{}},
	} {
		t.Run(name, func(t *testing.T) {
			c := openCrdt(t, nil)
			for _, m := range msgs {
				c.send(m)
			}
			wantStreamFailure(t, func() (*functionpb.Failure, error) {
				out, err := c.s.Recv()
				return out.GetFailure(), err
			})
		})
	}
}

func TestCrdtORSet(t *testing.T) {
	c := openCrdt(t, &functionpb.CrdtInit{ServiceName: "sdk.test.Tags", EntityId: "t1", State: &functionpb.CrdtState{
		State: &functionpb.CrdtState_Orset{Orset: &functionpb.ORSetState{Items: [][]byte{[]byte("x")}}},
	}})
	r, m := c.reply(c.command(sdktest.Command(t, 1, "t1", "Add", newMsg("t1", "a", 0))), 1)
	if d := r.GetStateAction().GetUpdate().GetOrset(); fieldText(m) != "a,x" || len(d.GetAdded()) != 1 || string(d.GetAdded()[0]) != "a" || len(d.GetRemoved()) != 0 || d.GetCleared() {
		t.Fatalf("Add a: %q, delta %v", fieldText(m), d)
	}
	// Adding a present element changes nothing.
	if r, _ := c.reply(c.command(sdktest.Command(t, 2, "t1", "Add", newMsg("t1", "x", 0))), 2); r.GetStateAction() != nil {
		t.Fatalf("Add x again: %v", r.GetStateAction())
	}
	r, m = c.reply(c.command(sdktest.Command(t, 3, "t1", "Remove", newMsg("t1", "x", 0))), 3)
	if d := r.GetStateAction().GetUpdate().GetOrset(); fieldText(m) != "a" || len(d.GetRemoved()) != 1 || string(d.GetRemoved()[0]) != "x" || len(d.GetAdded()) != 0 {
		t.Fatalf("Remove x: %q, delta %v", fieldText(m), d)
	}

	// A streamed command stays open and gets the changes.
	r, m = c.reply(c.command(&functionpb.Command{Id: 4, Name: "Watch", Payload: anyOf(t, newMsg("t1", "", 0)), Streamed: true}), 4)
	if !r.GetStreamed() || fieldText(m) != "a" {
		t.Fatalf("Watch: %v", r)
	}
	c.changed(&functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Orset{Orset: &functionpb.ORSetDelta{Added: [][]byte{[]byte("c")}}}})
	sm := c.recv().GetStreamedMessage()
	if sm.GetCommandId() != 4 || sm.GetEndStream() || fieldText(decodeMsg(t, sm.GetClientAction().GetReply().GetPayload())) != "a,c" {
		t.Fatalf("after change: %v", sm)
	}
	// A command's change reaches the watcher after the command's reply.
	c.reply(c.command(sdktest.Command(t, 5, "t1", "Add", newMsg("t1", "end", 0))), 5)
	sm = c.recv().GetStreamedMessage()
	if sm.GetCommandId() != 4 || !sm.GetEndStream() || fieldText(decodeMsg(t, sm.GetClientAction().GetReply().GetPayload())) != "a,c,end" {
		t.Fatalf("after Add end: %v", sm)
	}
	// The stream ended: later changes produce nothing; the next message is
	// the reply to the next command.
	c.changed(&functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Orset{Orset: &functionpb.ORSetDelta{Cleared: true}}})
	if _, m := c.reply(c.command(sdktest.Command(t, 6, "t1", "Add", newMsg("t1", "z", 0))), 6); fieldText(m) != "z" {
		t.Fatalf("after clear: %q", fieldText(m))
	}

	// Cancelling a streamed command is acknowledged.
	c.reply(c.command(&functionpb.Command{Id: 7, Name: "Watch", Payload: anyOf(t, newMsg("t1", "", 0)), Streamed: true}), 7)
	c.send(&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_StreamCancelled{StreamCancelled: &functionpb.StreamCancelled{EntityId: "t1", Id: 7}}})
	if got := c.recv().GetStreamCancelledResponse(); got.GetCommandId() != 7 {
		t.Fatalf("cancel: %v", got)
	}
	c.changed(&functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Orset{Orset: &functionpb.ORSetDelta{Added: [][]byte{[]byte("y")}}}})
	if _, m := c.reply(c.command(sdktest.Command(t, 8, "t1", "Add", newMsg("t1", "w", 0))), 8); fieldText(m) != "w,y,z" {
		t.Fatalf("after cancel: %q", fieldText(m))
	}
}
