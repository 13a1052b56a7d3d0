package sdk

import (
	"context"

	"github.com/statemesh/statemesh/protocol/functionpb"
)

// Steppers drive the entity stream handlers without gRPC, for the fuzz
// test: one stream each.

func EventSourcedStepper(s *Service) func(context.Context, *functionpb.EventSourcedStreamIn) ([]*functionpb.EventSourcedStreamOut, error) {
	h := &esHandler{s: s, res: s.resolver()}
	return func(ctx context.Context, in *functionpb.EventSourcedStreamIn) ([]*functionpb.EventSourcedStreamOut, error) {
		return one(h.step(ctx, in))
	}
}

func ValueStepper(s *Service) func(context.Context, *functionpb.ValueEntityStreamIn) ([]*functionpb.ValueEntityStreamOut, error) {
	h := &valueHandler{s: s, res: s.resolver()}
	return func(ctx context.Context, in *functionpb.ValueEntityStreamIn) ([]*functionpb.ValueEntityStreamOut, error) {
		return one(h.step(ctx, in))
	}
}

func CrdtStepper(s *Service) func(context.Context, *functionpb.CrdtStreamIn) ([]*functionpb.CrdtStreamOut, error) {
	h := &crdtHandler{s: s, watchers: make(map[int64]*watcher)}
	return h.step
}
