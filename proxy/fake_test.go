package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/statemesh/statemesh/consensus"
	"github.com/statemesh/statemesh/eventlog"
	"github.com/statemesh/statemesh/protocol/functionpb"
)

// testdata/proxytest.pb is generated from testdata/proxytest.proto:
//go:generate protoc -I ../protocol -I testdata -I /usr/include --include_imports --descriptor_set_out=testdata/proxytest.pb proxytest.proto

// testSet loads the test descriptor set.
func testSet(t testing.TB) *descriptorpb.FileDescriptorSet {
	t.Helper()
	b, err := os.ReadFile("testdata/proxytest.pb")
	if err != nil {
		t.Fatal(err)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(b, &set); err != nil {
		t.Fatal(err)
	}
	return &set
}

var (
	testFilesOnce sync.Once
	testFiles     *protoregistry.Files
)

// msg builds a test message by name with the given fields.
func msg(t testing.TB, name string, fields map[string]any) *dynamicpb.Message {
	t.Helper()
	testFilesOnce.Do(func() {
		f, err := protodesc.NewFiles(testSet(t))
		if err != nil {
			panic(err)
		}
		testFiles = f
	})
	d, err := testFiles.FindDescriptorByName(protoreflect.FullName("proxytest." + name))
	if err != nil {
		t.Fatal(err)
	}
	m := dynamicpb.NewMessage(d.(protoreflect.MessageDescriptor))
	for k, v := range fields {
		fd := m.Descriptor().Fields().ByName(protoreflect.Name(k))
		if fd.IsList() {
			l := m.Mutable(fd).List()
			for _, s := range v.([]string) {
				l.Append(protoreflect.ValueOfString(s))
			}
			continue
		}
		m.Set(fd, protoreflect.ValueOf(v))
	}
	return m
}

func field(m proto.Message, name string) protoreflect.Value {
	r := m.ProtoReflect()
	return r.Get(r.Descriptor().Fields().ByName(protoreflect.Name(name)))
}

func items(m proto.Message) []string {
	l := field(m, "items").List()
	var out []string
	for i := range l.Len() {
		out = append(out, l.Get(i).String())
	}
	return out
}

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// fake is the test's user function: a Cart (event-sourced), a Register
// (value entity) and an Echo action, written against the raw protocol.
type fake struct {
	functionpb.UnimplementedDiscoveryServer
	functionpb.UnimplementedEventSourcedServer
	functionpb.UnimplementedActionProtocolServer
	t      testing.TB
	values *valueFake
	crdts  *crdtFake

	// spec is what Discover returns (set before serving).
	spec *functionpb.EntitySpec
	// failDiscover: this many Discover calls fail with Unavailable first.
	failDiscover atomic.Int32
	discovers    atomic.Int32
	esInits      atomic.Int32
	reported     chan string
	// streamEnded gets the context error of each Echo.Count call told to
	// "wait" for its end.
	streamEnded chan error
	// waiting gets a value when a client-streamed Echo call told to
	// "wait" starts waiting.
	waiting chan struct{}
}

func newFake(t testing.TB) *fake {
	b, err := proto.Marshal(testSet(t))
	if err != nil {
		t.Fatal(err)
	}
	return &fake{t: t, values: &valueFake{t: t}, crdts: &crdtFake{t: t}, reported: make(chan string, 10), streamEnded: make(chan error, 1), waiting: make(chan struct{}, 1), spec: &functionpb.EntitySpec{
		Proto: b,
		Entities: []*functionpb.Entity{
			{Model: functionpb.Model_MODEL_EVENT_SOURCED, ServiceName: "proxytest.Cart", PersistenceId: "cart"},
			{Model: functionpb.Model_MODEL_VALUE, ServiceName: "proxytest.Register"},
			{Model: functionpb.Model_MODEL_ACTION, ServiceName: "proxytest.Echo"},
		},
		ServiceInfo: &functionpb.ServiceInfo{ServiceName: "fake", ProtocolMajorVersion: 1, SupportLibraryName: "proxy_test"},
	}}
}

// serve serves the fake on lis until the test ends.
func (f *fake) serve(t testing.TB, lis net.Listener) {
	s := grpc.NewServer()
	functionpb.RegisterDiscoveryServer(s, f)
	functionpb.RegisterEventSourcedServer(s, f)
	functionpb.RegisterValueEntityServer(s, f.values)
	functionpb.RegisterCrdtServer(s, f.crdts)
	functionpb.RegisterActionProtocolServer(s, f)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
}

func (f *fake) start(t testing.TB) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.serve(t, lis)
	return lis.Addr().String()
}

