package proxy

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/statemesh/statemesh/consensus"
	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/internal/hlc"
	"github.com/statemesh/statemesh/mesh"
	"github.com/statemesh/statemesh/protocol/functionpb"
)

// crdtFake runs Counter entities (PNCounters) over the Crdt protocol.
type crdtFake struct {
	functionpb.UnimplementedCrdtServer
	t     testing.TB
	inits atomic.Int32
}

func (f *crdtFake) Handle(s grpc.BidiStreamingServer[functionpb.CrdtStreamIn, functionpb.CrdtStreamOut]) error {
	var value int64
	for {
		in, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		switch m := in.GetMessage().(type) {
		case *functionpb.CrdtStreamIn_Init:
			f.inits.Add(1)
			value = m.Init.GetState().GetPncounter().GetValue()
		case *functionpb.CrdtStreamIn_Changed:
			value += m.Changed.GetPncounter().GetChange()
		case *functionpb.CrdtStreamIn_Command:
			c := m.Command
			r := &functionpb.CrdtReply{CommandId: c.GetId()}
			if c.GetName() == "Increment" {
				req := msg(f.t, "IncrementRequest", nil)
				if err := c.GetPayload().UnmarshalTo(req); err != nil {
					return err
				}
				n := field(req, "value").Int()
				if n == 0 {
					if err := s.Send(&functionpb.CrdtStreamOut{Message: &functionpb.CrdtStreamOut_Failure{Failure: &functionpb.Failure{
						CommandId: c.GetId(), Description: "zero", GrpcStatusCode: int32(codes.InvalidArgument)}}}); err != nil {
						return err
					}
					continue
				}
				value += n
				d := &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Pncounter{Pncounter: &functionpb.PNCounterDelta{Change: n}}}
				if n == 42 {
					// Misbehave: a delta of another type.
					d = &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Flag{Flag: &functionpb.FlagDelta{Value: true}}}
				}
				r.StateAction = &functionpb.CrdtStateAction{Action: &functionpb.CrdtStateAction_Update{Update: d},
					WriteConsistency: functionpb.WriteConsistency_WRITE_CONSISTENCY_MAJORITY}
			}
			r.ClientAction = &functionpb.ClientAction{Action: &functionpb.ClientAction_Reply{Reply: &functionpb.Reply{
				Payload: mustAny(f.t, msg(f.t, "CounterValue", map[string]any{"value": value}))}}}
			if err := s.Send(&functionpb.CrdtStreamOut{Message: &functionpb.CrdtStreamOut_Reply{Reply: r}}); err != nil {
				return err
			}
		}
	}
}

// memStore is an in-memory CRDTStore: one replica, writes applied at
// once whatever the consistency (which it records).
type memStore struct {
	mu      sync.Mutex
	vals    map[mesh.Key]crdt.Value
	last    mesh.Consistency
	replica crdt.ReplicaID
	clock   *hlc.Clock
}

func newMemStore() *memStore {
	return &memStore{vals: map[mesh.Key]crdt.Value{}, replica: crdt.ReplicaID{Node: "n1", Incarnation: 1}, clock: hlc.New(hlc.SystemClock)}
}

func (s *memStore) Update(_ context.Context, k mesh.Key, t crdt.Type, fn mesh.Mutator, o mesh.Options) (crdt.Value, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vals[k]
	if v == nil {
		var err error
		if v, err = crdt.New(t); err != nil {
			return nil, err
		}
	} else if v.Type() != t {
		return nil, mesh.ErrTypeMismatch
	}
	if _, err := fn(v); err != nil {
		return nil, err
	}
	s.vals[k] = v
	s.last = o.Consistency
	return v.Clone(), nil
}

func (s *memStore) Get(_ context.Context, k mesh.Key, _ mesh.Options) (crdt.Value, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := s.vals[k]; v != nil {
		return v.Clone(), nil
	}
	return nil, nil
}

func (s *memStore) Delete(_ context.Context, k mesh.Key, _ mesh.Options) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.vals, k)
	return nil
}

func (s *memStore) Replica() crdt.ReplicaID { return s.replica }
func (s *memStore) Clock() *hlc.Clock       { return s.clock }

func TestCRDTCounter(t *testing.T) {
	f := newFake(t)
	f.spec.Entities = append(f.spec.Entities, &functionpb.Entity{Model: functionpb.Model_MODEL_CRDT, ServiceName: "proxytest.Counter"})
	store := newMemStore()
	host := newMemHost()
	_, conn, url := startProxy(t, f, func(h map[string]consensus.Handler) ESHost {
		host.handlers = h
		return host
	}, store)
	inc := func(n int64) (int64, error) {
		out, err := call(t, conn, "/proxytest.Counter/Increment", msg(t, "IncrementRequest", map[string]any{"id": "k", "value": n}), "CounterValue")
		if err != nil {
			return 0, err
		}
		return field(out, "value").Int(), nil
	}
	if v, err := inc(2); err != nil || v != 2 {
		t.Fatalf("inc 2: %d %v", v, err)
	}
	if v, err := inc(-5); err != nil || v != -3 {
		t.Fatalf("inc -5: %d %v", v, err)
	}
	if n := f.crdts.inits.Load(); n != 1 {
		t.Fatalf("%d inits, want 1", n)
	}
	if store.last != mesh.Majority {
		t.Fatalf("consistency %v", store.last)
	}
	// Another replica's change merged here: the function's copy is
	// brought up to date.
	key := mesh.Key{Service: "proxytest.Counter", ID: "k"}
	other := crdt.ReplicaID{Node: "n2", Incarnation: 1}
	if _, err := store.Update(context.Background(), key, crdt.TypePNCounter, func(v crdt.Value) (crdt.Value, error) {
		return v.(*crdt.PNCounter).Increment(other, 10)
	}, mesh.Options{}); err != nil {
		t.Fatal(err)
	}
	code, body := httpDo(t, "GET", url+"/counters/k", "", "")
	if code != 200 || body["value"] != "7" {
		t.Fatalf("GET after a remote change: %d %v", code, body)
	}
	// A failure writes nothing; a delta of the wrong type fails the
	// command, writes nothing, and the proxy goes on.
	_, err := inc(0)
	wantCode(t, err, codes.InvalidArgument)
	_, err = inc(42)
	wantCode(t, err, codes.Internal)
	if v, err := inc(1); err != nil || v != 8 {
		t.Fatalf("after failures: %d %v", v, err)
	}
	if v, _ := store.Get(context.Background(), key, mesh.Options{}); v.(*crdt.PNCounter).Value() != 8 {
		t.Fatalf("stored %d", v.(*crdt.PNCounter).Value())
	}
}
