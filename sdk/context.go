package sdk

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/statemesh/statemesh/protocol/functionpb"
)

// Fail returns the error a handler returns to fail a command with a gRPC
// code the caller sees (the proxy maps it to an HTTP status: for example
// codes.Aborted is 409, codes.InvalidArgument 400, codes.NotFound 404).
func Fail(code codes.Code, format string, args ...any) error {
	return status.Errorf(code, format, args...)
}

// CommandContext is what every command handler gets: the command's identity
// and the effects it may add to its reply besides the reply message. It is
// valid only during the handler call.
type CommandContext struct {
	ctx         context.Context
	serviceName string
	entityID    string
	commandID   int64
	name        string
	metadata    map[string]string

	forward     *functionpb.Forward
	sideEffects []*functionpb.SideEffect
	err         error // an effect that could not be encoded
}

// Context is the stream's context: done when the proxy goes away.
func (c *CommandContext) Context() context.Context { return c.ctx }

// ServiceName is the fully qualified service of the command.
func (c *CommandContext) ServiceName() string { return c.serviceName }

// EntityID is the id of the entity (empty for actions).
func (c *CommandContext) EntityID() string { return c.entityID }

// CommandID is the command's id within its stream (0 for actions).
func (c *CommandContext) CommandID() int64 { return c.commandID }

// CommandName is the called method's name, e.g. "AddItem".
func (c *CommandContext) CommandName() string { return c.name }

// Metadata is the command's metadata (do not modify it).
func (c *CommandContext) Metadata() map[string]string { return c.metadata }

// Forward hands the command on to another method: the caller gets that
// method's reply. A handler that forwards returns a nil reply.
func (c *CommandContext) Forward(serviceName, method string, msg proto.Message) {
	a, err := encode(msg)
	if err != nil {
		c.err = errors.Join(c.err, fmt.Errorf("sdk: forward to %s/%s: %w", serviceName, method, err))
		return
	}
	c.forward = &functionpb.Forward{ServiceName: serviceName, CommandName: method, Payload: a}
}

// SideEffect asks the proxy to call another method once the command's state
// changes are persisted; a synchronous one must succeed before the reply is
// released.
func (c *CommandContext) SideEffect(serviceName, method string, msg proto.Message, synchronous bool) {
	a, err := encode(msg)
	if err != nil {
		c.err = errors.Join(c.err, fmt.Errorf("sdk: side effect %s/%s: %w", serviceName, method, err))
		return
	}
	c.sideEffects = append(c.sideEffects, &functionpb.SideEffect{
		ServiceName: serviceName, CommandName: method, Payload: a, Synchronous: synchronous,
	})
}

// failureOf turns a handler's error into the Failure the caller sees.
func failureOf(commandID int64, err error) *functionpb.Failure {
	st, ok := status.FromError(err)
	if !ok {
		st = status.New(codes.Unknown, err.Error())
	}
	return &functionpb.Failure{CommandId: commandID, Description: st.Message(), GrpcStatusCode: int32(st.Code())}
}

// clientAction builds the caller's answer from a successful handler's reply
// (or its forward). An error means the handler broke the protocol (wrong
// reply type, a reply and a forward, an effect that could not be encoded).
func (c *CommandContext) clientAction(reply proto.Message, out protoreflect.MessageDescriptor) (*functionpb.ClientAction, error) {
	if c.err != nil {
		return nil, c.err
	}
	if c.forward != nil {
		if reply != nil && reply.ProtoReflect().IsValid() {
			return nil, errors.New("sdk: handler both forwarded and replied")
		}
		return &functionpb.ClientAction{Action: &functionpb.ClientAction_Forward{Forward: c.forward}}, nil
	}
	a, err := encodeAs(reply, out)
	if err != nil {
		return nil, err
	}
	return &functionpb.ClientAction{Action: &functionpb.ClientAction_Reply{Reply: &functionpb.Reply{Payload: a}}}, nil
}

// failedAction is the caller's answer to a command its handler failed.
func failedAction(commandID int64, err error) *functionpb.ClientAction {
	return &functionpb.ClientAction{Action: &functionpb.ClientAction_Failure{Failure: failureOf(commandID, err)}}
}

// errPanic reports a panic in user code.
var errPanic = errors.New("sdk: handler panicked")

// protect runs f, turning a panic into an error (user code must not take
// the function down).
func protect(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", errPanic, r)
		}
	}()
	return f()
}

// streamFailure is a protocol-level failure: of one command (id != 0) or of
// the whole stream (id 0).
func streamFailure(commandID int64, err error) *functionpb.Failure {
	f := failureOf(commandID, err)
	if f.GrpcStatusCode == int32(codes.Unknown) {
		f.GrpcStatusCode = int32(codes.Internal)
	}
	return f
}
