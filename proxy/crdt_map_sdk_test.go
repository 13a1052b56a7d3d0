package proxy

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/mesh"
	"github.com/statemesh/statemesh/sdk"
)

// sdkMap is the Counter service as an ORMap of ORSets and a flag, written
// with the Go SDK: Increment n >= 1000 enables the flag at key "f"; n > 0
// adds "e<n%10>" to the set at key "k<n/10>"; n < 0 removes key
// "k<-n/10>". Every command answers 100 * keys + elements (a flag counts
// one).
type sdkMap struct {
	t testing.TB
	m *sdk.ORMap
}

func (e *sdkMap) CRDT() sdk.Crdt { return e.m }

func (e *sdkMap) HandleCommand(ctx *sdk.CrdtContext, cmd proto.Message) (proto.Message, error) {
	r := cmd.ProtoReflect()
	if ctx.CommandName() == "Increment" {
		n := r.Get(r.Descriptor().Fields().ByName("value")).Int()
		switch {
		case n >= 1000:
			f, err := sdk.GetOrCreate(e.m, []byte("f"), sdk.NewFlag)
			if err != nil {
				return nil, err
			}
			f.Enable()
		case n > 0:
			s, err := sdk.GetOrCreate(e.m, fmt.Appendf(nil, "k%d", n/10), sdk.NewORSet)
			if err != nil {
				return nil, err
			}
			s.Add(fmt.Appendf(nil, "e%d", n%10))
		case n < 0:
			e.m.Remove(fmt.Appendf(nil, "k%d", -n/10))
		}
	}
	total := int64(100 * e.m.Len())
	for _, k := range e.m.Keys() {
		switch v := e.m.Get(k).(type) {
		case *sdk.ORSet:
			total += int64(v.Len())
		case *sdk.Flag:
			if v.Enabled() {
				total++
			}
		}
	}
	return msg(e.t, "CounterValue", map[string]any{"value": total}), nil
}

// sdkVote is the Counter service as a Vote: Increment n votes n > 0;
// every command answers 10 * votes for + voters.
type sdkVote struct {
	t testing.TB
	v *sdk.Vote
}

func (e *sdkVote) CRDT() sdk.Crdt { return e.v }

func (e *sdkVote) HandleCommand(ctx *sdk.CrdtContext, cmd proto.Message) (proto.Message, error) {
	r := cmd.ProtoReflect()
	if ctx.CommandName() == "Increment" {
		e.v.Vote(r.Get(r.Descriptor().Fields().ByName("value")).Int() > 0)
	}
	return msg(e.t, "CounterValue", map[string]any{"value": int64(10*e.v.VotesFor() + e.v.Voters())}), nil
}

// sdkEnv starts a function written with the SDK serving the Counter CRDT
// with factory, and a proxy in front of it.
func sdkEnv(t *testing.T, factory func(string) sdk.CrdtEntity) (*memStore, func(name string, n int64) int64) {
	files, err := protodesc.NewFiles(testSet(t))
	if err != nil {
		t.Fatal(err)
	}
	d, err := files.FindDescriptorByName("proxytest.Counter")
	if err != nil {
		t.Fatal(err)
	}
	svc := sdk.New()
	if err := svc.RegisterCrdt(d.(protoreflect.ServiceDescriptor), factory); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Serve(lis) }()
	t.Cleanup(func() {
		svc.Stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	store := newMemStore()
	_, conn, _ := startProxyFor(t, lis.Addr().String(), newMemHost().wire, store)
	do := func(name string, n int64) int64 {
		t.Helper()
		in := msg(t, "GetCounterRequest", map[string]any{"id": "e1"})
		if name == "Increment" {
			in = msg(t, "IncrementRequest", map[string]any{"id": "e1", "value": n})
		}
		out, err := call(t, conn, "/proxytest.Counter/"+name, in, "CounterValue")
		if err != nil {
			t.Fatalf("%s %d: %v", name, n, err)
		}
		return field(out, "value").Int()
	}
	return store, do
}

// The SDK's ORMap and the proxy agree: the function's copy follows its
// own commands and other replicas' changes without a new stream.
func TestCRDTORMapWithSDK(t *testing.T) {
	var streams atomic.Int32
	store, do := sdkEnv(t, func(string) sdk.CrdtEntity { streams.Add(1); return &sdkMap{t: t, m: sdk.NewORMap()} })
	key := mesh.Key{Service: "proxytest.Counter", ID: "e1"}
	for _, c := range []struct{ n, want int64 }{{11, 101}, {12, 102}, {23, 203}, {12, 203}} {
		if got := do("Increment", c.n); got != c.want {
			t.Fatalf("Increment %d: %d, want %d", c.n, got, c.want)
		}
	}
	remote := func(fn func(m *crdt.ORMap) (crdt.Value, error)) {
		t.Helper()
		remoteMap(t, store, key, fn)
	}
	remote(remoteAdd("k2", "r"))
	remote(remoteAdd("k3", "x"))
	if got := do("GetCounter", 0); got != 305 {
		t.Fatalf("after remote adds: %d, want 305", got)
	}
	if got := do("Increment", -10); got != 203 {
		t.Fatalf("remove k1: %d, want 203", got)
	}
	remote(func(m *crdt.ORMap) (crdt.Value, error) { return m.Remove([]byte("k3"), crdt.TypeORSet), nil })
	if got := do("GetCounter", 0); got != 102 {
		t.Fatalf("after a remote remove: %d, want 102", got)
	}
	if got := do("Increment", 1000); got != 203 {
		t.Fatalf("flag: %d, want 203", got)
	}
	v, _ := store.Get(context.Background(), key, mesh.Options{})
	keys := v.(*crdt.ORMap).Keys()
	if len(keys) != 2 || string(keys[0].Key) != "f" || keys[0].Type != crdt.TypeEWFlag || string(keys[1].Key) != "k2" {
		t.Fatalf("stored keys %v", keys)
	}
	if n := streams.Load(); n != 1 {
		t.Fatalf("%d entity streams, want 1 (every change sent as a delta)", n)
	}
}

func TestCRDTVoteWithSDK(t *testing.T) {
	store, do := sdkEnv(t, func(string) sdk.CrdtEntity { return &sdkVote{t: t, v: sdk.NewVote()} })
	key := mesh.Key{Service: "proxytest.Counter", ID: "e1"}
	if got := do("GetCounter", 0); got != 1 {
		t.Fatalf("no votes: %d, want 0 for of 1", got)
	}
	if got := do("Increment", 1); got != 11 {
		t.Fatalf("vote: %d, want 1 for of 1", got)
	}
	other := crdt.ReplicaID{Node: "n2", Incarnation: 1}
	if _, err := store.Update(context.Background(), key, crdt.TypeVote, func(v crdt.Value) (crdt.Value, error) {
		return v.(*crdt.Vote).Set(other, true)
	}, mesh.Options{}); err != nil {
		t.Fatal(err)
	}
	if got := do("GetCounter", 0); got != 22 {
		t.Fatalf("a second voter: %d, want 2 for of 2", got)
	}
	if got := do("Increment", -1); got != 12 {
		t.Fatalf("withdrawn: %d, want 1 for of 2", got)
	}
}
