// Package sets is the sets example: an ORSet CRDT of strings whose Watch
// streams the elements after every change (see sets.proto).
package sets

import (
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/examples/sets/setspb"
	"github.com/statemesh/statemesh/sdk"
)

// ServiceName is the set's fully qualified gRPC service name.
const ServiceName = "statemesh.examples.sets.Set"

// Register registers the set entity on s.
func Register(s *sdk.Service) error {
	sd := setspb.File_sets_sets_proto.Services().ByName("Set")
	return s.RegisterCrdt(sd, func(string) sdk.CrdtEntity { return &entity{s: sdk.NewORSet()} })
}

type entity struct{ s *sdk.ORSet }

func (e *entity) CRDT() sdk.Crdt { return e.s }

// elements is the set as a reply: its elements, sorted.
func (e *entity) elements() *setspb.Elements {
	out := &setspb.Elements{Elements: make([]string, 0, e.s.Len())}
	for _, el := range e.s.Elements() {
		out.Elements = append(out.Elements, string(el))
	}
	return out
}

// HandleCommand answers Add, Remove and Get with the elements after the
// command. Watch answers with the elements now and, when the caller asked
// for a stream (a server-streaming call), with the elements after every
// change of the set, until the caller goes away.
func (e *entity) HandleCommand(ctx *sdk.CrdtContext, cmd proto.Message) (proto.Message, error) {
	switch c := cmd.(type) {
	case *setspb.ElementRequest:
		if c.GetElement() == "" {
			return nil, sdk.Fail(codes.InvalidArgument, "sets: empty element")
		}
		switch ctx.CommandName() {
		case "Add":
			e.s.Add([]byte(c.GetElement()))
		case "Remove":
			e.s.Remove([]byte(c.GetElement()))
		default:
			return nil, sdk.Fail(codes.Unimplemented, "sets: unexpected command %s", ctx.CommandName())
		}
	case *setspb.GetRequest:
		if ctx.CommandName() == "Watch" {
			last := e.elements()
			ctx.OnChange(func() (proto.Message, bool, error) {
				now := e.elements()
				if slices.Equal(now.GetElements(), last.GetElements()) {
					return nil, false, nil // a change that changed nothing here
				}
				last = now
				return now, false, nil
			})
			return last, nil
		}
	default:
		return nil, sdk.Fail(codes.Unimplemented, "sets: unexpected command %s", ctx.CommandName())
	}
	return e.elements(), nil
}
