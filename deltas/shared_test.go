package deltas

import (
	"bytes"
	"fmt"
	"sync"
	"testing"

	"github.com/statemesh/statemesh/crdt"
)

// A state whose encoding is shared between messages encodes and measures
// exactly as one without, whichever is asked first and from however many
// goroutines.
func TestSharedEncoding(t *testing.T) {
	m := crdt.NewORMap()
	r := crdt.ReplicaID{Node: "a", Incarnation: 1}
	for k := range 300 { // a map large enough for multi-byte lengths
		if _, err := m.Update(r, fmt.Appendf(nil, "k%03d", k), crdt.TypeMVRegister, func(v crdt.Value) (crdt.Value, error) {
			return v.(*crdt.MVRegister).Assign(r, []byte("value")), nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	msg := func(ks KeyState) Message {
		return Message{From: "a", To: "b", Session: 1, Body: &Deltas{FromSeq: 1, ToSeq: 2, Deltas: []KeyState{ks}}}
	}
	plain := msg(KeyState{Key: "k", State: m})
	want := EncodeMessage(plain)
	if MessageSize(plain) != len(want) {
		t.Fatalf("MessageSize %d, encoding %d bytes", MessageSize(plain), len(want))
	}
	for _, sizeFirst := range []bool{true, false} {
		sh := msg(KeyState{Key: "k", State: m, shared: newShared()})
		if sizeFirst && MessageSize(sh) != len(want) {
			t.Fatalf("shared MessageSize %d before encoding, want %d", MessageSize(sh), len(want))
		}
		var wg sync.WaitGroup
		got := make([][]byte, 4)
		for i := range got {
			wg.Go(func() { got[i] = EncodeMessage(sh) })
		}
		wg.Wait()
		for i, g := range got {
			if !bytes.Equal(g, want) {
				t.Fatalf("sizeFirst=%v: encoding %d differs from the unshared one", sizeFirst, i)
			}
		}
		if MessageSize(sh) != len(want) {
			t.Fatalf("shared MessageSize %d after encoding, want %d", MessageSize(sh), len(want))
		}
	}
}
