package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/statemesh/statemesh/protocol/functionpb"
)

// streamedHeader receives the first message of a client-streamed action
// call: it must name method, with no payload.
func (f *fake) streamedHeader(recv func() (*functionpb.ActionCommand, error), method string) error {
	h, err := recv()
	if err != nil {
		return err
	}
	if h.GetServiceName() != "proxytest.Echo" || h.GetName() != method || h.GetPayload() != nil {
		return status.Errorf(codes.FailedPrecondition, "first message %v, want the header of %s", h, method)
	}
	return nil
}

// echoText decodes an EchoRequest's text.
func (f *fake) echoText(c *functionpb.ActionCommand) string {
	req := msg(f.t, "EchoRequest", nil)
	if err := c.GetPayload().UnmarshalTo(req); err != nil {
		return "undecodable: " + err.Error()
	}
	return field(req, "text").String()
}

func echoReply(t testing.TB, text string) *functionpb.ActionResponse {
	return &functionpb.ActionResponse{Response: &functionpb.ActionResponse_Reply{Reply: &functionpb.Reply{
		Payload: mustAny(t, msg(t, "EchoReply", map[string]any{"text": text}))}}}
}

func failed(desc string, code codes.Code) *functionpb.ActionResponse {
	return &functionpb.ActionResponse{Response: &functionpb.ActionResponse_Failure{Failure: &functionpb.Failure{
		Description: desc, GrpcStatusCode: int32(code)}}}
}

// sayForward is a forward to Echo.Say with text.
func sayForward(t testing.TB, text string) *functionpb.ActionResponse_Forward {
	return &functionpb.ActionResponse_Forward{Forward: &functionpb.Forward{ServiceName: "proxytest.Echo", CommandName: "Say",
		Payload: mustAny(t, msg(t, "EchoRequest", map[string]any{"text": text}))}}
}

// cartEffect is a synchronous side effect adding item to cart.
func cartEffect(t testing.TB, cart, item string) *functionpb.SideEffect {
	return &functionpb.SideEffect{ServiceName: "proxytest.Cart", CommandName: "AddItem", Synchronous: true,
		Payload: mustAny(t, msg(t, "AddItemRequest", map[string]any{"cart_id": cart, "item": item, "quantity": int64(1)}))}
}

// HandleStreamedIn runs Echo.Collect: it replies the texts joined by ","
// at the end of the caller's stream. A text "fail" fails the call at once;
// "forward" makes the reply a forward to Say; "side effect" adds an item
// to cart "collect"; "wait" waits for the call to end.
func (f *fake) HandleStreamedIn(s grpc.ClientStreamingServer[functionpb.ActionCommand, functionpb.ActionResponse]) error {
	if err := f.streamedHeader(s.Recv, "Collect"); err != nil {
		return err
	}
	var texts []string
	var effects []*functionpb.SideEffect
	forward := false
	for {
		c, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		switch text := f.echoText(c); text {
		case "fail":
			return s.SendAndClose(failed("told to fail", codes.PermissionDenied))
		case "forward":
			forward = true
		case "side effect":
			effects = append(effects, cartEffect(f.t, "collect", fmt.Sprint(len(texts))))
		case "wait":
			f.waiting <- struct{}{}
			<-s.Context().Done()
			f.streamEnded <- s.Context().Err()
			return nil
		default:
			texts = append(texts, text)
		}
	}
	resp := echoReply(f.t, strings.Join(texts, ","))
	if forward {
		resp.Response = sayForward(f.t, strings.Join(texts, ","))
	}
	resp.SideEffects = effects
	return s.SendAndClose(resp)
}

