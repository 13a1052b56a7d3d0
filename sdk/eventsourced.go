package sdk

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/protocol/functionpb"
)

// EventSourcedEntity is the in-memory instance of one event-sourced entity.
// The SDK calls it from one goroutine at a time.
//
// HandleCommand decides: it validates the command against the current
// state, records events with ctx.Emit and returns the reply. It must not
// change the entity's state itself: once it returns successfully, the SDK
// applies the emitted events, in order, with HandleEvent. A handler
// therefore sees the state as of before the command (its own events are not
// yet applied). If it returns an error, the events are dropped and the
// caller gets the failure: nothing is persisted.
//
// HandleEvent applies one event, replayed at start or emitted by a command.
// Snapshot returns the state to store (called only with SnapshotEvery);
// HandleSnapshot restores it at start.
//
// The events are applied when the reply is sent, before the proxy has
// persisted them; if it cannot, it drops the stream and replays the entity
// on a new one, so the in-memory state never runs ahead of the journal for
// long. Replayed events and snapshots are decoded as their linked Go type;
// a type with no Go type linked but defined in a registered service's
// files (or their imports) arrives as a *dynamicpb.Message; any other type
// fails the stream.
// An error from HandleEvent, HandleSnapshot or Snapshot, or a panic in any
// method, fails the whole stream (the proxy rebuilds the entity).
type EventSourcedEntity interface {
	HandleCommand(ctx *EventSourcedContext, cmd proto.Message) (proto.Message, error)
	HandleEvent(event proto.Message) error
	Snapshot() (proto.Message, error)
	HandleSnapshot(snapshot proto.Message) error
}

// EventSourcedContext is the context of an event-sourced command.
type EventSourcedContext struct {
	CommandContext
	sequence int64
	events   []proto.Message
}

// Sequence is the sequence number of the last event applied to the entity
// (0 if none).
func (c *EventSourcedContext) Sequence() int64 { return c.sequence }

// Emit records an event; it is persisted and applied with HandleEvent if
// the command succeeds.
func (c *EventSourcedContext) Emit(event proto.Message) {
	c.events = append(c.events, event)
}

type esServer struct {
	functionpb.UnimplementedEventSourcedServer
	s *Service
}

// Handle serves one event-sourced entity's stream.
func (e esServer) Handle(stream functionpb.EventSourced_HandleServer) error {
	h := &esHandler{s: e.s, res: e.s.resolver()}
	return recvAll(stream.Recv, stream.Send, func(in *functionpb.EventSourcedStreamIn) ([]*functionpb.EventSourcedStreamOut, error) {
		out, stop := h.step(stream.Context(), in)
		if stop != nil {
			e.s.logger.Warn("sdk: event-sourced stream failed", "service", h.serviceName(), "entity", h.entityID, "err", stop)
		}
		return one(out, stop)
	})
}

type esHandler struct {
	s        *Service
	res      *resolver
	reg      *entityReg
	entityID string
	entity   EventSourcedEntity
	sequence int64
}

func (h *esHandler) serviceName() string {
	if h.reg == nil {
		return ""
	}
	return string(h.reg.sd.FullName())
}

func esFailure(f *functionpb.Failure) *functionpb.EventSourcedStreamOut {
	return &functionpb.EventSourcedStreamOut{Message: &functionpb.EventSourcedStreamOut_Failure{Failure: f}}
}

// fatal fails the whole stream: the entity's state can no longer be
// trusted (or never was established).
func esFatal(err error) (*functionpb.EventSourcedStreamOut, error) {
	return esFailure(streamFailure(0, err)), status.Error(codes.FailedPrecondition, err.Error())
}

func (h *esHandler) step(ctx context.Context, in *functionpb.EventSourcedStreamIn) (*functionpb.EventSourcedStreamOut, error) {
	switch m := in.GetMessage().(type) {
	case *functionpb.EventSourcedStreamIn_Init:
		if h.entity != nil {
			return esFatal(errors.New("sdk: second init on an event-sourced stream"))
		}
		return h.init(m.Init)
	case *functionpb.EventSourcedStreamIn_Event:
		if h.entity == nil {
			return esFatal(errors.New("sdk: event before init"))
		}
		ev, err := h.res.decode(m.Event.GetPayload())
		if err == nil {
			err = protect(func() error { return h.entity.HandleEvent(ev) })
		}
		if err != nil {
			return esFatal(fmt.Errorf("sdk: replaying event %d: %w", m.Event.GetSequence(), err))
		}
		h.sequence = m.Event.GetSequence()
		return nil, nil
	case *functionpb.EventSourcedStreamIn_Command:
		if h.entity == nil {
			return esFailure(streamFailure(m.Command.GetId(), status.Error(codes.FailedPrecondition, "sdk: command before init"))), nil
		}
		return h.command(ctx, m.Command)
	default:
		return esFatal(errors.New("sdk: empty or unknown event-sourced stream message"))
	}
}

