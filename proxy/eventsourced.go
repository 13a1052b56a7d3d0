package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/statemesh/statemesh/consensus"
	"github.com/statemesh/statemesh/protocol/functionpb"
)

// The payload the proxy hands to consensus.Host.Command is a serialized
// functionpb.ActionCommand (service, method, request Any, metadata): the
// service is needed because several services may share a persistence id.
// The reply it gets back is a serialized functionpb.EventSourcedReply
// holding only the client action and the side effects (the events and
// snapshot travel in the Effect), so that a retried command's recorded
// reply still knows its side effects.

// runEventSourced routes an event-sourced command through consensus; the
// handler (esHandler) runs on the shard leader.
func (p *Proxy) runEventSourced(ctx context.Context, host ESHost, m *method, id string, env *functionpb.ActionCommand) (*functionpb.ClientAction, []*functionpb.SideEffect, error) {
	payload, err := proto.Marshal(env)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	reply, err := host.Command(ctx, consensus.Entity{Type: m.svc.persistenceID, ID: id}, payload, nil)
	if err != nil {
		return nil, nil, err
	}
	var r functionpb.EventSourcedReply
	if err := proto.Unmarshal(reply.Data, &r); err != nil {
		return nil, nil, fmt.Errorf("%w: stored reply does not decode: %v", ErrFunction, err)
	}
	return r.GetClientAction(), r.GetSideEffects(), nil
}

// esHandler is the consensus.Handler of one entity type.
type esHandler struct {
	p          *Proxy
	entityType string
}

// esStream is an open EventSourced.Handle stream of one entity.
type esStream struct {
	stream grpc.BidiStreamingClient[functionpb.EventSourcedStreamIn, functionpb.EventSourcedStreamOut]
	cancel context.CancelFunc
	// seq is the sequence number of the last event the function has
	// applied. pending and pendingSnap are what the last command emitted:
	// the function has applied them, but they count as the entity's state
	// only once a later State shows them persisted.
	seq         uint64
	pending     [][]byte
	pendingSnap []byte
	nextID      int64
}

func (s *esStream) close() { s.cancel() }

// current reports whether the function's copy of the entity is exactly
// st (so the stream can take the next command without a replay).
func (s *esStream) current(st consensus.EntityState) bool {
	if s.seq != st.Seq {
		return false
	}
	confirmed := false
	switch n := len(s.pending); {
	case n == 0:
		// No events emitted since the last replay or confirmation: the
		// function's state is the persisted one at seq (a snapshot at
		// the same seq changes nothing).
		confirmed = true
	case len(st.Events) >= n:
		tail := st.Events[len(st.Events)-n:]
		confirmed = true
		for i, ev := range tail {
			if !bytes.Equal(ev.Data, s.pending[i]) {
				confirmed = false
				break
			}
		}
	case s.pendingSnap != nil && st.SnapshotSeq == s.seq:
		confirmed = bytes.Equal(st.Snapshot, s.pendingSnap)
	}
	if confirmed {
		s.pending, s.pendingSnap = nil, nil
	}
	return confirmed
}

// Handle runs one command on the entity's stream (reopened with the full
// state when the stream has seen another history).
func (h esHandler) Handle(ctx context.Context, c consensus.Command) (consensus.Effect, error) {
	p := h.p
	var env functionpb.ActionCommand
	if err := proto.Unmarshal(c.Payload, &env); err != nil {
		return consensus.Effect{}, &failureError{code: codes.InvalidArgument, desc: fmt.Sprintf("command does not decode: %v", err)}
	}
	s := p.model.services[protoreflect.FullName(env.GetServiceName())]
	if s == nil || s.model != functionpb.Model_MODEL_EVENT_SOURCED || s.persistenceID != c.Entity.Type {
		return consensus.Effect{}, &failureError{code: codes.Unimplemented,
			desc: fmt.Sprintf("service %q is not an event-sourced service of entity type %q", env.GetServiceName(), c.Entity.Type)}
	}
	sl, err := p.es.acquire(slotKey(s, c.Entity.ID), s.passivation)
	if err != nil {
		return consensus.Effect{}, &failureError{code: codes.Unavailable, desc: err.Error()}
	}
	defer p.es.release(sl)
	if sl.ok && !sl.s.current(c.State) {
		sl.drop()
	}
	if !sl.ok {
		st, err := p.openES(s, c.Entity.ID, c.State)
		if err != nil {
			return consensus.Effect{}, err
		}
		sl.set(st)
	}
	st := sl.s
	st.nextID++
	id := st.nextID
	cmd := &functionpb.Command{EntityId: c.Entity.ID, Id: id, Name: env.GetName(), Payload: env.GetPayload(), Metadata: env.GetMetadata()}
	if err := st.stream.Send(&functionpb.EventSourcedStreamIn{Message: &functionpb.EventSourcedStreamIn_Command{Command: cmd}}); err != nil {
		sl.drop()
		return consensus.Effect{}, streamError(ctx, err)
	}
	out, err := recvCtx(ctx, st.stream.Recv)
	if err != nil {
		sl.drop()
		return consensus.Effect{}, streamError(ctx, err)
	}
	switch o := out.GetMessage().(type) {
	case *functionpb.EventSourcedStreamOut_Failure:
		if o.Failure.GetCommandId() != id {
			sl.drop() // the entity failed as a whole
		}
		return consensus.Effect{}, &failureError{code: failureCode(o.Failure.GetGrpcStatusCode()), desc: o.Failure.GetDescription()}
	case *functionpb.EventSourcedStreamOut_Reply:
		r := o.Reply
		if r.GetCommandId() != id {
			sl.drop()
			return consensus.Effect{}, functionFailure("reply to command %d, want %d", r.GetCommandId(), id)
		}
		eff := consensus.Effect{}
		for _, ev := range r.GetEvents() {
			b, err := marshalAny(ev)
			if err != nil {
				sl.drop()
				return consensus.Effect{}, functionFailure("event: %v", err)
			}
			eff.Events = append(eff.Events, b)
		}
		if r.GetSnapshot() != nil {
			b, err := marshalAny(r.GetSnapshot())
			if err != nil {
				sl.drop()
				return consensus.Effect{}, functionFailure("snapshot: %v", err)
			}
			eff.HasSnapshot, eff.Snapshot = true, b
		}
		reply, err := proto.Marshal(&functionpb.EventSourcedReply{CommandId: id, ClientAction: r.GetClientAction(), SideEffects: r.GetSideEffects()})
		if err != nil {
			sl.drop()
			return consensus.Effect{}, functionFailure("reply: %v", err)
		}
		eff.Reply = reply
		st.seq = c.State.Seq + uint64(len(eff.Events))
		st.pending, st.pendingSnap = eff.Events, eff.Snapshot
		return eff, nil
	default:
		sl.drop()
		return consensus.Effect{}, functionFailure("empty message on the entity stream")
	}
}

