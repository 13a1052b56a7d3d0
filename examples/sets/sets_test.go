package sets_test

import (
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/examples/sets"
	"github.com/statemesh/statemesh/examples/sets/setspb"
	"github.com/statemesh/statemesh/protocol/functionpb"
	"github.com/statemesh/statemesh/sdk"
	"github.com/statemesh/statemesh/sdk/sdktest"
)

type stream struct {
	t *testing.T
	s functionpb.Crdt_HandleClient
}

func open(t *testing.T) *stream {
	t.Helper()
	svc := sdk.New()
	if err := sets.Register(svc); err != nil {
		t.Fatal(err)
	}
	s, err := sdktest.Start(t, svc).Crdt.Handle(sdktest.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	st := &stream{t, s}
	st.send(&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Init{Init: &functionpb.CrdtInit{ServiceName: sets.ServiceName, EntityId: "s1"}}})
	return st
}

func (s *stream) send(in *functionpb.CrdtStreamIn) {
	s.t.Helper()
	if err := s.s.Send(in); err != nil {
		s.t.Fatal(err)
	}
}

func (s *stream) recv() *functionpb.CrdtStreamOut {
	s.t.Helper()
	out, err := s.s.Recv()
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

// call sends a command (streamed for a server-streaming call) and returns
// its reply.
func (s *stream) call(id int64, name string, req proto.Message, streamed bool) *functionpb.CrdtReply {
	s.t.Helper()
	cmd := sdktest.Command(s.t, id, "s1", name, req)
	cmd.Streamed = streamed
	s.send(&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Command{Command: cmd}})
	r := s.recv().GetReply()
	if r.GetCommandId() != id {
		s.t.Fatalf("want a reply to %d, got %v", id, r)
	}
	return r
}

func (s *stream) changed(d *functionpb.ORSetDelta) {
	s.t.Helper()
	s.send(&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Changed{Changed: &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Orset{Orset: d}}}})
}

func elements(t *testing.T, a *functionpb.ClientAction) []string {
	t.Helper()
	if a.GetReply() == nil {
		t.Fatalf("want a reply, got %v", a)
	}
	return sdktest.Decode(t, a.GetReply().GetPayload(), &setspb.Elements{}).GetElements()
}

func TestSet(t *testing.T) {
	s := open(t)
	if got := elements(t, s.call(1, "Get", &setspb.GetRequest{Id: "s1"}, false).GetClientAction()); len(got) != 0 {
		t.Fatalf("new set: %v", got)
	}
	r := s.call(2, "Add", &setspb.ElementRequest{Id: "s1", Element: "b"}, false)
	if got := elements(t, r.GetClientAction()); !slices.Equal(got, []string{"b"}) ||
		string(r.GetStateAction().GetUpdate().GetOrset().GetAdded()[0]) != "b" {
		t.Fatalf("Add b: %v, %v", got, r.GetStateAction())
	}
	// Another replica added a.
	s.changed(&functionpb.ORSetDelta{Added: [][]byte{[]byte("a")}})
	if got := elements(t, s.call(3, "Add", &setspb.ElementRequest{Id: "s1", Element: "c"}, false).GetClientAction()); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("Add c: %v", got)
	}
	r = s.call(4, "Remove", &setspb.ElementRequest{Id: "s1", Element: "a"}, false)
	if got := elements(t, r.GetClientAction()); !slices.Equal(got, []string{"b", "c"}) ||
		string(r.GetStateAction().GetUpdate().GetOrset().GetRemoved()[0]) != "a" {
		t.Fatalf("Remove a: %v, %v", got, r.GetStateAction())
	}
	// An empty element fails the command and changes nothing.
	r = s.call(5, "Add", &setspb.ElementRequest{Id: "s1"}, false)
	if f := r.GetClientAction().GetFailure(); codes.Code(f.GetGrpcStatusCode()) != codes.InvalidArgument || r.GetStateAction() != nil {
		t.Fatalf("empty element: %v", r)
	}
	if got := elements(t, s.call(6, "Get", &setspb.GetRequest{Id: "s1"}, false).GetClientAction()); !slices.Equal(got, []string{"b", "c"}) {
		t.Fatalf("Get: %v", got)
	}
}

func TestSetWatch(t *testing.T) {
	s := open(t)
	s.call(1, "Add", &setspb.ElementRequest{Id: "s1", Element: "a"}, false)
	r := s.call(2, "Watch", &setspb.GetRequest{Id: "s1"}, true)
	if got := elements(t, r.GetClientAction()); !r.GetStreamed() || !slices.Equal(got, []string{"a"}) {
		t.Fatalf("Watch: %v", r)
	}
	watched := func(want ...string) {
		t.Helper()
		sm := s.recv().GetStreamedMessage()
		if got := elements(t, sm.GetClientAction()); sm.GetCommandId() != 2 || sm.GetEndStream() || !slices.Equal(got, want) {
			t.Fatalf("watched %v, want %v", sm, want)
		}
	}
	// Another replica's change.
	s.changed(&functionpb.ORSetDelta{Added: [][]byte{[]byte("b")}})
	watched("a", "b")
	// A command's change, after the command's reply.
	s.call(3, "Remove", &setspb.ElementRequest{Id: "s1", Element: "a"}, false)
	watched("b")
	// A change that changes nothing here sends nothing: the next message is
	// the next command's reply.
	s.changed(&functionpb.ORSetDelta{Added: [][]byte{[]byte("b")}})
	s.call(4, "Get", &setspb.GetRequest{Id: "s1"}, false)
	// A Get that is not streamed (a unary call of Watch) ends with its reply.
	if r := s.call(5, "Watch", &setspb.GetRequest{Id: "s1"}, false); r.GetStreamed() {
		t.Fatalf("unstreamed Watch: %v", r)
	}
	// Cancelling the watch is acknowledged; later changes reach no one.
	s.send(&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_StreamCancelled{StreamCancelled: &functionpb.StreamCancelled{EntityId: "s1", Id: 2}}})
	if got := s.recv().GetStreamCancelledResponse(); got.GetCommandId() != 2 {
		t.Fatalf("cancel: %v", got)
	}
	s.changed(&functionpb.ORSetDelta{Added: [][]byte{[]byte("c")}})
	if got := elements(t, s.call(6, "Get", &setspb.GetRequest{Id: "s1"}, false).GetClientAction()); !slices.Equal(got, []string{"b", "c"}) {
		t.Fatalf("Get: %v", got)
	}
}
