package sdk

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

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

// StreamedInHandler handles one call of a client-streaming action method
// (`rpc M(stream In) returns (Out)`): it receives the caller's messages
// with in.Recv until io.EOF (or stops early) and returns one reply, with
// the semantics of an ActionHandler's (a nil reply after ctx.Forward, side
// effects added with ctx.SideEffect, an error fails the call). It may be
// called concurrently; ctx.Context() is done when the caller goes away.
type StreamedInHandler func(ctx *CommandContext, in *CommandStream) (proto.Message, error)

// StreamedHandler handles one call of a bidirectional action method
// (`rpc M(stream In) returns (stream Out)`): it receives the caller's
// messages with in.Recv and sends any number of replies with out.Send, as
// a StreamedOutHandler does, in any order; it may call in.Recv in one
// goroutine while another uses ctx and out. Returning ends the call (an
// error fails it after the messages already sent), even if the caller is
// still sending. ctx.Context() is done when the caller goes away.
type StreamedHandler func(ctx *CommandContext, in *CommandStream, out *ActionStream) error

// ActionHandlers are the handlers of an action service, one per kind of
// method. A call of a method whose kind has no handler fails with
// Unimplemented.
type ActionHandlers struct {
	Unary       ActionHandler
	StreamedOut StreamedOutHandler
	StreamedIn  StreamedInHandler
	Streamed    StreamedHandler
}

// CommandStream receives the messages of one client-streaming or
// bidirectional action call. It is valid only during the handler call;
// Recv must not be called concurrently with itself.
type CommandStream struct {
	in    protoreflect.MessageDescriptor
	first *anypb.Any // the first protocol message's payload, not yet received
	recv  func() (*functionpb.ActionCommand, error)
	err   error // sticky: io.EOF, a bad payload, or the proxy gone
	bad   error // a payload that did not decode (the call fails with it)
	gone  error // the proxy went away
}

// Recv returns the caller's next message, of the method's input type, or
// io.EOF after the last one. Any other error ends the stream: the proxy
// went away (the handler should return), or a message did not decode (the
// call then fails with InvalidArgument, whatever the handler returns).
func (s *CommandStream) Recv() (proto.Message, error) {
	if s.err != nil {
		return nil, s.err
	}
	a := s.first
	if a != nil {
		s.first = nil
	} else {
		c, err := s.recv()
		if err != nil {
			s.err = err
			if !errors.Is(err, io.EOF) {
				s.gone = err
			}
			return nil, err
		}
		a = c.GetPayload()
	}
	msg, err := decodeAs(a, s.in)
	if err != nil {
		s.err, s.bad = err, err
		return nil, err
	}
	return msg, nil
}

// errStreamBroken: a StreamedOutHandler sent a message that breaks the
// protocol (the call fails with Internal, whatever the handler returns).
var errStreamBroken = errors.New("sdk: streamed action broke the protocol")

// ActionStream sends the messages of one server-streaming or
// bidirectional action call. It
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

// actionKind is the kind of an action method, and of the protocol method
// that calls it.
type actionKind int

const (
	kindUnary actionKind = iota
	kindStreamedOut
	kindStreamedIn
	kindStreamed
)

// kinds describes each kind: its methods, its protocol method and its
// ActionHandlers field.
var kinds = [...]struct{ what, rpc, field string }{
	kindUnary:       {"unary", "HandleUnary", "Unary"},
	kindStreamedOut: {"server-streaming", "HandleStreamedOut", "StreamedOut"},
	kindStreamedIn:  {"client-streaming", "HandleStreamedIn", "StreamedIn"},
	kindStreamed:    {"bidirectional", "HandleStreamed", "Streamed"},
}

func kindOf(md protoreflect.MethodDescriptor) actionKind {
	switch {
	case md.IsStreamingClient() && md.IsStreamingServer():
		return kindStreamed
	case md.IsStreamingClient():
		return kindStreamedIn
	case md.IsStreamingServer():
		return kindStreamedOut
	}
	return kindUnary
}

