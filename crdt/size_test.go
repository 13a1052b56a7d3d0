package crdt

import (
	"fmt"
	"testing"
)

// TestEncodedSizeManyReplicas checks EncodedSize against Encode for maps
// and sets with every kind of entry, written by more replicas than fit
// one-byte indexes (the property tests use a few replicas).
func TestEncodedSizeManyReplicas(t *testing.T) {
	for _, n := range []int{1, 2, 127, 128, 129, 300} {
		m, s := NewORMap(), NewORSet()
		for i := range n {
			r := ReplicaID{Node: fmt.Sprintf("node-%03d", i), Incarnation: uint64(i % 3)}
			key := fmt.Appendf(nil, "k%d", i%7)
			if _, err := m.Update(r, key, TypeMVRegister, func(v Value) (Value, error) {
				return v.(*MVRegister).Assign(r, key), nil
			}); err != nil {
				t.Fatal(err)
			}
			if _, err := m.Update(r, key, TypeORSet, func(v Value) (Value, error) {
				return v.(*ORSet).Add(r, nil), nil
			}); err != nil {
				t.Fatal(err)
			}
			if _, err := m.Update(r, nil, TypeEWFlag, func(v Value) (Value, error) {
				return v.(*EWFlag).Enable(r), nil
			}); err != nil {
				t.Fatal(err)
			}
			if _, err := m.Update(r, []byte("nested"), TypeORMap, func(v Value) (Value, error) {
				return v.(*ORMap).Update(r, key, TypeMVRegister, func(v Value) (Value, error) {
					return v.(*MVRegister).Assign(r, nil), nil
				})
			}); err != nil {
				t.Fatal(err)
			}
			s.Add(r, key)
			if i%5 == 0 {
				s.Remove(key)
			}
		}
		for _, v := range []Value{m, s, NewORMap(), NewORSet()} {
			if got, want := EncodedSize(v), len(Encode(v)); got != want {
				t.Errorf("%d replicas: EncodedSize(%s) = %d, len(Encode) = %d", n, v.Type(), got, want)
			}
		}
	}
}
