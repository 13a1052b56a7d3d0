package proxy

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/statemesh/statemesh/consensus"
	"github.com/statemesh/statemesh/protocol/functionpb"
)

// valueStream is an open ValueEntity.Handle stream of one entity.
type valueStream struct {
	stream grpc.BidiStreamingClient[functionpb.ValueEntityStreamIn, functionpb.ValueEntityStreamOut]
	cancel context.CancelFunc
	// version is the value version the function's copy holds.
	version uint64
	nextID  int64
}

func (s *valueStream) close() { s.cancel() }

// runValue runs a value entity's command: read the value (linearizably),
// bring the function's copy to it, run the command, and write the state
// action with the version read. A write that meets a newer version is
// re-run on the new state, up to Config.ValueRetries times.
func (p *Proxy) runValue(ctx context.Context, host ESHost, m *method, id string, env *functionpb.ActionCommand) (*functionpb.ClientAction, []*functionpb.SideEffect, error) {
	s := m.svc
	e := consensus.Entity{Type: s.persistenceID, ID: id}
	sl, err := p.values.acquire(slotKey(s, id), s.passivation)
	if err != nil {
		return nil, nil, err
	}
	defer p.values.release(sl)
	for attempt := 0; ; attempt++ {
		v, found, err := host.GetValue(ctx, e)
		if err != nil {
			return nil, nil, err
		}
		if !found {
			v = consensus.Value{}
		}
		if sl.ok && sl.s.version != v.Version {
			sl.drop()
		}
		if !sl.ok {
			st, err := p.openValue(s, id, v)
			if err != nil {
				return nil, nil, err
			}
			sl.set(st)
		}
		st := sl.s
		st.nextID++
		cid := st.nextID
		cmd := &functionpb.Command{EntityId: id, Id: cid, Name: env.GetName(), Payload: env.GetPayload(), Metadata: env.GetMetadata()}
		if err := st.stream.Send(&functionpb.ValueEntityStreamIn{Message: &functionpb.ValueEntityStreamIn_Command{Command: cmd}}); err != nil {
			sl.drop()
			return nil, nil, streamError(ctx, err)
		}
		out, err := recvCtx(ctx, st.stream.Recv)
		if err != nil {
			sl.drop()
			return nil, nil, streamError(ctx, err)
		}
		var r *functionpb.ValueEntityReply
		switch o := out.GetMessage().(type) {
		case *functionpb.ValueEntityStreamOut_Failure:
			if o.Failure.GetCommandId() != cid {
				sl.drop()
			}
			return nil, nil, &failureError{code: failureCode(o.Failure.GetGrpcStatusCode()), desc: o.Failure.GetDescription()}
		case *functionpb.ValueEntityStreamOut_Reply:
			r = o.Reply
		default:
			sl.drop()
			return nil, nil, functionFailure("empty message on the entity stream")
		}
		if r.GetCommandId() != cid {
			sl.drop()
			return nil, nil, functionFailure("reply to command %d, want %d", r.GetCommandId(), cid)
		}
		var ver uint64
		switch a := r.GetStateAction().GetAction().(type) {
		case nil:
			return r.GetClientAction(), r.GetSideEffects(), nil
		case *functionpb.ValueEntityStateAction_Update:
			b, merr := marshalAny(a.Update)
			if merr != nil {
				sl.drop()
				return nil, nil, functionFailure("state: %v", merr)
			}
			ver, err = host.PutValue(ctx, e, b, v.Version)
		case *functionpb.ValueEntityStateAction_Delete:
			ver, err = host.DeleteValue(ctx, e, v.Version)
		}
		if err == nil {
			st.version = ver
			return r.GetClientAction(), r.GetSideEffects(), nil
		}
		// The function's copy holds a state that was not written.
		sl.drop()
		if errors.Is(err, consensus.ErrConflict) && attempt < p.cfg.ValueRetries {
			continue
		}
		return nil, nil, err
	}
}

// openValue opens an entity's stream with its current state.
func (p *Proxy) openValue(s *service, id string, v consensus.Value) (*valueStream, error) {
	init := &functionpb.ValueEntityInit{ServiceName: string(s.desc.FullName()), EntityId: id}
	if !v.Deleted && v.State != nil {
		a := &anypb.Any{}
		if err := proto.Unmarshal(v.State, a); err != nil {
			return nil, functionFailure("stored state of %s does not decode: %v", id, err)
		}
		init.State = a
	}
	ctx, cancel := context.WithCancel(p.ctx)
	stream, err := p.valFn.Handle(ctx)
	if err == nil {
		err = stream.Send(&functionpb.ValueEntityStreamIn{Message: &functionpb.ValueEntityStreamIn_Init{Init: init}})
	}
	if err != nil {
		cancel()
		return nil, &failureError{code: codes.Unavailable, desc: fmt.Sprintf("opening the entity stream: %v", err)}
	}
	return &valueStream{stream: stream, cancel: cancel, version: v.Version}, nil
}
