package sdk_test

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/protocol/functionpb"
	"github.com/statemesh/statemesh/sdk"
	"github.com/statemesh/statemesh/sdk/sdktest"
)

// echo answers Say with "echo: <text>"; text "forward" forwards to Say
// instead, with a side effect.
func echo(ctx *sdk.CommandContext, cmd proto.Message) (proto.Message, error) {
	switch fieldText(cmd) {
	case "forward":
		ctx.SideEffect("sdk.test.Doc", "Put", newMsg("d", "x", 0), true)
		ctx.Forward("sdk.test.Echo", "Say", newMsg("", "forwarded", 0))
		return nil, nil
	case "fail":
		return nil, sdk.Fail(codes.PermissionDenied, "no")
	case "empty":
		return nil, nil
	case "wrong type":
		return &functionpb.Failure{}, nil
	}
	return newMsg("", "echo: "+fieldText(cmd), 0), nil
}

func TestAction(t *testing.T) {
	p := sdktest.Start(t, allModels(t))
	call := func(service, name string, payload proto.Message) *functionpb.ActionResponse {
		t.Helper()
		r, err := p.Action.HandleUnary(sdktest.Context(t), &functionpb.ActionCommand{ServiceName: service, Name: name, Payload: anyOf(t, payload)})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := call("sdk.test.Echo", "Say", newMsg("", "hi", 0)); fieldText(decodeMsg(t, r.GetReply().GetPayload())) != "echo: hi" {
		t.Fatalf("Say: %v", r)
	}
	if r := call("sdk.test.Echo", "Say", newMsg("", "empty", 0)); r.GetReply() == nil || fieldText(decodeMsg(t, r.GetReply().GetPayload())) != "" {
		t.Fatalf("nil reply: %v", r)
	}
	r := call("sdk.test.Echo", "Say", newMsg("", "forward", 0))
	if r.GetForward().GetCommandName() != "Say" || fieldText(decodeMsg(t, r.GetForward().GetPayload())) != "forwarded" ||
		len(r.GetSideEffects()) != 1 || !r.GetSideEffects()[0].GetSynchronous() {
		t.Fatalf("forward: %v", r)
	}
	for _, c := range []struct {
		service, name string
		payload       proto.Message
		code          codes.Code
	}{
		{"sdk.test.Echo", "Say", newMsg("", "fail", 0), codes.PermissionDenied},
		{"sdk.test.Echo", "Say", newMsg("", "wrong type", 0), codes.Internal},
		{"sdk.test.Echo", "Stream", newMsg("", "", 0), codes.Unimplemented},
		{"sdk.test.Echo", "Nope", newMsg("", "", 0), codes.NotFound},
		{"sdk.test.Nope", "Say", newMsg("", "", 0), codes.NotFound},
		{"sdk.test.Doc", "Get", newMsg("", "", 0), codes.InvalidArgument},
		{"sdk.test.Echo", "Say", &functionpb.Failure{}, codes.InvalidArgument},
	} {
		wantFailure(t, call(c.service, c.name, c.payload).GetFailure(), 0, c.code)
	}
}
