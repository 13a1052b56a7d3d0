package mesh

import (
	"bytes"
	"context"
	"io"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/deltas"
	"github.com/statemesh/statemesh/protocol/peerpb"
)

// The peer handlers are fuzzed in-process: inputs go straight to
// peerServer's methods (Sync through a scripted stream), against one node
// per fuzz process. Run them with
//
//	go test -run='^$' -fuzz='^FuzzPeerSync$' -fuzztime=20s ./mesh/
//	go test -run='^$' -fuzz='^FuzzPeerWrite$' -fuzztime=20s ./mesh/

// fakeSyncStream is the server side of a Sync stream that returns
// scripted frames, then io.EOF.
type fakeSyncStream struct {
	grpc.ServerStream // nil: Sync uses only the methods below
	ctx               context.Context
	frames            []*peerpb.SyncFrame
	closed            bool // SendAndClose was called
}

var _ peerpb.Peer_SyncServer = (*fakeSyncStream)(nil)

func (s *fakeSyncStream) Recv() (*peerpb.SyncFrame, error) {
	if len(s.frames) == 0 {
		return nil, io.EOF
	}
	f := s.frames[0]
	s.frames = s.frames[1:]
	return f, nil
}

func (s *fakeSyncStream) SendAndClose(*peerpb.SyncEnd) error { s.closed = true; return nil }

func (s *fakeSyncStream) Context() context.Context { return s.ctx }

var (
	fuzzProbeKey = Key{Service: "fuzz", ID: "probe"} // a GCounter the node writes
	fuzzSetKey   = Key{Service: "fuzz", ID: "set"}   // an ORSet
	fuzzEve      = crdt.ReplicaID{Node: "eve", Incarnation: 7}
)

// fuzzNode starts the fuzz process's node (in memory, default limits)
// with the probe key and a set, and stops it when f ends.
func fuzzNode(f *testing.F) *Node {
	f.Helper()
	n, err := Start(Config{Name: "fz", Preset: PresetLocal})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = n.Close() })
	addMembers(f, n, "eve") // the peer the fuzzers impersonate
	ctx := context.Background()
	if _, err := n.Update(ctx, fuzzProbeKey, crdt.TypeGCounter, increment(n, 1), Options{}); err != nil {
		f.Fatal(err)
	}
	if _, err := n.Update(ctx, fuzzSetKey, crdt.TypeORSet, func(v crdt.Value) (crdt.Value, error) {
		return v.(*crdt.ORSet).Add(n.Replica(), []byte("a")), nil
	}, Options{}); err != nil {
		f.Fatal(err)
	}
	return n
}

// probe fails unless the node answers a LOCAL Get promptly.
func probe(t *testing.T, n *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := n.Get(ctx, fuzzProbeKey, Options{})
	if err != nil || v == nil {
		t.Fatalf("LOCAL Get after the input: %v, %v", v, err)
	}
}

// engineKeys returns the engine's keys, invalid mesh keys included.
func engineKeys(t *testing.T, n *Node) []string {
	t.Helper()
	var ks []string
	if _, err := n.do(context.Background(), func() { ks = n.eng.Keys() }); err != nil {
		t.Fatal(err)
	}
	return ks
}

// fuzzSeedValues are valid states of several types.
func fuzzSeedValues() map[string]crdt.Value {
	c := crdt.NewGCounter()
	_, _ = c.Increment(fuzzEve, 5)
	s := crdt.NewORSet()
	s.Add(fuzzEve, []byte("a"))
	s.Add(fuzzEve, []byte("b"))
	s.Remove([]byte("a"))
	g := crdt.NewGSet()
	g.Add([]byte("g"))
	r := crdt.NewMVRegister()
	r.Assign(fuzzEve, []byte("v"))
	return map[string]crdt.Value{"counter": c, "orset": s, "gset": g, "mvreg": r}
}

// truncations returns b cut at a few places.
func truncations(b []byte) [][]byte {
	return [][]byte{b[:len(b)-1], b[:len(b)/2], b[:1]}
}

