package sdk

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/statemesh/statemesh/protocol/functionpb"
)

// CrdtEntity is the in-memory instance of one CRDT entity.
//
// The local copy and the proxy: the SDK applies a successful command's
// delta to its copy itself when it sends the reply; every CrdtStreamIn
// changed message is applied on top of that copy, so the proxy must send as
// `changed` only what the function has not seen (changes from other
// replicas or other streams), never the delta of this stream's own reply. The factory
// creates it with an empty CRDT (NewPNCounter(), NewORSet(), ...), which
// CRDT returns; the SDK loads the proxy's state into it and keeps it up to
// date with the changes other replicas make. HandleCommand reads and
// mutates that CRDT; its mutations become the reply's delta. The SDK calls
// the entity from one goroutine at a time.
type CrdtEntity interface {
	CRDT() Crdt
	HandleCommand(ctx *CrdtContext, cmd proto.Message) (proto.Message, error)
}

// ChangeFunc is called, for a streamed command, after every change of the
// entity's CRDT (made by another replica or by a command). It returns the
// next message for the caller (nil for none) and whether the stream ends.
// An error ends the stream with that failure.
type ChangeFunc func() (msg proto.Message, end bool, err error)

// CrdtContext is the context of a CRDT entity's command.
type CrdtContext struct {
	CommandContext
	consistency functionpb.WriteConsistency
	deleted     bool
	streamed    bool
	onChange    ChangeFunc
}

// SetWriteConsistency sets how many replicas must hold this command's
// change before the caller gets the reply (default LOCAL).
func (c *CrdtContext) SetWriteConsistency(wc functionpb.WriteConsistency) { c.consistency = wc }

// Delete deletes the entity if the command succeeds (its other changes are
// dropped).
func (c *CrdtContext) Delete() { c.deleted = true }

// Streamed reports whether the caller asked for a stream of messages (a
// server-streaming method).
func (c *CrdtContext) Streamed() bool { return c.streamed }

// OnChange, in a streamed command, keeps the caller's stream open after the
// reply and calls f after every change of the CRDT, until f ends the stream
// or the caller goes away. Without it a streamed command ends after its
// reply.
func (c *CrdtContext) OnChange(f ChangeFunc) { c.onChange = f }

type crdtServer struct {
	functionpb.UnimplementedCrdtServer
	s *Service
}

// Handle serves one CRDT entity's stream.
func (c crdtServer) Handle(stream functionpb.Crdt_HandleServer) error {
	h := &crdtHandler{s: c.s, watchers: make(map[int64]*watcher)}
	return recvAll(stream.Recv, stream.Send, func(in *functionpb.CrdtStreamIn) ([]*functionpb.CrdtStreamOut, error) {
		outs, stop := h.step(stream.Context(), in)
		if stop != nil {
			c.s.logger.Warn("sdk: CRDT stream failed", "entity", h.entityID, "err", stop)
		}
		return outs, stop
	})
}

type watcher struct {
	f   ChangeFunc
	out protoreflect.MessageDescriptor
}

type crdtHandler struct {
	s        *Service
	reg      *entityReg
	entityID string
	entity   CrdtEntity
	crdt     Crdt
	deleted  bool
	watchers map[int64]*watcher // streamed commands by command id
}

func crdtFailure(f *functionpb.Failure) []*functionpb.CrdtStreamOut {
	return []*functionpb.CrdtStreamOut{{Message: &functionpb.CrdtStreamOut_Failure{Failure: f}}}
}

func crdtFatal(err error) ([]*functionpb.CrdtStreamOut, error) {
	return crdtFailure(streamFailure(0, err)), status.Error(codes.FailedPrecondition, err.Error())
}

func (h *crdtHandler) step(ctx context.Context, in *functionpb.CrdtStreamIn) ([]*functionpb.CrdtStreamOut, error) {
	switch m := in.GetMessage().(type) {
	case *functionpb.CrdtStreamIn_Init:
		if h.entity != nil {
			return crdtFatal(errors.New("sdk: second init on a CRDT stream"))
		}
		return h.init(m.Init)
	case *functionpb.CrdtStreamIn_Changed:
		if h.entity == nil {
			return crdtFatal(errors.New("sdk: change before init"))
		}
		if err := h.crdt.applyDelta(m.Changed); err != nil {
			return crdtFatal(err)
		}
		return h.notify(), nil
	case *functionpb.CrdtStreamIn_Deleted:
		// The stream ends after this; the proxy closes it.
		h.deleted = true
		h.watchers = make(map[int64]*watcher)
		return nil, nil
	case *functionpb.CrdtStreamIn_Command:
		cmd := m.Command
		if h.entity == nil {
			return crdtFailure(streamFailure(cmd.GetId(), status.Error(codes.FailedPrecondition, "sdk: command before init"))), nil
		}
		if h.deleted {
			return crdtFailure(streamFailure(cmd.GetId(), status.Error(codes.NotFound, "sdk: entity deleted"))), nil
		}
		return h.command(ctx, cmd)
	case *functionpb.CrdtStreamIn_StreamCancelled:
		id := m.StreamCancelled.GetId()
		delete(h.watchers, id)
		return []*functionpb.CrdtStreamOut{{Message: &functionpb.CrdtStreamOut_StreamCancelledResponse{
			StreamCancelledResponse: &functionpb.CrdtStreamCancelledResponse{CommandId: id},
		}}}, nil
	default:
		return crdtFatal(errors.New("sdk: empty or unknown CRDT stream message"))
	}
}

