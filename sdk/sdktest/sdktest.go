// Package sdktest plays the statemesh proxy in-process, for tests of
// functions written with package sdk: it serves an sdk.Service on an
// in-memory listener and hands out function protocol clients.
package sdktest

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/statemesh/statemesh/protocol/functionpb"
	"github.com/statemesh/statemesh/sdk"
)

// Timeout bounds every stream a Proxy opens, so a test waiting for a reply
// that never comes fails instead of hanging.
const Timeout = 30 * time.Second

// Proxy is a client of a Service, as the statemesh proxy would be.
type Proxy struct {
	Discovery    functionpb.DiscoveryClient
	EventSourced functionpb.EventSourcedClient
	Value        functionpb.ValueEntityClient
	Crdt         functionpb.CrdtClient
	Action       functionpb.ActionProtocolClient
}

// Start serves s on an in-memory listener until the test ends.
func Start(t testing.TB, s *sdk.Service) *Proxy {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	done := make(chan error, 1)
	go func() { done <- s.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("sdktest: dial: %v", err)
	}
	t.Cleanup(func() {
		conn.Close()
		s.Stop()
		if err := <-done; err != nil {
			t.Errorf("sdktest: Serve: %v", err)
		}
	})
	return &Proxy{
		Discovery:    functionpb.NewDiscoveryClient(conn),
		EventSourced: functionpb.NewEventSourcedClient(conn),
		Value:        functionpb.NewValueEntityClient(conn),
		Crdt:         functionpb.NewCrdtClient(conn),
		Action:       functionpb.NewActionProtocolClient(conn),
	}
}

// Context returns a context bounded by Timeout and cancelled when the test
// ends.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	t.Cleanup(cancel)
	return ctx
}

// Any encodes m as the proxy would.
func Any(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatalf("sdktest: %v", err)
	}
	return a
}

// Decode decodes a into a new message of m's type and returns it.
func Decode[M proto.Message](t testing.TB, a *anypb.Any, m M) M {
	t.Helper()
	if err := a.UnmarshalTo(m); err != nil {
		t.Fatalf("sdktest: decoding %s: %v", a.GetTypeUrl(), err)
	}
	return m
}

// Command builds a command for the stream protocols.
func Command(t testing.TB, id int64, entityID, name string, payload proto.Message) *functionpb.Command {
	t.Helper()
	return &functionpb.Command{EntityId: entityID, Id: id, Name: name, Payload: Any(t, payload)}
}

// EventSourcedEntity opens an event-sourced entity stream on p: init for
// (service, entityID) with an optional snapshot, then the events after it,
// numbered from the snapshot's sequence. Send commands with Call.
func (p *Proxy) EventSourcedEntity(t testing.TB, service, entityID string, snap *functionpb.EventSourcedSnapshot, events ...proto.Message) *ESEntity {
	t.Helper()
	s, err := p.EventSourced.Handle(Context(t))
	if err != nil {
		t.Fatalf("sdktest: %v", err)
	}
	e := &ESEntity{t: t, stream: s, id: entityID}
	e.send(&functionpb.EventSourcedStreamIn{Message: &functionpb.EventSourcedStreamIn_Init{Init: &functionpb.EventSourcedInit{
		ServiceName: service, EntityId: entityID, Snapshot: snap,
	}}})
	seq := snap.GetSnapshotSequence()
	for _, ev := range events {
		seq++
		e.send(&functionpb.EventSourcedStreamIn{Message: &functionpb.EventSourcedStreamIn_Event{Event: &functionpb.EventSourcedEvent{Sequence: seq, Payload: Any(t, ev)}}})
	}
	return e
}

// ESEntity is an open event-sourced entity stream.
type ESEntity struct {
	t      testing.TB
	stream functionpb.EventSourced_HandleClient
	id     string
}

func (e *ESEntity) send(in *functionpb.EventSourcedStreamIn) {
	e.t.Helper()
	if err := e.stream.Send(in); err != nil {
		e.t.Fatalf("sdktest: %v", err)
	}
}

// Call sends command id (method name, request req) and returns its reply;
// anything but a reply to id fails the test.
func (e *ESEntity) Call(id int64, name string, req proto.Message) *functionpb.EventSourcedReply {
	e.t.Helper()
	e.send(&functionpb.EventSourcedStreamIn{Message: &functionpb.EventSourcedStreamIn_Command{Command: Command(e.t, id, e.id, name, req)}})
	out, err := e.stream.Recv()
	if err != nil {
		e.t.Fatalf("sdktest: %v", err)
	}
	if out.GetReply().GetCommandId() != id {
		e.t.Fatalf("sdktest: want a reply to %d, got %v", id, out)
	}
	return out.GetReply()
}
