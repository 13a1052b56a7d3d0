package proxybench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/statemesh/statemesh/bench/consensusbench"
	"github.com/statemesh/statemesh/examples/counter/counterpb"
)

func TestAppendCommand(t *testing.T) {
	got := string(AppendCommand(nil, "INCR", "k007", ""))
	want := "*3\r\n$4\r\nINCR\r\n$4\r\nk007\r\n$0\r\n\r\n"
	if got != want {
		t.Errorf("AppendCommand = %q; want %q", got, want)
	}
}

func TestReadReply(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want any
		err  error // matched with errors.Is, or RedisError by value
	}{
		{in: "+OK\r\n", want: "OK"},
		{in: ":42\r\n", want: int64(42)},
		{in: ":-7\r\n", want: int64(-7)},
		{in: "$5\r\nhello\r\n", want: []byte("hello")},
		{in: "$0\r\n\r\n", want: []byte{}},
		{in: "$-1\r\n", want: []byte(nil)},
		{in: "*-1\r\n", want: []any(nil)},
		{in: "*3\r\n:1\r\n$2\r\nab\r\n*1\r\n+x\r\n", want: []any{int64(1), []byte("ab"), []any{"x"}}},
		{in: "*2\r\n-ERR inner\r\n:2\r\n", want: []any{RedisError("ERR inner"), int64(2)}},
		{in: "-ERR value is not an integer\r\n", err: RedisError("ERR value is not an integer")},
		{in: ":12x\r\n", err: ErrProtocol},
		{in: "$3\r\nabcd\r\n", err: ErrProtocol},
		{in: "$-2\r\n", err: ErrProtocol},
		{in: "?\r\n", err: ErrProtocol},
		{in: "+OK\n", err: ErrProtocol},
		{in: "\r\n", err: ErrProtocol},
		{in: "$10\r\nshort\r\n", err: io.ErrUnexpectedEOF},
		{in: "", err: io.EOF},
	} {
		got, err := ReadReply(bufio.NewReader(strings.NewReader(tc.in)))
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("ReadReply(%q) = %v, %v; want error %v", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ReadReply(%q) = %#v, %v; want %#v", tc.in, got, err, tc.want)
		}
	}
}

// TestRESPRoundTrip decodes what AppendCommand encodes: a command is an
// array of bulk strings.
func TestRESPRoundTrip(t *testing.T) {
	args := []string{"SET", "key with spaces", "a\r\nb", ""}
	got, err := ReadReply(bufio.NewReader(bytes.NewReader(AppendCommand(nil, args...))))
	if err != nil {
		t.Fatal(err)
	}
	want := []any{[]byte("SET"), []byte("key with spaces"), []byte("a\r\nb"), []byte{}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip %#v; want %#v", got, want)
	}
}

// fakeRedis is a loopback server speaking enough RESP for PING and INCR,
// decoding the commands with ReadReply.
type fakeRedis struct {
	lis net.Listener
	wg  sync.WaitGroup
	mu  struct {
		sync.Mutex
		counts map[string]int64
		conns  []net.Conn
	}
}