func (h *crdtHandler) init(init *functionpb.CrdtInit) ([]*functionpb.CrdtStreamOut, error) {
	reg, err := h.s.entity(init.GetServiceName(), functionpb.Model_MODEL_CRDT)
	if err != nil {
		return crdtFatal(err)
	}
	var entity CrdtEntity
	var c Crdt
	if err := protect(func() error {
		if entity = reg.crdtFactory(init.GetEntityId()); entity == nil {
			return errors.New("sdk: factory returned a nil entity")
		}
		if c = entity.CRDT(); c == nil {
			return errors.New("sdk: entity holds no CRDT")
		}
		return nil
	}); err != nil {
		return crdtFatal(err)
	}
	if st := init.GetState(); st != nil {
		if err := c.setState(st); err != nil {
			return crdtFatal(err)
		}
	}
	h.reg, h.entityID, h.entity, h.crdt = reg, init.GetEntityId(), entity, c
	return nil, nil
}

func (h *crdtHandler) command(sctx context.Context, cmd *functionpb.Command) ([]*functionpb.CrdtStreamOut, error) {
	md, err := h.reg.method(cmd.GetName())
	var msg proto.Message
	if err == nil {
		msg, err = decodeAs(cmd.GetPayload(), md.Input())
	}
	if err != nil {
		return crdtFailure(streamFailure(cmd.GetId(), err)), nil
	}
	ctx := &CrdtContext{
		CommandContext: CommandContext{
			ctx: sctx, serviceName: string(h.reg.sd.FullName()), entityID: h.entityID,
			commandID: cmd.GetId(), name: cmd.GetName(), metadata: cmd.GetMetadata(),
		},
		streamed: cmd.GetStreamed(),
	}
	var reply proto.Message
	herr := protect(func() error {
		var err error
		reply, err = h.entity.HandleCommand(ctx, msg)
		return err
	})
	out := &functionpb.CrdtReply{CommandId: cmd.GetId()}
	wrap := func() []*functionpb.CrdtStreamOut {
		return []*functionpb.CrdtStreamOut{{Message: &functionpb.CrdtStreamOut_Reply{Reply: out}}}
	}
	if herr != nil {
		h.crdt.discard()
		out.ClientAction = failedAction(cmd.GetId(), herr)
		return wrap(), nil
	}
	action, err := ctx.clientAction(reply, md.Output())
	if err != nil {
		h.crdt.discard()
		return crdtFailure(streamFailure(cmd.GetId(), err)), nil
	}
	out.ClientAction = action
	out.SideEffects = ctx.sideEffects
	changed := false
	switch {
	case ctx.deleted:
		h.crdt.discard()
		h.deleted = true
		out.StateAction = &functionpb.CrdtStateAction{
			Action:           &functionpb.CrdtStateAction_Delete{Delete: &functionpb.CrdtDelete{}},
			WriteConsistency: ctx.consistency,
		}
	default:
		if d := h.crdt.delta(); d != nil {
			out.StateAction = &functionpb.CrdtStateAction{
				Action:           &functionpb.CrdtStateAction_Update{Update: d},
				WriteConsistency: ctx.consistency,
			}
			changed = true
		}
		h.crdt.commit()
	}
	outs := wrap()
	if changed {
		// Earlier streamed commands see this command's change (before this
		// command's own watcher is installed: its reply already has it).
		outs = append(outs, h.notify()...)
	}
	if ctx.streamed && ctx.onChange != nil && !h.deleted {
		out.Streamed = true
		h.watchers[cmd.GetId()] = &watcher{f: ctx.onChange, out: md.Output()}
	}
	return outs, nil
}

// notify calls the streamed commands' change functions after a change.
func (h *crdtHandler) notify() []*functionpb.CrdtStreamOut {
	var outs []*functionpb.CrdtStreamOut
	ids := slices.Sorted(maps.Keys(h.watchers))
	for _, id := range ids {
		w := h.watchers[id]
		var msg proto.Message
		var end bool
		err := protect(func() error {
			var err error
			msg, end, err = w.f()
			return err
		})
		sm := &functionpb.CrdtStreamedMessage{CommandId: id}
		switch {
		case err != nil:
			sm.ClientAction, sm.EndStream = failedAction(id, err), true
		case msg != nil:
			a, err := encodeAs(msg, w.out)
			if err != nil {
				sm.ClientAction, sm.EndStream = failedAction(id, status.Error(codes.Internal, fmt.Sprint(err))), true
			} else {
				sm.ClientAction = &functionpb.ClientAction{Action: &functionpb.ClientAction_Reply{Reply: &functionpb.Reply{Payload: a}}}
				sm.EndStream = end
			}
		case end:
			sm.EndStream = true
		default:
			continue
		}
		if sm.EndStream {
			delete(h.watchers, id)
		}
		outs = append(outs, &functionpb.CrdtStreamOut{Message: &functionpb.CrdtStreamOut_StreamedMessage{StreamedMessage: sm}})
	}
	return outs
}
