package sdk_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/protocol/functionpb"
	"github.com/statemesh/statemesh/sdk"
	"github.com/statemesh/statemesh/sdk/sdktest"
)

// sum answers Sum with Msg{text: the texts joined by ",", n: the sum of
// the ns}. A message's text changes what happens: "fail" fails the call,
// "forward" forwards to Say, "effect" adds a side effect, "stop" replies
// without reading further, "wait" waits for the call to end.
func sum(w waiter) sdk.StreamedInHandler {
	return func(ctx *sdk.CommandContext, in *sdk.CommandStream) (proto.Message, error) {
		var texts []string
		var n int64
		for {
			cmd, err := in.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, err
			}
			switch fieldText(cmd) {
			case "fail":
				return nil, sdk.Fail(codes.PermissionDenied, "no")
			case "forward":
				ctx.Forward("sdk.test.Echo", "Say", newMsg("", "forwarded", 0))
				return nil, nil
			case "effect":
				ctx.SideEffect("sdk.test.Doc", "Put", newMsg("d", "x", 0), true)
			case "wait":
				return nil, w.wait(ctx)
			case "panic":
				panic("boom")
			}
			texts = append(texts, fieldText(cmd))
			n += fieldN(cmd)
			if fieldText(cmd) == "stop" {
				break
			}
		}
		return newMsg("", strings.Join(texts, ","), n), nil
	}
}

// chat answers each Chat message with "echo: <text>"; texts as for sum
// ("forward" forwards that message's answer; "effect" adds a side effect
// to it).
func chat(w waiter) sdk.StreamedHandler {
	return func(ctx *sdk.CommandContext, in *sdk.CommandStream, out *sdk.ActionStream) error {
		for {
			cmd, err := in.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			switch fieldText(cmd) {
			case "fail":
				return sdk.Fail(codes.PermissionDenied, "no")
			case "panic":
				panic("boom")
			case "forward":
				ctx.Forward("sdk.test.Echo", "Say", newMsg("", "forwarded", 0))
				if err := out.Send(nil); err != nil {
					return err
				}
				continue
			case "effect":
				ctx.SideEffect("sdk.test.Doc", "Put", newMsg("d", "x", 0), false)
			case "wait":
				return w.wait(ctx)
			}
			if err := out.Send(newMsg("", "echo: "+fieldText(cmd), 0)); err != nil {
				return err
			}
		}
	}
}

// waiter is where a handler told to "wait" says it waits, then how its
// context ended.
type waiter struct {
	waiting   chan struct{}
	cancelled chan error
}

func (w waiter) wait(ctx *sdk.CommandContext) error {
	w.waiting <- struct{}{}
	<-ctx.Context().Done()
	w.cancelled <- ctx.Context().Err()
	return ctx.Context().Err()
}

func startStreamed(t *testing.T) (*sdktest.Proxy, waiter) {
	t.Helper()
	w := waiter{waiting: make(chan struct{}, 1), cancelled: make(chan error, 1)}
	svc := sdk.New()
	if err := svc.RegisterActionHandlers(service("Echo"), sdk.ActionHandlers{Unary: echo, StreamedIn: sum(w), Streamed: chat(w)}); err != nil {
		t.Fatal(err)
	}
	return sdktest.Start(t, svc), w
}

func header(name string) *functionpb.ActionCommand {
	return &functionpb.ActionCommand{ServiceName: "sdk.test.Echo", Name: name, Metadata: map[string]string{"k": "v"}}
}

