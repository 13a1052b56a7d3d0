package proxy

import (
	"bufio"
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
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/statemesh/statemesh/protocol/functionpb"
)

// HandleStreamedOut runs Echo.Count: count replies "<text>-<i>". Text
// "fail" then fails; "side effect" adds a synchronous side effect (an
// item "<i>" in cart "stream") to each reply; "forward" then forwards to
// Say; "effects only" then sends a response with a side effect and no
// reply; "wait" then waits for the call to end.
func (f *fake) HandleStreamedOut(c *functionpb.ActionCommand, s grpc.ServerStreamingServer[functionpb.ActionResponse]) error {
	if c.GetName() != "Count" {
		return s.Send(failed("no streamed method "+c.GetName(), codes.NotFound))
	}
	req := msg(f.t, "CountRequest", nil)
	if err := c.GetPayload().UnmarshalTo(req); err != nil {
		return err
	}
	text := field(req, "text").String()
	for i := range field(req, "count").Int() {
		resp := echoReply(f.t, fmt.Sprintf("%s-%d", text, i))
		if text == "side effect" {
			resp.SideEffects = []*functionpb.SideEffect{cartEffect(f.t, "stream", fmt.Sprint(i))}
		}
		if err := s.Send(resp); err != nil {
			return err
		}
	}
	var last *functionpb.ActionResponse
	switch text {
	case "fail":
		last = failed("told to fail", codes.PermissionDenied)
	case "forward":
		last = &functionpb.ActionResponse{Response: sayForward(f.t, "fwd")}
	case "effects only":
		last = &functionpb.ActionResponse{SideEffects: []*functionpb.SideEffect{cartEffect(f.t, "only", "x")}}
	case "wait":
		<-s.Context().Done()
		f.streamEnded <- s.Context().Err()
		return nil
	}
	if last != nil {
		return s.Send(last)
	}
	return nil
}

// count calls Echo.Count over gRPC and returns the texts streamed and
// the error that ended the stream (nil: a clean end).
func count(t *testing.T, conn *grpc.ClientConn, text string, n int64) ([]string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/proxytest.Echo/Count")
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.SendMsg(msg(t, "CountRequest", map[string]any{"text": text, "count": n})); err != nil {
		t.Fatal(err)
	}
	if err := cs.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		out := msg(t, "EchoReply", nil)
		err := cs.RecvMsg(out)
		if errors.Is(err, io.EOF) {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		got = append(got, field(out, "text").String())
	}
}

func TestStreamedAction(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		text string
		n    int64
		want []string
		code codes.Code
	}{
		{"m", 3, []string{"m-0", "m-1", "m-2"}, codes.OK},
		{"none", 0, nil, codes.OK},
		{"fail", 2, []string{"fail-0", "fail-1"}, codes.PermissionDenied},
		{"forward", 1, []string{"forward-0", "echo: fwd"}, codes.OK},
		{"side effect", 2, []string{"side effect-0", "side effect-1"}, codes.OK},
		{"effects only", 1, []string{"effects only-0"}, codes.OK},
	} {
		got, err := count(t, e.conn, tc.text, tc.n)
		if !slices.Equal(got, tc.want) {
			t.Errorf("Count %q %d: streamed %q, want %q", tc.text, tc.n, got, tc.want)
		}
		if tc.code == codes.OK && err != nil {
			t.Errorf("Count %q %d: %v", tc.text, tc.n, err)
		} else if tc.code != codes.OK {
			wantCode(t, err, tc.code)
		}
	}
	// Synchronous side effects ran before the stream ended.
	for cart, want := range map[string][]string{"stream": {"0", "1"}, "only": {"x"}} {
		out, err := call(t, e.conn, "/proxytest.Cart/GetCart", msg(t, "GetCartRequest", map[string]any{"cart_id": cart}), "CartState")
		if err != nil {
			t.Fatal(err)
		}
		if got := items(out); !slices.Equal(got, want) {
			t.Errorf("cart %s: items %q, want %q", cart, got, want)
		}
	}

	// The caller going away ends the function's call.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs, err := e.conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/proxytest.Echo/Count")
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.SendMsg(msg(t, "CountRequest", map[string]any{"text": "wait", "count": int64(1)})); err != nil {
		t.Fatal(err)
	}
	if err := cs.RecvMsg(msg(t, "EchoReply", nil)); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-e.f.streamEnded:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the function's call ended with %v, want Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the function's call did not end when the caller went away")
	}
}

// sse reads a server-sent event stream: its data events, and the data of
// an error event, if one ended it.
func sse(t *testing.T, method, url, body string) (data []string, errEvent string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s %s: %d %s: %s", method, url, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	sc := bufio.NewScanner(resp.Body)
	isErr := false
	for sc.Scan() {
		line := sc.Text()
		if line == "event: error" {
			isErr = true
			continue
		}
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			if isErr {
				return data, d
			}
			data = append(data, d)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return data, ""
}

func TestStreamedActionSSE(t *testing.T) {
	e := newEnv(t)
	texts := func(data []string) []string {
		var out []string
		for _, d := range data {
			m := msg(t, "EchoReply", nil)
			if err := protojson.Unmarshal([]byte(d), m); err != nil {
				t.Fatalf("event %q: %v", d, err)
			}
			out = append(out, field(m, "text").String())
		}
		return out
	}
	for _, tc := range []struct{ name, method, path, body string }{
		{"route", "GET", "/echo/count/a?count=2", ""},
		{"fallback", "POST", "/proxytest.Echo/Count", `{"text":"a","count":"2"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, errEvent := sse(t, tc.method, e.url+tc.path, tc.body)
			if got := texts(data); !slices.Equal(got, []string{"a-0", "a-1"}) || errEvent != "" {
				t.Fatalf("events %q, error %q; want a-0, a-1 and a clean end", got, errEvent)
			}
		})
	}
	// A failure after the first event is an error event.
	data, errEvent := sse(t, "GET", e.url+"/echo/count/fail?count=1", "")
	if got := texts(data); !slices.Equal(got, []string{"fail-0"}) || !strings.Contains(errEvent, "told to fail") || !strings.Contains(errEvent, "permission_denied") {
		t.Fatalf("events %q, error %q; want fail-0, then the failure", got, errEvent)
	}
	// A failure before it is an ordinary JSON error.
	if code, body := httpDo(t, "GET", e.url+"/echo/count/fail?count=0", "", ""); code != http.StatusForbidden {
		t.Fatalf("failure before any event: %d %v, want 403", code, body)
	}
}
