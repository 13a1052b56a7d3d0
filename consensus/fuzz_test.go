package consensus

import (
	"testing"

	sm "github.com/lni/dragonboat/v4/statemachine"
	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/eventlog"
	"github.com/statemesh/statemesh/protocol/consensuspb"
)

// FuzzStateMachineEntry applies arbitrary bytes as a Raft entry. The state
// machine must never fail or panic on them: an entry that does not decode,
// names an invalid entity or exceeds a limit is refused with CODE_INVALID
// and changes nothing but the applied index; any other entry gets a known
// code.
func FuzzStateMachineEntry(f *testing.F) {
	valid := func(e *consensuspb.Entry) []byte {
		b, err := proto.Marshal(e)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	ent := &consensuspb.Entity{Type: "log", Id: "a"}
	f.Add(valid(&consensuspb.Entry{RequestId: []byte("r1"), Entity: ent,
		Op: &consensuspb.Entry_Append{Append: &consensuspb.Append{ExpectedSeq: 1, Events: [][]byte{[]byte("x")}}}}))
	f.Add(valid(&consensuspb.Entry{Entity: ent, Op: &consensuspb.Entry_PutValue{PutValue: &consensuspb.PutValue{State: []byte("v")}}}))
	f.Add(valid(&consensuspb.Entry{Entity: ent, Op: &consensuspb.Entry_DeleteValue{DeleteValue: &consensuspb.DeleteValue{CheckVersion: true}}}))
	f.Add(valid(&consensuspb.Entry{Entity: &consensuspb.Entity{Type: "log"}, Op: &consensuspb.Entry_PutValue{PutValue: &consensuspb.PutValue{}}}))
	f.Add(valid(&consensuspb.Entry{Op: &consensuspb.Entry_Batch{Batch: &consensuspb.Batch{Entries: [][]byte{
		valid(&consensuspb.Entry{RequestId: []byte("r2"), Entity: ent, Op: &consensuspb.Entry_Append{Append: &consensuspb.Append{ExpectedSeq: 1, Events: [][]byte{[]byte("y")}}}}),
		{0xff, 0x01},
		valid(&consensuspb.Entry{Op: &consensuspb.Entry_Batch{Batch: &consensuspb.Batch{}}}),
	}}}}))
	// The same request in two batches: in the second it is a duplicate,
	// whose result keeps the first one's index.
	put := func(id string) []byte {
		return valid(&consensuspb.Entry{RequestId: []byte(id), Entity: ent, Op: &consensuspb.Entry_PutValue{PutValue: &consensuspb.PutValue{State: []byte(id)}}})
	}
	f.Add(valid(&consensuspb.Entry{Op: &consensuspb.Entry_Batch{Batch: &consensuspb.Batch{Entries: [][]byte{put("r9")}}}}))
	f.Add(valid(&consensuspb.Entry{Op: &consensuspb.Entry_Batch{Batch: &consensuspb.Batch{Entries: [][]byte{put("r10"), put("r9")}}}}))
	f.Add([]byte{0xff, 0x01})
	f.Add([]byte{})

	m := openStateMachine(f, "", 1000)
	index := uint64(0)
	apply := func(t *testing.T, cmd []byte) sm.Result {
		index++
		out, err := m.Update([]sm.Entry{{Index: index, Cmd: cmd}})
		if err != nil {
			t.Fatalf("Update failed on %x: %v", cmd, err)
		}
		return out[0].Result
	}
	// Existing data the fuzzed entries must not disturb when refused.
	seed := valid(&consensuspb.Entry{Entity: ent, Op: &consensuspb.Entry_Append{Append: &consensuspb.Append{Events: [][]byte{[]byte("first")}}}})
	f.Fuzz(func(t *testing.T, cmd []byte) {
		if index == 0 {
			if r := apply(t, seed); r.Value != uint64(consensuspb.Code_CODE_OK) {
				t.Fatalf("seed entry: code %d", r.Value)
			}
		}
		shard := m.shard
		before, err := shard.Load(eventlog.Entity{Type: "log", ID: "a"})
		if err != nil {
			t.Fatal(err)
		}
		r := apply(t, cmd)
		if _, known := consensuspb.Code_name[int32(r.Value)]; !known {
			t.Fatalf("unknown result code %d", r.Value)
		}
		var res consensuspb.Result
		if err := proto.Unmarshal(r.Data, &res); err != nil || uint64(res.Code) != r.Value {
			t.Fatalf("result data %x does not match code %d: %v", r.Data, r.Value, err)
		}
		for i, b := range res.Results {
			var sub consensuspb.Result
			if err := proto.Unmarshal(b, &sub); err != nil {
				t.Fatalf("batch result %d does not decode: %v", i, err)
			}
			// A duplicate keeps the index its request was first applied at.
			if _, known := consensuspb.Code_name[int32(sub.Code)]; !known || (!sub.Duplicate && sub.Index != index) {
				t.Fatalf("batch result %d: code %d at index %d (entry %d, duplicate %v)", i, sub.Code, sub.Index, index, sub.Duplicate)
			}
		}
		if applied, err := shard.Applied(); err != nil || applied != index {
			t.Fatalf("applied index %d (%v), want %d", applied, err, index)
		}
		if res.Code == consensuspb.Code_CODE_INVALID {
			after, err := shard.Load(eventlog.Entity{Type: "log", ID: "a"})
			if err != nil || after.Seq != before.Seq {
				t.Fatalf("a refused entry changed the entity: seq %d -> %d (%v)", before.Seq, after.Seq, err)
			}
		}
	})
}
