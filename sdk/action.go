package sdk

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/statemesh/statemesh/protocol/functionpb"
)

// ActionHandler handles one unary call of a stateless action. It may be
// called concurrently. ctx.CommandName() names the method; cmd is of its
// input type and the reply must be of its output type (or nil after
// ctx.Forward).
type ActionHandler func(ctx *CommandContext, cmd proto.Message) (proto.Message, error)

// StreamedOutHandler handles one call of a server-streaming action method
// (`rpc M(In) returns (stream Out)`): it sends any number of messages with
// stream.Send and returns. Returning nil ends the call; an error fails it,
// after the messages already sent (the caller sees the error's code and
// message, as for a unary action). Side effects added after the last Send
// are run when the call ends. It may be called concurrently;
// ctx.Context() is done when the caller goes away.
type StreamedOutHandler func(ctx *CommandContext, cmd proto.Message, stream *ActionStream) error

// ActionHandlers are the handlers of an action service, one per kind of
// method. A call of a method whose kind has no handler fails with
// Unimplemented. Client-streaming and bidirectional methods are not
// supported yet.
type ActionHandlers struct {
	Unary       ActionHandler
	StreamedOut StreamedOutHandler
}

// errStreamBroken: a StreamedOutHandler sent a message that breaks the
// protocol (the call fails with Internal, whatever the handler returns).
var errStreamBroken = errors.New("sdk: streamed action broke the protocol")

// ActionStream sends the messages of one server-streaming action call. It
// is valid only during the handler call and is not safe for concurrent
// use.
type ActionStream struct {
	ctx  *CommandContext
	out  protoreflect.MessageDescriptor
	send func(*functionpb.ActionResponse) error
	err  error // the first protocol error, sticky
}

// Send sends one message to the caller: reply, of the method's output
// type, or, after ctx.Forward, the forwarded method's reply (pass nil).
// The side effects added with ctx.SideEffect since the previous message go
// with it. Send fails when the caller has gone away, or when the message
// breaks the protocol (a reply of the wrong type, a reply and a forward);
// the call then fails with Internal.
func (s *ActionStream) Send(reply proto.Message) error {
	if s.err != nil {
		return s.err
	}
	action, err := s.ctx.clientAction(reply, s.out)
	if err != nil {
		s.err = errors.Join(errStreamBroken, err)
		return s.err
	}
	out := &functionpb.ActionResponse{SideEffects: s.ctx.sideEffects}
	setResponse(out, action)
	s.ctx.forward, s.ctx.sideEffects = nil, nil
	if err := s.send(out); err != nil {
		s.err = err
		return err
	}
	return nil
}

type actionServer struct {
	functionpb.UnimplementedActionProtocolServer
	s *Service
}

// actionFailure answers a failed call.
func actionFailure(err error) *functionpb.ActionResponse {
	return &functionpb.ActionResponse{Response: &functionpb.ActionResponse_Failure{Failure: failureOf(0, err)}}
}

func setResponse(out *functionpb.ActionResponse, action *functionpb.ClientAction) {
	switch x := action.GetAction().(type) {
	case *functionpb.ClientAction_Reply:
		out.Response = &functionpb.ActionResponse_Reply{Reply: x.Reply}
	case *functionpb.ClientAction_Forward:
		out.Response = &functionpb.ActionResponse_Forward{Forward: x.Forward}
	}
}

