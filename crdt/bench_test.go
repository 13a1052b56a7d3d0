package crdt

import (
	"fmt"
	"testing"
)

func benchReplicas(n int) []ReplicaID {
	out := make([]ReplicaID, n)
	for i := range out {
		out[i] = ReplicaID{Node: fmt.Sprintf("node-%02d", i), Incarnation: 1}
	}
	return out
}

// warmUp makes x a replica that has done local work: one local add and
// remove, which builds whatever lookup structures x keeps for mutators and
// joins, outside the timed loop.
func warmUp(b *testing.B, x Value) {
	w := ReplicaID{Node: "warm-up", Incarnation: 1}
	switch v := x.(type) {
	case *ORSet:
		v.Add(w, []byte("warm-up"))
		v.Remove([]byte("warm-up"))
	case *ORMap:
		if _, err := v.Update(w, []byte("warm-up"), TypeEWFlag, func(f Value) (Value, error) {
			return f.(*EWFlag).Enable(w), nil
		}); err != nil {
			b.Fatal(err)
		}
		v.Remove([]byte("warm-up"), TypeEWFlag)
	}
}

func elem(i int) []byte { return fmt.Appendf(nil, "element-%06d", i) }

// orsetOf returns a set of n elements added round-robin by reps.
func orsetOf(n int, reps []ReplicaID) *ORSet {
	s := NewORSet()
	for i := range n {
		s.Add(reps[i%len(reps)], elem(i))
	}
	return s
}

func ormapOf(b *testing.B, n int, reps []ReplicaID) *ORMap {
	m := NewORMap()
	for i := range n {
		r := reps[i%len(reps)]
		if _, err := m.Update(r, elem(i), TypeMVRegister, func(v Value) (Value, error) {
			return v.(*MVRegister).Assign(r, []byte("initial value")), nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	return m
}

// BenchmarkGCounterIncrementEncodeJoin is one replicated increment: the
// mutator, the delta's wire round trip and the join at another replica.
func BenchmarkGCounterIncrementEncodeJoin(b *testing.B) {
	reps := benchReplicas(16)
	src, dst := NewGCounter(), NewGCounter()
	for _, r := range reps {
		d, _ := src.Increment(r, 10)
		dst.join(d)
	}
	wire := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		d, err := src.Increment(reps[i%len(reps)], 1)
		if err != nil {
			b.Fatal(err)
		}
		enc := Encode(d)
		wire += len(enc)
		v, err := Decode(enc, DefaultLimits)
		if err != nil {
			b.Fatal(err)
		}
		if ch, err := Join(dst, v); err != nil || !ch {
			b.Fatalf("join: %v %v", ch, err)
		}
	}
	b.ReportMetric(float64(wire)/float64(b.N), "wire-B/op")
}

func BenchmarkORSetAdd10k(b *testing.B) {
	reps := benchReplicas(4)
	s := orsetOf(10_000, reps)
	warmUp(b, s)
	var d *ORSet
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		d = s.Add(reps[i%len(reps)], elem(10_000+i))
	}
	b.StopTimer()
	b.ReportMetric(float64(EncodedSize(d)), "wire-B/op")
}

func BenchmarkORSetRemove10k(b *testing.B) {
	reps := benchReplicas(4)
	base := orsetOf(10_000, reps)
	s := base.Clone().(*ORSet)
	warmUp(b, s)
	var d *ORSet
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if i > 0 && i%10_000 == 0 {
			b.StopTimer()
			s = base.Clone().(*ORSet)
			warmUp(b, s)
			b.StartTimer()
		}
		d = s.Remove(elem(i % 10_000))
		if d.IsBottom() {
			b.Fatal("removed nothing")
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(EncodedSize(d)), "wire-B/op")
}

// BenchmarkORMapUpdate10k writes one key's MVRegister in a 10k-key map.
func BenchmarkORMapUpdate10k(b *testing.B) {
	reps := benchReplicas(4)
	m := ormapOf(b, 10_000, reps)
	warmUp(b, m)
	var d *ORMap
	var err error
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		r := reps[i%len(reps)]
		d, err = m.Update(r, elem(i%10_000), TypeMVRegister, func(v Value) (Value, error) {
			return v.(*MVRegister).Assign(r, []byte("updated value")), nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(EncodedSize(d)), "wire-B/op")
}

// BenchmarkExtract extracts a 100-operation delta-group from another
// replica, half of which the receiver has already seen, against a large
// state.
func BenchmarkExtract(b *testing.B) {
	reps := benchReplicas(4)
	run := func(b *testing.B, x, group Value) {
		warmUp(b, x)
		e, err := Extract(x, group)
		if err != nil {
			b.Fatal(err)
		}
		if e.IsBottom() {
			b.Fatal("nothing to extract")
		}
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			e, _ = Extract(x, group)
		}
		b.StopTimer()
		b.ReportMetric(float64(EncodedSize(group)), "group-B")
		b.ReportMetric(float64(EncodedSize(e)), "extract-B")
	}
	b.Run("ORSet10k", func(b *testing.B) {
		base := orsetOf(10_000, reps)
		y := base.Clone().(*ORSet)
		x := base.Clone().(*ORSet)
		group := NewORSet()
		for i := range 100 {
			var d *ORSet
			if i%2 == 0 {
				d = y.Add(reps[1], elem(20_000+i))
			} else {
				d = y.Remove(elem(i * 97))
			}
			group.join(d)
			if i < 50 {
				x.join(d)
			}
		}
		run(b, x, group)
	})
	b.Run("ORMap1k", func(b *testing.B) {
		base := ormapOf(b, 1000, reps)
		y := base.Clone().(*ORMap)
		x := base.Clone().(*ORMap)
		group := NewORMap()
		for i := range 100 {
			var d *ORMap
			var err error
			switch i % 3 {
			case 0:
				d, err = y.Update(reps[1], elem(i*7), TypeMVRegister, func(v Value) (Value, error) {
					return v.(*MVRegister).Assign(reps[1], []byte("new")), nil
				})
			case 1:
				d, err = y.Update(reps[1], elem(5000+i), TypeORSet, func(v Value) (Value, error) {
					return v.(*ORSet).Add(reps[1], []byte("member")), nil
				})
			default:
				d = y.Remove(elem(i*7+1), TypeMVRegister)
			}
			if err != nil {
				b.Fatal(err)
			}
			group.join(d)
			if i < 50 {
				x.join(d)
			}
		}
		run(b, x, group)
	})
}