func (f *fake) Discover(_ context.Context, in *functionpb.ProxyInfo) (*functionpb.EntitySpec, error) {
	f.discovers.Add(1)
	if f.failDiscover.Add(-1) >= 0 {
		return nil, status.Error(codes.Unavailable, "starting")
	}
	if in.GetProtocolMajorVersion() != 1 {
		return nil, status.Error(codes.FailedPrecondition, "major version")
	}
	return f.spec, nil
}

func (f *fake) ReportError(_ context.Context, e *functionpb.UserFunctionError) (*emptypb.Empty, error) {
	select {
	case f.reported <- e.GetMessage():
	default:
	}
	return &emptypb.Empty{}, nil
}

// Handle runs a Cart entity.
func (f *fake) Handle(s grpc.BidiStreamingServer[functionpb.EventSourcedStreamIn, functionpb.EventSourcedStreamOut]) error {
	var cart []string
	var total int64
	apply := func(a *anypb.Any) error {
		ev := msg(f.t, "ItemAdded", nil)
		if err := a.UnmarshalTo(ev); err != nil {
			return err
		}
		cart = append(cart, field(ev, "item").String())
		total += field(ev, "quantity").Int()
		return nil
	}
	state := func() *anypb.Any {
		return mustAny(f.t, msg(f.t, "CartState", map[string]any{"items": cart, "total": total}))
	}
	for {
		in, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		switch m := in.GetMessage().(type) {
		case *functionpb.EventSourcedStreamIn_Init:
			f.esInits.Add(1)
			if snap := m.Init.GetSnapshot().GetSnapshot(); snap != nil {
				st := msg(f.t, "CartState", nil)
				if err := snap.UnmarshalTo(st); err != nil {
					return err
				}
				cart, total = items(st), field(st, "total").Int()
			}
		case *functionpb.EventSourcedStreamIn_Event:
			if err := apply(m.Event.GetPayload()); err != nil {
				return err
			}
		case *functionpb.EventSourcedStreamIn_Command:
			c := m.Command
			out := &functionpb.EventSourcedStreamOut{}
			switch c.GetName() {
			case "AddItem":
				req := msg(f.t, "AddItemRequest", nil)
				if err := c.GetPayload().UnmarshalTo(req); err != nil {
					return err
				}
				if field(req, "item").String() == "crash" {
					return status.Error(codes.Internal, "the function drops the stream")
				}
				q := field(req, "quantity").Int()
				if q <= 0 {
					out.Message = &functionpb.EventSourcedStreamOut_Failure{Failure: &functionpb.Failure{
						CommandId: c.GetId(), Description: "quantity must be positive", GrpcStatusCode: int32(codes.InvalidArgument)}}
					break
				}
				ev := mustAny(f.t, msg(f.t, "ItemAdded", map[string]any{"item": field(req, "item").String(), "quantity": q}))
				if err := apply(ev); err != nil {
					return err
				}
				r := &functionpb.EventSourcedReply{CommandId: c.GetId(), Events: []*anypb.Any{ev},
					ClientAction: &functionpb.ClientAction{Action: &functionpb.ClientAction_Reply{Reply: &functionpb.Reply{Payload: state()}}}}
				if field(req, "item").String() == "snapshot" {
					r.Snapshot = state()
				}
				if field(req, "item").String() == "garbage" {
					// Misbehave: an event without a type.
					r.Events = append(r.Events, &anypb.Any{Value: []byte{0xff}})
				}
				out.Message = &functionpb.EventSourcedStreamOut_Reply{Reply: r}
			case "GetCart":
				out.Message = &functionpb.EventSourcedStreamOut_Reply{Reply: &functionpb.EventSourcedReply{CommandId: c.GetId(),
					ClientAction: &functionpb.ClientAction{Action: &functionpb.ClientAction_Reply{Reply: &functionpb.Reply{Payload: state()}}}}}
			default:
				out.Message = &functionpb.EventSourcedStreamOut_Failure{Failure: &functionpb.Failure{CommandId: c.GetId(), Description: "unknown command"}}
			}
			if err := s.Send(out); err != nil {
				return err
			}
		}
	}
}