func TestStreamedInAction(t *testing.T) {
	p, w := startStreamed(t)
	// sumOf sends the header (with first as its payload, if not nil), then
	// msgs, and returns the response.
	sumOf := func(name string, first proto.Message, msgs ...proto.Message) *functionpb.ActionResponse {
		t.Helper()
		s, err := p.Action.HandleStreamedIn(sdktest.Context(t))
		if err != nil {
			t.Fatal(err)
		}
		h := header(name)
		if first != nil {
			h.Payload = anyOf(t, first)
		}
		if err := s.Send(h); err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if err := s.Send(&functionpb.ActionCommand{Payload: anyOf(t, m)}); err != nil {
				break // the function answered early; CloseAndRecv has it
			}
		}
		r, err := s.CloseAndRecv()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	wantReply := func(r *functionpb.ActionResponse, text string, n int64) {
		t.Helper()
		if r.GetReply() == nil {
			t.Fatalf("want a reply, got %v", r)
		}
		m := decodeMsg(t, r.GetReply().GetPayload())
		if fieldText(m) != text || fieldN(m) != n {
			t.Fatalf("reply %q %d, want %q %d", fieldText(m), fieldN(m), text, n)
		}
	}
	wantReply(sumOf("Sum", nil, newMsg("", "a", 1), newMsg("", "b", 2)), "a,b", 3)
	wantReply(sumOf("Sum", nil), "", 0)
	wantReply(sumOf("Sum", newMsg("", "first", 5), newMsg("", "b", 2)), "first,b", 7) // a payload in the header is the first message
	wantReply(sumOf("Sum", nil, newMsg("", "a", 1), newMsg("", "stop", 1), newMsg("", "c", 1)), "a,stop", 2)

	r := sumOf("Sum", nil, newMsg("", "effect", 1), newMsg("", "forward", 0))
	if r.GetForward().GetCommandName() != "Say" || len(r.GetSideEffects()) != 1 {
		t.Fatalf("forward with a side effect: %v", r)
	}
	r = sumOf("Sum", nil, newMsg("", "effect", 1))
	if r.GetReply() == nil || len(r.GetSideEffects()) != 1 {
		t.Fatalf("reply with a side effect: %v", r)
	}

	// A failure mid-stream is the one response, with no side effects.
	r = sumOf("Sum", nil, newMsg("", "effect", 1), newMsg("", "fail", 0), newMsg("", "c", 1))
	wantFailure(t, r.GetFailure(), 0, codes.PermissionDenied)
	if len(r.GetSideEffects()) != 0 {
		t.Fatalf("failure with side effects: %v", r)
	}
	wantFailure(t, sumOf("Sum", nil, newMsg("", "panic", 0)).GetFailure(), 0, codes.Unknown)
	// A message that does not decode fails the call.
	wantFailure(t, sumOf("Sum", nil, newMsg("", "a", 1), &functionpb.Failure{}).GetFailure(), 0, codes.InvalidArgument)
	// Methods of other kinds.
	wantFailure(t, sumOf("Say", nil).GetFailure(), 0, codes.InvalidArgument)
	wantFailure(t, sumOf("Chat", nil).GetFailure(), 0, codes.InvalidArgument)
	wantFailure(t, sumOf("Nope", nil).GetFailure(), 0, codes.NotFound)
	u, err := p.Action.HandleUnary(sdktest.Context(t), &functionpb.ActionCommand{ServiceName: "sdk.test.Echo", Name: "Sum", Payload: anyOf(t, newMsg("", "", 0))})
	if err != nil {
		t.Fatal(err)
	}
	wantFailure(t, u.GetFailure(), 0, codes.InvalidArgument)

	// No first message.
	s, err := p.Action.HandleStreamedIn(sdktest.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	if r, err := s.CloseAndRecv(); err != nil {
		t.Fatal(err)
	} else {
		wantFailure(t, r.GetFailure(), 0, codes.InvalidArgument)
	}

	// The proxy going away is the handler's context ending.
	ctx, cancel := context.WithCancel(sdktest.Context(t))
	defer cancel()
	s, err = p.Action.HandleStreamedIn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(header("Sum")); err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&functionpb.ActionCommand{Payload: anyOf(t, newMsg("", "wait", 0))}); err != nil {
		t.Fatal(err)
	}
	<-w.waiting
	cancel()
	if err := <-w.cancelled; !errors.Is(err, context.Canceled) {
		t.Fatalf("handler's context: %v, want Canceled", err)
	}
}

