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

// TestBatchEntry applies a batch whose operations succeed, conflict, are
// malformed or repeat a request id: each gets the result it would get as
// an entry of its own at the batch's index, and only the successful ones
// change the journal.
func TestBatchEntry(t *testing.T) {
	m := openStateMachine(t, "", 1000)
	ent := &consensuspb.Entity{Type: "log", Id: "a"}
	appendOp := func(id string, expected uint64, ev string) []byte {
		b, err := proto.Marshal(&consensuspb.Entry{RequestId: []byte(id), Entity: ent,
			Op: &consensuspb.Entry_Append{Append: &consensuspb.Append{ExpectedSeq: expected, Events: [][]byte{[]byte(ev)}, Reply: []byte("re-" + id)}}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	batch := func(entries ...[]byte) []byte {
		b, err := proto.Marshal(&consensuspb.Entry{Op: &consensuspb.Entry_Batch{Batch: &consensuspb.Batch{Entries: entries}}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	apply := func(index uint64, cmd []byte) *consensuspb.Result {
		t.Helper()
		out, err := m.Update([]sm.Entry{{Index: index, Cmd: cmd}})
		if err != nil {
			t.Fatal(err)
		}
		var r consensuspb.Result
		if err := proto.Unmarshal(out[0].Result.Data, &r); err != nil || uint64(r.Code) != out[0].Result.Value {
			t.Fatalf("result %x, code %d: %v", out[0].Result.Data, out[0].Result.Value, err)
		}
		return &r
	}
	sub := func(r *consensuspb.Result, i int) *consensuspb.Result {
		t.Helper()
		var s consensuspb.Result
		if err := proto.Unmarshal(r.Results[i], &s); err != nil {
			t.Fatal(err)
		}
		return &s
	}

	r := apply(1, batch(
		appendOp("r1", 0, "e1"),       // applies: seq 1
		appendOp("r2", 0, "x"),        // conflict: the entity is at 1
		[]byte{0xff, 0x01},            // does not decode
		batch(appendOp("r3", 1, "x")), // nested batch
		appendOp("r1", 1, "again"),    // r1 again: the first result
		appendOp("r4", 1, "e2"),       // applies: seq 2
	))
	if r.Code != consensuspb.Code_CODE_OK || len(r.Results) != 6 || r.Index != 1 {
		t.Fatalf("batch result: code %v, %d results, index %d", r.Code, len(r.Results), r.Index)
	}
	want := []struct {
		code  consensuspb.Code
		seq   uint64
		reply string
		dup   bool
	}{
		{consensuspb.Code_CODE_OK, 1, "re-r1", false},
		{consensuspb.Code_CODE_CONFLICT, 1, "", false},
		{consensuspb.Code_CODE_INVALID, 0, "", false},
		{consensuspb.Code_CODE_INVALID, 0, "", false},
		{consensuspb.Code_CODE_OK, 1, "re-r1", true},
		{consensuspb.Code_CODE_OK, 2, "re-r4", false},
	}
	for i, w := range want {
		s := sub(r, i)
		if s.Code != w.code || s.Seq != w.seq || string(s.Reply) != w.reply || s.Duplicate != w.dup || s.Index != 1 {
			t.Errorf("operation %d: %v seq %d reply %q duplicate %v index %d, want %v seq %d reply %q duplicate %v index 1",
				i, s.Code, s.Seq, s.Reply, s.Duplicate, s.Index, w.code, w.seq, w.reply, w.dup)
		}
	}
	st, err := m.shard.Load(eventlog.Entity{Type: "log", ID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Events) != 2 || string(st.Events[0].Data) != "e1" || string(st.Events[1].Data) != "e2" {
		t.Fatalf("journal after the batch: %+v", st.Events)
	}

	// A request applied in a batch is a duplicate in a later entry of its own.
	if d := apply(2, appendOp("r4", 2, "x")); d.Code != consensuspb.Code_CODE_OK || !d.Duplicate || d.Seq != 2 || d.Index != 1 {
		t.Fatalf("retry of r4: %+v", d)
	}
	// Empty and oversized batches are invalid as a whole.
	if r := apply(3, batch()); r.Code != consensuspb.Code_CODE_INVALID {
		t.Fatalf("empty batch: %v", r.Code)
	}
	many := make([][]byte, MaxBatchEntries+1)
	for i := range many {
		many[i] = appendOp(fmt.Sprint("m", i), 2, "x")
	}
	if r := apply(4, batch(many...)); r.Code != consensuspb.Code_CODE_INVALID {
		t.Fatalf("batch of %d: %v", len(many), r.Code)
	}
	if applied, err := m.shard.Applied(); err != nil || applied != 4 {
		t.Fatalf("applied %d (%v), want 4", applied, err)
	}
	if st, err := m.shard.Load(eventlog.Entity{Type: "log", ID: "a"}); err != nil || st.Seq != 2 {
		t.Fatalf("entity at %d after refused batches (%v), want 2", st.Seq, err)
	}
}
