package netfault

import (
	"fmt"
	"math"
	"sync"
	"testing"
	"time"
)

const testSeed = 20240601

func TestCutBothWays(t *testing.T) {
	f := New(testSeed)
	f.Cut("a", "b")
	for _, l := range [][2]string{{"a", "b"}, {"b", "a"}} {
		if !f.Blocked(l[0], l[1]) {
			t.Errorf("Blocked(%s, %s) = false after Cut(a, b)", l[0], l[1])
		}
		if v := f.Decide(l[0], l[1]); !v.Drop {
			t.Errorf("Decide(%s, %s) = %+v, want Drop", l[0], l[1], v)
		}
	}
	for _, l := range [][2]string{{"a", "c"}, {"c", "b"}, {"a", "a"}} {
		if f.Blocked(l[0], l[1]) {
			t.Errorf("Blocked(%s, %s) = true, only a<->b is cut", l[0], l[1])
		}
		if v := f.Decide(l[0], l[1]); v != (Verdict{}) {
			t.Errorf("Decide(%s, %s) = %+v, want no fault", l[0], l[1], v)
		}
	}
	if d, _, _ := f.Counters(); d != 2 {
		t.Errorf("dropped = %d, want 2", d)
	}
}

func TestCutOneWay(t *testing.T) {
	f := New(testSeed)
	f.CutOneWay("a", "b")
	if !f.Blocked("a", "b") || !f.Decide("a", "b").Drop {
		t.Error("a -> b should be cut")
	}
	if f.Blocked("b", "a") || f.Decide("b", "a").Drop {
		t.Error("b -> a should still be open")
	}
}

// cutSet lists, as "from>to", which links among nodes are blocked.
func cutSet(f *Faults, nodes []string) map[string]bool {
	got := make(map[string]bool)
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b && f.Blocked(a, b) {
				got[a+">"+b] = true
			}
		}
	}
	return got
}

func TestPartition(t *testing.T) {
	nodes := []string{"a", "b", "c", "d", "e", "x"}
	f := New(testSeed)
	f.Partition([]string{"a", "b"}, []string{"c"}, []string{"d", "e"})

	for _, a := range nodes {
		for _, b := range nodes {
			if a == b {
				continue
			}
			group := map[string]int{"a": 0, "b": 0, "c": 1, "d": 2, "e": 2}
			ga, okA := group[a]
			gb, okB := group[b]
			want := okA && okB && ga != gb
			if got := f.Blocked(a, b); got != want {
				t.Errorf("Blocked(%s, %s) = %v, want %v", a, b, got, want)
			}
		}
	}
}

func TestIsolate(t *testing.T) {
	all := []string{"n1", "n2", "n3"}
	f := New(testSeed)
	f.Isolate("n2", all)
	want := map[string]bool{"n2>n1": true, "n1>n2": true, "n2>n3": true, "n3>n2": true}
	if got := cutSet(f, all); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("cuts = %v, want %v", got, want)
	}
}

func TestHeal(t *testing.T) {
	all := []string{"n1", "n2", "n3"}
	f := New(testSeed)
	f.Isolate("n1", all)
	f.CutOneWay("n2", "n3")
	f.SetLoss(0.5)
	f.SetDuplicate(0.5)
	f.SetDelay(time.Millisecond, time.Second)
	f.Heal()
	if got := cutSet(f, all); len(got) != 0 {
		t.Errorf("cuts after Heal = %v", got)
	}
	for i := range 1000 {
		if v := f.Decide(all[i%3], all[(i+1)%3]); v != (Verdict{}) {
			t.Fatalf("decision %d after Heal = %+v, want none", i, v)
		}
	}
}

func TestLossRate(t *testing.T) {
	const n, p = 10000, 0.3
	f := New(testSeed)
	f.SetLoss(p)
	drops := 0
	for range n {
		if f.Decide("a", "b").Drop {
			drops++
		}
	}
	// Binomial sd is sqrt(n p (1-p)) ~ 46, i.e. 0.0046 of n: 0.02 is > 4 sd.
	if got := float64(drops) / n; math.Abs(got-p) > 0.02 {
		t.Errorf("drop rate %.4f, want %.2f ± 0.02", got, p)
	}
	if d, dup, del := f.Counters(); d != uint64(drops) || dup != 0 || del != 0 {
		t.Errorf("Counters() = %d, %d, %d; want %d, 0, 0", d, dup, del, drops)
	}
}

func TestDuplicateRate(t *testing.T) {
	const n, p = 10000, 0.25
	f := New(testSeed)
	f.SetDuplicate(p)
	dups := 0
	for range n {
		v := f.Decide("a", "b")
		if v.Drop || v.Delay != 0 {
			t.Fatalf("Decide = %+v with only duplication set", v)
		}
		if v.Duplicate {
			dups++
		}
	}
	if got := float64(dups) / n; math.Abs(got-p) > 0.02 {
		t.Errorf("duplicate rate %.4f, want %.2f ± 0.02", got, p)
	}
	if _, dup, _ := f.Counters(); dup != uint64(dups) {
		t.Errorf("duplicated counter %d, want %d", dup, dups)
	}
	f.SetDuplicate(1)
	if !f.Decide("a", "b").Duplicate {
		t.Error("SetDuplicate(1) did not duplicate")
	}
}