// resolveAction finds the action method a command names, checks that it
// is of the kind (server streaming or not) of the protocol method that
// carried it, and decodes the command's payload.
func (a actionServer) resolveAction(in *functionpb.ActionCommand, streamedOut bool) (*entityReg, protoreflect.MethodDescriptor, proto.Message, error) {
	reg, err := a.s.entity(in.GetServiceName(), functionpb.Model_MODEL_ACTION)
	if err != nil {
		return nil, nil, nil, err
	}
	md, err := reg.method(in.GetName())
	if err != nil {
		return nil, nil, nil, err
	}
	switch {
	case md.IsStreamingClient():
		return nil, nil, nil, status.Errorf(codes.Unimplemented, "sdk: client-streaming action %s is not supported", md.FullName())
	case md.IsStreamingServer() && !streamedOut:
		return nil, nil, nil, status.Errorf(codes.InvalidArgument, "sdk: %s is server streaming: call it with HandleStreamedOut", md.FullName())
	case !md.IsStreamingServer() && streamedOut:
		return nil, nil, nil, status.Errorf(codes.InvalidArgument, "sdk: %s is unary: call it with HandleUnary", md.FullName())
	case streamedOut && reg.streamedOutHandler == nil:
		return nil, nil, nil, status.Errorf(codes.Unimplemented, "sdk: no handler for the server-streaming methods of %s (ActionHandlers.StreamedOut)", reg.sd.FullName())
	case !streamedOut && reg.actionHandler == nil:
		return nil, nil, nil, status.Errorf(codes.Unimplemented, "sdk: no handler for the unary methods of %s (ActionHandlers.Unary)", reg.sd.FullName())
	}
	msg, err := decodeAs(in.GetPayload(), md.Input())
	if err != nil {
		return nil, nil, nil, err
	}
	return reg, md, msg, nil
}

// HandleUnary serves one unary action call. Errors are answered as a
// Failure in the response; the RPC itself does not fail.
func (a actionServer) HandleUnary(ctx context.Context, in *functionpb.ActionCommand) (*functionpb.ActionResponse, error) {
	reg, md, msg, err := a.resolveAction(in, false)
	if err != nil {
		return actionFailure(err), nil
	}
	cctx := &CommandContext{ctx: ctx, serviceName: in.GetServiceName(), name: in.GetName(), metadata: in.GetMetadata()}
	var reply proto.Message
	if err := protect(func() error {
		var err error
		reply, err = reg.actionHandler(cctx, msg)
		return err
	}); err != nil {
		return actionFailure(err), nil
	}
	action, err := cctx.clientAction(reply, md.Output())
	if err != nil {
		return actionFailure(status.Error(codes.Internal, err.Error())), nil
	}
	out := &functionpb.ActionResponse{SideEffects: cctx.sideEffects}
	setResponse(out, action)
	return out, nil
}

// HandleStreamedOut serves one call of a server-streaming action method:
// one ActionResponse per message the handler sends, then, if the handler
// fails, a last one with the Failure (and none of the side effects added
// since the previous message); if it succeeds, a last one with no
// response, carrying the side effects added after the last message, if
// there are any. The RPC itself fails only if the proxy goes away.
func (a actionServer) HandleStreamedOut(in *functionpb.ActionCommand, stream grpc.ServerStreamingServer[functionpb.ActionResponse]) error {
	reg, md, msg, err := a.resolveAction(in, true)
	if err != nil {
		return stream.Send(actionFailure(err))
	}
	cctx := &CommandContext{ctx: stream.Context(), serviceName: in.GetServiceName(), name: in.GetName(), metadata: in.GetMetadata()}
	as := &ActionStream{ctx: cctx, out: md.Output(), send: stream.Send}
	err = protect(func() error { return reg.streamedOutHandler(cctx, msg, as) })
	switch {
	case errors.Is(as.err, errStreamBroken):
		return stream.Send(actionFailure(status.Error(codes.Internal, as.err.Error())))
	case as.err != nil:
		return as.err // the proxy went away
	case err != nil:
		return stream.Send(actionFailure(err))
	case cctx.forward != nil:
		return stream.Send(actionFailure(status.Error(codes.Internal, "sdk: streamed action forwarded without sending (call stream.Send(nil) after ctx.Forward)")))
	case cctx.err != nil:
		return stream.Send(actionFailure(status.Error(codes.Internal, cctx.err.Error())))
	case len(cctx.sideEffects) > 0:
		return stream.Send(&functionpb.ActionResponse{SideEffects: cctx.sideEffects})
	}
	return nil
}
