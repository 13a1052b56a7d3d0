package consensus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/lni/dragonboat/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/statemesh/statemesh/protocol/consensuspb"
)

// Server is the Consensus gRPC service: operations forwarded by other
// nodes, and placement's requests to start a replica. It can be
// registered before its Host exists (the mesh's peer server starts first)
// and answers Unavailable until Bind. Every request is validated before it
// reaches the Host; a malformed one fails with CODE_INVALID (or
// InvalidArgument) and changes nothing.
type Server struct {
	consensuspb.UnimplementedConsensusServer
	host atomic.Pointer[Host]
}

// NewServer returns a Server with no Host yet.
func NewServer() *Server { return &Server{} }

// Register serves s on g.
func (s *Server) Register(g *grpc.Server) { consensuspb.RegisterConsensusServer(g, s) }

// Bind makes s serve h.
func (s *Server) Bind(h *Host) { s.host.Store(h) }

func (s *Server) h() (*Host, error) {
	h := s.host.Load()
	if h == nil {
		return nil, status.Error(codes.Unavailable, "consensus: not started yet")
	}
	return h, nil
}

func checkHops(h *Host, hops uint32) error {
	if hops == 0 || int(hops) > h.cfg.MaxForwardHops {
		return wrapf(ErrInvalid, "forwarded request with hop count %d (1..%d)", hops, h.cfg.MaxForwardHops)
	}
	return nil
}

func (s *Server) Command(ctx context.Context, req *consensuspb.CommandRequest) (*consensuspb.CommandResponse, error) {
	h, err := s.h()
	if err != nil {
		return nil, err
	}
	err = checkHops(h, req.Hops)
	if err == nil {
		err = checkRequest(entityOf(req.Entity), len(req.Command), req.RequestId)
	}
	if err == nil && len(req.RequestId) == 0 {
		err = wrapf(ErrInvalid, "forwarded command without a request id")
	}
	var resp *consensuspb.CommandResponse
	if err == nil {
		resp, err = h.command(ctx, req, true)
	}
	if err != nil {
		out := &consensuspb.CommandResponse{Code: codeOf(err), Message: err.Error()}
		var r *Rejection
		if errors.As(err, &r) {
			out.RejectedCode, out.RejectedMessage = uint32(r.Code), r.Message
		}
		return out, nil
	}
	return resp, nil
}

func (s *Server) Value(ctx context.Context, req *consensuspb.ValueRequest) (*consensuspb.ValueResponse, error) {
	h, err := s.h()
	if err != nil {
		return nil, err
	}
	err = checkHops(h, req.Hops)
	if err == nil {
		err = checkRequest(entityOf(req.Entity), len(req.State), req.RequestId)
	}
	if err == nil {
		if _, ok := consensuspb.ValueRequest_Op_name[int32(req.Op)]; !ok {
			err = wrapf(ErrInvalid, "unknown value operation %d", req.Op)
		}
	}
	var resp *consensuspb.ValueResponse
	if err == nil {
		resp, err = h.value(ctx, req, true)
	}
	if err != nil {
		out := &consensuspb.ValueResponse{Code: codeOf(err), Message: err.Error()}
		if resp != nil {
			out.Version = resp.Version
		}
		return out, nil
	}
	return resp, nil
}

func (s *Server) Load(ctx context.Context, req *consensuspb.LoadRequest) (*consensuspb.LoadResponse, error) {
	h, err := s.h()
	if err != nil {
		return nil, err
	}
	err = checkHops(h, req.Hops)
	if err == nil {
		err = checkRequest(entityOf(req.Entity), 0, nil)
	}
	var resp *consensuspb.LoadResponse
	if err == nil {
		resp, err = h.load(ctx, req, true)
	}
	if err != nil {
		return &consensuspb.LoadResponse{Code: codeOf(err), Message: err.Error()}, nil
	}
	return resp, nil
}

// StartReplica starts this node's replica of a shard as a joining member
// (Dragonboat: join=true, no initial members). The shard's leader calls it
// just before it adds the replica to the shard, so the replica is running
// when the leader starts sending to it. Starting one that runs is a no-op.
func (s *Server) StartReplica(_ context.Context, req *consensuspb.StartReplicaRequest) (*consensuspb.StartReplicaResponse, error) {
	h, err := s.h()
	if err != nil {
		return nil, err
	}
	if req.Shard < 1 || req.Shard > uint64(h.cfg.Shards) {
		return nil, status.Errorf(codes.InvalidArgument, "shard %d out of [1, %d]", req.Shard, h.cfg.Shards)
	}
	if req.ReplicaId != h.replicaID {
		return nil, status.Errorf(codes.InvalidArgument, "replica id %d is not this node's (%d)", req.ReplicaId, h.replicaID)
	}
	if err := h.enter(); err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	defer h.exit()
	h.startMu.Lock() // one start at a time: a retried request must not clear a starting shard
	defer h.startMu.Unlock()
	if h.hasShard(req.Shard) {
		return &consensuspb.StartReplicaResponse{}, nil
	}
	if !h.nh.HasNodeInfo(req.Shard, h.replicaID) {
		// A new replica gets the shard's data from the leader (log or
		// snapshot) from index 1; whatever this node's eventlog holds for
		// the shard (an earlier membership, a restored backup) must not
		// mix with it.
		if err := h.cfg.DB.Shard(req.Shard).Drop(); err != nil {
			return nil, status.Errorf(codes.Internal, "clear shard %d: %v", req.Shard, err)
		}
	}
	err = h.nh.StartOnDiskReplica(nil, true, h.newSM, h.shardConfig(req.Shard))
	if err != nil && !errors.Is(err, dragonboat.ErrShardAlreadyExist) {
		return nil, status.Errorf(codes.Internal, "start replica of shard %d: %v", req.Shard, err)
	}
	h.log.Info("started replica to join shard", "shard", req.Shard)
	return &consensuspb.StartReplicaResponse{}, nil
}

// client returns a connection to another node's Consensus service,
// dialing it on first use. Connections live until Close.
func (h *Host) client(addr string) (consensuspb.ConsensusClient, error) {
	h.conns.Lock()
	defer h.conns.Unlock()
	if h.conns.m == nil {
		return nil, ErrClosed
	}
	if c, ok := h.conns.m[addr]; ok {
		return consensuspb.NewConsensusClient(c), nil
	}
	// Clipped: appending must not write into the spare capacity of the
	// caller's Config.DialOptions.
	opts := slices.Clip(h.cfg.DialOptions)
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	opts = append(opts, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxEntryBytes+(1<<20))))
	c, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, err
	}
	h.conns.m[addr] = c
	return consensuspb.NewConsensusClient(c), nil
}

// transportError classifies a failed forwarding call. gRPC reports a
// connection that broke after the request was sent as Unavailable, just
// like one that was never made, so every transport failure is an unknown
// outcome (ErrTimeout, retried with the same request id) except refusals
// that happen before the callee runs anything.
func transportError(err error) error {
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.InvalidArgument, codes.ResourceExhausted, codes.Unimplemented:
		return fmt.Errorf("%w: %v", ErrInvalid, st.Message())
	default:
		return fmt.Errorf("%w: forwarding: %v", ErrTimeout, st.Message())
	}
}
