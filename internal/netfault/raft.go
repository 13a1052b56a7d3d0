package netfault

import (
	"context"
	"fmt"
	"time"

	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/raftio"
	pb "github.com/lni/dragonboat/v4/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// WrapRaft wraps a Dragonboat transport factory so that every Raft message
// batch and snapshot chunk a NodeHost sends passes through f. Message
// batches over a cut or lossy link are dropped (Raft retransmits),
// duplicated, or delayed inline (which also delays the batches queued
// behind them to the same target, as a slow link would). Snapshot
// connections over a cut link fail. Dragonboat's TCP transport cannot be
// wrapped (it is internal), so in-process tests wrap its channel transport
// (plugin/chan); between real processes, links are cut at the network
// level.
//
// resolve maps a Raft address to the node name f knows; self is the
// sender's name. Validate accepts every address (the channel transport's
// own Validate panics).
func WrapRaft(inner config.TransportFactory, self string, f *Faults, resolve func(addr string) (string, bool)) config.TransportFactory {
	return &raftFactory{inner: inner, self: self, f: f, resolve: resolve}
}

type raftFactory struct {
	inner   config.TransportFactory
	self    string
	f       *Faults
	resolve func(string) (string, bool)
}

func (r *raftFactory) Create(c config.NodeHostConfig, h raftio.MessageHandler, ch raftio.ChunkHandler) raftio.ITransport {
	return &raftTransport{ITransport: r.inner.Create(c, h, ch), r: r}
}

func (r *raftFactory) Validate(string) bool { return true }

type raftTransport struct {
	raftio.ITransport
	r *raftFactory
}

func (t *raftTransport) target(addr string) string {
	if n, ok := t.r.resolve(addr); ok {
		return n
	}
	return addr
}

func (t *raftTransport) GetConnection(ctx context.Context, target string) (raftio.IConnection, error) {
	to := t.target(target)
	if t.r.f.Blocked(t.r.self, to) {
		return nil, fmt.Errorf("%w: raft %s -> %s", ErrCut, t.r.self, to)
	}
	c, err := t.ITransport.GetConnection(ctx, target)
	if err != nil {
		return nil, err
	}
	return &raftConn{IConnection: c, from: t.r.self, to: to, f: t.r.f}, nil
}

func (t *raftTransport) GetSnapshotConnection(ctx context.Context, target string) (raftio.ISnapshotConnection, error) {
	to := t.target(target)
	if t.r.f.Blocked(t.r.self, to) {
		return nil, fmt.Errorf("%w: raft snapshot %s -> %s", ErrCut, t.r.self, to)
	}
	c, err := t.ITransport.GetSnapshotConnection(ctx, target)
	if err != nil {
		return nil, err
	}
	return &raftSnapConn{ISnapshotConnection: c, from: t.r.self, to: to, f: t.r.f}, nil
}

type raftConn struct {
	raftio.IConnection
	from, to string
	f        *Faults
}

func (c *raftConn) SendMessageBatch(b pb.MessageBatch) error {
	v := c.f.Decide(c.from, c.to)
	if v.Drop {
		return nil
	}
	if v.Delay > 0 {
		time.Sleep(v.Delay)
	}
	if err := c.IConnection.SendMessageBatch(b); err != nil {
		return err
	}
	if v.Duplicate {
		return c.IConnection.SendMessageBatch(b)
	}
	return nil
}

type raftSnapConn struct {
	raftio.ISnapshotConnection
	from, to string
	f        *Faults
}

func (c *raftSnapConn) SendChunk(ch pb.Chunk) error {
	if c.f.Blocked(c.from, c.to) {
		return fmt.Errorf("%w: raft snapshot %s -> %s", ErrCut, c.from, c.to)
	}
	return c.ISnapshotConnection.SendChunk(ch)
}

// UnaryClientInterceptor fails every unary RPC from self over a cut link
// with codes.Unavailable, as a dead network would (existing connections
// included). resolve maps the call's target address to a node name.
func UnaryClientInterceptor(self string, f *Faults, resolve func(addr string) (string, bool)) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		to := cc.Target()
		if n, ok := resolve(to); ok {
			to = n
		}
		if f.Blocked(self, to) {
			return status.Errorf(codes.Unavailable, "%v: %s -> %s", ErrCut, self, to)
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}