func startFakeRedis(t *testing.T) *fakeRedis {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRedis{lis: lis}
	f.mu.counts = map[string]int64{}
	f.wg.Go(func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.mu.conns = append(f.mu.conns, c)
			f.mu.Unlock()
			f.wg.Go(func() { f.serve(c) })
		}
	})
	t.Cleanup(func() {
		lis.Close()
		f.mu.Lock()
		for _, c := range f.mu.conns {
			c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *fakeRedis) serve(c net.Conn) {
	r := bufio.NewReader(c)
	for {
		v, err := ReadReply(r)
		if err != nil {
			return
		}
		args, _ := v.([]any)
		var reply string
		switch {
		case len(args) == 1 && string(args[0].([]byte)) == "PING":
			reply = "+PONG\r\n"
		case len(args) == 2 && string(args[0].([]byte)) == "INCR":
			f.mu.Lock()
			f.mu.counts[string(args[1].([]byte))]++
			n := f.mu.counts[string(args[1].([]byte))]
			f.mu.Unlock()
			reply = ":" + strconv.FormatInt(n, 10) + "\r\n"
		default:
			reply = "-ERR unknown command\r\n"
		}
		if _, err := io.WriteString(c, reply); err != nil {
			return
		}
	}
}

func TestRedisTargetFake(t *testing.T) {
	f := startFakeRedis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := &Redis{Addr: f.lis.Addr().String()}
	if err := r.ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	tg := NewRedisTarget(f.lis.Addr().String(), 2)
	defer tg.Close()
	for i := range 10 {
		if err := tg.Write(ctx, i%2, "k1", nil); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if err := tg.Write(ctx, 2, "k1", nil); err == nil {
		t.Error("write by client 2 of 2 succeeded")
	}
	f.mu.Lock()
	got := f.mu.counts["k1"]
	f.mu.Unlock()
	if got != 10 {
		t.Errorf("k1 = %d after 10 INCR; want 10", got)
	}
	// An error reply fails the write and the next write redials.
	c, err := dialRESP(ctx, f.lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	var re RedisError
	if _, err := c.do(ctx, "NOPE"); !errors.As(err, &re) {
		t.Errorf("unknown command: %v; want a RedisError", err)
	}
}

func shortLoad(clients int) consensusbench.LoadConfig {
	return consensusbench.LoadConfig{Clients: clients, Keys: 1000, Warmup: 200 * time.Millisecond, Duration: time.Second, Seed: 1}
}

func checkRun(t *testing.T, tg consensusbench.Target, cfg consensusbench.LoadConfig) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := consensusbench.Run(ctx, tg, cfg, nil)
	if err != nil {
		t.Fatalf("%s: %v", tg.Name(), err)
	}
	t.Logf("%s: %d ops, %.0f/s, p50 %.2f ms, p99 %.2f ms, %d errors", r.System, r.Ops, r.OpsPerSec, r.P50Ms, r.P99Ms, r.Errors)
	if r.Ops == 0 || r.Errors != 0 || r.WarmupErrors != 0 {
		t.Errorf("%s: %d ops, %d errors, %d warm-up errors (first: %s); want ops and no error", r.System, r.Ops, r.Errors, r.WarmupErrors, r.FirstError)
	}
}

func TestMeshShortRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m, err := StartMesh(ctx, t.TempDir(), 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := m.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
	g, err := NewGRPCTarget(SystemGRPC, m.GRPCAddrs())
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	checkRun(t, g, shortLoad(4))
	h := NewHTTPTarget(m.HTTPAddrs(), 4)
	defer h.Close()
	checkRun(t, h, shortLoad(4))
	for _, es := range []string{SystemRegister, SystemCart} {
		r, err := NewGRPCTarget(es, m.GRPCAddrs())
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		checkRun(t, r, shortLoad(4))
	}
	if _, err := NewGRPCTarget("nope", m.GRPCAddrs()); err == nil {
		t.Error("NewGRPCTarget accepted an unknown system")
	}
}

// TestFloor checks the floors count what they are sent: each echo
// server and each relay (through its function) keeps one count per id.
func TestFloor(t *testing.T) {
	f, err := StartFloor(2)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, sys := range []struct {
		name  string
		addrs []string
	}{{SystemEcho, f.EchoAddrs()}, {SystemRelay, f.RelayAddrs()}} {
		conn, err := grpc.NewClient(sys.addrs[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		c := counterpb.NewCounterClient(conn)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for i, step := range []struct {
			id          string
			value, want int64
		}{{"a", 1, 1}, {"a", 2, 3}, {"b", 5, 5}, {"a", -1, 2}} {
			got, err := c.Increment(ctx, &counterpb.ChangeRequest{Id: step.id, Value: step.value})
			if err != nil || got.GetValue() != step.want {
				t.Errorf("%s step %d: Increment(%s, %d) = %v, %v; want %d", sys.name, i, step.id, step.value, got, err, step.want)
			}
		}
		tg, err := NewGRPCTarget(sys.name, sys.addrs)
		if err != nil {
			t.Fatal(err)
		}
		defer tg.Close()
		checkRun(t, tg, shortLoad(4))
	}
}

func TestRedisShortRun(t *testing.T) {
	if _, err := FindRedis(); err != nil {
		t.Skip("redis-server not installed (apt-get install redis-server):", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := StartRedis(ctx, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	tg := NewRedisTarget(r.Addr, 4)
	defer tg.Close()
	checkRun(t, tg, shortLoad(4))
}

func TestJudgeAndReport(t *testing.T) {
	rows := []consensusbench.Row{
		{System: SystemRedis, Clients: 64, OpsPerSec: 90000, Rounds: []consensusbench.Result{{System: SystemRedis, Round: 1}}},
		{System: SystemRegister, Clients: 16, OpsPerSec: 1000},
		{System: SystemGRPC, Clients: 64, OpsPerSec: 30000},
		{System: SystemHTTP, Clients: 64, OpsPerSec: 20000},
		{System: SystemCart, Clients: 16, OpsPerSec: 800},
		{System: SystemRelay, Clients: 64, OpsPerSec: 40000},
	}
	v := Judge(rows)
	if !v.Measured || !v.Met || v.Ratio < 0.33 || v.Ratio > 0.34 {
		t.Errorf("Judge = %+v; want met at 0.33", v)
	}
	rows[2].Errors = 1
	if v := Judge(rows); v.Met {
		t.Errorf("Judge with a failed request = %+v; want not met", v)
	}
	rows[2].Errors, rows[2].OpsPerSec = 0, 20000
	if v := Judge(rows); v.Met || !strings.Contains(v.Text, "NOT met") {
		t.Errorf("Judge at 0.22 = %+v; want NOT met", v)
	}
	if v := Judge(rows[:2]); v.Measured {
		t.Errorf("Judge without statemesh-grpc = %+v; want not measured", v)
	}
	SortRows(rows)
	var order []string
	for _, r := range rows {
		order = append(order, r.System)
	}
	if want := []string{SystemGRPC, SystemHTTP, SystemRedis, SystemRelay, SystemRegister, SystemCart}; !reflect.DeepEqual(order, want) {
		t.Errorf("SortRows: %v; want %v", order, want)
	}
	var md, svg bytes.Buffer
	RenderMarkdown(&md, rows, Meta{Command: "statemesh bench proxy", SVG: "proxy.svg"})
	WriteSVG(&svg, rows)
	for _, s := range []string{"| statemesh-grpc | 64 | 20000 |", "NOT met", "proxy.svg", "cart", "grpc-relay / redis throughput: 0.44", "statemesh-grpc / grpc-relay throughput: 0.50", "**grpc-relay** (a floor"} {
		if !strings.Contains(md.String(), s) {
			t.Errorf("report lacks %q:\n%s", s, md.String())
		}
	}
	if !strings.HasPrefix(svg.String(), "<svg") || !strings.Contains(svg.String(), SystemRedis) {
		t.Errorf("SVG: %s", svg.String())
	}
}
