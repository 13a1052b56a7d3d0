package proxy

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/internal/hlc"
	"github.com/statemesh/statemesh/mesh"
	"github.com/statemesh/statemesh/protocol/functionpb"
)

// crdtStream is an open Crdt.Handle stream of one entity.
type crdtStream struct {
	stream grpc.BidiStreamingClient[functionpb.CrdtStreamIn, functionpb.CrdtStreamOut]
	cancel context.CancelFunc
	// view is the state the function's copy holds, as the protocol shows
	// it (nil: no state).
	view   *functionpb.CrdtState
	nextID int64
}

func (s *crdtStream) close() { s.cancel() }

// runCRDT runs a CRDT entity's command on this node's replica: read the
// local state, bring the function's copy to it (this slice reopens the
// stream with the full state when it differs; pushing changes as they
// arrive, with mesh.Node.Watch, is for the next one), run the command,
// and apply the reply's delta through the mesh with its write
// consistency.
func (p *Proxy) runCRDT(ctx context.Context, store CRDTStore, m *method, id string, env *functionpb.ActionCommand) (*functionpb.ClientAction, []*functionpb.SideEffect, error) {
	s := m.svc
	key := mesh.Key{Service: s.persistenceID, ID: id}
	sl, err := p.crdts.acquire(string(s.desc.FullName())+"\x00"+id, s.passivation)
	if err != nil {
		return nil, nil, err
	}
	defer p.crdts.release(sl)
	cur, err := store.Get(ctx, key, mesh.Options{Consistency: mesh.Local})
	if err != nil {
		return nil, nil, err
	}
	view, err := crdtView(cur)
	if err != nil {
		return nil, nil, err
	}
	if sl.ok && !proto.Equal(sl.s.view, view) {
		sl.drop()
	}
	if !sl.ok {
		st, err := p.openCRDT(s, id, view)
		if err != nil {
			return nil, nil, err
		}
		sl.set(st)
	}
	st := sl.s
	st.nextID++
	cid := st.nextID
	cmd := &functionpb.Command{EntityId: id, Id: cid, Name: env.GetName(), Payload: env.GetPayload(), Metadata: env.GetMetadata()}
	if err := st.stream.Send(&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Command{Command: cmd}}); err != nil {
		sl.drop()
		return nil, nil, streamError(ctx, err)
	}
	out, err := recvCtx(ctx, st.stream.Recv)
	if err != nil {
		sl.drop()
		return nil, nil, streamError(ctx, err)
	}
	var r *functionpb.CrdtReply
	switch o := out.GetMessage().(type) {
	case *functionpb.CrdtStreamOut_Failure:
		if o.Failure.GetCommandId() != cid {
			sl.drop()
		}
		return nil, nil, &failureError{code: failureCode(o.Failure.GetGrpcStatusCode()), desc: o.Failure.GetDescription()}
	case *functionpb.CrdtStreamOut_Reply:
		r = o.Reply
	default:
		sl.drop()
		return nil, nil, functionFailure("unexpected %T on the entity stream", o)
	}
	if r.GetCommandId() != cid {
		sl.drop()
		return nil, nil, functionFailure("reply to command %d, want %d", r.GetCommandId(), cid)
	}
	sa := r.GetStateAction()
	opts := mesh.Options{Consistency: consistencyOf(sa.GetWriteConsistency())}
	switch a := sa.GetAction().(type) {
	case nil:
	case *functionpb.CrdtStateAction_Delete:
		sl.drop() // a deleted entity's stream ends
		if err := store.Delete(ctx, key, opts); err != nil {
			return nil, nil, err
		}
	case *functionpb.CrdtStateAction_Update:
		t, err := deltaType(a.Update)
		if err != nil {
			sl.drop()
			return nil, nil, err
		}
		var delta crdt.Value
		replica, clock := store.Replica(), store.Clock() // the mutator must not call the store
		_, err = store.Update(ctx, key, t, func(v crdt.Value) (crdt.Value, error) {
			d, err := applyDelta(v, a.Update, replica, clock)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", ErrFunction, err)
			}
			delta = d
			return d, nil
		}, opts)
		if err != nil {
			sl.drop()
			return nil, nil, err
		}
		// The function's copy is the state it was given plus its own
		// delta; the next command compares that with the replica.
		base := cur
		if base == nil {
			if base, err = crdt.New(t); err != nil {
				sl.drop()
				return nil, nil, err
			}
		} else {
			base = base.Clone()
		}
		if _, err := crdt.Join(base, delta); err != nil {
			sl.drop()
		} else if st.view, err = crdtView(base); err != nil {
			sl.drop()
		}
	}
	return r.GetClientAction(), r.GetSideEffects(), nil
}

func (p *Proxy) openCRDT(s *service, id string, view *functionpb.CrdtState) (*crdtStream, error) {
	ctx, cancel := context.WithCancel(p.ctx)
	stream, err := p.crdtFn.Handle(ctx)
	if err == nil {
		err = stream.Send(&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Init{Init: &functionpb.CrdtInit{
			ServiceName: string(s.desc.FullName()), EntityId: id, State: view}}})
	}
	if err != nil {
		cancel()
		return nil, &failureError{code: codes.Unavailable, desc: fmt.Sprintf("opening the entity stream: %v", err)}
	}
	return &crdtStream{stream: stream, cancel: cancel, view: view}, nil
}

func consistencyOf(c functionpb.WriteConsistency) mesh.Consistency {
	switch c {
	case functionpb.WriteConsistency_WRITE_CONSISTENCY_MAJORITY:
		return mesh.Majority
	case functionpb.WriteConsistency_WRITE_CONSISTENCY_ALL:
		return mesh.All
	}
	return mesh.Local
}