// valueFake runs Register entities (ValueEntity.Handle has the same
// method name as EventSourced.Handle, so it is its own type).
type valueFake struct {
	functionpb.UnimplementedValueEntityServer
	t     testing.TB
	inits atomic.Int32
}

func (f *valueFake) Handle(s grpc.BidiStreamingServer[functionpb.ValueEntityStreamIn, functionpb.ValueEntityStreamOut]) error {
	value := ""
	for {
		in, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		switch m := in.GetMessage().(type) {
		case *functionpb.ValueEntityStreamIn_Init:
			f.inits.Add(1)
			if st := m.Init.GetState(); st != nil {
				v := msg(f.t, "RegisterValue", nil)
				if err := st.UnmarshalTo(v); err != nil {
					return err
				}
				value = field(v, "value").String()
			}
		case *functionpb.ValueEntityStreamIn_Command:
			c := m.Command
			r := &functionpb.ValueEntityReply{CommandId: c.GetId()}
			switch c.GetName() {
			case "Set":
				req := msg(f.t, "SetRequest", nil)
				if err := c.GetPayload().UnmarshalTo(req); err != nil {
					return err
				}
				value = field(req, "value").String()
				r.StateAction = &functionpb.ValueEntityStateAction{Action: &functionpb.ValueEntityStateAction_Update{
					Update: mustAny(f.t, msg(f.t, "RegisterValue", map[string]any{"value": value}))}}
			case "Clear":
				value = ""
				r.StateAction = &functionpb.ValueEntityStateAction{Action: &functionpb.ValueEntityStateAction_Delete{Delete: &functionpb.ValueEntityDelete{}}}
			}
			r.ClientAction = &functionpb.ClientAction{Action: &functionpb.ClientAction_Reply{Reply: &functionpb.Reply{
				Payload: mustAny(f.t, msg(f.t, "RegisterValue", map[string]any{"value": value}))}}}
			if err := s.Send(&functionpb.ValueEntityStreamOut{Message: &functionpb.ValueEntityStreamOut_Reply{Reply: r}}); err != nil {
				return err
			}
		}
	}
}

// HandleUnary runs the Echo action.
func (f *fake) HandleUnary(_ context.Context, c *functionpb.ActionCommand) (*functionpb.ActionResponse, error) {
	switch c.GetName() {
	case "Say":
		req := msg(f.t, "EchoRequest", nil)
		if err := c.GetPayload().UnmarshalTo(req); err != nil {
			return nil, err
		}
		text := field(req, "text").String()
		var payload *anypb.Any
		switch text {
		case "wrong type":
			payload = mustAny(f.t, msg(f.t, "CartState", nil))
		case "bad bytes":
			payload = &anypb.Any{TypeUrl: "type.googleapis.com/proxytest.EchoReply", Value: []byte{0x0a, 0xff}}
		case "fail":
			return &functionpb.ActionResponse{Response: &functionpb.ActionResponse_Failure{Failure: &functionpb.Failure{
				Description: "told to fail", GrpcStatusCode: int32(codes.PermissionDenied)}}}, nil
		default:
			payload = mustAny(f.t, msg(f.t, "EchoReply", map[string]any{"text": "echo: " + text}))
		}
		resp := &functionpb.ActionResponse{Response: &functionpb.ActionResponse_Reply{Reply: &functionpb.Reply{Payload: payload}}}
		if text == "side effect" || text == "async side effect" {
			// A side effect adds an item to cart "side" or "async".
			cart := map[bool]string{true: "side", false: "async"}[text == "side effect"]
			resp.SideEffects = []*functionpb.SideEffect{{ServiceName: "proxytest.Cart", CommandName: "AddItem", Synchronous: text == "side effect",
				Payload: mustAny(f.t, msg(f.t, "AddItemRequest", map[string]any{"cart_id": cart, "item": "effect", "quantity": int64(1)}))}}
		}
		return resp, nil
	case "AddViaEcho":
		return &functionpb.ActionResponse{Response: &functionpb.ActionResponse_Forward{Forward: &functionpb.Forward{
			ServiceName: "proxytest.Cart", CommandName: "AddItem", Payload: c.GetPayload()}}}, nil
	}
	return nil, status.Error(codes.Unimplemented, c.GetName())
}

