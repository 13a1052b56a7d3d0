package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

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
	// cancelled receives the command id of every StreamCancelled.
	cancelled chan int64
	// changes counts the `changed` messages received.
	changes atomic.Int32
	// handle, if set, serves the streams instead (other CRDT types).
	handle func(s grpc.BidiStreamingServer[functionpb.CrdtStreamIn, functionpb.CrdtStreamOut]) error
}

func (f *crdtFake) Handle(s grpc.BidiStreamingServer[functionpb.CrdtStreamIn, functionpb.CrdtStreamOut]) error {
	if f.handle != nil {
		return f.handle(s)
	}
	var value int64
	watchers := map[int64]bool{}
	value64 := func() *functionpb.ClientAction {
		return &functionpb.ClientAction{Action: &functionpb.ClientAction_Reply{Reply: &functionpb.Reply{
			Payload: mustAny(f.t, msg(f.t, "CounterValue", map[string]any{"value": value}))}}}
	}
	// notify streams the value to every Watch but skip (as the SDK does).
	notify := func(skip int64) error {
		for id := range watchers {
			if id == skip {
				continue
			}
			if err := s.Send(&functionpb.CrdtStreamOut{Message: &functionpb.CrdtStreamOut_StreamedMessage{StreamedMessage: &functionpb.CrdtStreamedMessage{
				CommandId: id, ClientAction: value64()}}}); err != nil {
				return err
			}
		}
		return nil
	}
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
			f.changes.Add(1)
			value += m.Changed.GetPncounter().GetChange()
			if err := notify(0); err != nil {
				return err
			}
		case *functionpb.CrdtStreamIn_StreamCancelled:
			id := m.StreamCancelled.GetId()
			delete(watchers, id)
			if f.cancelled != nil {
				f.cancelled <- id
			}
			if err := s.Send(&functionpb.CrdtStreamOut{Message: &functionpb.CrdtStreamOut_StreamCancelledResponse{
				StreamCancelledResponse: &functionpb.CrdtStreamCancelledResponse{CommandId: id}}}); err != nil {
				return err
			}
		case *functionpb.CrdtStreamIn_Command:
			c := m.Command
			r := &functionpb.CrdtReply{CommandId: c.GetId()}
			if c.GetName() == "Watch" {
				r.ClientAction = value64()
				if c.GetStreamed() {
					r.Streamed = true
					watchers[c.GetId()] = true
				}
				if err := s.Send(&functionpb.CrdtStreamOut{Message: &functionpb.CrdtStreamOut_Reply{Reply: r}}); err != nil {
					return err
				}
				continue
			}
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
			if r.GetStateAction() != nil {
				if err := notify(c.GetId()); err != nil {
					return err
				}
			}
		}
	}
}

// memStore is an in-memory CRDTStore: one replica, writes applied at
// once whatever the consistency (which it records).
type memStore struct {
	mu       sync.Mutex
	watchers map[mesh.Key][]chan crdt.Value
	vals     map[mesh.Key]crdt.Value
	last     mesh.Consistency
	replica  crdt.ReplicaID
	clock    *hlc.Clock
	// beforeUpdate, if set, runs on the state inside the next Update,
	// before the mutator (what the mesh's loop may do in between: merge
	// deltas, prune); it is cleared then.
	beforeUpdate func(v crdt.Value)
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
	if h := s.beforeUpdate; h != nil {
		s.beforeUpdate = nil
		h(v)
	}
	if _, err := fn(v); err != nil {
		return nil, err
	}
	s.vals[k] = v
	s.last = o.Consistency
	s.notify(k, v)
	return v.Clone(), nil
}

// notify offers k's new state to its watchers (the latest only, as
// mesh.Node does); s.mu is held.
func (s *memStore) notify(k mesh.Key, v crdt.Value) {
	for _, ch := range s.watchers[k] {
		select {
		case <-ch:
		default:
		}
		var c crdt.Value
		if v != nil {
			c = v.Clone()
		}
		ch <- c
	}
}

func (s *memStore) Watch(_ context.Context, k mesh.Key) (<-chan crdt.Value, func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.watchers == nil {
		s.watchers = map[mesh.Key][]chan crdt.Value{}
	}
	ch := make(chan crdt.Value, 1)
	s.watchers[k] = append(s.watchers[k], ch)
	return ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if i := slices.Index(s.watchers[k], ch); i >= 0 {
			s.watchers[k] = slices.Delete(s.watchers[k], i, i+1)
			close(ch)
		}
	}, nil
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
	s.notify(k, nil)
	return nil
}

func (s *memStore) Replica() crdt.ReplicaID { return s.replica }
func (s *memStore) Clock() *hlc.Clock       { return s.clock }