func TestStreamedAction(t *testing.T) {
	p, w := startStreamed(t)
	open := func(ctx context.Context, name string) interface {
		Send(*functionpb.ActionCommand) error
		Recv() (*functionpb.ActionResponse, error)
		CloseSend() error
	} {
		t.Helper()
		s, err := p.Action.HandleStreamed(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(header(name)); err != nil {
			t.Fatal(err)
		}
		return s
	}
	ctx := sdktest.Context(t)
	s := open(ctx, "Chat")
	send := func(text string) {
		t.Helper()
		if err := s.Send(&functionpb.ActionCommand{Payload: anyOf(t, newMsg("", text, 0))}); err != nil {
			t.Fatal(err)
		}
	}
	recv := func() *functionpb.ActionResponse {
		t.Helper()
		r, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	wantText := func(r *functionpb.ActionResponse, text string) {
		t.Helper()
		if r.GetReply() == nil || fieldText(decodeMsg(t, r.GetReply().GetPayload())) != text {
			t.Fatalf("got %v, want reply %q", r, text)
		}
	}
	wantEnd := func() {
		t.Helper()
		if r, err := s.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("got %v, %v; want the end", r, err)
		}
	}
	// Replies interleave with the caller's messages.
	send("a")
	wantText(recv(), "echo: a")
	send("effect")
	r := recv()
	wantText(r, "echo: effect")
	if len(r.GetSideEffects()) != 1 || r.GetSideEffects()[0].GetSynchronous() {
		t.Fatalf("side effects: %v", r.GetSideEffects())
	}
	send("forward")
	if r := recv(); r.GetForward().GetCommandName() != "Say" {
		t.Fatalf("forward: %v", r)
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	wantEnd()

	// A failure mid-stream comes after the replies already sent.
	for _, tc := range []struct {
		text string
		code codes.Code
	}{{"fail", codes.PermissionDenied}, {"panic", codes.Unknown}} {
		s = open(ctx, "Chat")
		send("a")
		send(tc.text)
		wantText(recv(), "echo: a")
		wantFailure(t, recv().GetFailure(), 0, tc.code)
		wantEnd()
	}
	// A message that does not decode fails the call.
	s = open(ctx, "Chat")
	if err := s.Send(&functionpb.ActionCommand{Payload: anyOf(t, &functionpb.Failure{})}); err != nil {
		t.Fatal(err)
	}
	wantFailure(t, recv().GetFailure(), 0, codes.InvalidArgument)
	wantEnd()
	// Methods of other kinds.
	for _, name := range []string{"Say", "Stream", "Sum"} {
		s = open(ctx, name)
		wantFailure(t, recv().GetFailure(), 0, codes.InvalidArgument)
		wantEnd()
	}

	// The proxy going away is the handler's context ending.
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s = open(cctx, "Chat")
	send("a")
	wantText(recv(), "echo: a")
	send("wait")
	<-w.waiting
	cancel()
	if err := <-w.cancelled; !errors.Is(err, context.Canceled) {
		t.Fatalf("handler's context: %v, want Canceled", err)
	}
}

// A service registered with RegisterAction has no handler for its
// client-streaming and bidirectional methods.
func TestStreamedActionsWithoutHandler(t *testing.T) {
	p := sdktest.Start(t, allModels(t))
	in, err := p.Action.HandleStreamedIn(sdktest.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Send(header("Sum")); err != nil {
		t.Fatal(err)
	}
	r, err := in.CloseAndRecv()
	if err != nil {
		t.Fatal(err)
	}
	wantFailure(t, r.GetFailure(), 0, codes.Unimplemented)
	bidi, err := p.Action.HandleStreamed(sdktest.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := bidi.Send(header("Chat")); err != nil {
		t.Fatal(err)
	}
	if r, err = bidi.Recv(); err != nil {
		t.Fatal(err)
	}
	wantFailure(t, r.GetFailure(), 0, codes.Unimplemented)
}
