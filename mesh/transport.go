package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/statemesh/statemesh/internal/netfault"
	"github.com/statemesh/statemesh/protocol/peerpb"
)

// outboundQueue bounds the messages waiting for one peer's stream. When it
// is full, new messages are dropped: the engine retransmits what is not
// acknowledged, so a drop costs latency, never data.
const outboundQueue = 1024

// transport sends to peers over gRPC: one long-lived Sync stream per peer,
// fed by a queue and a goroutine, and unary Write and Read calls. Every
// send goes through the fault seam when the node has one.
type transport struct {
	self     string
	frame    int // largest chunk of a Sync stream
	maxMsg   int // largest gRPC message either way
	creds    credentials.TransportCredentials
	faults   *netfault.Faults
	log      *slog.Logger
	counters *metrics

	mu    sync.Mutex
	conns map[string]*peerConn // by node name
	done  bool
}

func newTransport(self string, frame, maxMsg int, creds credentials.TransportCredentials, f *netfault.Faults, log *slog.Logger, m *metrics) *transport {
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	return &transport{self: self, frame: frame, maxMsg: maxMsg, creds: creds, faults: f, log: log, counters: m,
		conns: map[string]*peerConn{}}
}

// peerConn is the connection to one peer and its sender goroutine.
type peerConn struct {
	name, addr string
	cc         *grpc.ClientConn
	client     peerpb.PeerClient
	queue      chan []byte
	ctx        context.Context
	cancel     context.CancelFunc
	done       chan struct{}
}

