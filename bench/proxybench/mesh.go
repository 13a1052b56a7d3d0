package proxybench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/statemesh/statemesh/bench/consensusbench"
	"github.com/statemesh/statemesh/examples/cart"
	"github.com/statemesh/statemesh/examples/cart/cartpb"
	"github.com/statemesh/statemesh/examples/counter"
	"github.com/statemesh/statemesh/examples/counter/counterpb"
	"github.com/statemesh/statemesh/examples/register"
	"github.com/statemesh/statemesh/examples/register/registerpb"
	"github.com/statemesh/statemesh/internal/freeport"
	"github.com/statemesh/statemesh/mesh"
	"github.com/statemesh/statemesh/node"
	"github.com/statemesh/statemesh/sdk"
)

// Mesh is the example functions and n nodes fronting them, all in this
// process (as `statemesh demo` runs them).
type Mesh struct {
	fn     *sdk.Service
	FnAddr string
	Nodes  []*node.Node
	tmp    string // removed on Close
}

// StartFunctions serves the example counter and, with withES, the
// event-sourced register and cart on a loopback port; Stop the service
// when done. A node without Raft cannot front event-sourced entities.
func StartFunctions(log *slog.Logger, withES bool) (*sdk.Service, string, error) {
	fn := sdk.New(sdk.WithLogger(log), sdk.WithServiceName("statemesh-examples"))
	err := counter.Register(fn)
	if withES {
		err = errors.Join(err, register.Register(fn), cart.Register(fn))
	}
	if err != nil {
		return nil, "", err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	go func() { _ = fn.Serve(lis) }()
	return fn, lis.Addr().String(), nil
}

// StartMesh starts the example functions and n nodes, the first
// bootstrapping the Raft shards and the others joining it, with their
// data under dir (a new temporary directory, removed on Close, if dir is
// empty). It returns when every node serves both functions (Wait).
func StartMesh(ctx context.Context, dir string, n int, log *slog.Logger) (*Mesh, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Mesh{}
	ok := false
	defer func() {
		if !ok {
			_ = m.Close()
		}
	}()
	if dir == "" {
		tmp, err := os.MkdirTemp("", "statemesh-bench-proxy-")
		if err != nil {
			return nil, err
		}
		m.tmp, dir = tmp, tmp
	}
	var err error
	if m.fn, m.FnAddr, err = StartFunctions(log, true); err != nil {
		return nil, err
	}
	var seeds []string
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		// Every listener but Raft's takes a port the kernel picks; Raft's
		// address must be known before it binds, so a start that lost its
		// "free" port to another process is retried with another.
		var nd *node.Node
		for attempt := 0; ; attempt++ {
			mc := mesh.Config{Name: name, GossipAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0", DataDir: filepath.Join(dir, name),
				Join: append([]string(nil), seeds...), Preset: mesh.PresetLocal}
			nc := node.Config{Mesh: mc, Logger: log.With("node", name),
				Consensus: node.ConsensusConfig{RaftAddr: FreeAddr(), Bootstrap: i == 0},
				Function:  node.FunctionConfig{Addr: m.FnAddr, GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0"}}
			nd, err = node.Start(nc)
			if err == nil {
				break
			}
			if attempt == 2 || !node.AddrInUse(err) {
				return nil, fmt.Errorf("proxybench: start %s: %w", name, err)
			}
		}
		m.Nodes = append(m.Nodes, nd)
		seeds = append(seeds, nd.Mesh.GossipAddr())
	}
	if err := m.wait(ctx, time.Minute); err != nil {
		return nil, err
	}
	ok = true
	return m, nil
}

// wait returns once an Increment and a register Set succeed through every
// node's gRPC endpoint (the Raft shards elect their leaders meanwhile).
func (m *Mesh) wait(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	g, err := NewGRPCTarget(SystemGRPC, m.GRPCAddrs())
	if err != nil {
		return err
	}
	defer g.Close()
	r, err := NewGRPCTarget(SystemRegister, m.GRPCAddrs())
	if err != nil {
		return err
	}
	defer r.Close()
	for i := range m.Nodes {
		for _, t := range []*GRPCTarget{g, r} {
			for {
				cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
				err := t.Write(cctx, i, "ready", nil)
				ccancel()
				if err == nil {
					break
				}
				if ctx.Err() != nil {
					return fmt.Errorf("proxybench: node n%d not serving %s: %w", i+1, t.Name(), err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	return nil
}

// GRPCAddrs and HTTPAddrs are the nodes' endpoints for the functions.
func (m *Mesh) GRPCAddrs() []string {
	var a []string
	for _, n := range m.Nodes {
		a = append(a, n.APIGRPCAddr())
	}
	return a
}

func (m *Mesh) HTTPAddrs() []string {
	var a []string
	for _, n := range m.Nodes {
		a = append(a, n.APIHTTPAddr())
	}
	return a
}

// Close stops the nodes, then the functions, and removes the temporary
// directory.
func (m *Mesh) Close() error {
	var errs []error
	for i := len(m.Nodes) - 1; i >= 0; i-- {
		errs = append(errs, m.Nodes[i].Close())
	}
	m.Nodes = nil
	if m.fn != nil {
		m.fn.Stop()
		m.fn = nil
	}
	if m.tmp != "" {
		errs = append(errs, os.RemoveAll(m.tmp))
		m.tmp = ""
	}
	return errors.Join(errs...)
}

// FreeAddr returns a loopback address whose port is free right now,
// below the ephemeral range (internal/freeport).
func FreeAddr() string {
	a, err := freeport.Addr()
	if err != nil {
		return "127.0.0.1:0"
	}
	return a
}

// GRPCTarget sends, through the nodes' gRPC endpoints, counter
// Increments (LOCAL) for SystemGRPC (and to the floor's servers for
// SystemEcho and SystemRelay), register Sets for SystemRegister, or cart
// AddItems for SystemCart: one grpc.ClientConn per node, client c using
// node c mod n.
type GRPCTarget struct {
	name  string
	conns []*grpc.ClientConn
}

var _ consensusbench.Target = (*GRPCTarget)(nil)

// NewGRPCTarget connects to addrs (lazily, as grpc.NewClient does); name
// is SystemGRPC, SystemRegister, SystemCart, SystemEcho or SystemRelay.
func NewGRPCTarget(name string, addrs []string) (*GRPCTarget, error) {
	switch name {
	case SystemGRPC, SystemRegister, SystemCart, SystemEcho, SystemRelay:
	default:
		return nil, fmt.Errorf("proxybench: no gRPC target %q", name)
	}
	t := &GRPCTarget{name: name}
	for _, a := range addrs {
		c, err := grpc.NewClient(a, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Close()
			return nil, err
		}
		t.conns = append(t.conns, c)
	}
	return t, nil
}

func (t *GRPCTarget) Name() string { return t.name }

func (t *GRPCTarget) Write(ctx context.Context, client int, key string, _ []byte) error {
	conn := t.conns[client%len(t.conns)]
	switch t.name {
	case SystemRegister:
		return conn.Invoke(ctx, MethodRegisterSet, &registerpb.SetRequest{Id: key, Value: "v"}, new(registerpb.RegisterValue))
	case SystemCart:
		// One of 10 products, one more of it: the cart stays small, every
		// command emits an event.
		p := "p" + strconv.Itoa(client%10)
		return conn.Invoke(ctx, MethodCartAdd, &cartpb.AddItemRequest{CartId: key, ProductId: p, Name: p, Quantity: 1}, new(cartpb.CartItems))
	}
	return conn.Invoke(ctx, MethodIncrement, &counterpb.ChangeRequest{Id: key, Value: 1, Consistency: counterpb.Consistency_LOCAL}, new(counterpb.CounterValue))
}

func (t *GRPCTarget) Close() error {
	var errs []error
	for _, c := range t.conns {
		errs = append(errs, c.Close())
	}
	t.conns = nil
	return errors.Join(errs...)
}

// HTTPTarget sends counter Increments (LOCAL) as JSON to the proxy's
// fallback route, POST /statemesh.examples.counter.Counter/Increment,
// client c using node c mod n, over keep-alive connections.
type HTTPTarget struct {
	urls   []string
	client *http.Client
}

var _ consensusbench.Target = (*HTTPTarget)(nil)

// NewHTTPTarget keeps up to clients idle connections per node, so that no
// client waits for a connection nor opens a new one per request.
func NewHTTPTarget(addrs []string, clients int) *HTTPTarget {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 0
	tr.MaxIdleConnsPerHost = max(clients, 2)
	t := &HTTPTarget{client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
	for _, a := range addrs {
		t.urls = append(t.urls, "http://"+a+MethodIncrement)
	}
	return t
}

func (t *HTTPTarget) Name() string { return SystemHTTP }

func (t *HTTPTarget) Write(ctx context.Context, client int, key string, _ []byte) error {
	body := make([]byte, 0, 64)
	body = append(body, `{"id":`...)
	body = strconv.AppendQuote(body, key)
	body = append(body, `,"value":1,"consistency":"LOCAL"}`...)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.urls[client%len(t.urls)], bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := t.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body) // read to the end: the connection is reused
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("proxybench: HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	return nil
}

func (t *HTTPTarget) Close() error {
	t.client.CloseIdleConnections()
	return nil
}
