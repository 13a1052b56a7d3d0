package sdk_test

import (
	"io"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/statemesh/statemesh/protocol/functionpb"
	"github.com/statemesh/statemesh/sdk"
	"github.com/statemesh/statemesh/sdk/sdktest"
)

// ledger sums the n of its events. Add emits one event (two with text
// "twice") and replies with the sum after them.
type ledger struct{ sum int64 }

func (l *ledger) HandleCommand(ctx *sdk.EventSourcedContext, cmd proto.Message) (proto.Message, error) {
	switch ctx.CommandName() {
	case "Add":
		n := fieldN(cmd)
		if n < 0 {
			ctx.Emit(newMsg("", "never", n)) // dropped: the command fails
			return nil, sdk.Fail(codes.InvalidArgument, "negative amount %d", n)
		}
		if fieldText(cmd) == "panic" {
			panic("boom")
		}
		k := int64(1)
		if fieldText(cmd) == "twice" {
			k = 2
		}
		for range k {
			ctx.Emit(newMsg("", "added", n))
		}
		return newMsg(ctx.EntityID(), "", l.sum+k*n), nil
	case "Get":
		return newMsg(ctx.EntityID(), "", l.sum), nil
	}
	return nil, sdk.Fail(codes.Unimplemented, "no %s", ctx.CommandName())
}

func (l *ledger) HandleEvent(ev proto.Message) error { l.sum += fieldN(ev); return nil }

func (l *ledger) Snapshot() (proto.Message, error) { return newMsg("", "snapshot", l.sum), nil }

func (l *ledger) HandleSnapshot(s proto.Message) error { l.sum = fieldN(s); return nil }

