// Package register is the register example: an event-sourced,
// linearizable register with compare-and-set (see register.proto).
package register

import (
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/examples/register/registerpb"
	"github.com/statemesh/statemesh/sdk"
)

// ServiceName is the register's fully qualified gRPC service name.
const ServiceName = "statemesh.examples.register.Register"

// SnapshotInterval is how many events separate two snapshots.
const SnapshotInterval = 50

// Register registers the register entity on s.
func Register(s *sdk.Service) error {
	sd := registerpb.File_register_register_proto.Services().ByName("Register")
	return s.RegisterEventSourced(sd, func(string) sdk.EventSourcedEntity { return &entity{} },
		sdk.SnapshotEvery(SnapshotInterval))
}

// entity is one register: its value and the number of writes.
type entity struct {
	value   string
	version int64
}

func (e *entity) current() *registerpb.RegisterValue {
	return &registerpb.RegisterValue{Value: e.value, Version: e.version}
}

// HandleCommand answers Set, Get and CompareAndSet. Events are applied
// after it returns, so a write replies with the state it will produce.
func (e *entity) HandleCommand(ctx *sdk.EventSourcedContext, cmd proto.Message) (proto.Message, error) {
	switch c := cmd.(type) {
	case *registerpb.SetRequest:
		ctx.Emit(&registerpb.ValueWritten{Value: c.GetValue()})
		return &registerpb.RegisterValue{Value: c.GetValue(), Version: e.version + 1}, nil
	case *registerpb.GetRequest:
		return e.current(), nil
	case *registerpb.CompareAndSetRequest:
		if c.GetExpected() != e.value {
			return nil, sdk.Fail(codes.Aborted, "register %s holds %q, not the expected %q", ctx.EntityID(), e.value, c.GetExpected())
		}
		ctx.Emit(&registerpb.ValueWritten{Value: c.GetValue()})
		return &registerpb.RegisterValue{Value: c.GetValue(), Version: e.version + 1}, nil
	default:
		return nil, sdk.Fail(codes.Unimplemented, "register: unexpected command %s", ctx.CommandName())
	}
}

// HandleEvent applies a write.
func (e *entity) HandleEvent(ev proto.Message) error {
	w, ok := ev.(*registerpb.ValueWritten)
	if !ok {
		return fmt.Errorf("register: unexpected event %T", ev)
	}
	e.value = w.GetValue()
	e.version++
	return nil
}

// Snapshot returns the value and version.
func (e *entity) Snapshot() (proto.Message, error) {
	return &registerpb.RegisterSnapshot{Value: e.value, Version: e.version}, nil
}

// HandleSnapshot restores the value and version.
func (e *entity) HandleSnapshot(snap proto.Message) error {
	s, ok := snap.(*registerpb.RegisterSnapshot)
	if !ok {
		return fmt.Errorf("register: unexpected snapshot %T", snap)
	}
	e.value, e.version = s.GetValue(), s.GetVersion()
	return nil
}
