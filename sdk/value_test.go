package sdk_test

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/protocol/functionpb"
	"github.com/statemesh/statemesh/sdk"
	"github.com/statemesh/statemesh/sdk/sdktest"
)

// doc is a value entity holding a Msg: Put replaces it, Get reads it,
// Delete deletes it.
func doc(ctx *sdk.ValueContext, state, cmd proto.Message) (proto.Message, error) {
	switch ctx.CommandName() {
	case "Put":
		if fieldText(cmd) == "" {
			return nil, sdk.Fail(codes.InvalidArgument, "empty text")
		}
		ctx.UpdateState(newMsg("", fieldText(cmd), 0))
		return newMsg(ctx.EntityID(), fieldText(cmd), 0), nil
	case "Get":
		if state == nil {
			return newMsg(ctx.EntityID(), "", 0), nil
		}
		return newMsg(ctx.EntityID(), fieldText(state), 0), nil
	case "Delete":
		ctx.DeleteState()
		return newMsg(ctx.EntityID(), "", 0), nil
	}
	return nil, sdk.Fail(codes.Unimplemented, "no %s", ctx.CommandName())
}

func TestValueEntity(t *testing.T) {
	p := sdktest.Start(t, allModels(t))
	s, err := p.Value.Handle(sdktest.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	cmd := func(id int64, name, text string) *functionpb.ValueEntityReply {
		t.Helper()
		if err := s.Send(&functionpb.ValueEntityStreamIn{Message: &functionpb.ValueEntityStreamIn_Command{Command: sdktest.Command(t, id, "d1", name, newMsg("d1", text, 0))}}); err != nil {
			t.Fatal(err)
		}
		out, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if out.GetReply().GetCommandId() != id {
			t.Fatalf("want a reply to %d, got %v", id, out)
		}
		return out.GetReply()
	}
	text := func(r *functionpb.ValueEntityReply) string {
		t.Helper()
		return fieldText(decodeMsg(t, r.GetClientAction().GetReply().GetPayload()))
	}

	if err := s.Send(&functionpb.ValueEntityStreamIn{Message: &functionpb.ValueEntityStreamIn_Init{Init: &functionpb.ValueEntityInit{
		ServiceName: "sdk.test.Doc", EntityId: "d1", State: anyOf(t, newMsg("", "hello", 0)),
	}}}); err != nil {
		t.Fatal(err)
	}
	if r := cmd(1, "Get", ""); text(r) != "hello" || r.GetStateAction() != nil {
		t.Fatalf("Get after init: %v", r)
	}
	r := cmd(2, "Put", "world")
	if text(r) != "world" || fieldText(decodeMsg(t, r.GetStateAction().GetUpdate())) != "world" {
		t.Fatalf("Put: %v", r)
	}
	if r := cmd(3, "Put", ""); r.GetStateAction() != nil {
		t.Fatalf("failed Put changed state: %v", r)
	} else {
		wantFailure(t, r.GetClientAction().GetFailure(), 3, codes.InvalidArgument)
	}
	if r := cmd(4, "Get", ""); text(r) != "world" {
		t.Fatalf("Get after Put: %v", r)
	}
	if r := cmd(5, "Delete", ""); r.GetStateAction().GetDelete() == nil {
		t.Fatalf("Delete: %v", r)
	}
	if r := cmd(6, "Get", ""); text(r) != "" {
		t.Fatalf("Get after Delete: %v", r)
	}
}
