package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/deltas"
	"github.com/statemesh/statemesh/protocol/peerpb"
)

// A peer that sends malformed, oversized or type-conflicting data is
// refused with InvalidArgument and counted; the node's state is untouched
// and it keeps serving. Each case talks to the Peer service over gRPC, as
// a hostile peer would.

// badInputMaxBytes is the node's deltas.Limits.MaxBytes in these tests:
// small, so that the oversized cases stay cheap.
const badInputMaxBytes = 64 << 10

var (
	badCounterKey = Key{Service: "s", ID: "x"} // a GCounter
	badSetKey     = Key{Service: "s", ID: "set"}
)

// badInputNode starts one node with small limits and two keys, and
// returns it with a Peer client.
func badInputNode(t *testing.T) (*Node, peerpb.PeerClient) {
	t.Helper()
	c := newCluster(t, 1, func(cfg *Config) {
		l := deltas.DefaultLimits
		l.MaxBytes = badInputMaxBytes
		l.CRDT.MaxBytes = 16 << 10
		cfg.Limits = &l
	})
	n := c.nodes["n1"]
	// The peers these tests impersonate are members (the node refuses
	// anyone else: TestPeerRefusesNonMembers).
	addMembers(t, n, "eve", "mallory", "n2")
	ctx := context.Background()
	if _, err := n.Update(ctx, badCounterKey, crdt.TypeGCounter, increment(n, 3), Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Update(ctx, badSetKey, crdt.TypeORSet, func(v crdt.Value) (crdt.Value, error) {
		return v.(*crdt.ORSet).Add(n.Replica(), []byte("a")), nil
	}, Options{}); err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(n.PeerAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return n, peerpb.NewPeerClient(cc)
}

// settle returns once the loop has stepped every message the peer
// service handed it. The loop takes ops and peer messages in random
// order; each op is one more turn of it, and an op that starts after the
// recv channel was seen empty runs after the last step.
func settle(t *testing.T, n *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		empty := len(n.recv) == 0
		if _, err := n.do(ctx, func() {}); err != nil {
			t.Fatalf("the node's loop does not answer: %v", err)
		}
		if empty {
			return
		}
	}
}

// engineState returns every key the engine holds with its encoding:
// invalid mesh keys included, which Node.Keys would hide.
func engineState(t *testing.T, n *Node) map[string][]byte {
	t.Helper()
	settle(t, n)
	out := map[string][]byte{}
	if _, err := n.do(context.Background(), func() {
		for _, k := range n.eng.Keys() {
			out[k] = n.eng.Encoding(k)
		}
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// localValues reads keys with LOCAL consistency.
func localValues(t *testing.T, n *Node, keys ...Key) []crdt.Value {
	t.Helper()
	var out []crdt.Value
	for _, k := range keys {
		v, err := n.Get(context.Background(), k, Options{})
		if err != nil {
			t.Fatalf("LOCAL Get %s: %v", k, err)
		}
		out = append(out, v)
	}
	return out
}

// refused reads statemesh_mesh_messages_refused_total{reason} through the
// node's registry.
func refused(t *testing.T, n *Node, reason string) float64 {
	t.Helper()
	mfs, err := n.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "statemesh_mesh_messages_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "reason" && lp.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// checkUntouched fails unless the engine state and the LOCAL reads of the
// existing keys equal what they were before.
func checkUntouched(t *testing.T, n *Node, before map[string][]byte, vals []crdt.Value) {
	t.Helper()
	after := engineState(t, n)
	for _, k := range slices.Sorted(maps.Keys(after)) {
		if b, ok := before[k]; !ok {
			t.Errorf("key %q appeared", k)
		} else if string(b) != string(after[k]) {
			t.Errorf("key %q changed", k)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			t.Errorf("key %q disappeared", k)
		}
	}
	for i, v := range localValues(t, n, badCounterKey, badSetKey) {
		if v == nil || !v.Equal(vals[i]) {
			t.Errorf("LOCAL Get %v: %v, want %v", []Key{badCounterKey, badSetKey}[i], v, vals[i])
		}
	}
}

// checkServes fails unless the node still takes a peer Write, a peer Sync
// and a LOCAL update and read.
func checkServes(t *testing.T, n *Node, pc peerpb.PeerClient) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := crdt.NewGSet()
	d.Add([]byte("ok"))
	if _, err := pc.Write(ctx, &peerpb.WriteRequest{From: "n2", Key: []byte("s/good"), State: crdt.Encode(d)}); err != nil {
		t.Fatalf("a valid Write after bad input: %v", err)
	}
	if err := syncStream(ctx, pc, helloFrame("eve"), lastChunk(deltaMessage("eve", gcounterDelta("s/synced", 1)))); err != nil {
		t.Fatalf("a valid Sync after bad input: %v", err)
	}
	settle(t, n)
	if got := counterValue(t, n, Key{Service: "s", ID: "synced"}); got != 1 {
		t.Fatalf("a valid Sync after bad input was not applied: counter %d, want 1", got)
	}
	before := counterValue(t, n, badCounterKey)
	if _, err := n.Update(ctx, badCounterKey, crdt.TypeGCounter, increment(n, 1), Options{}); err != nil {
		t.Fatalf("LOCAL Update after bad input: %v", err)
	}
	if got := counterValue(t, n, badCounterKey); got != before+1 {
		t.Fatalf("counter %d after incrementing %d by 1", got, before)
	}
}

func helloFrame(node string) *peerpb.SyncFrame {
	return &peerpb.SyncFrame{Frame: &peerpb.SyncFrame_Hello{Hello: &peerpb.Hello{Node: node, ProtocolVersion: ProtocolVersion}}}
}

func chunk(b []byte) *peerpb.SyncFrame {
	return &peerpb.SyncFrame{Frame: &peerpb.SyncFrame_Chunk{Chunk: b}}
}

func lastChunk(b []byte) *peerpb.SyncFrame {
	return &peerpb.SyncFrame{Frame: &peerpb.SyncFrame_LastChunk{LastChunk: b}}
}

// gcounterDelta is a GCounter delta of n increments by a foreign
// replica.
func gcounterDelta(key string, n uint64) deltas.KeyState {
	c := crdt.NewGCounter()
	d, err := c.Increment(crdt.ReplicaID{Node: "eve", Incarnation: 1}, n)
	if err != nil {
		panic(err)
	}
	return deltas.KeyState{Key: key, State: d}
}

// deltaMessage encodes a Deltas message from "from" carrying ks.
func deltaMessage(from string, ks ...deltas.KeyState) []byte {
	return deltas.EncodeMessage(deltas.Message{From: deltas.PeerID(from), Session: 1,
		Body: &deltas.Deltas{FromSeq: 0, ToSeq: 1, Deltas: ks}})
}

// syncStream opens a Sync stream, sends frames (stopping early if the
// server ended the stream) and returns the stream's final status.
func syncStream(ctx context.Context, pc peerpb.PeerClient, frames ...*peerpb.SyncFrame) error {
	s, err := pc.Sync(ctx)
	if err != nil {
		return err
	}
	for _, f := range frames {
		if err := s.Send(f); err != nil {
			if errors.Is(err, io.EOF) {
				break // the server has answered; CloseAndRecv returns it
			}
			return err
		}
	}
	_, err = s.CloseAndRecv()
	return err
}

func TestPeerRefusesBadInput(t *testing.T) {
	n, pc := badInputNode(t)
	garbage := make([]byte, 1024)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(garbage) // seeded: the same bytes every run
	gset := crdt.NewGSet()
	gset.Add([]byte("g"))

	cases := []struct {
		name   string
		reason string // the refused metric's label
		code   codes.Code
		call   func(ctx context.Context) error
	}{
		{"sync/no-hello", "no-hello", codes.InvalidArgument, func(ctx context.Context) error {
			return syncStream(ctx, pc, lastChunk(deltaMessage("eve", gcounterDelta("s/y", 1))))
		}},
		{"sync/empty-frame", "no-hello", codes.InvalidArgument, func(ctx context.Context) error {
			return syncStream(ctx, pc, &peerpb.SyncFrame{})
		}},
		{"sync/version", "version", codes.InvalidArgument, func(ctx context.Context) error {
			return syncStream(ctx, pc, &peerpb.SyncFrame{Frame: &peerpb.SyncFrame_Hello{
				Hello: &peerpb.Hello{Node: "eve", ProtocolVersion: ProtocolVersion + 1}}})
		}},
		{"sync/hello-self", "hello", codes.InvalidArgument, func(ctx context.Context) error {
			return syncStream(ctx, pc, helloFrame(n.Name()), lastChunk(deltaMessage(n.Name(), gcounterDelta("s/y", 1))))
		}},
		{"sync/hello-empty", "hello", codes.InvalidArgument, func(ctx context.Context) error {
			return syncStream(ctx, pc, helloFrame(""))
		}},
		{"sync/second-hello", "frame", codes.InvalidArgument, func(ctx context.Context) error {
			return syncStream(ctx, pc, helloFrame("eve"), helloFrame("eve"))
		}},
		{"sync/empty-frame-after-hello", "frame", codes.InvalidArgument, func(ctx context.Context) error {
			return syncStream(ctx, pc, helloFrame("eve"), &peerpb.SyncFrame{})
		}},
		{"sync/garbage", "decode", codes.InvalidArgument, func(ctx context.Context) error {
			return syncStream(ctx, pc, helloFrame("eve"), lastChunk(garbage))
		}},
		{"sync/truncated", "decode", codes.InvalidArgument, func(ctx context.Context) error {
			m := deltaMessage("eve", gcounterDelta("s/y", 1))
			return syncStream(ctx, pc, helloFrame("eve"), lastChunk(m[:len(m)-1]))
		}},
		{"sync/misaddressed", "misaddressed", codes.InvalidArgument, func(ctx context.Context) error {
			return syncStream(ctx, pc, helloFrame("eve"), lastChunk(deltaMessage("mallory", gcounterDelta("s/y", 1))))
		}},
		{"sync/over-limit-chunks", "too-large", codes.InvalidArgument, func(ctx context.Context) error {
			frames := []*peerpb.SyncFrame{helloFrame("eve")}
			for range 10 {
				frames = append(frames, chunk(make([]byte, 10<<10)))
			}
			return syncStream(ctx, pc, append(frames, lastChunk(deltaMessage("eve", gcounterDelta("s/y", 1))))...)
		}},
		{"write/no-slash", "write-key", codes.InvalidArgument, func(ctx context.Context) error {
			_, err := pc.Write(ctx, &peerpb.WriteRequest{From: "eve", Key: []byte("sx"), State: crdt.Encode(gset)})
			return err
		}},
		{"write/empty-service", "write-key", codes.InvalidArgument, func(ctx context.Context) error {
			_, err := pc.Write(ctx, &peerpb.WriteRequest{From: "eve", Key: []byte("/x"), State: crdt.Encode(gset)})
			return err
		}},
		{"write/long-id", "write-key", codes.InvalidArgument, func(ctx context.Context) error {
			k := append([]byte("s/"), make([]byte, MaxIDBytes+1)...)
			_, err := pc.Write(ctx, &peerpb.WriteRequest{From: "eve", Key: k, State: crdt.Encode(gset)})
			return err
		}},
		{"write/garbage-state", "write-decode", codes.InvalidArgument, func(ctx context.Context) error {
			_, err := pc.Write(ctx, &peerpb.WriteRequest{From: "eve", Key: []byte("s/x"), State: garbage})
			return err
		}},
		{"write/oversized-state", "write-decode", codes.InvalidArgument, func(ctx context.Context) error {
			_, err := pc.Write(ctx, &peerpb.WriteRequest{From: "eve", Key: []byte("s/x"), State: make([]byte, 32<<10)})
			return err
		}},
		{"write/type-conflict", "write-type", codes.InvalidArgument, func(ctx context.Context) error {
			_, err := pc.Write(ctx, &peerpb.WriteRequest{From: "eve", Key: []byte("s/x"), State: crdt.Encode(gset)})
			return err
		}},
		{"read/no-slash", "read-key", codes.InvalidArgument, func(ctx context.Context) error {
			_, err := pc.Read(ctx, &peerpb.ReadRequest{From: "eve", Key: []byte("sx")})
			return err
		}},
		{"read/empty-service", "read-key", codes.InvalidArgument, func(ctx context.Context) error {
			_, err := pc.Read(ctx, &peerpb.ReadRequest{From: "eve", Key: []byte("/x")})
			return err
		}},
		{"holding/bad-replica", "holding-replica", codes.InvalidArgument, func(ctx context.Context) error {
			_, err := pc.Holding(ctx, &peerpb.HoldingRequest{From: "eve", Node: "", Incarnation: 1})
			return err
		}},
		{"holding/long-after-key", "holding-key", codes.InvalidArgument, func(ctx context.Context) error {
			_, err := pc.Holding(ctx, &peerpb.HoldingRequest{From: "eve", Node: "x", Incarnation: 1,
				After: make([]byte, MaxServiceBytes+MaxIDBytes+2)})
			return err
		}},
		// A single frame over the gRPC message limit (Limits.MaxBytes +
		// 64 KiB) never reaches the handler: gRPC refuses it.
		{"sync/oversized-frame", "", codes.ResourceExhausted, func(ctx context.Context) error {
			return syncStream(ctx, pc, helloFrame("eve"), lastChunk(make([]byte, 2*badInputMaxBytes+1)))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before, vals := engineState(t, n), localValues(t, n, badCounterKey, badSetKey)
			count := refused(t, n, tc.reason)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := tc.call(ctx)
			if got := status.Code(err); got != tc.code {
				t.Errorf("status %v (%v), want %v", got, err, tc.code)
			}
			if tc.reason != "" {
				if got := refused(t, n, tc.reason); got != count+1 {
					t.Errorf("refused{reason=%q} went from %v to %v, want +1", tc.reason, count, got)
				}
			}
			checkUntouched(t, n, before, vals)
			checkServes(t, n, pc)
		})
	}
}

// A well-formed Sync message that conflicts with local types is refused
// whole by the engine, after the stream accepted it: logged and counted,
// nothing applied, not even its other keys.
func TestPeerSyncTypeConflictRefused(t *testing.T) {
	n, pc := badInputNode(t)
	gset := crdt.NewGSet()
	gset.Add([]byte("g"))
	for _, tc := range []struct {
		name string
		ks   []deltas.KeyState
	}{
		{"alone", []deltas.KeyState{{Key: badCounterKey.engineKey(), State: gset}}},
		{"with-a-valid-key", []deltas.KeyState{gcounterDelta("s/fresh", 2), {Key: badCounterKey.engineKey(), State: gset}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, vals := engineState(t, n), localValues(t, n, badCounterKey, badSetKey)
			count := refused(t, n, "step")
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			// The stream itself is fine: the engine refuses after it.
			if err := syncStream(ctx, pc, helloFrame("eve"), lastChunk(deltaMessage("eve", tc.ks...))); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			eventually(t, 5*time.Second, func() error {
				if got := refused(t, n, "step"); got != count+1 {
					return fmt.Errorf("refused{reason=step} %v, want %v", got, count+1)
				}
				return nil
			})
			checkUntouched(t, n, before, vals)
			checkServes(t, n, pc)
		})
	}
}

// Keys a mesh node would refuse in a Write must be refused in a Sync
// message too: otherwise a peer plants keys that Node.Keys hides, that
// the store persists and that anti-entropy spreads to every node.
func TestPeerSyncRefusesInvalidMeshKeys(t *testing.T) {
	n, pc := badInputNode(t)
	long := "s/" + string(make([]byte, MaxIDBytes+1))
	for _, key := range []string{"noslash", "/x", long} {
		t.Run(fmt.Sprintf("%.12q", key), func(t *testing.T) {
			before, vals := engineState(t, n), localValues(t, n, badCounterKey, badSetKey)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := syncStream(ctx, pc, helloFrame("eve"), lastChunk(deltaMessage("eve", gcounterDelta(key, 1))))
			if c := status.Code(err); c != codes.OK && c != codes.InvalidArgument {
				t.Fatalf("status %v (%v), want InvalidArgument (or OK and a refused step)", c, err)
			}
			checkUntouched(t, n, before, vals)
			checkServes(t, n, pc)
		})
	}
}

// addMembers makes names members of n, alive but unreachable.
func addMembers(t testing.TB, n *Node, names ...string) {
	t.Helper()
	if _, err := n.do(context.Background(), func() {
		for _, name := range names {
			n.members[name] = &Member{Name: name, Alive: true, PeerAddr: "127.0.0.1:1", Region: "elsewhere"}
		}
	}); err != nil {
		t.Fatal(err)
	}
}

func TestPeerRefusesNonMembers(t *testing.T) {
	n, pc := badInputNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	before, vals := engineState(t, n), localValues(t, n, badCounterKey, badSetKey)
	err := syncStream(ctx, pc, helloFrame("stranger"), lastChunk(deltaMessage("stranger", gcounterDelta("s/x", 1))))
	if c := status.Code(err); c != codes.FailedPrecondition {
		t.Fatalf("Sync from a non-member: %v, want FailedPrecondition", err)
	}
	d := crdt.NewGSet()
	d.Add([]byte("x"))
	if _, err := pc.Write(ctx, &peerpb.WriteRequest{From: "stranger", Key: []byte("s/w"), State: crdt.Encode(d)}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("Write from a non-member: %v, want FailedPrecondition", err)
	}
	if _, err := pc.Read(ctx, &peerpb.ReadRequest{From: "stranger", Key: []byte("s/w")}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("Read from a non-member: %v, want FailedPrecondition", err)
	}
	if _, err := pc.Holding(ctx, &peerpb.HoldingRequest{From: "stranger", Node: "x", Incarnation: 1}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("Holding from a non-member: %v, want FailedPrecondition", err)
	}
	checkUntouched(t, n, before, vals)
	checkServes(t, n, pc)
}