// conn returns the connection to name at addr, (re)creating it when the
// peer moved.
func (t *transport) conn(name, addr string) (*peerConn, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return nil, ErrClosed
	}
	if pc, ok := t.conns[name]; ok {
		if pc.addr == addr {
			return pc, nil
		}
		pc.stop()
		delete(t.conns, name)
	}
	cc, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(t.creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(t.maxMsg), grpc.MaxCallSendMsgSize(t.maxMsg)),
	)
	if err != nil {
		return nil, fmt.Errorf("mesh: peer %s at %s: %w", name, addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pc := &peerConn{name: name, addr: addr, cc: cc, client: peerpb.NewPeerClient(cc),
		queue: make(chan []byte, outboundQueue), ctx: ctx, cancel: cancel, done: make(chan struct{})}
	t.conns[name] = pc
	go t.run(pc)
	return pc, nil
}

func (pc *peerConn) stop() {
	pc.cancel()
	<-pc.done
	_ = pc.cc.Close()
}

// send queues an encoded engine message for name; it never blocks and
// reports whether the message was queued.
func (t *transport) send(name, addr string, msg []byte) bool {
	pc, err := t.conn(name, addr)
	if err != nil {
		return false
	}
	select {
	case pc.queue <- msg:
		return true
	default:
		return false
	}
}

// forget closes the connection to a peer that left.
func (t *transport) forget(name string) {
	t.mu.Lock()
	pc, ok := t.conns[name]
	delete(t.conns, name)
	t.mu.Unlock()
	if ok {
		pc.stop()
	}
}

func (t *transport) close() {
	t.mu.Lock()
	t.done = true
	conns := t.conns
	t.conns = nil
	t.mu.Unlock()
	for _, pc := range conns {
		pc.stop()
	}
}

// run owns pc's Sync stream: it opens it (again after any error), and
// writes the queued messages to it in order.
func (t *transport) run(pc *peerConn) {
	defer close(pc.done)
	var stream grpc.ClientStreamingClient[peerpb.SyncFrame, peerpb.SyncEnd]
	backoff := 50 * time.Millisecond
	for {
		var msg []byte
		select {
		case <-pc.ctx.Done():
			if stream != nil {
				_ = stream.CloseSend()
			}
			return
		case msg = <-pc.queue:
		}
		v := t.verdict(pc.name)
		if v.Drop {
			t.counters.dropped.WithLabelValues("fault").Inc()
			continue
		}
		if v.Delay > 0 && !sleepCtx(pc.ctx, v.Delay) {
			continue
		}
		if stream == nil {
			s, err := pc.client.Sync(pc.ctx)
			if err == nil {
				err = s.Send(&peerpb.SyncFrame{Frame: &peerpb.SyncFrame_Hello{Hello: &peerpb.Hello{Node: t.self, ProtocolVersion: ProtocolVersion}}})
			}
			if err != nil {
				t.log.Debug("sync stream failed to open", "peer", pc.name, "addr", pc.addr, "err", err)
				t.counters.dropped.WithLabelValues("unreachable").Inc()
				sleepCtx(pc.ctx, backoff)
				backoff = min(2*backoff, time.Second)
				continue
			}
			stream, backoff = s, 50*time.Millisecond
		}
		copies := 1
		if v.Duplicate {
			copies = 2
		}
		for range copies {
			if err := t.writeChunks(stream, msg); err != nil {
				t.log.Debug("sync stream broke", "peer", pc.name, "err", err)
				t.counters.dropped.WithLabelValues("unreachable").Inc()
				stream = nil
				break
			}
		}
		if stream != nil {
			t.counters.sent(pc.name, len(msg))
		}
	}
}

func (t *transport) writeChunks(s grpc.ClientStreamingClient[peerpb.SyncFrame, peerpb.SyncEnd], msg []byte) error {
	for len(msg) > t.frame {
		if err := s.Send(&peerpb.SyncFrame{Frame: &peerpb.SyncFrame_Chunk{Chunk: msg[:t.frame]}}); err != nil {
			return err
		}
		msg = msg[t.frame:]
	}
	return s.Send(&peerpb.SyncFrame{Frame: &peerpb.SyncFrame_LastChunk{LastChunk: msg}})
}

func (t *transport) verdict(to string) netfault.Verdict {
	if t.faults == nil {
		return netfault.Verdict{}
	}
	return t.faults.Decide(t.self, to)
}

// errLinkCut is what a faulted call fails with once its deadline passes.
var errLinkCut = errors.New("mesh: link cut by the fault seam")

// faultCall applies the fault seam to a unary call: a cut or dropped call
// hangs until its deadline, as over a partitioned network.
func (t *transport) faultCall(ctx context.Context, to string) error {
	if t.faults == nil {
		return nil
	}
	v := t.faults.Decide(t.self, to)
	if v.Drop || t.faults.Blocked(t.self, to) {
		<-ctx.Done()
		return fmt.Errorf("%w: %w", errLinkCut, ctx.Err())
	}
	if v.Delay > 0 && !sleepCtx(ctx, v.Delay) {
		return ctx.Err()
	}
	return nil
}

// client returns m's Peer client for one unary call, after the fault
// seam has let the call through.
func (t *transport) client(ctx context.Context, m Member) (peerpb.PeerClient, error) {
	if err := t.faultCall(ctx, m.Name); err != nil {
		return nil, err
	}
	pc, err := t.conn(m.Name, m.PeerAddr)
	if err != nil {
		return nil, err
	}
	return pc.client, nil
}

func (t *transport) write(ctx context.Context, m Member, req *peerpb.WriteRequest) error {
	c, err := t.client(ctx, m)
	if err == nil {
		_, err = c.Write(ctx, req)
	}
	return err
}

func (t *transport) read(ctx context.Context, m Member, req *peerpb.ReadRequest) (*peerpb.ReadResponse, error) {
	c, err := t.client(ctx, m)
	if err != nil {
		return nil, err
	}
	return c.Read(ctx, req)
}

func (t *transport) holding(ctx context.Context, m Member, req *peerpb.HoldingRequest) (*peerpb.HoldingResponse, error) {
	c, err := t.client(ctx, m)
	if err != nil {
		return nil, err
	}
	return c.Holding(ctx, req)
}

// sleepCtx sleeps for d unless ctx ends first; it reports whether it slept.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}
