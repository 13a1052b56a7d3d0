package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statemesh/statemesh/consensus"
	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/eventlog"
	"github.com/statemesh/statemesh/mesh"
	"github.com/statemesh/statemesh/protocol/adminpb"
)

type adminServer struct {
	adminpb.UnimplementedAdminServer
	m    *mesh.Node
	c    *consensus.Host // nil: no consensus
	db   *eventlog.DB    // nil: in memory
	node *Node
}

func (a *adminServer) SetClockOffset(_ context.Context, req *adminpb.SetClockOffsetRequest) (*adminpb.SetClockOffsetResponse, error) {
	if err := a.node.SetClockOffset(time.Duration(req.GetOffsetNanos())); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &adminpb.SetClockOffsetResponse{}, nil
}

// errStatus maps mesh errors to gRPC codes.
func errStatus(err error) error {
	code := codes.Internal
	switch {
	case errors.Is(err, mesh.ErrInvalidKey), errors.Is(err, crdt.ErrInvalidArg):
		code = codes.InvalidArgument
	case errors.Is(err, mesh.ErrTypeMismatch), errors.Is(err, mesh.ErrDeleted):
		code = codes.FailedPrecondition
	case errors.Is(err, mesh.ErrUnavailable), errors.Is(err, mesh.ErrClosed):
		code = codes.Unavailable
	case errors.Is(err, mesh.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	return status.Error(code, err.Error())
}

func (a *adminServer) Members(ctx context.Context, _ *adminpb.MembersRequest) (*adminpb.MembersResponse, error) {
	ms, err := a.m.Members(ctx)
	if err != nil {
		return nil, errStatus(err)
	}
	self := a.m.Replica()
	out := []*adminpb.Member{{Name: self.Node, Incarnation: self.Incarnation, GossipAddr: a.m.GossipAddr(),
		PeerAddr: a.m.PeerAddr(), Region: a.m.Region(), Alive: true, Self: true}}
	slices.SortFunc(ms, func(x, y mesh.Member) int { return strings.Compare(x.Name, y.Name) })
	for _, m := range ms {
		out = append(out, &adminpb.Member{Name: m.Name, Incarnation: m.Incarnation, Region: m.Region, Zone: m.Zone,
			GossipAddr: m.GossipAddr, PeerAddr: m.PeerAddr, RaftAddr: m.RaftAddr, Alive: m.Alive})
	}
	return &adminpb.MembersResponse{Members: out}, nil
}

func (a *adminServer) Keys(ctx context.Context, _ *adminpb.KeysRequest) (*adminpb.KeysResponse, error) {
	ks, err := a.m.Keys(ctx)
	if err != nil {
		return nil, errStatus(err)
	}
	out := make([]*adminpb.Key, len(ks))
	for i, k := range ks {
		out[i] = &adminpb.Key{Service: k.Service, Id: k.ID}
	}
	return &adminpb.KeysResponse{Keys: out}, nil
}

func key(k *adminpb.Key) mesh.Key {
	if k == nil {
		return mesh.Key{}
	}
	return mesh.Key{Service: k.Service, ID: k.Id}
}

func (a *adminServer) Get(ctx context.Context, req *adminpb.GetRequest) (*adminpb.GetResponse, error) {
	c, err := mesh.ParseConsistency(req.Consistency)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	v, err := a.m.Get(ctx, key(req.Key), mesh.Options{Consistency: c})
	if err != nil {
		return nil, errStatus(err)
	}
	if v == nil {
		return &adminpb.GetResponse{}, nil
	}
	return &adminpb.GetResponse{Found: true, Type: v.Type().String(), Value: Describe(v), State: crdt.Encode(v)}, nil
}

func (a *adminServer) Update(ctx context.Context, req *adminpb.UpdateRequest) (*adminpb.UpdateResponse, error) {
	c, err := mesh.ParseConsistency(req.Consistency)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	t, fn, err := TestMutator(a.m, req.Type, req.Op, req.Arg)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	o := mesh.Options{Consistency: c, Timeout: time.Duration(req.TimeoutMs) * time.Millisecond}
	v, err := a.m.Update(ctx, key(req.Key), t, fn, o)
	if err != nil {
		return nil, errStatus(err)
	}
	return &adminpb.UpdateResponse{Type: v.Type().String(), Value: Describe(v)}, nil
}

func (a *adminServer) Delete(ctx context.Context, req *adminpb.DeleteRequest) (*adminpb.DeleteResponse, error) {
	c, err := mesh.ParseConsistency(req.Consistency)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	o := mesh.Options{Consistency: c, Timeout: time.Duration(req.TimeoutMs) * time.Millisecond}
	if err := a.m.Delete(ctx, key(req.Key), o); err != nil {
		return nil, errStatus(err)
	}
	return &adminpb.DeleteResponse{}, nil
}

func (a *adminServer) RemoveNode(ctx context.Context, req *adminpb.RemoveNodeRequest) (*adminpb.RemoveNodeResponse, error) {
	if err := a.m.RemoveNode(ctx, req.Name, req.Force); err != nil {
		if errors.Is(err, mesh.ErrMemberAlive) {
			return nil, status.Error(codes.FailedPrecondition, err.Error())
		}
		return nil, status.Error(codes.NotFound, err.Error())
	}
	return &adminpb.RemoveNodeResponse{}, nil
}

// TestMutator builds the mutator of a test update: type and op by name,
// arg the amount (counters) or the element or value.
func TestMutator(m *mesh.Node, typ, op, arg string) (crdt.Type, mesh.Mutator, error) {
	r := m.Replica()
	amount := func() (uint64, error) {
		if arg == "" {
			return 1, nil
		}
		n, err := strconv.ParseUint(arg, 10, 63)
		if err != nil {
			return 0, fmt.Errorf("amount %q: %w", arg, err)
		}
		return n, nil
	}
	bad := func() (crdt.Type, mesh.Mutator, error) {
		return 0, nil, fmt.Errorf("no op %q for type %q", op, typ)
	}
	switch strings.ToLower(typ) {
	case "gcounter":
		if op != "increment" {
			return bad()
		}
		n, err := amount()
		if err != nil {
			return 0, nil, err
		}
		return crdt.TypeGCounter, func(v crdt.Value) (crdt.Value, error) { return v.(*crdt.GCounter).Increment(r, n) }, nil
	case "pncounter":
		n, err := amount()
		if err != nil {
			return 0, nil, err
		}
		d := int64(n)
		switch op {
		case "increment":
		case "decrement":
			d = -d
		default:
			return bad()
		}
		return crdt.TypePNCounter, func(v crdt.Value) (crdt.Value, error) { return v.(*crdt.PNCounter).Increment(r, d) }, nil
	case "gset":
		if op != "add" {
			return bad()
		}
		return crdt.TypeGSet, func(v crdt.Value) (crdt.Value, error) { return v.(*crdt.GSet).Add([]byte(arg)), nil }, nil
	case "orset":
		switch op {
		case "add":
			return crdt.TypeORSet, func(v crdt.Value) (crdt.Value, error) { return v.(*crdt.ORSet).Add(r, []byte(arg)), nil }, nil
		case "remove":
			return crdt.TypeORSet, func(v crdt.Value) (crdt.Value, error) { return v.(*crdt.ORSet).Remove([]byte(arg)), nil }, nil
		}
		return bad()
	case "flag":
		if op != "enable" {
			return bad()
		}
		return crdt.TypeFlag, func(v crdt.Value) (crdt.Value, error) { return v.(*crdt.Flag).Enable(), nil }, nil
	case "ewflag":
		switch op {
		case "enable":
			return crdt.TypeEWFlag, func(v crdt.Value) (crdt.Value, error) { return v.(*crdt.EWFlag).Enable(r), nil }, nil
		case "disable":
			return crdt.TypeEWFlag, func(v crdt.Value) (crdt.Value, error) { return v.(*crdt.EWFlag).Disable(), nil }, nil
		}
		return bad()
	case "lwwregister":
		if op != "set" {
			return bad()
		}
		clock := m.Clock()
		return crdt.TypeLWWRegister, func(v crdt.Value) (crdt.Value, error) {
			return v.(*crdt.LWWRegister).Set(r, clock.Now(), []byte(arg)), nil
		}, nil
	}
	return 0, nil, fmt.Errorf("unknown type %q (gcounter, pncounter, gset, orset, flag, ewflag, lwwregister)", typ)
}

// Describe renders a CRDT value for people.
func Describe(v crdt.Value) string {
	quote := func(els [][]byte) string {
		s := make([]string, len(els))
		for i, e := range els {
			s[i] = strconv.Quote(string(e))
		}
		return "{" + strings.Join(s, ", ") + "}"
	}
	switch x := v.(type) {
	case *crdt.GCounter:
		return strconv.FormatUint(x.Value(), 10)
	case *crdt.PNCounter:
		return strconv.FormatInt(x.Value(), 10)
	case *crdt.GSet:
		return quote(x.Elements())
	case *crdt.ORSet:
		return quote(x.Elements())
	case *crdt.MVRegister:
		return quote(x.Values())
	case *crdt.LWWRegister:
		b, ok := x.Get()
		if !ok {
			return "(unset)"
		}
		return strconv.Quote(string(b))
	case *crdt.Flag:
		return strconv.FormatBool(x.Enabled())
	case *crdt.EWFlag:
		return strconv.FormatBool(x.Enabled())
	case *crdt.Vote:
		return fmt.Sprintf("%d of %d voters for", x.VotesFor(), x.Voters())
	case *crdt.ORMap:
		var ks []string
		for _, k := range x.Keys() {
			ks = append(ks, fmt.Sprintf("%q:%s", k.Key, k.Type))
		}
		return "{" + strings.Join(ks, ", ") + "}"
	}
	return v.Type().String()
}

// consensusStatus maps consensus errors to gRPC codes.
func consensusStatus(err error) error {
	code := codes.Internal
	switch {
	case errors.Is(err, consensus.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, consensus.ErrConflict):
		code = codes.Aborted
	case errors.Is(err, consensus.ErrRejected):
		code = codes.FailedPrecondition
	case errors.Is(err, consensus.ErrNoHandler):
		code = codes.Unimplemented
	case errors.Is(err, consensus.ErrUnavailable), errors.Is(err, consensus.ErrNotLeader), errors.Is(err, consensus.ErrClosed):
		code = codes.Unavailable
	case errors.Is(err, consensus.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	return status.Error(code, err.Error())
}

func (a *adminServer) host() (*consensus.Host, error) {
	if a.c == nil {
		return nil, status.Error(codes.FailedPrecondition, "this node runs no consensus (no Raft address)")
	}
	return a.c, nil
}

func (a *adminServer) Command(ctx context.Context, req *adminpb.CommandRequest) (*adminpb.CommandResponse, error) {
	h, err := a.host()
	if err != nil {
		return nil, err
	}
	r, err := h.Command(ctx, consensus.Entity{Type: req.Type, ID: req.Id}, req.Command, req.RequestId)
	if err != nil {
		return nil, consensusStatus(err)
	}
	return &adminpb.CommandResponse{Seq: r.Seq, Reply: r.Data}, nil
}

func (a *adminServer) Events(ctx context.Context, req *adminpb.EventsRequest) (*adminpb.EventsResponse, error) {
	h, err := a.host()
	if err != nil {
		return nil, err
	}
	st, err := h.Load(ctx, consensus.Entity{Type: req.Type, ID: req.Id})
	if err != nil {
		return nil, consensusStatus(err)
	}
	out := &adminpb.EventsResponse{Seq: st.Seq, SnapshotSeq: st.SnapshotSeq, Snapshot: st.Snapshot}
	for _, e := range st.Events {
		out.Events = append(out.Events, e.Data)
	}
	return out, nil
}

func (a *adminServer) ShardLeaders(context.Context, *adminpb.ShardLeadersRequest) (*adminpb.ShardLeadersResponse, error) {
	h, err := a.host()
	if err != nil {
		return nil, err
	}
	out := &adminpb.ShardLeadersResponse{}
	for _, l := range h.Leaders() {
		out.Leaders = append(out.Leaders, &adminpb.ShardLeader{Shard: l.Shard, ReplicaId: l.ReplicaID, Node: l.Node, Term: l.Term, Local: l.Local})
	}
	return out, nil
}

// backupChunk is the size of one streamed backup message.
const backupChunk = 256 << 10

func (a *adminServer) Backup(_ *adminpb.BackupRequest, stream adminpb.Admin_BackupServer) error {
	if a.db == nil {
		return status.Error(codes.FailedPrecondition, "this node keeps its state in memory: nothing to back up")
	}
	w := &chunkWriter{send: func(b []byte) error { return stream.Send(&adminpb.BackupChunk{Data: b}) }}
	if _, err := a.db.Backup(w); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	return w.flush()
}

// chunkWriter turns a byte stream into messages of at most backupChunk
// bytes.
type chunkWriter struct {
	buf  []byte
	send func([]byte) error
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), backupChunk-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		if len(w.buf) == backupChunk {
			if err := w.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (w *chunkWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	err := w.send(w.buf)
	w.buf = w.buf[:0:0]
	return err
}