// resolveAction finds the action method a command names and checks that
// it is of the kind of the protocol method that carried it, and that the
// service has a handler for that kind.
func (a actionServer) resolveAction(in *functionpb.ActionCommand, kind actionKind) (*entityReg, protoreflect.MethodDescriptor, error) {
	reg, err := a.s.entity(in.GetServiceName(), functionpb.Model_MODEL_ACTION)
	if err != nil {
		return nil, nil, err
	}
	md, err := reg.method(in.GetName())
	if err != nil {
		return nil, nil, err
	}
	if k := kindOf(md); k != kind {
		return nil, nil, status.Errorf(codes.InvalidArgument, "sdk: %s is %s: call it with %s", md.FullName(), kinds[k].what, kinds[k].rpc)
	}
	var missing bool
	switch kind {
	case kindUnary:
		missing = reg.action.Unary == nil
	case kindStreamedOut:
		missing = reg.action.StreamedOut == nil
	case kindStreamedIn:
		missing = reg.action.StreamedIn == nil
	case kindStreamed:
		missing = reg.action.Streamed == nil
	}
	if missing {
		return nil, nil, status.Errorf(codes.Unimplemented, "sdk: no handler for the %s methods of %s (ActionHandlers.%s)", kinds[kind].what, reg.sd.FullName(), kinds[kind].field)
	}
	return reg, md, nil
}

