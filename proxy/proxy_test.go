package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/consensus"
	"github.com/statemesh/statemesh/eventlog"
	"github.com/statemesh/statemesh/protocol/functionpb"
)

// eventually polls cond until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testConfig(addr string) Config {
	cfg := DefaultConfig()
	cfg.FunctionAddr = addr
	cfg.DiscoveryRetry = 10 * time.Millisecond
	cfg.DiscoveryMaxRetry = 50 * time.Millisecond
	cfg.DiscoveryTimeout = time.Second
	return cfg
}

type testEnv struct {
	f    *fake
	host *memHost
	p    *Proxy
	conn *grpc.ClientConn
	url  string
}

// startProxy discovers f and serves it on loopback, wiring host the way
// node does: Handlers after discovery, then SetBackends, then Start.
func startProxy(t *testing.T, f *fake, wire func(map[string]consensus.Handler) ESHost, crdts ...CRDTStore) (*Proxy, *grpc.ClientConn, string) {
	t.Helper()
	return startProxyFor(t, f.start(t), wire, crdts...)
}

// startProxyFor is startProxy for the function at functionAddr.
func startProxyFor(t *testing.T, functionAddr string, wire func(map[string]consensus.Handler) ESHost, crdts ...CRDTStore) (*Proxy, *grpc.ClientConn, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := New(ctx, testConfig(functionAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	var store CRDTStore
	if len(crdts) > 0 {
		store = crdts[0]
	}
	p.SetBackends(wire(p.Handlers()), store)
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(gl, hl); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(p.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return p, conn, "http://" + p.HTTPAddr().String()
}

func newEnv(t *testing.T) *testEnv {
	e := &testEnv{f: newFake(t), host: newMemHost()}
	e.p, e.conn, e.url = startProxy(t, e.f, e.host.wire)
	return e
}

func call(t testing.TB, conn *grpc.ClientConn, method string, in proto.Message, outType string) (proto.Message, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := msg(t, outType, nil)
	err := conn.Invoke(ctx, method, in, out)
	return out, err
}

func addItem(t testing.TB, conn *grpc.ClientConn, cart, item string, q int64) (proto.Message, error) {
	return call(t, conn, "/proxytest.Cart/AddItem",
		msg(t, "AddItemRequest", map[string]any{"cart_id": cart, "item": item, "quantity": q}), "CartState")
}

func wantCode(t testing.TB, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("got %v (%v), want %v", got, err, want)
	}
}

func TestEventSourcedCommands(t *testing.T) {
	e := newEnv(t)
	cart := consensus.Entity{Type: "cart", ID: "c1"}
	out, err := addItem(t, e.conn, "c1", "apple", 2)
	if err != nil {
		t.Fatal(err)
	}
	if got := items(out); len(got) != 1 || got[0] != "apple" {
		t.Fatalf("first reply %v", got)
	}
	out, err = addItem(t, e.conn, "c1", "pear", 3)
	if err != nil {
		t.Fatal(err)
	}
	if got := items(out); strings.Join(got, ",") != "apple,pear" || field(out, "total").Int() != 5 {
		t.Fatalf("second reply %v total %d", got, field(out, "total").Int())
	}
	if j := e.host.journal(cart); j.Seq != 2 || len(j.Events) != 2 {
		t.Fatalf("journal %+v", j)
	}
	if n := e.f.esInits.Load(); n != 1 {
		t.Fatalf("%d stream inits, want 1 (the stream is reused)", n)
	}

	// The state changes under the proxy (another leader wrote): the
	// stream is reopened with the full state.
	e.host.mu.Lock()
	st := e.host.journals[cart]
	st.Seq++
	ev := mustAny(t, msg(t, "ItemAdded", map[string]any{"item": "plum", "quantity": int64(1)}))
	b, _ := proto.Marshal(ev)
	st.Events = append(st.Events, eventlog.Event{Seq: st.Seq, Data: b})
	e.host.journals[cart] = st
	e.host.mu.Unlock()
	out, err = call(t, e.conn, "/proxytest.Cart/GetCart", msg(t, "GetCartRequest", map[string]any{"cart_id": "c1"}), "CartState")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(items(out), ","); got != "apple,pear,plum" {
		t.Fatalf("after an outside write: %s", got)
	}
	if n := e.f.esInits.Load(); n != 2 {
		t.Fatalf("%d stream inits, want 2", n)
	}

	// Snapshots replay too.
	if _, err := addItem(t, e.conn, "c1", "snapshot", 1); err != nil {
		t.Fatal(err)
	}
	if j := e.host.journal(cart); j.SnapshotSeq != 4 || len(j.Events) != 0 {
		t.Fatalf("journal after snapshot %+v", j)
	}
	e.p.es.closeAll() // drop the streams: the next command replays
	e.p.es = newRegistry[*esStream]()
	out, err = addItem(t, e.conn, "c1", "fig", 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(items(out), ","); got != "apple,pear,plum,snapshot,fig" {
		t.Fatalf("after snapshot replay: %s", got)
	}
}

func TestFunctionFailurePersistsNothing(t *testing.T) {
	e := newEnv(t)
	if _, err := addItem(t, e.conn, "c1", "apple", 1); err != nil {
		t.Fatal(err)
	}
	_, err := addItem(t, e.conn, "c1", "nothing", 0)
	wantCode(t, err, codes.InvalidArgument)
	if !strings.Contains(status.Convert(err).Message(), "quantity must be positive") {
		t.Fatalf("message %q", status.Convert(err).Message())
	}
	if j := e.host.journal(consensus.Entity{Type: "cart", ID: "c1"}); j.Seq != 1 {
		t.Fatalf("journal after a failure: %+v", j)
	}
	// A misbehaving function (an event without a type) fails the
	// command, persists nothing, and the proxy goes on.
	_, err = addItem(t, e.conn, "c1", "garbage", 1)
	wantCode(t, err, codes.Internal)
	if j := e.host.journal(consensus.Entity{Type: "cart", ID: "c1"}); j.Seq != 1 {
		t.Fatalf("journal after a bad reply: %+v", j)
	}
	// A function that drops the entity's stream fails the command only.
	_, err = addItem(t, e.conn, "c1", "crash", 1)
	wantCode(t, err, codes.Internal)
	out, err := addItem(t, e.conn, "c1", "pear", 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(items(out), ","); got != "apple,pear" {
		t.Fatalf("after failures: %s", got)
	}
	// An empty entity key is refused before anything runs.
	_, err = addItem(t, e.conn, "", "x", 1)
	wantCode(t, err, codes.InvalidArgument)
}

func TestValueEntity(t *testing.T) {
	e := newEnv(t)
	set := func(v string) {
		t.Helper()
		out, err := call(t, e.conn, "/proxytest.Register/Set", msg(t, "SetRequest", map[string]any{"id": "r1", "value": v}), "RegisterValue")
		if err != nil {
			t.Fatal(err)
		}
		if got := field(out, "value").String(); got != v {
			t.Fatalf("set reply %q", got)
		}
	}
	get := func() string {
		t.Helper()
		out, err := call(t, e.conn, "/proxytest.Register/Get", msg(t, "GetRequest", map[string]any{"id": "r1"}), "RegisterValue")
		if err != nil {
			t.Fatal(err)
		}
		return field(out, "value").String()
	}
	set("a")
	set("b")
	if got := get(); got != "b" {
		t.Fatalf("get %q", got)
	}
	ent := consensus.Entity{Type: "proxytest.Register", ID: "r1"}
	if v, _, _ := e.host.GetValue(context.Background(), ent); v.Version != 2 {
		t.Fatalf("version %d", v.Version)
	}
	// Written elsewhere: the function's copy is refreshed.
	b, _ := proto.Marshal(mustAny(t, msg(t, "RegisterValue", map[string]any{"value": "outside"})))
	if _, err := e.host.PutValue(context.Background(), ent, b, consensus.AnyVersion); err != nil {
		t.Fatal(err)
	}
	if got := get(); got != "outside" {
		t.Fatalf("get after an outside write %q", got)
	}
	if _, err := call(t, e.conn, "/proxytest.Register/Clear", msg(t, "GetRequest", map[string]any{"id": "r1"}), "RegisterValue"); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := e.host.GetValue(context.Background(), ent); !v.Deleted || v.Version != 4 {
		t.Fatalf("after clear %+v", v)
	}
	if got := get(); got != "" {
		t.Fatalf("get after clear %q", got)
	}
}

func TestActionsForwardsAndSideEffects(t *testing.T) {
	e := newEnv(t)
	out, err := call(t, e.conn, "/proxytest.Echo/Say", msg(t, "EchoRequest", map[string]any{"text": "hi"}), "EchoReply")
	if err != nil {
		t.Fatal(err)
	}
	if got := field(out, "text").String(); got != "echo: hi" {
		t.Fatalf("echo %q", got)
	}
	out, err = call(t, e.conn, "/proxytest.Echo/AddViaEcho",
		msg(t, "AddItemRequest", map[string]any{"cart_id": "fw", "item": "kiwi", "quantity": int64(1)}), "CartState")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(items(out), ","); got != "kiwi" {
		t.Fatalf("forward reply %s", got)
	}
	if _, err := call(t, e.conn, "/proxytest.Echo/Say", msg(t, "EchoRequest", map[string]any{"text": "side effect"}), "EchoReply"); err != nil {
		t.Fatal(err)
	}
	if j := e.host.journal(consensus.Entity{Type: "cart", ID: "side"}); j.Seq != 1 {
		t.Fatalf("synchronous side effect not applied before the reply: %+v", j)
	}
	if _, err := call(t, e.conn, "/proxytest.Echo/Say", msg(t, "EchoRequest", map[string]any{"text": "async side effect"}), "EchoReply"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the asynchronous side effect is applied", func() bool {
		return e.host.journal(consensus.Entity{Type: "cart", ID: "async"}).Seq == 1
	})
	_, err = call(t, e.conn, "/proxytest.Echo/Say", msg(t, "EchoRequest", map[string]any{"text": "fail"}), "EchoReply")
	wantCode(t, err, codes.PermissionDenied)
	for _, bad := range []string{"wrong type", "bad bytes"} {
		_, err = call(t, e.conn, "/proxytest.Echo/Say", msg(t, "EchoRequest", map[string]any{"text": bad}), "EchoReply")
		wantCode(t, err, codes.Internal)
	}
}

func TestGRPCUnknownHealthReflection(t *testing.T) {
	e := newEnv(t)
	_, err := call(t, e.conn, "/proxytest.Nope/Say", msg(t, "EchoRequest", nil), "EchoReply")
	wantCode(t, err, codes.Unimplemented)
	_, err = call(t, e.conn, "/proxytest.Echo/Nope", msg(t, "EchoRequest", nil), "EchoReply")
	wantCode(t, err, codes.Unimplemented)
	// Bytes that are not the input type.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	wrong := &functionpb.LWWRegisterState{Value: []byte{0xff}} // field 1: not UTF-8, as EchoRequest.text must be
	err = e.conn.Invoke(ctx, "/proxytest.Echo/Say", wrong, msg(t, "EchoReply", nil))
	wantCode(t, err, codes.InvalidArgument)

	hr, err := healthpb.NewHealthClient(e.conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "proxytest.Cart"})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health %v %v", hr, err)
	}

	rs, err := reflectionpb.NewServerReflectionClient(e.conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	r, err := rs.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range r.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	if !strings.Contains(strings.Join(names, " "), "proxytest.Cart") {
		t.Fatalf("reflection lists %v", names)
	}
	if err := rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "proxytest.Cart"}}); err != nil {
		t.Fatal(err)
	}
	r, err = rs.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(r.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
		t.Fatalf("reflection: no file for proxytest.Cart: %v", r)
	}
}