func FuzzPeerSync(f *testing.F) {
	vals := fuzzSeedValues()
	probeKey, setKey := fuzzProbeKey.engineKey(), fuzzSetKey.engineKey()
	msgs := []deltas.Message{
		{From: "eve", Session: 1, Body: &deltas.Deltas{FromSeq: 0, ToSeq: 1, Deltas: []deltas.KeyState{
			{Key: probeKey, State: vals["counter"]}}}},
		{From: "eve", Session: 1, Body: &deltas.States{States: []deltas.KeyState{
			{Key: setKey, State: vals["orset"]}, {Key: "fuzz/reg", State: vals["mvreg"]}}}},
		{From: "eve", Session: 2, AckSession: 3, Ack: 1, Body: &deltas.Digest{Seq: 4, Digests: []deltas.KeyDigest{
			{Key: probeKey, Hash: 1}, {Key: "fuzz/other", Hash: 2}}}},
		{From: "eve", Session: 2, Body: &deltas.DigestReply{Seq: 4, Want: []string{probeKey}, States: []deltas.KeyState{
			{Key: "fuzz/g", State: vals["gset"]}}}},
		{From: "eve", Session: 2}, // a bare acknowledgement
		// A type conflict: the engine refuses it whole.
		{From: "eve", Session: 1, Body: &deltas.Deltas{FromSeq: 1, ToSeq: 2, Deltas: []deltas.KeyState{
			{Key: "fuzz/new", State: vals["counter"]}, {Key: probeKey, State: vals["gset"]}}}},
	}
	for _, m := range msgs {
		b := deltas.EncodeMessage(m)
		f.Add(b, uint16(0))
		f.Add(b, uint16(len(b)/3)) // as a chunk and a last chunk
		for _, tb := range truncations(b) {
			f.Add(tb, uint16(0))
		}
	}
	f.Add([]byte{}, uint16(0))
	f.Add([]byte("\x0a\x03eve\x10\x01\x2a\xff\xff\xff\xff\x0f"), uint16(0)) // a body longer than the input

	n := fuzzNode(f)
	srv := &peerServer{n: n}
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		// The Hello names the message's sender when there is one, so that
		// well-formed inputs reach the engine.
		m, derr := deltas.DecodeMessage(data, *n.cfg.Limits)
		from, want := "eve", codes.InvalidArgument
		if derr == nil && string(m.From) != n.Name() {
			from, want = string(m.From), codes.OK
			addMembers(t, n, from)
			for _, k := range messageKeys(m) {
				if !validMeshKey([]byte(k)) {
					want = codes.InvalidArgument
				}
			}
		}
		var before []string
		if derr != nil {
			before = engineKeys(t, n)
		}
		frames := []*peerpb.SyncFrame{helloFrame(from)}
		if s := int(split); s > 0 && s < len(data) {
			frames = append(frames, chunk(data[:s]), lastChunk(data[s:]))
		} else {
			frames = append(frames, lastChunk(data))
		}
		st := &fakeSyncStream{ctx: t.Context(), frames: frames}
		err := srv.Sync(st)
		if got := status.Code(err); got != want {
			t.Fatalf("Sync: %v (%v), want %v; decode: %v", got, err, want, derr)
		}
		if want == codes.OK && !st.closed {
			t.Fatal("Sync returned OK without closing the stream")
		}
		settle(t, n)
		if derr != nil {
			if after := engineKeys(t, n); !slices.Equal(before, after) {
				t.Fatalf("an input that does not decode (%v) changed the keys: %d before, %d after", derr, len(before), len(after))
			}
		}
		probe(t, n)
	})
}

// validMeshKey says whether a peer's key names a mesh key, as Key.Validate
// documents it: a service of 1 to MaxServiceBytes bytes without '/', then
// '/', then an entity id of at most MaxIDBytes.
func validMeshKey(k []byte) bool {
	svc, id, ok := bytes.Cut(k, []byte("/"))
	return ok && len(svc) > 0 && len(svc) <= MaxServiceBytes && len(id) <= MaxIDBytes
}

func FuzzPeerWrite(f *testing.F) {
	vals := fuzzSeedValues()
	probeKey, setKey := []byte(fuzzProbeKey.engineKey()), []byte(fuzzSetKey.engineKey())
	for _, kv := range []struct {
		key []byte
		v   crdt.Value
	}{
		{probeKey, vals["counter"]},
		{setKey, vals["orset"]},
		{[]byte("fuzz/g"), vals["gset"]},
		{[]byte("fuzz/reg"), vals["mvreg"]},
		{probeKey, vals["gset"]}, // a type conflict
		{[]byte("noslash"), vals["counter"]},
		{[]byte("/x"), vals["counter"]},
		{[]byte("s/"), vals["counter"]},
		{[]byte("s/a/b"), vals["counter"]},
	} {
		b := crdt.Encode(kv.v)
		f.Add(kv.key, b)
		for _, tb := range truncations(b) {
			f.Add(kv.key, tb)
		}
	}
	f.Add([]byte{}, []byte{})
	f.Add(probeKey, []byte{})

	n := fuzzNode(f)
	srv := &peerServer{n: n}
	f.Fuzz(func(t *testing.T, key, state []byte) {
		v, derr := crdt.Decode(state, n.cfg.Limits.CRDT)
		var cur crdt.Value
		var keys int
		if _, err := n.do(context.Background(), func() { cur, keys = n.eng.Get(string(key)), n.eng.Len() }); err != nil {
			t.Fatal(err)
		}
		ok := validMeshKey(key) && derr == nil && (cur == nil || cur.Type() == v.Type())
		_, err := srv.Write(t.Context(), &peerpb.WriteRequest{From: "eve", Key: key, State: state})
		var got crdt.Value
		var keysAfter int
		if _, err := n.do(context.Background(), func() { got, keysAfter = n.eng.Get(string(key)), n.eng.Len() }); err != nil {
			t.Fatal(err)
		}
		if !ok {
			if c := status.Code(err); c != codes.InvalidArgument {
				t.Fatalf("Write of a bad input: %v (%v), want InvalidArgument (key ok %v, decode %v, local %v)",
					c, err, validMeshKey(key), derr, cur)
			}
			if keysAfter != keys || (cur == nil) != (got == nil) || (cur != nil && !cur.Equal(got)) {
				t.Fatalf("a refused Write changed the state: %d keys before, %d after; %q was %v, is %v", keys, keysAfter, key, cur, got)
			}
			probe(t, n)
			return
		}
		if err != nil {
			t.Fatalf("Write of a valid %s to %q: %v", v.Type(), key, err)
		}
		// The key now holds the join of what it held and what was written.
		if got == nil {
			if cur != nil || !v.IsBottom() {
				t.Fatalf("after a Write of %v, %q is absent", v, key)
			}
		} else {
			for _, x := range []crdt.Value{v, cur} {
				if x == nil {
					continue
				}
				if le, err := crdt.Leq(x, got); err != nil || !le {
					t.Fatalf("after a Write, %q holds %v, which does not include %v (%v)", key, got, x, err)
				}
			}
		}
		probe(t, n)
	})
}