// resolveCommand is resolveAction for the methods that take one message,
// which it decodes.
func (a actionServer) resolveCommand(in *functionpb.ActionCommand, kind actionKind) (*entityReg, protoreflect.MethodDescriptor, proto.Message, error) {
	reg, md, err := a.resolveAction(in, kind)
	if err != nil {
		return nil, nil, nil, err
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
	reg, md, msg, err := a.resolveCommand(in, kindUnary)
	if err != nil {
		return actionFailure(err), nil
	}
	cctx := newActionContext(ctx, in)
	var reply proto.Message
	err = protect(func() error {
		var err error
		reply, err = reg.action.Unary(cctx, msg)
		return err
	})
	return replyResponse(cctx, reply, err, md.Output()), nil
}

// newActionContext is the context of the action call in names.
func newActionContext(ctx context.Context, in *functionpb.ActionCommand) *CommandContext {
	return &CommandContext{ctx: ctx, serviceName: in.GetServiceName(), name: in.GetName(), metadata: in.GetMetadata()}
}

// replyResponse answers a call that returns one reply: the handler's
// error, or its reply (or forward) with its side effects.
func replyResponse(cctx *CommandContext, reply proto.Message, err error, out protoreflect.MessageDescriptor) *functionpb.ActionResponse {
	if err != nil {
		return actionFailure(err)
	}
	action, err := cctx.clientAction(reply, out)
	if err != nil {
		return actionFailure(status.Error(codes.Internal, err.Error()))
	}
	resp := &functionpb.ActionResponse{SideEffects: cctx.sideEffects}
	setResponse(resp, action)
	return resp
}

// HandleStreamedOut serves one call of a server-streaming action method:
// one ActionResponse per message the handler sends, then, if the handler
// fails, a last one with the Failure (and none of the side effects added
// since the previous message); if it succeeds, a last one with no
// response, carrying the side effects added after the last message, if
// there are any. The RPC itself fails only if the proxy goes away.
func (a actionServer) HandleStreamedOut(in *functionpb.ActionCommand, stream grpc.ServerStreamingServer[functionpb.ActionResponse]) error {
	reg, md, msg, err := a.resolveCommand(in, kindStreamedOut)
	if err != nil {
		return stream.Send(actionFailure(err))
	}
	cctx := newActionContext(stream.Context(), in)
	as := &ActionStream{ctx: cctx, out: md.Output(), send: stream.Send}
	err = protect(func() error { return reg.action.StreamedOut(cctx, msg, as) })
	return endStream(cctx, as, nil, err, stream.Send)
}

// endStream ends a streamed call after its handler returned err: see
// HandleStreamedOut. in is the call's CommandStream, if it has one.
func endStream(cctx *CommandContext, as *ActionStream, in *CommandStream, err error, send func(*functionpb.ActionResponse) error) error {
	switch {
	case errors.Is(as.err, errStreamBroken):
		return send(actionFailure(status.Error(codes.Internal, as.err.Error())))
	case as.err != nil:
		return as.err // the proxy went away
	case in != nil && in.gone != nil:
		return in.gone
	case in != nil && in.bad != nil:
		return send(actionFailure(in.bad))
	case err != nil:
		return send(actionFailure(err))
	case cctx.forward != nil:
		return send(actionFailure(status.Error(codes.Internal, "sdk: streamed action forwarded without sending (call stream.Send(nil) after ctx.Forward)")))
	case cctx.err != nil:
		return send(actionFailure(status.Error(codes.Internal, cctx.err.Error())))
	case len(cctx.sideEffects) > 0:
		return send(&functionpb.ActionResponse{SideEffects: cctx.sideEffects})
	}
	return nil
}

// streamCall is a client-streaming or bidirectional call, started.
type streamCall struct {
	reg  *entityReg
	md   protoreflect.MethodDescriptor
	cctx *CommandContext
	in   *CommandStream
}

// openStream starts a client-streaming or bidirectional call: it receives
// the first protocol message, which names the method and carries the
// metadata; its payload, if it has one, is the caller's first message (the
// proxy sends none: each of the caller's messages follows in its own
// ActionCommand, of which only the payload is read). It returns the call,
// or the failure that answers it, or the error of the proxy gone away.
func (a actionServer) openStream(ctx context.Context, recv func() (*functionpb.ActionCommand, error), kind actionKind) (*streamCall, *functionpb.ActionResponse, error) {
	first, err := recv()
	if errors.Is(err, io.EOF) {
		return nil, actionFailure(status.Error(codes.InvalidArgument, "sdk: streamed action call without a first message naming the method")), nil
	} else if err != nil {
		return nil, nil, err
	}
	reg, md, err := a.resolveAction(first, kind)
	if err != nil {
		return nil, actionFailure(err), nil
	}
	return &streamCall{
		reg: reg, md: md, cctx: newActionContext(ctx, first),
		in: &CommandStream{in: md.Input(), first: first.GetPayload(), recv: recv},
	}, nil, nil
}

// HandleStreamedIn serves one call of a client-streaming action method:
// one ActionResponse, as HandleUnary answers, once the handler returns
// (which may be before the proxy has sent every message). The RPC itself
// fails only if the proxy goes away.
func (a actionServer) HandleStreamedIn(stream grpc.ClientStreamingServer[functionpb.ActionCommand, functionpb.ActionResponse]) error {
	c, failure, err := a.openStream(stream.Context(), stream.Recv, kindStreamedIn)
	if err != nil {
		return err
	}
	if failure != nil {
		return stream.SendAndClose(failure)
	}
	var reply proto.Message
	err = protect(func() error {
		var err error
		reply, err = c.reg.action.StreamedIn(c.cctx, c.in)
		return err
	})
	switch {
	case c.in.gone != nil:
		return c.in.gone
	case c.in.bad != nil:
		err = c.in.bad
	}
	return stream.SendAndClose(replyResponse(c.cctx, reply, err, c.md.Output()))
}

// HandleStreamed serves one call of a bidirectional action method: the
// responses are those of HandleStreamedOut. The RPC itself fails only if
// the proxy goes away.
func (a actionServer) HandleStreamed(stream grpc.BidiStreamingServer[functionpb.ActionCommand, functionpb.ActionResponse]) error {
	c, failure, err := a.openStream(stream.Context(), stream.Recv, kindStreamed)
	if err != nil {
		return err
	}
	if failure != nil {
		return stream.Send(failure)
	}
	as := &ActionStream{ctx: c.cctx, out: c.md.Output(), send: stream.Send}
	err = protect(func() error { return c.reg.action.Streamed(c.cctx, c.in, as) })
	return endStream(c.cctx, as, c.in, err, stream.Send)
}
