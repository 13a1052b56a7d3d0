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
// goroutines; an encoding the engine had cached is used as it is.
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
		sh := msg(KeyState{Key: "k", State: m, shared: newShared(nil)})
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
	// A cached encoding is what goes on the wire, and what is measured,
	// without encoding State again.
	other := crdt.NewGSet()
	other.Add([]byte("other"))
	cached := msg(KeyState{Key: "k", State: m, shared: newShared(crdt.Encode(other))})
	got, err := DecodeMessage(EncodeMessage(cached), DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if s := got.Body.(*Deltas).Deltas[0].State; !s.Equal(other) {
		t.Fatal("AppendMessage encoded State instead of using the cached encoding")
	}
	if MessageSize(cached) != len(EncodeMessage(cached)) {
		t.Fatalf("MessageSize %d of a cached encoding, encoding %d bytes", MessageSize(cached), len(EncodeMessage(cached)))
	}
}
