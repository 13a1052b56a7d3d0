package deltas_test

import (
	"fmt"
	"testing"

	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/deltas"
)

// benchDeltas is a delta-group as the mesh's eager push sends it under
// load: 50 counters, each with entries of 3 replicas.
func benchDeltas() deltas.Message {
	var ks []deltas.KeyState
	for i := range 50 {
		c := crdt.NewGCounter()
		for j := range 3 {
			if _, err := c.Increment(crdt.ReplicaID{Node: fmt.Sprintf("node-%02d", j+1), Incarnation: 1764230000000000000 + uint64(j)}, uint64(1000+i)); err != nil {
				panic(err)
			}
		}
		ks = append(ks, deltas.KeyState{Key: fmt.Sprintf("counters/entity-%04d", i), State: c})
	}
	return deltas.Message{From: "node-01", Session: 7, AckSession: 3, Ack: 99,
		Body: &deltas.Deltas{FromSeq: 1, ToSeq: 51, Deltas: ks}}
}

// BenchmarkDecodeMessage decodes and validates one such group, as every
// peer does with every message it receives.
func BenchmarkDecodeMessage(b *testing.B) {
	enc := deltas.EncodeMessage(benchDeltas())
	b.ReportAllocs()
	b.SetBytes(int64(len(enc)))
	for b.Loop() {
		if _, err := deltas.DecodeMessage(enc, deltas.DefaultLimits); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeMessage encodes it, as a sender does once per peer.
func BenchmarkEncodeMessage(b *testing.B) {
	m := benchDeltas()
	b.ReportAllocs()
	for b.Loop() {
		_ = deltas.EncodeMessage(m)
	}
}
