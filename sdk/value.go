package sdk

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/protocol/functionpb"
)

// ValueEntity is the in-memory instance of one value entity. HandleCommand
// gets the current state (nil when the entity has none) and may replace it
// with ctx.UpdateState or delete it with ctx.DeleteState; the change takes
// effect, and is persisted, only if the handler succeeds. The SDK calls it
// from one goroutine at a time.
type ValueEntity interface {
	HandleCommand(ctx *ValueContext, state proto.Message, cmd proto.Message) (proto.Message, error)
}

// ValueEntityFunc adapts a function to ValueEntity.
type ValueEntityFunc func(ctx *ValueContext, state proto.Message, cmd proto.Message) (proto.Message, error)

// HandleCommand calls f.
func (f ValueEntityFunc) HandleCommand(ctx *ValueContext, state proto.Message, cmd proto.Message) (proto.Message, error) {
	return f(ctx, state, cmd)
}

// ValueContext is the context of a value entity's command.
type ValueContext struct {
	CommandContext
	update  proto.Message
	deleted bool
}

// UpdateState replaces the entity's state if the command succeeds.
func (c *ValueContext) UpdateState(state proto.Message) { c.update, c.deleted = state, false }

// DeleteState deletes the entity's state if the command succeeds.
func (c *ValueContext) DeleteState() { c.update, c.deleted = nil, true }

type valueServer struct {
	functionpb.UnimplementedValueEntityServer
	s *Service
}

// Handle serves one value entity's stream.
func (v valueServer) Handle(stream functionpb.ValueEntity_HandleServer) error {
	h := &valueHandler{s: v.s, res: v.s.resolver()}
	return recvAll(stream.Recv, stream.Send, func(in *functionpb.ValueEntityStreamIn) ([]*functionpb.ValueEntityStreamOut, error) {
		out, stop := h.step(stream.Context(), in)
		if stop != nil {
			v.s.logger.Warn("sdk: value entity stream failed", "entity", h.entityID, "err", stop)
		}
		return one(out, stop)
	})
}

type valueHandler struct {
	s        *Service
	res      *resolver
	reg      *entityReg
	entityID string
	entity   ValueEntity
	state    proto.Message
}

func valueFailure(f *functionpb.Failure) *functionpb.ValueEntityStreamOut {
	return &functionpb.ValueEntityStreamOut{Message: &functionpb.ValueEntityStreamOut_Failure{Failure: f}}
}

func valueFatal(err error) (*functionpb.ValueEntityStreamOut, error) {
	return valueFailure(streamFailure(0, err)), status.Error(codes.FailedPrecondition, err.Error())
}

func (h *valueHandler) step(ctx context.Context, in *functionpb.ValueEntityStreamIn) (*functionpb.ValueEntityStreamOut, error) {
	switch m := in.GetMessage().(type) {
	case *functionpb.ValueEntityStreamIn_Init:
		if h.entity != nil {
			return valueFatal(errors.New("sdk: second init on a value entity stream"))
		}
		reg, err := h.s.entity(m.Init.GetServiceName(), functionpb.Model_MODEL_VALUE)
		if err != nil {
			return valueFatal(err)
		}
		var state proto.Message
		if m.Init.GetState() != nil {
			if state, err = h.res.decode(m.Init.GetState()); err != nil {
				return valueFatal(err)
			}
		}
		var entity ValueEntity
		if err := protect(func() error {
			if entity = reg.valueFactory(m.Init.GetEntityId()); entity == nil {
				return errors.New("sdk: factory returned a nil entity")
			}
			return nil
		}); err != nil {
			return valueFatal(err)
		}
		h.reg, h.entityID, h.entity, h.state = reg, m.Init.GetEntityId(), entity, state
		return nil, nil
	case *functionpb.ValueEntityStreamIn_Command:
		if h.entity == nil {
			return valueFailure(streamFailure(m.Command.GetId(), status.Error(codes.FailedPrecondition, "sdk: command before init"))), nil
		}
		return h.command(ctx, m.Command)
	default:
		return valueFatal(errors.New("sdk: empty or unknown value entity stream message"))
	}
}

func (h *valueHandler) command(sctx context.Context, cmd *functionpb.Command) (*functionpb.ValueEntityStreamOut, error) {
	md, err := h.reg.method(cmd.GetName())
	var msg proto.Message
	if err == nil {
		msg, err = decodeAs(cmd.GetPayload(), md.Input())
	}
	if err != nil {
		return valueFailure(streamFailure(cmd.GetId(), err)), nil
	}
	ctx := &ValueContext{CommandContext: CommandContext{
		ctx: sctx, serviceName: string(h.reg.sd.FullName()), entityID: h.entityID,
		commandID: cmd.GetId(), name: cmd.GetName(), metadata: cmd.GetMetadata(),
	}}
	var state proto.Message
	if h.state != nil {
		// The handler may not change the state it is given in place.
		state = proto.Clone(h.state)
	}
	var reply proto.Message
	herr := protect(func() error {
		var err error
		reply, err = h.entity.HandleCommand(ctx, state, msg)
		return err
	})
	out := &functionpb.ValueEntityReply{CommandId: cmd.GetId()}
	if herr != nil {
		out.ClientAction = failedAction(cmd.GetId(), herr)
		return &functionpb.ValueEntityStreamOut{Message: &functionpb.ValueEntityStreamOut_Reply{Reply: out}}, nil
	}
	action, err := ctx.clientAction(reply, md.Output())
	if err != nil {
		return valueFailure(streamFailure(cmd.GetId(), err)), nil
	}
	switch {
	case ctx.deleted:
		out.StateAction = &functionpb.ValueEntityStateAction{Action: &functionpb.ValueEntityStateAction_Delete{Delete: &functionpb.ValueEntityDelete{}}}
		h.state = nil
	case ctx.update != nil:
		a, err := encode(ctx.update)
		if err != nil {
			return valueFailure(streamFailure(cmd.GetId(), err)), nil
		}
		out.StateAction = &functionpb.ValueEntityStateAction{Action: &functionpb.ValueEntityStateAction_Update{Update: a}}
		h.state = proto.Clone(ctx.update)
	}
	out.ClientAction = action
	out.SideEffects = ctx.sideEffects
	return &functionpb.ValueEntityStreamOut{Message: &functionpb.ValueEntityStreamOut_Reply{Reply: out}}, nil
}