func startLedger(t *testing.T) functionpb.EventSourced_HandleClient {
	t.Helper()
	svc := sdk.New()
	if err := svc.RegisterEventSourced(service("Ledger"), func(string) sdk.EventSourcedEntity { return &ledger{} }, sdk.SnapshotEvery(10)); err != nil {
		t.Fatal(err)
	}
	p := sdktest.Start(t, svc)
	stream, err := p.EventSourced.Handle(sdktest.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	return stream
}

func esSend(t *testing.T, s functionpb.EventSourced_HandleClient, in *functionpb.EventSourcedStreamIn) {
	t.Helper()
	if err := s.Send(in); err != nil {
		t.Fatal(err)
	}
}

func esCommand(t *testing.T, s functionpb.EventSourced_HandleClient, cmd *functionpb.Command) *functionpb.EventSourcedStreamOut {
	t.Helper()
	esSend(t, s, &functionpb.EventSourcedStreamIn{Message: &functionpb.EventSourcedStreamIn_Command{Command: cmd}})
	out, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func esInit(id string, snap *functionpb.EventSourcedSnapshot) *functionpb.EventSourcedStreamIn {
	return &functionpb.EventSourcedStreamIn{Message: &functionpb.EventSourcedStreamIn_Init{Init: &functionpb.EventSourcedInit{
		ServiceName: "sdk.test.Ledger", EntityId: id, Snapshot: snap,
	}}}
}

// wantReply returns the reply of a successful command and its payload.
func wantReply(t *testing.T, out *functionpb.EventSourcedStreamOut, id int64) (*functionpb.EventSourcedReply, proto.Message) {
	t.Helper()
	r := out.GetReply()
	if r == nil || r.GetCommandId() != id || r.GetClientAction().GetReply() == nil {
		t.Fatalf("want a reply to command %d, got %v", id, out)
	}
	return r, decodeMsg(t, r.GetClientAction().GetReply().GetPayload())
}

func wantFailure(t *testing.T, f *functionpb.Failure, id int64, code codes.Code) {
	t.Helper()
	if f == nil || f.GetCommandId() != id || codes.Code(f.GetGrpcStatusCode()) != code || f.GetDescription() == "" {
		t.Fatalf("want a failure of command %d with %v, got %v", id, code, f)
	}
}

func TestEventSourcedLifecycle(t *testing.T) {
	s := startLedger(t)
	esSend(t, s, esInit("l1", &functionpb.EventSourcedSnapshot{SnapshotSequence: 5, Snapshot: anyOf(t, newMsg("", "", 10))}))
	for i, n := range []int64{1, 2} { // sequences 6 and 7
		esSend(t, s, &functionpb.EventSourcedStreamIn{Message: &functionpb.EventSourcedStreamIn_Event{Event: &functionpb.EventSourcedEvent{Sequence: int64(6 + i), Payload: anyOf(t, newMsg("", "", n))}}})
	}

	_, m := wantReply(t, esCommand(t, s, sdktest.Command(t, 1, "l1", "Get", newMsg("l1", "", 0))), 1)
	if fieldN(m) != 13 {
		t.Fatalf("after snapshot and replay: sum %d, want 13", fieldN(m))
	}

	// Two events, sequence 7 -> 9: no snapshot yet.
	r, m := wantReply(t, esCommand(t, s, sdktest.Command(t, 2, "l1", "Add", newMsg("l1", "twice", 3))), 2)
	if fieldN(m) != 19 || len(r.GetEvents()) != 2 || r.GetSnapshot() != nil {
		t.Fatalf("Add twice: sum %d, %d events, snapshot %v", fieldN(m), len(r.GetEvents()), r.GetSnapshot())
	}
	for _, ev := range r.GetEvents() {
		if fieldN(decodeMsg(t, ev)) != 3 {
			t.Fatalf("event %v", ev)
		}
	}

	// Sequence 10 crosses SnapshotEvery(10): the reply carries a snapshot
	// of the state after the event.
	r, m = wantReply(t, esCommand(t, s, sdktest.Command(t, 3, "l1", "Add", newMsg("l1", "", 1))), 3)
	if fieldN(m) != 20 || len(r.GetEvents()) != 1 || r.GetSnapshot() == nil || fieldN(decodeMsg(t, r.GetSnapshot())) != 20 {
		t.Fatalf("Add at sequence 10: sum %d, events %d, snapshot %v", fieldN(m), len(r.GetEvents()), r.GetSnapshot())
	}

	// A failed command emits nothing and changes nothing.
	out := esCommand(t, s, sdktest.Command(t, 4, "l1", "Add", newMsg("l1", "", -5)))
	if len(out.GetReply().GetEvents()) != 0 || out.GetReply().GetSnapshot() != nil || len(out.GetReply().GetSideEffects()) != 0 {
		t.Fatalf("failed command emitted: %v", out)
	}
	wantFailure(t, out.GetReply().GetClientAction().GetFailure(), 4, codes.InvalidArgument)
	_, m = wantReply(t, esCommand(t, s, sdktest.Command(t, 5, "l1", "Get", newMsg("l1", "", 0))), 5)
	if fieldN(m) != 20 {
		t.Fatalf("after a failed command: sum %d, want 20", fieldN(m))
	}

	// Bad input fails the command, and the entity goes on.
	wantFailure(t, esCommand(t, s, sdktest.Command(t, 6, "l1", "Nope", newMsg("l1", "", 0))).GetFailure(), 6, codes.NotFound)
	wantFailure(t, esCommand(t, s, &functionpb.Command{Id: 7, Name: "Add", Payload: &anypb.Any{TypeUrl: "type.googleapis.com/sdk.test.Msg", Value: []byte{0xff, 0xff, 0xff}}}).GetFailure(), 7, codes.InvalidArgument)
	wantFailure(t, esCommand(t, s, &functionpb.Command{Id: 8, Name: "Add", Payload: anyOf(t, &functionpb.Failure{})}).GetFailure(), 8, codes.InvalidArgument)
	wantFailure(t, esCommand(t, s, &functionpb.Command{Id: 9, Name: "Add"}).GetFailure(), 9, codes.InvalidArgument)
	_, m = wantReply(t, esCommand(t, s, sdktest.Command(t, 10, "l1", "Get", newMsg("l1", "", 0))), 10)
	if fieldN(m) != 20 {
		t.Fatalf("after bad input: sum %d, want 20", fieldN(m))
	}

	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != io.EOF {
		t.Fatalf("after CloseSend: %v, want EOF", err)
	}
}

func TestEventSourcedCommandBeforeInit(t *testing.T) {
	s := startLedger(t)
	wantFailure(t, esCommand(t, s, sdktest.Command(t, 1, "l1", "Get", newMsg("l1", "", 0))).GetFailure(), 1, codes.FailedPrecondition)
	esSend(t, s, esInit("l1", nil))
	if _, m := wantReply(t, esCommand(t, s, sdktest.Command(t, 2, "l1", "Add", newMsg("l1", "", 4))), 2); fieldN(m) != 4 {
		t.Fatalf("sum %d, want 4", fieldN(m))
	}
}

// wantStreamFailure reads a whole-stream failure and then the stream's end.
func wantStreamFailure(t *testing.T, recv func() (*functionpb.Failure, error)) {
	t.Helper()
	f, err := recv()
	if err != nil {
		t.Fatal(err)
	}
	if f == nil || f.GetCommandId() != 0 || f.GetDescription() == "" {
		t.Fatalf("want a stream failure, got %v", f)
	}
	if _, err := recv(); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("stream ended with %v, want FailedPrecondition", err)
	}
}

func TestEventSourcedFatal(t *testing.T) {
	for name, msgs := range map[string][]*functionpb.EventSourcedStreamIn{
		"second init":     {esInit("l1", nil), esInit("l1", nil)},
		"unknown service": {{Message: &functionpb.EventSourcedStreamIn_Init{Init: &functionpb.EventSourcedInit{ServiceName: "sdk.test.Nope"}}}},
		"wrong model":     {{Message: &functionpb.EventSourcedStreamIn_Init{Init: &functionpb.EventSourcedInit{ServiceName: "sdk.test.Doc"}}}},
		"event first":     {{Message: &functionpb.EventSourcedStreamIn_Event{Event: &functionpb.EventSourcedEvent{Sequence: 1}}}},
		"empty message":   {{}},
		"bad snapshot":    {esInit("l1", &functionpb.EventSourcedSnapshot{Snapshot: &anypb.Any{TypeUrl: "type.googleapis.com/no.Such"}})},
		"panic":           {esInit("l1", nil), {Message: &functionpb.EventSourcedStreamIn_Command{Command: sdktest.Command(t, 1, "l1", "Add", newMsg("l1", "panic", 1))}}},
	} {
		t.Run(name, func(t *testing.T) {
			s := startLedger(t)
			for _, m := range msgs {
				esSend(t, s, m)
			}
			wantStreamFailure(t, func() (*functionpb.Failure, error) {
				out, err := s.Recv()
				return out.GetFailure(), err
			})
		})
	}
}
