package consensus

import (
	"fmt"
	"testing"

	sm "github.com/lni/dragonboat/v4/statemachine"
	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/eventlog"
	"github.com/statemesh/statemesh/protocol/consensuspb"
)

// TestDedupWindowIndependentOfBatching applies the same entries to two
// state machines, one entry per Update on one and in large batches on the
// other, with retries of request ids just inside and just outside the
// dedup window: every entry must get the same result on both (which
// request records are still stored depends on the batching; whether a
// retry is a duplicate must not).
func TestDedupWindowIndependentOfBatching(t *testing.T) {
	const window = 1000
	open := func() *stateMachine { return openStateMachine(t, "", window) }
	entry := func(id string, entity string) []byte {
		b, err := proto.Marshal(&consensuspb.Entry{RequestId: []byte(id), Entity: &consensuspb.Entity{Type: "log", Id: entity},
			Op: &consensuspb.Entry_PutValue{PutValue: &consensuspb.PutValue{State: []byte(id)}}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var entries []sm.Entry
	add := func(cmd []byte) { entries = append(entries, sm.Entry{Index: uint64(len(entries) + 1), Cmd: cmd}) }
	for i := range 1200 {
		add(entry(fmt.Sprint("req-", i), fmt.Sprint("e", i%7)))
	}
	// Retries: req-i was applied at index i+1.
	for _, i := range []int{150, 199, 200, 201, 202, 260, 1100} {
		add(entry(fmt.Sprint("req-", i), fmt.Sprint("e", i%7)))
	}
	for range 300 {
		add(entry(fmt.Sprint("late-", len(entries)), "late"))
	}
	for _, i := range []int{150, 199, 200, 201, 202, 260, 1100} {
		add(entry(fmt.Sprint("req-", i), fmt.Sprint("e", i%7)))
	}
	results := func(m *stateMachine, batch int) []*consensuspb.Result {
		in := make([]sm.Entry, len(entries))
		copy(in, entries)
		var out []*consensuspb.Result
		for len(in) > 0 {
			n := min(batch, len(in))
			got, err := m.Update(in[:n])
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range got {
				var r consensuspb.Result
				if err := proto.Unmarshal(e.Result.Data, &r); err != nil {
					t.Fatal(err)
				}
				out = append(out, &r)
			}
			in = in[n:]
		}
		return out
	}
	one, big := results(open(), 1), results(open(), 700)
	dups := 0
	for i := range entries {
		if !proto.Equal(one[i], big[i]) {
			t.Errorf("entry %d: %v one at a time, %v in batches", i+1, one[i], big[i])
		}
		if one[i].Duplicate {
			dups++
		}
	}
	// First retries at 1201..1207 of indexes 151, 200, 201, 202, 203,
	// 261 and 1101: the first two are out of the window (1050 and 1001
	// entries back) and are applied again, the rest are duplicates. Second
	// retries at 1508..1514: the two applied again (at 1201 and 1202) and
	// 1101 are within the window, the others no longer.
	if dups != 8 {
		t.Errorf("%d duplicates, want 8", dups)
	}
}

// openStateMachine opens the state machine of shard 1 on a fresh eventlog
// in dir ("": in memory, with small caches), closed when the test ends.
func openStateMachine(tb testing.TB, dir string, window uint64) *stateMachine {
	tb.Helper()
	o := eventlog.DefaultOptions(dir)
	if dir == "" {
		o.InMemory = true
		o.BlockCacheSize, o.IndexCacheSize = 1<<20, 1<<20
	}
	db, err := eventlog.Open(o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = db.Close() })
	m := newStateMachine(db, 1, window)
	if _, err := m.Open(nil); err != nil {
		tb.Fatal(err)
	}
	return m
}