// errCRDTType: a CRDT type the proxy does not route yet (ORMap, Vote).
var errCRDTType = fmt.Errorf("%w: CRDT type", ErrNotSupported)

// deltaType is the CRDT type a function's delta changes.
func deltaType(d *functionpb.CrdtDelta) (crdt.Type, error) {
	switch d.GetDelta().(type) {
	case *functionpb.CrdtDelta_Gcounter:
		return crdt.TypeGCounter, nil
	case *functionpb.CrdtDelta_Pncounter:
		return crdt.TypePNCounter, nil
	case *functionpb.CrdtDelta_Gset:
		return crdt.TypeGSet, nil
	case *functionpb.CrdtDelta_Orset:
		return crdt.TypeORSet, nil
	case *functionpb.CrdtDelta_Lwwregister:
		return crdt.TypeLWWRegister, nil
	case *functionpb.CrdtDelta_Flag:
		return crdt.TypeEWFlag, nil
	case nil:
		return 0, functionFailure("an empty CRDT delta")
	}
	return 0, fmt.Errorf("%w %T", errCRDTType, d.GetDelta())
}

// applyDelta applies a function's delta to v through v's delta mutators
// and returns the resulting CRDT delta. It checks everything before it
// mutates (a mesh.Mutator must fail before mutating).
func applyDelta(v crdt.Value, d *functionpb.CrdtDelta, r crdt.ReplicaID, clock *hlc.Clock) (crdt.Value, error) {
	mismatch := func() error {
		return fmt.Errorf("%w: a %T delta for a %v", crdt.ErrTypeMismatch, d.GetDelta(), v.Type())
	}
	switch x := d.GetDelta().(type) {
	case *functionpb.CrdtDelta_Gcounter:
		c, ok := v.(*crdt.GCounter)
		if !ok {
			return nil, mismatch()
		}
		return c.Increment(r, x.Gcounter.GetIncrement())
	case *functionpb.CrdtDelta_Pncounter:
		c, ok := v.(*crdt.PNCounter)
		if !ok {
			return nil, mismatch()
		}
		return c.Increment(r, x.Pncounter.GetChange())
	case *functionpb.CrdtDelta_Gset:
		s, ok := v.(*crdt.GSet)
		if !ok {
			return nil, mismatch()
		}
		acc := crdt.NewGSet()
		for _, e := range x.Gset.GetAdded() {
			if _, err := crdt.Join(acc, s.Add(e)); err != nil {
				return nil, err
			}
		}
		return acc, nil
	case *functionpb.CrdtDelta_Orset:
		s, ok := v.(*crdt.ORSet)
		if !ok {
			return nil, mismatch()
		}
		acc := crdt.NewORSet()
		if x.Orset.GetCleared() {
			if _, err := crdt.Join(acc, s.Clear()); err != nil {
				return nil, err
			}
		}
		for _, e := range x.Orset.GetRemoved() {
			if _, err := crdt.Join(acc, s.Remove(e)); err != nil {
				return nil, err
			}
		}
		for _, e := range x.Orset.GetAdded() {
			if _, err := crdt.Join(acc, s.Add(r, e)); err != nil {
				return nil, err
			}
		}
		return acc, nil
	case *functionpb.CrdtDelta_Lwwregister:
		reg, ok := v.(*crdt.LWWRegister)
		if !ok {
			return nil, mismatch()
		}
		delta := reg.Set(r, clock.Now(), x.Lwwregister.GetValue())
		ts, _ := delta.Timestamp()
		clock.Update(ts)
		return delta, nil
	case *functionpb.CrdtDelta_Flag:
		f, ok := v.(*crdt.EWFlag)
		if !ok {
			return nil, mismatch()
		}
		if x.Flag.GetValue() {
			return f.Enable(r), nil
		}
		return f.Disable(), nil
	}
	return nil, fmt.Errorf("%w %T", errCRDTType, d.GetDelta())
}

// crdtView is a CRDT's state as the function sees it (nil for none).
func crdtView(v crdt.Value) (*functionpb.CrdtState, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case *crdt.GCounter:
		return &functionpb.CrdtState{State: &functionpb.CrdtState_Gcounter{Gcounter: &functionpb.GCounterState{Value: x.Value()}}}, nil
	case *crdt.PNCounter:
		return &functionpb.CrdtState{State: &functionpb.CrdtState_Pncounter{Pncounter: &functionpb.PNCounterState{Value: x.Value()}}}, nil
	case *crdt.GSet:
		return &functionpb.CrdtState{State: &functionpb.CrdtState_Gset{Gset: &functionpb.GSetState{Items: x.Elements()}}}, nil
	case *crdt.ORSet:
		return &functionpb.CrdtState{State: &functionpb.CrdtState_Orset{Orset: &functionpb.ORSetState{Items: x.Elements()}}}, nil
	case *crdt.LWWRegister:
		b, _ := x.Get()
		return &functionpb.CrdtState{State: &functionpb.CrdtState_Lwwregister{Lwwregister: &functionpb.LWWRegisterState{Value: b}}}, nil
	case *crdt.EWFlag:
		return &functionpb.CrdtState{State: &functionpb.CrdtState_Flag{Flag: &functionpb.FlagState{Value: x.Enabled()}}}, nil
	case *crdt.Flag:
		return &functionpb.CrdtState{State: &functionpb.CrdtState_Flag{Flag: &functionpb.FlagState{Value: x.Enabled()}}}, nil
	}
	return nil, fmt.Errorf("%w %v", errCRDTType, v.Type())
}
