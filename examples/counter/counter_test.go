package counter_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/examples/counter"
	"github.com/statemesh/statemesh/examples/counter/counterpb"
	"github.com/statemesh/statemesh/protocol/functionpb"
	"github.com/statemesh/statemesh/sdk"
	"github.com/statemesh/statemesh/sdk/sdktest"
)

func TestCounter(t *testing.T) {
	svc := sdk.New()
	if err := counter.Register(svc); err != nil {
		t.Fatal(err)
	}
	s, err := sdktest.Start(t, svc).Crdt.Handle(sdktest.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	send := func(in *functionpb.CrdtStreamIn) {
		t.Helper()
		if err := s.Send(in); err != nil {
			t.Fatal(err)
		}
	}
	call := func(id int64, name string, req proto.Message) (*functionpb.CrdtReply, int64) {
		t.Helper()
		send(&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Command{Command: sdktest.Command(t, id, "c1", name, req)}})
		out, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		r := out.GetReply()
		if r.GetCommandId() != id || r.GetClientAction().GetReply() == nil {
			t.Fatalf("want a reply to %d, got %v", id, out)
		}
		return r, sdktest.Decode(t, r.GetClientAction().GetReply().GetPayload(), &counterpb.CounterValue{}).GetValue()
	}

	send(&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Init{Init: &functionpb.CrdtInit{ServiceName: counter.ServiceName, EntityId: "c1"}}})
	if _, v := call(1, "Get", &counterpb.GetRequest{Id: "c1"}); v != 0 {
		t.Fatalf("new counter %d", v)
	}
	r, v := call(2, "Increment", &counterpb.ChangeRequest{Id: "c1", Value: 5, Consistency: counterpb.Consistency_ALL})
	if v != 5 || r.GetStateAction().GetUpdate().GetPncounter().GetChange() != 5 ||
		r.GetStateAction().GetWriteConsistency() != functionpb.WriteConsistency_WRITE_CONSISTENCY_ALL {
		t.Fatalf("Increment 5 ALL: %d, %v", v, r.GetStateAction())
	}
	// Another replica decremented by 1.
	send(&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Changed{Changed: &functionpb.CrdtDelta{
		Delta: &functionpb.CrdtDelta_Pncounter{Pncounter: &functionpb.PNCounterDelta{Change: -1}},
	}}})
	r, v = call(3, "Decrement", &counterpb.ChangeRequest{Id: "c1", Value: 2, Consistency: counterpb.Consistency_MAJORITY})
	if v != 2 || r.GetStateAction().GetUpdate().GetPncounter().GetChange() != -2 ||
		r.GetStateAction().GetWriteConsistency() != functionpb.WriteConsistency_WRITE_CONSISTENCY_MAJORITY {
		t.Fatalf("Decrement 2 MAJORITY: %d, %v", v, r.GetStateAction())
	}
	if r, v := call(4, "Get", &counterpb.GetRequest{Id: "c1"}); v != 2 || r.GetStateAction() != nil {
		t.Fatalf("Get: %d, %v", v, r.GetStateAction())
	}
	// An unknown consistency fails the command and changes nothing.
	send(&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Command{Command: sdktest.Command(t, 5, "c1", "Increment", &counterpb.ChangeRequest{Id: "c1", Value: 1, Consistency: 7})}})
	out, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if out.GetReply().GetClientAction().GetFailure() == nil || out.GetReply().GetStateAction() != nil {
		t.Fatalf("unknown consistency: %v", out)
	}
}