func TestDelayBounds(t *testing.T) {
	const lo, hi = 10 * time.Millisecond, 20 * time.Millisecond
	f := New(testSeed)
	f.SetDelay(lo, hi)
	least, most := time.Duration(math.MaxInt64), time.Duration(0)
	var sum time.Duration
	const n = 10000
	for range n {
		d := f.Decide("a", "b").Delay
		if d < lo || d > hi {
			t.Fatalf("delay %v outside [%v, %v]", d, lo, hi)
		}
		least, most, sum = min(least, d), max(most, d), sum+d
	}
	// Uniform: the extremes come close to the bounds and the mean is central.
	if least > lo+100*time.Microsecond || most < hi-100*time.Microsecond {
		t.Errorf("delays span [%v, %v], want close to [%v, %v]", least, most, lo, hi)
	}
	if mean := sum / n; mean < 14500*time.Microsecond || mean > 15500*time.Microsecond {
		t.Errorf("mean delay %v, want about 15ms", mean)
	}
	if _, _, del := f.Counters(); del != n {
		t.Errorf("delayed counter %d, want %d", del, n)
	}

	f.SetDelay(5*time.Millisecond, 5*time.Millisecond)
	if d := f.Decide("a", "b").Delay; d != 5*time.Millisecond {
		t.Errorf("fixed delay %v, want 5ms", d)
	}
	f.SetDelay(0, 0)
	if d := f.Decide("a", "b").Delay; d != 0 {
		t.Errorf("delay %v after SetDelay(0, 0)", d)
	}
}

// TestDeterministic checks that a link's decisions depend only on the seed and
// on how many messages went over that link before, not on other links.
func TestDeterministic(t *testing.T) {
	configure := func(seed int64) *Faults {
		f := New(seed)
		f.SetLoss(0.2)
		f.SetDuplicate(0.2)
		f.SetDelay(0, time.Second)
		return f
	}
	record := func(f *Faults, order [][2]string) map[[2]string][]Verdict {
		got := make(map[[2]string][]Verdict)
		for _, l := range order {
			got[l] = append(got[l], f.Decide(l[0], l[1]))
		}
		return got
	}
	ab, ba, bc := [2]string{"a", "b"}, [2]string{"b", "a"}, [2]string{"b", "c"}
	var order1, order2 [][2]string
	for range 200 {
		order1 = append(order1, ab, ba, bc)
		order2 = append(order2, bc, bc, ab) // other links interleaved differently
	}
	for range 200 {
		order2 = append(order2, ab, ba)
	}
	r1 := record(configure(7), order1)
	r2 := record(configure(7), order2)
	for _, l := range [][2]string{ab, ba} {
		if fmt.Sprint(r1[l][:200]) != fmt.Sprint(r2[l][:200]) {
			t.Errorf("link %v: decisions differ between runs with one seed", l)
		}
	}
	if fmt.Sprint(r1[ab]) == fmt.Sprint(r1[ba]) {
		t.Error("links a>b and b>a drew the same decisions")
	}
	if r3 := record(configure(8), order1); fmt.Sprint(r3[ab]) == fmt.Sprint(r1[ab]) {
		t.Error("seeds 7 and 8 gave the same decisions")
	}
}

// TestSettingsDoNotShiftDice: the same message is dropped whether or not
// duplication and delay are on.
func TestSettingsDoNotShiftDice(t *testing.T) {
	drops := func(extra bool) []bool {
		f := New(testSeed)
		f.SetLoss(0.3)
		if extra {
			f.SetDuplicate(0.5)
			f.SetDelay(time.Millisecond, 2*time.Millisecond)
		}
		out := make([]bool, 500)
		for i := range out {
			out[i] = f.Decide("a", "b").Drop
		}
		return out
	}
	if fmt.Sprint(drops(false)) != fmt.Sprint(drops(true)) {
		t.Error("turning on duplication and delay changed which messages drop")
	}
}

func TestInvalidSettingsPanic(t *testing.T) {
	f := New(testSeed)
	for name, fn := range map[string]func(){
		"loss<0":        func() { f.SetLoss(-0.1) },
		"loss>1":        func() { f.SetLoss(1.5) },
		"loss NaN":      func() { f.SetLoss(math.NaN()) },
		"dup>1":         func() { f.SetDuplicate(2) },
		"delay<0":       func() { f.SetDelay(-time.Second, time.Second) },
		"delay max<min": func() { f.SetDelay(2*time.Second, time.Second) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			fn()
		}()
	}
}

// TestConcurrentUse is for the race detector.
func TestConcurrentUse(t *testing.T) {
	f := New(testSeed)
	nodes := []string{"n1", "n2", "n3"}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 500 {
				a, b := nodes[(i+j)%3], nodes[(i+j+1)%3]
				switch j % 50 {
				case 0:
					f.Isolate(a, nodes)
				case 10:
					f.SetLoss(0.1)
				case 20:
					f.SetDelay(0, time.Millisecond)
				case 30:
					f.Heal()
				}
				f.Decide(a, b)
				f.Blocked(b, a)
				f.Counters()
			}
		})
	}
	wg.Wait()
}
