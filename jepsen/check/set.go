package check

import (
	"fmt"
	"sort"
	"strings"

	"github.com/statemesh/statemesh/jepsen/history"
)

// SetDetails are Set's figures.
type SetDetails struct {
	Adds         int     `json:"adds"`
	AddsOK       int     `json:"adds_ok"`
	Removes      int     `json:"removes"`
	Reads        int     `json:"reads"`
	FinalReads   int     `json:"final_reads"`
	Lost         int     `json:"lost"`
	Stale        int     `json:"stale"`
	Resurrected  int     `json:"resurrected"`
	Unexpected   int     `json:"unexpected"`
	NeverRead    int     `json:"never_read"`
	Stable       int     `json:"stable"`
	NeverStable  int     `json:"never_stable"`
	StableMedian float64 `json:"stable_median_ms"`
	StableP95    float64 `json:"stable_p95_ms"`
	StableMax    float64 `json:"stable_max_ms"`
}

// Set checks the set workload (f "add", "remove", "read", "final-read"),
// after Jepsen's set-full, for each key and element:
//
//   - lost (invalid): known present (its add completed ok, or an ok read
//     held it), never removed (no remove invoked, or all failed), yet an
//     ok final read lacks it;
//   - resurrected (invalid): a remove completed ok, yet an ok final read
//     holds it;
//   - stale (invalid, read-your-writes): an ok read on the node that
//     served the ok add, invoked after the add completed and completed
//     before any remove of it was invoked, lacks it;
//   - unexpected (invalid): a read holds an element whose add was never
//     invoked, had failed, or was invoked only after the read completed;
//   - never read (information): its add completed ok but no read held it.
//
// Stable visibility latency is measured for each element added ok and
// never removed: from the add's completion to the invocation of the
// earliest read of its key from which on every read (any node) holds it,
// clamped at 0. No ok final read makes the verdict unknown, as does a key
// with adds but no ok final read.
func Set(ops []history.Op) Result {
	const name = "set"
	pairs, err := pairsOf(ops, "add", "remove", "read", "final-read")
	if err != nil {
		return malformed(name, err)
	}
	type elem struct {
		add     history.Pair
		removes []history.Pair
	}
	type setRead struct {
		p     history.Pair
		final bool
		has   map[string]bool
	}
	type keyState struct {
		elems map[string]*elem
		reads []setRead // ok reads and final reads, in invoke order
		final bool
	}
	keys := map[string]*keyState{}
	get := func(k string) *keyState {
		s := keys[k]
		if s == nil {
			s = &keyState{elems: map[string]*elem{}}
			keys[k] = s
		}
		return s
	}
	var d SetDetails
	var probs problems
	verdict := Valid
	for _, p := range pairs {
		switch p.Invoke.F {
		case "add", "remove":
			var o SetOp
			if err := decodeInvoke(p, &o); err != nil {
				return malformed(name, err)
			}
			s := get(o.Key)
			e := s.elems[o.Element]
			if p.Invoke.F == "add" {
				d.Adds++
				if p.Done() {
					d.AddsOK++
				}
				if e != nil {
					return malformed(name, fmt.Errorf("op %d adds element %q to key %q a second time (op %d)", p.Invoke.Index, o.Element, o.Key, e.add.Invoke.Index))
				}
				s.elems[o.Element] = &elem{add: p}
				continue
			}
			d.Removes++
			if e == nil {
				return malformed(name, fmt.Errorf("op %d removes element %q of key %q before adding it", p.Invoke.Index, o.Element, o.Key))
			}
			e.removes = append(e.removes, p)
		default:
			if !p.Done() {
				continue
			}
			var r SetRead
			if err := decodeComplete(p, &r); err != nil {
				return malformed(name, err)
			}
			sr := setRead{p: p, final: p.Invoke.F == "final-read", has: r.has()}
			s := get(r.Key)
			s.reads = append(s.reads, sr)
			if sr.final {
				s.final = true
				d.FinalReads++
			} else {
				d.Reads++
			}
		}
	}

	var latencies []float64
	for _, k := range sortedKeys(keys) {
		s := keys[k]
		if len(s.elems) > 0 && !s.final {
			verdict = Combine(verdict, Unknown)
			probs.add(fmt.Sprintf("key %q: adds but no ok final read", k))
		}
		// Unexpected elements.
		for _, r := range s.reads {
			for _, x := range sortedKeys(r.has) {
				e := s.elems[x]
				var why string
				switch {
				case e == nil:
					why = "never added"
				case e.add.Failed():
					why = fmt.Sprintf("its add (op %d) failed", e.add.Invoke.Index)
				case e.add.Invoke.Index > r.p.Complete.Index:
					why = fmt.Sprintf("its add (op %d) was invoked later", e.add.Invoke.Index)
				default:
					continue
				}
				d.Unexpected++
				verdict = Invalid
				probs.add(fmt.Sprintf("unexpected: %s on node %s (op %d) of key %q holds %q: %s",
					r.p.Invoke.F, completeNode(r.p), r.p.Complete.Index, k, x, why))
			}
		}
		for _, x := range sortedKeys(s.elems) {
			e := s.elems[x]
			if e.add.Failed() {
				continue
			}
			removeTried, removeOK := false, false
			firstRemove := -1 // index of the first remove's invoke
			for _, rm := range e.removes {
				if firstRemove < 0 {
					firstRemove = rm.Invoke.Index
				}
				removeTried = removeTried || !rm.Failed()
				removeOK = removeOK || rm.Done()
			}
			seen := false
			for _, r := range s.reads {
				if r.has[x] {
					seen = true
					break
				}
			}
			known := e.add.Done() || seen
			if e.add.Done() && !seen {
				d.NeverRead++
			}
			lost, resurrected, stale := false, false, false
			for _, r := range s.reads {
				where := fmt.Sprintf("%s on node %s (op %d)", r.p.Invoke.F, completeNode(r.p), r.p.Complete.Index)
				if r.final && known && !removeTried && !r.has[x] && !lost {
					lost = true
					probs.add(fmt.Sprintf("lost: key %q element %q (add op %d) missing from %s", k, x, e.add.Invoke.Index, where))
				}
				if r.final && removeOK && r.has[x] && !resurrected {
					resurrected = true
					probs.add(fmt.Sprintf("resurrected: key %q element %q removed ok yet in %s", k, x, where))
				}
				if e.add.Done() && !r.has[x] && !stale &&
					completeNode(r.p) == completeNode(e.add) &&
					r.p.Invoke.Index > e.add.Complete.Index &&
					(firstRemove < 0 || r.p.Complete.Index < firstRemove) {
					stale = true
					probs.add(fmt.Sprintf("stale: key %q element %q added ok on node %s (op %d) missing from later %s", k, x, completeNode(e.add), e.add.Complete.Index, where))
				}
			}
			if lost {
				d.Lost++
			}
			if resurrected {
				d.Resurrected++
			}
			if stale {
				d.Stale++
			}
			if lost || resurrected || stale {
				verdict = Invalid
			}
			// Stable visibility: the read after the last one lacking x.
			if !e.add.Done() || len(e.removes) > 0 {
				continue
			}
			from := 0
			for i, r := range s.reads {
				if !r.has[x] {
					from = i + 1
				}
			}
			if from == len(s.reads) {
				d.NeverStable++
				continue
			}
			ns := max(s.reads[from].p.Invoke.Time-e.add.Complete.Time, 0)
			latencies = append(latencies, float64(ns)/1e6)
		}
	}
	sort.Float64s(latencies)
	d.Stable = len(latencies)
	d.StableMedian = percentile(latencies, 50)
	d.StableP95 = percentile(latencies, 95)
	if len(latencies) > 0 {
		d.StableMax = latencies[len(latencies)-1]
	}
	if d.FinalReads == 0 {
		verdict = Combine(verdict, Unknown)
		probs.add("no ok final read")
	}

	var sum strings.Builder
	fmt.Fprintf(&sum, "%d adds, %d lost, %d stale, %d resurrected, %d never read", d.Adds, d.Lost, d.Stale, d.Resurrected, d.NeverRead)
	if d.Unexpected > 0 {
		fmt.Fprintf(&sum, ", %d unexpected", d.Unexpected)
	}
	if d.Stable > 0 {
		fmt.Fprintf(&sum, "; stable after median %.0f ms", d.StableMedian)
	}
	if d.NeverStable > 0 {
		fmt.Fprintf(&sum, "; %d never stable", d.NeverStable)
	}
	return Result{
		Checker:  name,
		Valid:    verdict,
		Summary:  sum.String(),
		Problems: probs.list(),
		Details:  details(d),
	}
}
