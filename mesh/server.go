package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/deltas"
	"github.com/statemesh/statemesh/protocol/peerpb"
)

// peerServer serves the Peer service. Everything a peer sends is
// untrusted: sizes are bounded, messages decoded with limits and checked
// against the stream's declared sender; a bad frame ends the stream with
// InvalidArgument and changes nothing.
type peerServer struct {
	peerpb.UnimplementedPeerServer
	n *Node
}

func (s *peerServer) refuse(reason, peer string, err error) error {
	s.n.met.refused.WithLabelValues(reason).Inc()
	s.n.log.Warn("refused peer input", "reason", reason, "peer", peer, "err", err)
	return status.Error(codes.InvalidArgument, err.Error())
}

func (s *peerServer) Sync(stream peerpb.Peer_SyncServer) error {
	n := s.n
	f, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := f.GetHello()
	switch {
	case hello == nil:
		return s.refuse("no-hello", "", errors.New("mesh: a Sync stream must open with a Hello"))
	case hello.ProtocolVersion != ProtocolVersion:
		return s.refuse("version", hello.Node, fmt.Errorf("mesh: peer protocol version %d, this node speaks %d", hello.ProtocolVersion, ProtocolVersion))
	case hello.Node == "" || hello.Node == n.cfg.Name:
		return s.refuse("hello", hello.Node, fmt.Errorf("mesh: Hello from %q", hello.Node))
	}
	from := hello.Node
	if err := s.checkMember(stream.Context(), from); err != nil {
		return err
	}
	var buf []byte
	for {
		f, err := stream.Recv()
		if err == io.EOF {
			return stream.SendAndClose(&peerpb.SyncEnd{})
		}
		if err != nil {
			return err
		}
		var last bool
		var part []byte
		switch fr := f.Frame.(type) {
		case *peerpb.SyncFrame_Chunk:
			part = fr.Chunk
		case *peerpb.SyncFrame_LastChunk:
			part, last = fr.LastChunk, true
		default:
			return s.refuse("frame", from, errors.New("mesh: unexpected frame in a Sync stream"))
		}
		if len(buf)+len(part) > n.cfg.Limits.MaxBytes {
			return s.refuse("too-large", from, fmt.Errorf("mesh: message over %d bytes", n.cfg.Limits.MaxBytes))
		}
		buf = append(buf, part...)
		if !last {
			continue
		}
		m, err := deltas.DecodeMessage(buf, *n.cfg.Limits)
		size := len(buf)
		buf = nil // the decoded message may alias it
		if err != nil {
			return s.refuse("decode", from, err)
		}
		if string(m.From) != from {
			return s.refuse("misaddressed", from, fmt.Errorf("mesh: message from %q on %s's stream", m.From, from))
		}
		m.To = deltas.PeerID(n.cfg.Name) // the wire form does not carry it
		for _, k := range messageKeys(m) {
			if _, err := parseKey(k); err != nil {
				return s.refuse("key", from, err)
			}
		}
		select {
		case n.recv <- inbound{msg: m, size: size}:
		case <-n.stopc:
			return status.Error(codes.Unavailable, ErrClosed.Error())
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

func (s *peerServer) Write(ctx context.Context, req *peerpb.WriteRequest) (*peerpb.WriteResponse, error) {
	n := s.n
	if err := s.checkMember(ctx, req.From); err != nil {
		return nil, err
	}
	k, err := parseKey(string(req.Key))
	if err != nil {
		return nil, s.refuse("write-key", req.From, err)
	}
	var (
		v    crdt.Value
		merr error
	)
	if req.Deleted {
		if len(req.State) > 0 {
			return nil, s.refuse("write-decode", req.From, errors.New("mesh: a deletion with a state"))
		}
	} else if v, err = crdt.Decode(req.State, n.cfg.Limits.CRDT); err != nil {
		return nil, s.refuse("write-decode", req.From, err)
	}
	batch, err := n.do(ctx, func() {
		if req.Deleted {
			n.eng.Delete(k.engineKey())
			return
		}
		_, merr = n.eng.Merge(k.engineKey(), v)
		if errors.Is(merr, ErrDeleted) {
			merr = nil // the key is deleted here: the write is absorbed
		}
	})
	if err == nil && merr != nil {
		return nil, s.refuse("write-type", req.From, merr)
	}
	if err == nil && n.cfg.Durability == Sync {
		err = n.dur.wait(ctx, batch, n.stopc)
	}
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &peerpb.WriteResponse{}, nil
}

func (s *peerServer) Read(ctx context.Context, req *peerpb.ReadRequest) (*peerpb.ReadResponse, error) {
	n := s.n
	if err := s.checkMember(ctx, req.From); err != nil {
		return nil, err
	}
	k, err := parseKey(string(req.Key))
	if err != nil {
		return nil, s.refuse("read-key", req.From, err)
	}
	var (
		enc     []byte
		deleted bool
	)
	if _, err := n.do(ctx, func() {
		enc, deleted = n.eng.Encoding(k.engineKey()), n.eng.Deleted(k.engineKey())
	}); err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &peerpb.ReadResponse{Found: enc != nil, State: enc, Deleted: deleted}, nil
}

func (s *peerServer) Holding(ctx context.Context, req *peerpb.HoldingRequest) (*peerpb.HoldingResponse, error) {
	n := s.n
	if err := s.checkMember(ctx, req.From); err != nil {
		return nil, err
	}
	r := crdt.ReplicaID{Node: req.Node, Incarnation: req.Incarnation}
	if err := crdt.ValidateReplica(r); err != nil {
		return nil, s.refuse("holding-replica", req.From, err)
	}
	if len(req.After) > MaxServiceBytes+1+MaxIDBytes {
		return nil, s.refuse("holding-key", req.From, fmt.Errorf("%w: after-key of %d bytes", ErrInvalidKey, len(req.After)))
	}
	var (
		keys []string
		more bool
	)
	if _, err := n.do(ctx, func() { keys, more = n.holdingKeys(r, string(req.After)) }); err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	resp := &peerpb.HoldingResponse{More: more}
	for _, k := range keys {
		resp.Keys = append(resp.Keys, []byte(k))
	}
	return resp, nil
}

// checkMember refuses callers that are not members of the mesh (or were
// removed from it): the node keeps per-peer state and metrics only for
// members. A node that has just joined may not be known yet; it retries.
func (s *peerServer) checkMember(ctx context.Context, name string) error {
	var known bool
	if _, err := s.n.do(ctx, func() { _, known = s.n.members[name] }); err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	if !known {
		s.n.met.refused.WithLabelValues("not-member").Inc()
		s.n.log.Warn("refused a peer that is not a member", "peer", name)
		return status.Errorf(codes.FailedPrecondition, "mesh: %q is not a member of this mesh", name)
	}
	return nil
}

// messageKeys lists every key a message names.
func messageKeys(m deltas.Message) []string {
	var out []string
	states := func(ks []deltas.KeyState) {
		for _, k := range ks {
			out = append(out, k.Key)
		}
	}
	switch b := m.Body.(type) {
	case *deltas.Deltas:
		states(b.Deltas)
	case *deltas.States:
		states(b.States)
	case *deltas.DigestReply:
		out = append(out, b.Want...)
		states(b.States)
	case *deltas.Digest:
		for _, d := range b.Digests {
			out = append(out, d.Key)
		}
	}
	return out
}