func TestCRDTCounter(t *testing.T) {
	f := newFake(t)
	f.spec.Entities = append(f.spec.Entities, &functionpb.Entity{Model: functionpb.Model_MODEL_CRDT, ServiceName: "proxytest.Counter"})
	store := newMemStore()
	_, conn, url := startProxy(t, f, newMemHost().wire, store)
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

// TestCRDTCounterPrunedDuringCommand: the replica prunes another replica
// into its own counter entry while the function handles a command
// (between the proxy's read of the state and its update). The function's
// copy must still read the replica's value afterwards: the proxy cannot
// tell the copy from a join of the state it sent and the command's delta
// then (the delta's entry holds the folded counts, the state sent still
// holds the pruned replica's), so it starts the entity's stream afresh.
// The jepsen counter workload found a node whose function read 4650 too
// few, for good, after its node had pruned crashed incarnations.
func TestCRDTCounterPrunedDuringCommand(t *testing.T) {
	f := newFake(t)
	f.spec.Entities = append(f.spec.Entities, &functionpb.Entity{Model: functionpb.Model_MODEL_CRDT, ServiceName: "proxytest.Counter"})
	store := newMemStore()
	_, conn, url := startProxy(t, f, newMemHost().wire, store)
	inc := func(n int64) int64 {
		t.Helper()
		out, err := call(t, conn, "/proxytest.Counter/Increment", msg(t, "IncrementRequest", map[string]any{"id": "k", "value": n}), "CounterValue")
		if err != nil {
			t.Fatal(err)
		}
		return field(out, "value").Int()
	}
	remoteIncrement(t, store, "k", 10)
	if v := inc(1); v != 11 {
		t.Fatalf("inc 1: %d, want 11", v)
	}
	gone := crdt.ReplicaID{Node: "n2", Incarnation: 1}
	store.mu.Lock()
	store.beforeUpdate = func(v crdt.Value) {
		if _, err := crdt.Prune(v, gone, store.replica, 1); err != nil {
			t.Error(err)
		}
	}
	store.mu.Unlock()
	if v := inc(1); v != 12 {
		t.Fatalf("inc 1 while the replica prunes: %d, want 12", v)
	}
	for range 2 {
		if code, body := httpDo(t, "GET", url+"/counters/k", "", ""); code != 200 || body["value"] != "12" {
			t.Fatalf("GET after the pruning: %d %v, want 12", code, body)
		}
	}
	if v := inc(1); v != 13 {
		t.Fatalf("inc 1 after the pruning: %d, want 13", v)
	}
}

// counterEnv starts a proxy whose function has the Counter CRDT.
func counterEnv(t *testing.T) (*fake, *memStore, *grpc.ClientConn, string) {
	f, store, _, conn, url := counterProxy(t)
	return f, store, conn, url
}

func counterProxy(t *testing.T) (*fake, *memStore, *Proxy, *grpc.ClientConn, string) {
	f := newFake(t)
	f.crdts.cancelled = make(chan int64, 10)
	f.spec.Entities = append(f.spec.Entities, &functionpb.Entity{Model: functionpb.Model_MODEL_CRDT, ServiceName: "proxytest.Counter"})
	store := newMemStore()
	p, conn, url := startProxy(t, f, newMemHost().wire, store)
	return f, store, p, conn, url
}

// remoteIncrement merges another replica's increment into the store, as
// the mesh does.
func remoteIncrement(t *testing.T, store *memStore, id string, n int64) {
	t.Helper()
	other := crdt.ReplicaID{Node: "n2", Incarnation: 1}
	if _, err := store.Update(context.Background(), mesh.Key{Service: "proxytest.Counter", ID: id}, crdt.TypePNCounter, func(v crdt.Value) (crdt.Value, error) {
		return v.(*crdt.PNCounter).Increment(other, n)
	}, mesh.Options{}); err != nil {
		t.Fatal(err)
	}
}

func waitCancelled(t *testing.T, f *fake) {
	t.Helper()
	select {
	case <-f.crdts.cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the function got no StreamCancelled")
	}
}

func TestCRDTStreamed(t *testing.T) {
	f, store, conn, _ := counterEnv(t)
	inc := func(n int64) {
		t.Helper()
		if _, err := call(t, conn, "/proxytest.Counter/Increment", msg(t, "IncrementRequest", map[string]any{"id": "w", "value": n}), "CounterValue"); err != nil {
			t.Fatal(err)
		}
	}
	inc(2)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/proxytest.Counter/Watch")
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.SendMsg(msg(t, "GetCounterRequest", map[string]any{"id": "w"})); err != nil {
		t.Fatal(err)
	}
	if err := cs.CloseSend(); err != nil {
		t.Fatal(err)
	}
	next := func(want int64) {
		t.Helper()
		out := msg(t, "CounterValue", nil)
		if err := cs.RecvMsg(out); err != nil {
			t.Fatal(err)
		}
		if got := field(out, "value").Int(); got != want {
			t.Fatalf("streamed %d, want %d", got, want)
		}
	}
	next(2) // the first message: the reply
	inc(3)  // another command on this node
	next(5)
	remoteIncrement(t, store, "w", 10) // another replica's change, merged here
	next(15)
	remoteIncrement(t, store, "w", -1)
	next(14)
	// The function's own deltas are not sent back to it: only the two
	// remote changes were.
	if n := f.crdts.changes.Load(); n != 2 {
		t.Fatalf("%d changes sent, want 2", n)
	}
	if n := f.crdts.inits.Load(); n != 1 {
		t.Fatalf("%d inits, want 1", n)
	}
	// The client goes away: the function hears of it.
	cancel()
	waitCancelled(t, f)
	inc(1) // the stream goes on for unary commands
	if v, _ := store.Get(context.Background(), mesh.Key{Service: "proxytest.Counter", ID: "w"}, mesh.Options{}); v.(*crdt.PNCounter).Value() != 15 {
		t.Fatalf("stored %d", v.(*crdt.PNCounter).Value())
	}
}

func TestCRDTStreamedSSE(t *testing.T) {
	f, store, conn, url := counterEnv(t)
	if _, err := call(t, conn, "/proxytest.Counter/Increment", msg(t, "IncrementRequest", map[string]any{"id": "s", "value": int64(4)}), "CounterValue"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, method, path, body string }{
		{"route", "GET", "/counters/s/watch", ""},
		{"fallback", "POST", "/proxytest.Counter/Watch", `{"id":"s"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, tc.method, url+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("%d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
			}
			events := make(chan string, 10)
			go func() {
				defer close(events)
				sc := bufio.NewScanner(resp.Body)
				for sc.Scan() {
					if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
						events <- data
					}
				}
			}()
			next := func(want int64) {
				t.Helper()
				select {
				case data := <-events:
					var v struct{ Value string }
					if err := json.Unmarshal([]byte(data), &v); err != nil || v.Value != strconv.FormatInt(want, 10) {
						t.Fatalf("event %q, want value %d", data, want)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("no event, want value %d", want)
				}
			}
			v, _ := store.Get(ctx, mesh.Key{Service: "proxytest.Counter", ID: "s"}, mesh.Options{})
			now := v.(*crdt.PNCounter).Value()
			next(now)
			remoteIncrement(t, store, "s", 10)
			next(now + 10)
			cancel()
			waitCancelled(t, f)
		})
	}
	// A malformed request is the client's error, before any event.
	if code, body := httpDo(t, "POST", url+"/proxytest.Counter/Watch", "application/json", `{"id":`); code != http.StatusBadRequest {
		t.Fatalf("malformed JSON: %d %v", code, body)
	}
}

// A streamed command ends normally when its entity is deleted elsewhere.
func TestCRDTStreamedDeleted(t *testing.T) {
	_, store, conn, _ := counterEnv(t)
	remoteIncrement(t, store, "d", 3)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/proxytest.Counter/Watch")
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.SendMsg(msg(t, "GetCounterRequest", map[string]any{"id": "d"})); err != nil {
		t.Fatal(err)
	}
	if err := cs.CloseSend(); err != nil {
		t.Fatal(err)
	}
	out := msg(t, "CounterValue", nil)
	if err := cs.RecvMsg(out); err != nil || field(out, "value").Int() != 3 {
		t.Fatalf("first message %v %v", out, err)
	}
	if err := store.Delete(ctx, mesh.Key{Service: "proxytest.Counter", ID: "d"}, mesh.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := cs.RecvMsg(out); !errors.Is(err, io.EOF) {
		t.Fatalf("after the delete: %v, want the end of the stream", err)
	}
}

// Close ends open streamed commands (Unavailable) and waits for the
// goroutines that serve them: the entity stream's reader and the key's
// watcher.
func TestCRDTStreamedClose(t *testing.T) {
	_, store, p, conn, _ := counterProxy(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/proxytest.Counter/Watch")
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.SendMsg(msg(t, "GetCounterRequest", map[string]any{"id": "c"})); err != nil {
		t.Fatal(err)
	}
	if err := cs.CloseSend(); err != nil {
		t.Fatal(err)
	}
	out := msg(t, "CounterValue", nil)
	if err := cs.RecvMsg(out); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hangs")
	}
	if err := cs.RecvMsg(out); err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("after Close: %v, want an error", err)
	}
	key := mesh.Key{Service: "proxytest.Counter", ID: "c"}
	store.mu.Lock()
	n := len(store.watchers[key])
	store.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d watches left after Close", n)
	}
}
