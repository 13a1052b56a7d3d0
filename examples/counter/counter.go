// Package counter is the counter example: a PNCounter CRDT whose writes
// choose their consistency (see counter.proto).
package counter

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/examples/counter/counterpb"
	"github.com/statemesh/statemesh/protocol/functionpb"
	"github.com/statemesh/statemesh/sdk"
)

// ServiceName is the counter's fully qualified gRPC service name.
const ServiceName = "statemesh.examples.counter.Counter"

// Register registers the counter entity on s.
func Register(s *sdk.Service) error {
	sd := counterpb.File_counter_counter_proto.Services().ByName("Counter")
	return s.RegisterCrdt(sd, func(string) sdk.CrdtEntity { return &entity{c: sdk.NewPNCounter()} })
}

type entity struct{ c *sdk.PNCounter }

func (e *entity) CRDT() sdk.Crdt { return e.c }

// consistencies maps the example's levels to the protocol's.
var consistencies = map[counterpb.Consistency]functionpb.WriteConsistency{
	counterpb.Consistency_LOCAL:    functionpb.WriteConsistency_WRITE_CONSISTENCY_LOCAL,
	counterpb.Consistency_MAJORITY: functionpb.WriteConsistency_WRITE_CONSISTENCY_MAJORITY,
	counterpb.Consistency_ALL:      functionpb.WriteConsistency_WRITE_CONSISTENCY_ALL,
}

// HandleCommand answers Increment, Decrement and Get with the counter's
// value after the command.
func (e *entity) HandleCommand(ctx *sdk.CrdtContext, cmd proto.Message) (proto.Message, error) {
	switch c := cmd.(type) {
	case *counterpb.ChangeRequest:
		wc, ok := consistencies[c.GetConsistency()]
		if !ok {
			return nil, sdk.Fail(codes.InvalidArgument, "counter: unknown consistency %d", c.GetConsistency())
		}
		ctx.SetWriteConsistency(wc)
		switch ctx.CommandName() {
		case "Increment":
			e.c.Increment(c.GetValue())
		case "Decrement":
			e.c.Decrement(c.GetValue())
		default:
			return nil, sdk.Fail(codes.Unimplemented, "counter: unexpected command %s", ctx.CommandName())
		}
	case *counterpb.GetRequest:
	default:
		return nil, sdk.Fail(codes.Unimplemented, "counter: unexpected command %s", ctx.CommandName())
	}
	return &counterpb.CounterValue{Value: e.c.Value()}, nil
}
