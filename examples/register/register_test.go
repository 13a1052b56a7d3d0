package register_test

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/examples/register"
	"github.com/statemesh/statemesh/examples/register/registerpb"
	"github.com/statemesh/statemesh/protocol/functionpb"
	"github.com/statemesh/statemesh/sdk"
	"github.com/statemesh/statemesh/sdk/sdktest"
)

func open(t *testing.T, snap *functionpb.EventSourcedSnapshot, events ...proto.Message) *sdktest.ESEntity {
	t.Helper()
	svc := sdk.New()
	if err := register.Register(svc); err != nil {
		t.Fatal(err)
	}
	return sdktest.Start(t, svc).EventSourcedEntity(t, register.ServiceName, "r1", snap, events...)
}

func value(t *testing.T, r *functionpb.EventSourcedReply) *registerpb.RegisterValue {
	t.Helper()
	return sdktest.Decode(t, r.GetClientAction().GetReply().GetPayload(), &registerpb.RegisterValue{})
}

func TestRegister(t *testing.T) {
	s := open(t, nil)
	if v := value(t, s.Call(1, "Get", &registerpb.GetRequest{Id: "r1"})); v.GetValue() != "" || v.GetVersion() != 0 {
		t.Fatalf("new register: %v", v)
	}
	r := s.Call(2, "Set", &registerpb.SetRequest{Id: "r1", Value: "a"})
	if v := value(t, r); v.GetValue() != "a" || v.GetVersion() != 1 || len(r.GetEvents()) != 1 {
		t.Fatalf("Set a: %v", r)
	}
	if ev := sdktest.Decode(t, r.GetEvents()[0], &registerpb.ValueWritten{}); ev.GetValue() != "a" {
		t.Fatalf("event %v", ev)
	}
	r = s.Call(3, "CompareAndSet", &registerpb.CompareAndSetRequest{Id: "r1", Expected: "b", Value: "c"})
	if f := r.GetClientAction().GetFailure(); codes.Code(f.GetGrpcStatusCode()) != codes.Aborted || len(r.GetEvents()) != 0 {
		t.Fatalf("CAS with a wrong expectation: %v", r)
	}
	r = s.Call(4, "CompareAndSet", &registerpb.CompareAndSetRequest{Id: "r1", Expected: "a", Value: "c"})
	if v := value(t, r); v.GetValue() != "c" || v.GetVersion() != 2 || len(r.GetEvents()) != 1 {
		t.Fatalf("CAS a -> c: %v", r)
	}
	if v := value(t, s.Call(5, "Get", &registerpb.GetRequest{Id: "r1"})); v.GetValue() != "c" || v.GetVersion() != 2 {
		t.Fatalf("Get: %v", v)
	}
}

func TestRegisterRecoversAndSnapshots(t *testing.T) {
	snap := &functionpb.EventSourcedSnapshot{
		SnapshotSequence: register.SnapshotInterval - 2,
		Snapshot:         sdktest.Any(t, &registerpb.RegisterSnapshot{Value: "old", Version: register.SnapshotInterval - 2}),
	}
	s := open(t, snap, &registerpb.ValueWritten{Value: "new"})
	if v := value(t, s.Call(1, "Get", &registerpb.GetRequest{Id: "r1"})); v.GetValue() != "new" || v.GetVersion() != register.SnapshotInterval-1 {
		t.Fatalf("recovered: %v", v)
	}
	r := s.Call(2, "Set", &registerpb.SetRequest{Id: "r1", Value: "snap"})
	got := sdktest.Decode(t, r.GetSnapshot(), &registerpb.RegisterSnapshot{})
	if got.GetValue() != "snap" || got.GetVersion() != register.SnapshotInterval {
		t.Fatalf("snapshot at %d: %v", register.SnapshotInterval, got)
	}
}
