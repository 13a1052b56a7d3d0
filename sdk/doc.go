// Package sdk is the Go library for writing statemesh user functions: the
// function side of the function protocol (protocol/function/v1).
//
// A function is a gRPC server that the statemesh proxy (the sidecar) is the
// only client of. With this package a function declares its entities against
// the descriptors of its own gRPC services and lets the SDK speak the
// protocol:
//
//	svc := sdk.New(sdk.WithServiceName("shop"))
//	sd := shoppb.File_shop_cart_proto.Services().ByName("Cart")
//	err := svc.RegisterEventSourced(sd, func(id string) sdk.EventSourcedEntity { return &cart{} },
//		sdk.SnapshotEvery(100))
//	...
//	err = svc.Serve(lis)
//
// Four entity models are supported:
//
//   - event-sourced entities (RegisterEventSourced): commands emit events;
//     the SDK applies them to the entity after the handler succeeds, so a
//     handler sees the state as of before the command; a failed command
//     emits nothing;
//   - value entities (RegisterValue): commands read the current state and may
//     replace or delete it;
//   - actions (RegisterAction, RegisterActionHandlers): stateless unary
//     methods, server-streaming ones whose handler sends any number of
//     replies with ActionStream.Send, client-streaming ones whose handler
//     receives commands with CommandStream.Recv and returns one reply, and
//     bidirectional ones that do both (see ActionHandlers);
//   - CRDT entities (RegisterCrdt): the entity holds one CRDT (PNCounter,
//     GCounter, GSet, ORSet, LWWRegister, Flag, Vote, or an ORMap of
//     nested CRDTs, see GetOrCreate); mutations made by a command
//     become the delta of its reply, with the write consistency the command
//     chose. A streamed command may keep its caller's stream open with
//     CrdtContext.OnChange: after every change the SDK sends what the
//     callback returns, until it ends the stream or the caller cancels.
//
// Command payloads arrive as google.protobuf.Any and are decoded with the
// method's input type (the linked Go type when there is one, dynamicpb
// otherwise); replies must be of the method's output type (a nil reply is
// the empty message of that type). A handler fails a
// command by returning an error: a gRPC status error (status.Error, or Fail)
// keeps its code, any other error is reported as UNKNOWN. Bad input from the
// proxy fails the command or the stream with a Failure message; it never
// panics the function.
package sdk
