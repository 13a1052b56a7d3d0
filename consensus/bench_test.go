package consensus

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"
	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/protocol/consensuspb"
)

// BenchmarkCommands runs 64 concurrent clients appending 100-byte events
// to 1000 entities through all three nodes of an in-process cluster
// (Dragonboat's channel transport, real fsyncs) and reports commands/s.
// b.N commands in all.
func BenchmarkCommands(b *testing.B) {
	c := newCluster(b, 3, 16, map[string]Handler{"log": appendHandler})
	eventually(b, 20*time.Second, "leaders spread", func() bool {
		led := map[uint64]int{}
		for s := uint64(1); s <= 16; s++ {
			id, _, valid, _ := c.nodes[0].h.nh.GetLeaderID(s)
			if valid {
				led[id]++
			}
		}
		return len(led) == 3
	})
	const clients = 64
	value := make([]byte, 100)
	var next atomic.Int64
	var failed atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nd := c.nodes[cl%3]
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := nd.h.Command(ctx, Entity{Type: "log", ID: fmt.Sprintf("e%d", i%1000)}, value, nil)
				cancel()
				if err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "commands/s")
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d commands failed", f)
	}
}

// BenchmarkApply measures the state machine alone: Updates of 16 entries,
// each appending a 100-byte event to one of 10000 entities with a fresh
// 16-byte request id, on an on-disk eventlog. b.N entries in all.
func BenchmarkApply(b *testing.B) {
	m := openStateMachine(b, b.TempDir(), 1_000_000)
	const batch, entities = 16, 10000
	rng := rand.New(rand.NewPCG(1, 2))
	seqs := make([]uint64, entities)
	value := make([]byte, 100)
	index := uint64(0)
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(batch, b.N-done)
		entries := make([]sm.Entry, n)
		for i := range entries {
			e := rng.IntN(entities)
			id := make([]byte, 16)
			binary.LittleEndian.PutUint64(id, rng.Uint64())
			binary.LittleEndian.PutUint64(id[8:], rng.Uint64())
			cmd, err := proto.Marshal(&consensuspb.Entry{RequestId: id, Entity: &consensuspb.Entity{Type: "log", Id: fmt.Sprintf("k%05d", e)},
				Op: &consensuspb.Entry_Append{Append: &consensuspb.Append{ExpectedSeq: seqs[e], Events: [][]byte{value}}}})
			if err != nil {
				b.Fatal(err)
			}
			seqs[e]++
			index++
			entries[i] = sm.Entry{Index: index, Cmd: cmd}
		}
		out, err := m.Update(entries)
		if err != nil {
			b.Fatal(err)
		}
		for _, e := range out {
			if e.Result.Value != uint64(consensuspb.Code_CODE_OK) {
				b.Fatalf("entry %d: code %d", e.Index, e.Result.Value)
			}
		}
		done += n
	}
}