// HandleStreamed runs Echo.Chat: it answers each text with "echo: <text>".
// A text "fail" fails the call; "forward" is answered with a forward to
// Say; "side effect" adds an item to cart "chat"; "quit" ends the call;
// "crash" breaks the protocol stream; "wait" waits for the call to end.
func (f *fake) HandleStreamed(s grpc.BidiStreamingServer[functionpb.ActionCommand, functionpb.ActionResponse]) error {
	if err := f.streamedHeader(s.Recv, "Chat"); err != nil {
		return err
	}
	for i := 0; ; i++ {
		c, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		resp := echoReply(f.t, "echo: "+f.echoText(c))
		switch f.echoText(c) {
		case "fail":
			return s.Send(failed("told to fail", codes.PermissionDenied))
		case "quit":
			return nil
		case "crash":
			return status.Error(codes.DataLoss, "crashed")
		case "wait":
			f.waiting <- struct{}{}
			<-s.Context().Done()
			f.streamEnded <- s.Context().Err()
			return nil
		case "forward":
			resp.Response = sayForward(f.t, "fwd")
		case "side effect":
			resp.SideEffects = []*functionpb.SideEffect{cartEffect(f.t, "chat", fmt.Sprint(i))}
		}
		if err := s.Send(resp); err != nil {
			return err
		}
	}
}

// collect calls Echo.Collect with texts and returns the reply's text.
func collect(t *testing.T, conn *grpc.ClientConn, texts ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, "/proxytest.Echo/Collect")
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range texts {
		if err := cs.SendMsg(msg(t, "EchoRequest", map[string]any{"text": text})); err != nil {
			break // the call ended: RecvMsg says how
		}
	}
	if err := cs.CloseSend(); err != nil {
		t.Fatal(err)
	}
	out := msg(t, "EchoReply", nil)
	if err := cs.RecvMsg(out); err != nil {
		return "", err
	}
	return field(out, "text").String(), nil
}

func TestClientStreamedAction(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		texts []string
		want  string
		code  codes.Code
	}{
		{[]string{"a", "b", "c"}, "a,b,c", codes.OK},
		{nil, "", codes.OK},
		{[]string{"a", "forward", "b"}, "echo: a,b", codes.OK},
		{[]string{"side effect", "x", "side effect"}, "x", codes.OK},
		// A failure mid-stream ends the call while the caller still sends.
		{[]string{"a", "fail", "b", "c"}, "", codes.PermissionDenied},
	} {
		got, err := collect(t, e.conn, tc.texts...)
		if status.Code(err) != tc.code || got != tc.want {
			t.Errorf("Collect %q: %q, %v; want %q, %v", tc.texts, got, err, tc.want, tc.code)
		}
	}
	// Synchronous side effects ran before the reply.
	out, err := call(t, e.conn, "/proxytest.Cart/GetCart", msg(t, "GetCartRequest", map[string]any{"cart_id": "collect"}), "CartState")
	if err != nil {
		t.Fatal(err)
	}
	if got := items(out); !slices.Equal(got, []string{"0", "1"}) {
		t.Errorf("cart collect: items %q, want 0 1", got)
	}

	// A message that does not decode (invalid UTF-8 in a string field) is
	// the caller's error.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs, err := e.conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, "/proxytest.Echo/Collect")
	if err != nil {
		t.Fatal(err)
	}
	_ = cs.SendMsg(msg(t, "EchoRequest", map[string]any{"text": "a"}))
	_ = cs.SendMsg(wrapperspb.Bytes([]byte{0xff}))
	_ = cs.CloseSend()
	wantCode(t, cs.RecvMsg(msg(t, "EchoReply", nil)), codes.InvalidArgument)

	// The caller going away ends the function's call.
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	cs, err = e.conn.NewStream(wctx, &grpc.StreamDesc{ClientStreams: true}, "/proxytest.Echo/Collect")
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.SendMsg(msg(t, "EchoRequest", map[string]any{"text": "wait"})); err != nil {
		t.Fatal(err)
	}
	wantStreamEnded(t, e.f, wcancel)
}

