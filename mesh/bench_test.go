package mesh

import (
	"context"
	"fmt"
	"testing"

	"github.com/statemesh/statemesh/crdt"
)

// BenchmarkUpdateLocal is one LOCAL counter increment on a node without
// peers: the hand-off to the loop, the engine's update and the write's
// bookkeeping, the per-write costs that bench mesh pays besides
// replication. Parallel: 4 writers, as bench mesh runs per node.
func BenchmarkUpdateLocal(b *testing.B) {
	n, err := Start(Config{Name: "n1", Preset: PresetLocal, DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	keys := make([]Key, 1000)
	for i := range keys {
		keys[i] = Key{Service: "bench.Counter", ID: fmt.Sprintf("c%04d", i)}
	}
	r := n.Replica()
	inc := func(v crdt.Value) (crdt.Value, error) { return v.(*crdt.GCounter).Increment(r, 1) }
	ctx := context.Background()
	b.SetParallelism(2) // 2 x GOMAXPROCS (2) = 4 writers
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			if _, err := n.Update(ctx, keys[i%len(keys)], crdt.TypeGCounter, inc, Options{DiscardState: true}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
