package sdk

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/protocol/functionpb"
)

// ActionHandler handles one unary call of a stateless action. It may be
// called concurrently. ctx.CommandName() names the method; cmd is of its
// input type and the reply must be of its output type (or nil after
// ctx.Forward).
type ActionHandler func(ctx *CommandContext, cmd proto.Message) (proto.Message, error)

type actionServer struct {
	functionpb.UnimplementedActionProtocolServer
	s *Service
}

// HandleUnary serves one unary action call. Errors are answered as a
// Failure in the response; the RPC itself fails only if the proxy's
// request names no registered action.
func (a actionServer) HandleUnary(ctx context.Context, in *functionpb.ActionCommand) (*functionpb.ActionResponse, error) {
	fail := func(err error) (*functionpb.ActionResponse, error) {
		return &functionpb.ActionResponse{Response: &functionpb.ActionResponse_Failure{Failure: failureOf(0, err)}}, nil
	}
	reg, err := a.s.entity(in.GetServiceName(), functionpb.Model_MODEL_ACTION)
	if err != nil {
		return fail(err)
	}
	md, err := reg.method(in.GetName())
	if err != nil {
		return fail(err)
	}
	if md.IsStreamingClient() || md.IsStreamingServer() {
		return fail(status.Errorf(codes.Unimplemented, "sdk: streaming action %s is not supported", md.FullName()))
	}
	msg, err := decodeAs(in.GetPayload(), md.Input())
	if err != nil {
		return fail(err)
	}
	cctx := &CommandContext{ctx: ctx, serviceName: in.GetServiceName(), name: in.GetName(), metadata: in.GetMetadata()}
	var reply proto.Message
	if err := protect(func() error {
		var err error
		reply, err = reg.actionHandler(cctx, msg)
		return err
	}); err != nil {
		return fail(err)
	}
	action, err := cctx.clientAction(reply, md.Output())
	if err != nil {
		return fail(status.Error(codes.Internal, err.Error()))
	}
	out := &functionpb.ActionResponse{SideEffects: cctx.sideEffects}
	switch x := action.GetAction().(type) {
	case *functionpb.ClientAction_Reply:
		out.Response = &functionpb.ActionResponse_Reply{Reply: x.Reply}
	case *functionpb.ClientAction_Forward:
		out.Response = &functionpb.ActionResponse_Forward{Forward: x.Forward}
	}
	return out, nil
}