func httpDo(t testing.TB, method, url, contentType, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	if m == nil {
		m = map[string]any{"raw": string(b)}
	}
	return resp.StatusCode, m
}

func TestHTTP(t *testing.T) {
	e := newEnv(t)
	// The POST fallback: /{package.Service}/{Method} with a JSON body.
	code, body := httpDo(t, "POST", e.url+"/proxytest.Echo/Say", "application/json", `{"text":"hi"}`)
	if code != 200 || body["text"] != "echo: hi" {
		t.Fatalf("POST fallback: %d %v", code, body)
	}
	// Without a content type, or with curl -d's default.
	for _, ct := range []string{"", "application/x-www-form-urlencoded"} {
		code, body = httpDo(t, "POST", e.url+"/proxytest.Echo/Say", ct, `{"text":"ct"}`)
		if code != 200 || body["text"] != "echo: ct" {
			t.Fatalf("POST fallback with content type %q: %d %v", ct, code, body)
		}
	}
	// REST routes from google.api.http.
	code, body = httpDo(t, "POST", e.url+"/carts/h1/items", "application/json", `{"item":"apple","quantity":"2"}`)
	if code != 200 || body["total"] != "2" {
		t.Fatalf("REST post: %d %v", code, body)
	}
	code, body = httpDo(t, "GET", e.url+"/carts/h1", "", "")
	if code != 200 || body["total"] != "2" {
		t.Fatalf("REST get: %d %v", code, body)
	}
	// Errors.
	code, body = httpDo(t, "POST", e.url+"/carts/h1/items", "application/json", `{"quantity":0}`)
	if code != http.StatusBadRequest {
		t.Fatalf("function failure over HTTP: %d %v", code, body)
	}
	for _, c := range []struct{ url, body string }{
		{"/proxytest.Echo/Say", `{"text":`},
		{"/proxytest.Echo/Say", `{"text":5}`},
		{"/carts/h1/items", `not json`},
	} {
		if code, body := httpDo(t, "POST", e.url+c.url, "application/json", c.body); code != http.StatusBadRequest {
			t.Fatalf("malformed body %q to %s: %d %v", c.body, c.url, code, body)
		}
	}
	for _, u := range []string{"/nope", "/proxytest.Nope/Say", "/carts"} {
		if code, body := httpDo(t, "POST", e.url+u, "application/json", `{}`); code != http.StatusNotFound {
			t.Fatalf("unknown route %s: %d %v", u, code, body)
		}
	}
	big := `{"text":"` + strings.Repeat("x", 5<<20) + `"}`
	if code, body := httpDo(t, "POST", e.url+"/proxytest.Echo/Say", "application/json", big); code != http.StatusRequestEntityTooLarge && code != http.StatusBadRequest {
		t.Fatalf("oversized body: %d %v", code, body)
	}
	// Still serving.
	if code, _ := httpDo(t, "POST", e.url+"/echo", "application/json", `{"text":"ok"}`); code != 200 {
		t.Fatalf("after errors: %d", code)
	}
}