// memHost is an in-memory ESHost with consensus.Host's contract: the
// handler decides on the entity's current state, events are appended
// only at the expected sequence number, request ids are applied at most
// once, a handler error is ErrRejected and persists nothing.
type memHost struct {
	mu       sync.Mutex
	handlers map[string]consensus.Handler
	journals map[consensus.Entity]consensus.EntityState
	values   map[consensus.Entity]consensus.Value
	applied  map[string]consensus.Reply
}

func newMemHost() *memHost {
	return &memHost{journals: map[consensus.Entity]consensus.EntityState{}, values: map[consensus.Entity]consensus.Value{},
		applied: map[string]consensus.Reply{}}
}

// wire gives h the proxy's handlers (startProxy's wire).
func (h *memHost) wire(handlers map[string]consensus.Handler) ESHost {
	h.handlers = handlers
	return h
}

func (h *memHost) Command(ctx context.Context, e consensus.Entity, payload, requestID []byte) (consensus.Reply, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := e.Validate(); err != nil {
		return consensus.Reply{}, fmt.Errorf("%w: %v", consensus.ErrInvalid, err)
	}
	if r, ok := h.applied[string(requestID)]; ok && len(requestID) > 0 {
		return r, nil
	}
	handler, ok := h.handlers[e.Type]
	if !ok {
		return consensus.Reply{}, fmt.Errorf("%w: %q", consensus.ErrNoHandler, e.Type)
	}
	st := h.journals[e]
	view := st
	view.Events = slices.Clone(st.Events)
	eff, err := handler.Handle(ctx, consensus.Command{Entity: e, State: view, Payload: payload})
	if err != nil {
		return consensus.Reply{}, consensus.NewRejection(err)
	}
	for _, ev := range eff.Events {
		st.Seq++
		st.Events = append(slices.Clip(st.Events), eventlog.Event{Seq: st.Seq, Data: ev})
	}
	if eff.HasSnapshot {
		st.SnapshotSeq, st.Snapshot, st.Events = st.Seq, eff.Snapshot, nil
	}
	h.journals[e] = st
	r := consensus.Reply{Seq: st.Seq, Data: eff.Reply}
	if len(requestID) > 0 {
		h.applied[string(requestID)] = r
	}
	return r, nil
}

func (h *memHost) GetValue(_ context.Context, e consensus.Entity) (consensus.Value, bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.values[e]
	return v, ok, nil
}

func (h *memHost) PutValue(_ context.Context, e consensus.Entity, state []byte, expected uint64) (uint64, error) {
	return h.write(e, state, false, expected)
}

func (h *memHost) DeleteValue(_ context.Context, e consensus.Entity, expected uint64) (uint64, error) {
	return h.write(e, nil, true, expected)
}

func (h *memHost) write(e consensus.Entity, state []byte, del bool, expected uint64) (uint64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v := h.values[e]
	if expected != consensus.AnyVersion && expected != v.Version {
		return 0, fmt.Errorf("%w: version %d, expected %d", consensus.ErrConflict, v.Version, expected)
	}
	v = consensus.Value{Version: v.Version + 1, State: state, Deleted: del}
	h.values[e] = v
	return v.Version, nil
}

func (h *memHost) journal(e consensus.Entity) consensus.EntityState {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.journals[e]
}
