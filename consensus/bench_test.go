package consensus

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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