func TestDiscoveryRetriesUntilTheFunctionStarts(t *testing.T) {
	f := newFake(t)
	f.failDiscover.Store(2) // answers Unavailable twice once it runs
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The port stays bound (no other test can take it), but until the
	// function "starts" every connection is closed at once, as a dial to
	// a function that is not up yet fails.
	lis := &gatedListener{Listener: inner}
	addr := lis.Addr().String()
	f.serve(t, lis)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		p, err := New(ctx, testConfig(addr))
		if err == nil {
			p.Close()
		}
		done <- err
	}()
	eventually(t, 10*time.Second, "a dial to the function that is not up fails", func() bool { return lis.refused.Load() > 0 })
	lis.open.Store(true)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := f.discovers.Load(); n < 3 {
		t.Fatalf("%d Discover calls, want at least 3", n)
	}

	// A context that ends first stops the retries.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := New(ctx, testConfig("127.0.0.1:1")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want a deadline error", err)
	}
}

func TestDiscoveryRefusesBadSpecs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := newFake(t)
	f.spec.ServiceInfo.ProtocolMajorVersion = 2
	if _, err := New(ctx, testConfig(f.start(t))); !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "protocol 2.0") {
		t.Fatalf("major version mismatch: %v", err)
	}
	select {
	case m := <-f.reported:
		if !strings.Contains(m, "protocol") {
			t.Fatalf("reported %q", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the mismatch was not reported to the function")
	}

	f = newFake(t)
	f.spec.Entities = append(f.spec.Entities, &functionpb.Entity{Model: functionpb.Model_MODEL_VALUE, ServiceName: "proxytest.Missing"})
	if _, err := New(ctx, testConfig(f.start(t))); !errors.Is(err, ErrSpec) || !strings.Contains(err.Error(), "proxytest.Missing") {
		t.Fatalf("missing service: %v", err)
	}

	// An entity whose method input has no entity key: Echo as a value
	// entity.
	f = newFake(t)
	f.spec.Entities[2].Model = functionpb.Model_MODEL_VALUE
	if _, err := New(ctx, testConfig(f.start(t))); !errors.Is(err, ErrSpec) || !strings.Contains(err.Error(), "proxytest.Echo") ||
		!strings.Contains(err.Error(), "entity_key") {
		t.Fatalf("missing key: %v", err)
	}

	f = newFake(t)
	f.spec.Proto = []byte{0xff, 0xff}
	if _, err := New(ctx, testConfig(f.start(t))); !errors.Is(err, ErrSpec) {
		t.Fatalf("bad descriptor bytes: %v", err)
	}
}

func TestPassivationAndConcurrency(t *testing.T) {
	e := newEnv(t)
	e.p.cfg.PassivationTimeout = 50 * time.Millisecond
	for _, s := range e.p.model.order {
		s.passivation = 50 * time.Millisecond
	}
	if _, err := addItem(t, e.conn, "p1", "a", 1); err != nil {
		t.Fatal(err)
	}
	inits := e.f.esInits.Load()
	eventually(t, 5*time.Second, "the idle entity is passivated", func() bool {
		e.p.es.mu.Lock()
		defer e.p.es.mu.Unlock()
		return len(e.p.es.mu.slots) == 0
	})
	out, err := addItem(t, e.conn, "p1", "b", 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(items(out), ","); got != "a,b" || e.f.esInits.Load() != inits+1 {
		t.Fatalf("after passivation: %s, %d inits", got, e.f.esInits.Load()-inits)
	}

	// Concurrent commands on a few entities: every one is applied once.
	const workers, per = 8, 10
	errs := make(chan error, workers*per)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for range per {
				_, err := addItem(t, e.conn, fmt.Sprintf("cc%d", w%3), "x", 1)
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	total := uint64(0)
	for i := range 3 {
		total += e.host.journal(consensus.Entity{Type: "cart", ID: fmt.Sprintf("cc%d", i)}).Seq
	}
	if total != workers*per {
		t.Fatalf("%d events, want %d", total, workers*per)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err == nil {
		t.Fatal("no FunctionAddr accepted")
	}
	c := testConfig("x:1")
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.MaxRequestBytes = -1
	if err := c.Validate(); err == nil {
		t.Fatal("negative MaxRequestBytes accepted")
	}
}

func TestErrorTable(t *testing.T) {
	for _, c := range []struct {
		err  error
		code codes.Code
		http int
	}{
		{consensus.ErrConflict, codes.Aborted, 409},
		{consensus.ErrInvalid, codes.InvalidArgument, 400},
		{consensus.ErrNoHandler, codes.Unimplemented, 501},
		{consensus.ErrTimeout, codes.DeadlineExceeded, 504},
		{consensus.ErrUnavailable, codes.Unavailable, 503},
		{consensus.ErrNotLeader, codes.Unavailable, 503},
		{consensus.ErrRejected, codes.FailedPrecondition, 400},
	} {
		if got := toStatus(c.err).Code(); got != c.code {
			t.Errorf("%v: code %v, want %v", c.err, got, c.code)
		}
		if got := httpStatus(c.err); got != c.http {
			t.Errorf("%v: HTTP %d, want %d", c.err, got, c.http)
		}
	}
	// A rejection keeps the function's code and message, here and as it
	// arrives from another node (consensus rebuilds it from the wire).
	for _, err := range []error{
		consensus.NewRejection(&failureError{code: codes.NotFound, desc: "no such cart"}),
		&consensus.Rejection{Code: codes.NotFound, Message: "no such cart"},
	} {
		if s := toStatus(err); s.Code() != codes.NotFound || s.Message() != "no such cart" {
			t.Fatalf("rejection: %v", s)
		}
	}
}

// gatedListener closes every connection it accepts until open is set,
// counting them in refused.
type gatedListener struct {
	net.Listener
	open    atomic.Bool
	refused atomic.Int32
}

func (g *gatedListener) Accept() (net.Conn, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil || g.open.Load() {
			return c, err
		}
		c.Close()
		g.refused.Add(1)
	}
}

// The Connect error names and HTTP statuses of every gRPC code
// (connectrpc.com/docs/protocol, "Error Codes"); codes out of range are
// Unknown.
func TestConnectErrorCodes(t *testing.T) {
	for c, want := range map[codes.Code]struct {
		name string
		http int
	}{
		codes.OK:                 {"unknown", 500},
		codes.Canceled:           {"canceled", 499},
		codes.Unknown:            {"unknown", 500},
		codes.InvalidArgument:    {"invalid_argument", 400},
		codes.DeadlineExceeded:   {"deadline_exceeded", 504},
		codes.NotFound:           {"not_found", 404},
		codes.AlreadyExists:      {"already_exists", 409},
		codes.PermissionDenied:   {"permission_denied", 403},
		codes.ResourceExhausted:  {"resource_exhausted", 429},
		codes.FailedPrecondition: {"failed_precondition", 400},
		codes.Aborted:            {"aborted", 409},
		codes.OutOfRange:         {"out_of_range", 400},
		codes.Unimplemented:      {"unimplemented", 501},
		codes.Internal:           {"internal", 500},
		codes.Unavailable:        {"unavailable", 503},
		codes.DataLoss:           {"data_loss", 500},
		codes.Unauthenticated:    {"unauthenticated", 401},
		codes.Code(99):           {"unknown", 500},
	} {
		w := httptest.NewRecorder()
		writeConnectError(w, status.New(c, "m"))
		var body map[string]string
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
			t.Fatal(err)
		}
		if w.Code != want.http || body["code"] != want.name || body["message"] != "m" {
			t.Errorf("%v: %d %v, want %d %s", c, w.Code, body, want.http, want.name)
		}
	}
}