// openES opens an entity's stream and replays its state.
func (p *Proxy) openES(s *service, id string, state consensus.EntityState) (*esStream, error) {
	init := &functionpb.EventSourcedInit{ServiceName: string(s.desc.FullName()), EntityId: id}
	if state.Snapshot != nil {
		a := &anypb.Any{}
		if err := proto.Unmarshal(state.Snapshot, a); err != nil {
			return nil, functionFailure("stored snapshot of %s does not decode: %v", id, err)
		}
		init.Snapshot = &functionpb.EventSourcedSnapshot{SnapshotSequence: int64(state.SnapshotSeq), Snapshot: a}
	}
	msgs := []*functionpb.EventSourcedStreamIn{{Message: &functionpb.EventSourcedStreamIn_Init{Init: init}}}
	for _, ev := range state.Events {
		a := &anypb.Any{}
		if err := proto.Unmarshal(ev.Data, a); err != nil {
			return nil, functionFailure("stored event %d of %s does not decode: %v", ev.Seq, id, err)
		}
		msgs = append(msgs, &functionpb.EventSourcedStreamIn{Message: &functionpb.EventSourcedStreamIn_Event{
			Event: &functionpb.EventSourcedEvent{Sequence: int64(ev.Seq), Payload: a}}})
	}
	ctx, cancel := context.WithCancel(p.ctx)
	stream, err := p.esFn.Handle(ctx)
	if err != nil {
		cancel()
		return nil, &failureError{code: codes.Unavailable, desc: fmt.Sprintf("opening the entity stream: %v", err)}
	}
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			cancel()
			return nil, &failureError{code: codes.Unavailable, desc: fmt.Sprintf("replaying the entity: %v", err)}
		}
	}
	return &esStream{stream: stream, cancel: cancel, seq: state.Seq}, nil
}

// marshalAny serializes a function's Any as stored (deterministically, so
// equal events have equal bytes).
func marshalAny(a *anypb.Any) ([]byte, error) {
	if a.GetTypeUrl() == "" {
		return nil, errors.New("an Any without a type URL")
	}
	return proto.MarshalOptions{Deterministic: true}.Marshal(a)
}

// functionFailure fails a command for the function's misbehaviour.
func functionFailure(format string, args ...any) error {
	return &failureError{code: codes.Internal, desc: "function error: " + fmt.Sprintf(format, args...)}
}

// streamError classifies an entity stream's send or receive error.
func streamError(ctx context.Context, err error) error {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return &failureError{code: codes.DeadlineExceeded, desc: "deadline exceeded waiting for the function"}
	case ctx.Err() != nil:
		return &failureError{code: codes.Canceled, desc: "canceled waiting for the function"}
	}
	return functionFailure("entity stream: %v", err)
}

// recvCtx receives one message, or gives up when ctx ends (the caller
// then closes the stream, which ends the receiving goroutine).
func recvCtx[T any](ctx context.Context, recv func() (*T, error)) (*T, error) {
	type result struct {
		m   *T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		m, err := recv()
		ch <- result{m, err}
	}()
	select {
	case r := <-ch:
		return r.m, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