func (h *esHandler) init(init *functionpb.EventSourcedInit) (*functionpb.EventSourcedStreamOut, error) {
	reg, err := h.s.entity(init.GetServiceName(), functionpb.Model_MODEL_EVENT_SOURCED)
	if err != nil {
		return esFatal(err)
	}
	var entity EventSourcedEntity
	if err := protect(func() error {
		entity = reg.esFactory(init.GetEntityId())
		if entity == nil {
			return errors.New("sdk: factory returned a nil entity")
		}
		return nil
	}); err != nil {
		return esFatal(err)
	}
	if snap := init.GetSnapshot(); snap != nil && snap.GetSnapshot() != nil {
		m, err := h.res.decode(snap.GetSnapshot())
		if err == nil {
			err = protect(func() error { return entity.HandleSnapshot(m) })
		}
		if err != nil {
			return esFatal(fmt.Errorf("sdk: restoring snapshot: %w", err))
		}
		h.sequence = snap.GetSnapshotSequence()
	}
	h.reg, h.entityID, h.entity = reg, init.GetEntityId(), entity
	return nil, nil
}

func (h *esHandler) command(sctx context.Context, cmd *functionpb.Command) (*functionpb.EventSourcedStreamOut, error) {
	md, err := h.reg.method(cmd.GetName())
	var msg proto.Message
	if err == nil {
		msg, err = decodeAs(cmd.GetPayload(), md.Input())
	}
	if err != nil {
		return esFailure(streamFailure(cmd.GetId(), err)), nil
	}
	ctx := &EventSourcedContext{
		CommandContext: CommandContext{
			ctx: sctx, serviceName: h.serviceName(), entityID: h.entityID,
			commandID: cmd.GetId(), name: cmd.GetName(), metadata: cmd.GetMetadata(),
		},
		sequence: h.sequence,
	}
	var reply proto.Message
	herr := protect(func() error {
		var err error
		reply, err = h.entity.HandleCommand(ctx, msg)
		return err
	})
	if errors.Is(herr, errPanic) {
		return esFatal(herr)
	}
	out := &functionpb.EventSourcedReply{CommandId: cmd.GetId()}
	if herr != nil {
		out.ClientAction = failedAction(cmd.GetId(), herr)
		return &functionpb.EventSourcedStreamOut{Message: &functionpb.EventSourcedStreamOut_Reply{Reply: out}}, nil
	}
	action, err := ctx.clientAction(reply, md.Output())
	if err != nil {
		return esFailure(streamFailure(cmd.GetId(), err)), nil
	}
	// Encode everything before touching the entity, so a bad event fails
	// the command and leaves the state as it was.
	for _, ev := range ctx.events {
		a, err := encode(ev)
		if err != nil {
			return esFailure(streamFailure(cmd.GetId(), fmt.Errorf("sdk: emitted event: %w", err))), nil
		}
		out.Events = append(out.Events, a)
	}
	before := h.sequence
	for i, ev := range ctx.events {
		if err := protect(func() error { return h.entity.HandleEvent(ev) }); err != nil {
			return esFatal(fmt.Errorf("sdk: applying emitted event %d: %w", i, err))
		}
		h.sequence++
	}
	if n := h.reg.cfg.snapshotEvery; n > 0 && h.sequence/n > before/n {
		err := protect(func() error {
			snap, err := h.entity.Snapshot()
			if err != nil {
				return err
			}
			out.Snapshot, err = encode(snap)
			return err
		})
		if err != nil {
			// The events are applied in memory: the entity must be rebuilt.
			return esFatal(fmt.Errorf("sdk: taking snapshot: %w", err))
		}
	}
	out.ClientAction = action
	out.SideEffects = ctx.sideEffects
	return &functionpb.EventSourcedStreamOut{Message: &functionpb.EventSourcedStreamOut_Reply{Reply: out}}, nil
}