// wantStreamEnded cancels a call to the fake told to "wait", once it
// waits, and wants the fake's call cancelled.
func wantStreamEnded(t *testing.T, f *fake, cancel context.CancelFunc) {
	t.Helper()
	select {
	case <-f.waiting:
	case <-time.After(10 * time.Second):
		t.Fatal("the function's call did not start waiting")
	}
	cancel()
	select {
	case err := <-f.streamEnded:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the function's call ended with %v, want Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the function's call did not end when the caller went away")
	}
}

// chat is one Echo.Chat call.
type chat struct {
	t  *testing.T
	cs grpc.ClientStream
}

func newChat(t *testing.T, ctx context.Context, conn *grpc.ClientConn) *chat {
	t.Helper()
	cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, "/proxytest.Echo/Chat")
	if err != nil {
		t.Fatal(err)
	}
	return &chat{t: t, cs: cs}
}

func (c *chat) send(text string) {
	c.t.Helper()
	if err := c.cs.SendMsg(msg(c.t, "EchoRequest", map[string]any{"text": text})); err != nil {
		c.t.Fatal(err)
	}
}

func (c *chat) recv() (string, error) {
	out := msg(c.t, "EchoReply", nil)
	if err := c.cs.RecvMsg(out); err != nil {
		return "", err
	}
	return field(out, "text").String(), nil
}

func (c *chat) want(text string) {
	c.t.Helper()
	got, err := c.recv()
	if err != nil || got != text {
		c.t.Fatalf("got %q, %v; want %q", got, err, text)
	}
}

func TestBidiStreamedAction(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := newChat(t, ctx, e.conn)
	// Replies interleave with the caller's messages.
	c.send("a")
	c.want("echo: a")
	c.send("side effect")
	c.want("echo: side effect")
	c.send("forward")
	c.want("echo: fwd")
	if err := c.cs.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after CloseSend: %v, want the end", err)
	}
	out, err := call(t, e.conn, "/proxytest.Cart/GetCart", msg(t, "GetCartRequest", map[string]any{"cart_id": "chat"}), "CartState")
	if err != nil {
		t.Fatal(err)
	}
	if got := items(out); !slices.Equal(got, []string{"1"}) {
		t.Errorf("cart chat: items %q, want 1", got)
	}

	// A failure mid-stream ends the call with its code, after the replies
	// already sent; the function breaking its stream is Internal; the
	// function ending the call ends the caller's, still open.
	for _, tc := range []struct {
		text string
		code codes.Code
	}{{"fail", codes.PermissionDenied}, {"crash", codes.Internal}, {"quit", codes.OK}} {
		c := newChat(t, ctx, e.conn)
		c.send("a")
		c.want("echo: a")
		c.send(tc.text)
		_, err := c.recv()
		if tc.code == codes.OK {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("%s: %v, want the end", tc.text, err)
			}
			continue
		}
		wantCode(t, err, tc.code)
	}

	// A message that does not decode.
	c = newChat(t, ctx, e.conn)
	if err := c.cs.SendMsg(wrapperspb.Bytes([]byte{0xff})); err != nil {
		t.Fatal(err)
	}
	_, err = c.recv()
	wantCode(t, err, codes.InvalidArgument)

	// The caller going away ends the function's call.
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	c = newChat(t, wctx, e.conn)
	c.send("a")
	c.want("echo: a")
	c.send("wait")
	wantStreamEnded(t, e.f, wcancel)
}

// Client-streaming and bidirectional methods are not transcoded to HTTP:
// a caller gets 501 Unimplemented, whatever the form of its request.
func TestClientStreamedActionHTTP(t *testing.T) {
	e := newEnv(t)
	for _, path := range []string{"/proxytest.Echo/Collect", "/proxytest.Echo/Chat"} {
		for _, ct := range []string{"application/json", "", "application/connect+json"} {
			code, body := httpDo(t, "POST", e.url+path, ct, `{"text":"a"}`)
			if code != http.StatusNotImplemented || body["code"] != "unimplemented" {
				t.Errorf("POST %s (%q): %d %v, want 501 unimplemented", path, ct, code, body)
			}
		}
	}
}
