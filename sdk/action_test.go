package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"io"
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
		{"sdk.test.Echo", "Stream", newMsg("", "", 0), codes.InvalidArgument}, // server streaming: HandleStreamedOut
		{"sdk.test.Echo", "Nope", newMsg("", "", 0), codes.NotFound},
		{"sdk.test.Nope", "Say", newMsg("", "", 0), codes.NotFound},
		{"sdk.test.Doc", "Get", newMsg("", "", 0), codes.InvalidArgument},
		{"sdk.test.Echo", "Say", &functionpb.Failure{}, codes.InvalidArgument},
	} {
		wantFailure(t, call(c.service, c.name, c.payload).GetFailure(), 0, c.code)
	}
}

// echoStream answers Stream with n messages "<text>-<i>"; some texts
// change what happens after them.
func echoStream(cancelled chan<- error) sdk.StreamedOutHandler {
	return func(ctx *sdk.CommandContext, cmd proto.Message, stream *sdk.ActionStream) error {
		text := fieldText(cmd)
		for i := range fieldN(cmd) {
			if text == "effects" {
				ctx.SideEffect("sdk.test.Doc", "Put", newMsg("d", fmt.Sprint(i), 0), i == 0)
			}
			if err := stream.Send(newMsg("", fmt.Sprintf("%s-%d", text, i), 0)); err != nil {
				return err
			}
		}
		switch text {
		case "effects":
			ctx.SideEffect("sdk.test.Doc", "Put", newMsg("d", "last", 0), false)
		case "fail":
			return sdk.Fail(codes.PermissionDenied, "no")
		case "panic":
			panic("boom")
		case "forward":
			ctx.Forward("sdk.test.Echo", "Say", newMsg("", "forwarded", 0))
			return stream.Send(nil)
		case "forward only":
			ctx.Forward("sdk.test.Echo", "Say", newMsg("", "forwarded", 0))
		case "wrong type":
			if err := stream.Send(&functionpb.Failure{}); err == nil {
				return errors.New("a reply of the wrong type was sent")
			}
			return nil // the SDK fails the call anyway
		case "wait":
			<-ctx.Context().Done()
			cancelled <- ctx.Context().Err()
		}
		return nil
	}
}

func TestStreamedOutAction(t *testing.T) {
	cancelled := make(chan error, 1)
	svc := sdk.New()
	if err := svc.RegisterActionHandlers(service("Echo"), sdk.ActionHandlers{Unary: echo, StreamedOut: echoStream(cancelled)}); err != nil {
		t.Fatal(err)
	}
	if err := svc.RegisterActionHandlers(service("Ledger"), sdk.ActionHandlers{}); !errors.Is(err, sdk.ErrInvalidRegistration) {
		t.Fatalf("no handlers: %v, want ErrInvalidRegistration", err)
	}
	p := sdktest.Start(t, svc)
	// all calls Stream and returns every message until the end.
	all := func(name, text string, n int64) []*functionpb.ActionResponse {
		t.Helper()
		s, err := p.Action.HandleStreamedOut(sdktest.Context(t), &functionpb.ActionCommand{ServiceName: "sdk.test.Echo", Name: name, Payload: anyOf(t, newMsg("", text, n))})
		if err != nil {
			t.Fatal(err)
		}
		var out []*functionpb.ActionResponse
		for {
			r, err := s.Recv()
			if errors.Is(err, io.EOF) {
				return out
			}
			if err != nil {
				t.Fatalf("%s %q: %v", name, text, err)
			}
			out = append(out, r)
		}
	}
	wantReplies := func(rs []*functionpb.ActionResponse, text string, n int) {
		t.Helper()
		if len(rs) < n {
			t.Fatalf("%d messages, want at least %d: %v", len(rs), n, rs)
		}
		for i, r := range rs[:n] {
			if r.GetReply() == nil || fieldText(decodeMsg(t, r.GetReply().GetPayload())) != fmt.Sprintf("%s-%d", text, i) {
				t.Fatalf("message %d: %v, want reply %s-%d", i, r, text, i)
			}
		}
	}

	rs := all("Stream", "m", 3)
	wantReplies(rs, "m", 3)
	if len(rs) != 3 {
		t.Fatalf("%d messages, want 3", len(rs))
	}
	if rs := all("Stream", "none", 0); len(rs) != 0 {
		t.Fatalf("no messages sent, got %v", rs)
	}

	// Side effects go with the message after which they were added; the
	// ones added after the last go in a last message with no response.
	rs = all("Stream", "effects", 2)
	wantReplies(rs, "effects", 2)
	if len(rs) != 3 || rs[2].GetResponse() != nil || len(rs[2].GetSideEffects()) != 1 {
		t.Fatalf("effects: %v", rs)
	}
	for i, r := range rs[:2] {
		if len(r.GetSideEffects()) != 1 || r.GetSideEffects()[0].GetSynchronous() != (i == 0) {
			t.Fatalf("message %d side effects: %v", i, r.GetSideEffects())
		}
	}

	rs = all("Stream", "forward", 1)
	wantReplies(rs, "forward", 1)
	if len(rs) != 2 || rs[1].GetForward().GetCommandName() != "Say" {
		t.Fatalf("forward: %v", rs)
	}

	// A failure comes after the messages already sent, and ends the call.
	for _, tc := range []struct {
		text string
		code codes.Code
	}{
		{"fail", codes.PermissionDenied},
		{"panic", codes.Unknown},
		{"wrong type", codes.Internal},
		{"forward only", codes.Internal},
	} {
		rs := all("Stream", tc.text, 2)
		wantReplies(rs, tc.text, 2)
		if len(rs) != 3 {
			t.Fatalf("%s: %d messages, want 3: %v", tc.text, len(rs), rs)
		}
		wantFailure(t, rs[2].GetFailure(), 0, tc.code)
	}

	// A call of the wrong kind, or of no method, is one failure.
	for _, tc := range []struct {
		service, name string
		code          codes.Code
	}{
		{"sdk.test.Echo", "Say", codes.InvalidArgument},
		{"sdk.test.Echo", "Nope", codes.NotFound},
		{"sdk.test.Nope", "Stream", codes.NotFound},
	} {
		s, err := p.Action.HandleStreamedOut(sdktest.Context(t), &functionpb.ActionCommand{ServiceName: tc.service, Name: tc.name, Payload: anyOf(t, newMsg("", "", 1))})
		if err != nil {
			t.Fatal(err)
		}
		r, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		wantFailure(t, r.GetFailure(), 0, tc.code)
		if _, err := s.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("%s/%s: after the failure: %v, want the end", tc.service, tc.name, err)
		}
	}

	// The caller going away is the handler's context ending.
	ctx, cancel := context.WithCancel(sdktest.Context(t))
	s, err := p.Action.HandleStreamedOut(ctx, &functionpb.ActionCommand{ServiceName: "sdk.test.Echo", Name: "Stream", Payload: anyOf(t, newMsg("", "wait", 1))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Fatalf("handler's context: %v, want Canceled", err)
	}
}

// A service registered with RegisterAction has no handler for its
// server-streaming methods.
func TestStreamedOutActionWithoutHandler(t *testing.T) {
	p := sdktest.Start(t, allModels(t))
	s, err := p.Action.HandleStreamedOut(sdktest.Context(t), &functionpb.ActionCommand{ServiceName: "sdk.test.Echo", Name: "Stream", Payload: anyOf(t, newMsg("", "", 1))})
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	wantFailure(t, r.GetFailure(), 0, codes.Unimplemented)
}
