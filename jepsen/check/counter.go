package check

import (
	"fmt"
	"sort"

	"github.com/statemesh/statemesh/jepsen/history"
)

// CounterKey is Counter's figures for one key.
type CounterKey struct {
	// OKSum is the sum of the deltas of adds that completed ok.
	OKSum int64 `json:"ok_sum"`
	// Lower and Upper bound what a final read may return: OKSum plus the
	// negative (resp. positive) deltas of indeterminate adds.
	Lower int64 `json:"lower"`
	Upper int64 `json:"upper"`
	// Final is the value of the last ok final read on each node.
	Final map[string]int64 `json:"final,omitempty"`
	// ReadsChecked counts ok reads and final reads checked.
	ReadsChecked int `json:"reads_checked"`
}

// Counter checks the counter workload (f "add", "read", "final-read"),
// key by key.
//
// A final read must lie in [okSum + negIndet, okSum + posIndet], where
// okSum sums the deltas of adds that completed ok and negIndet/posIndet
// sum the negative/positive deltas of indeterminate adds (info, or never
// completed); failed adds count for nothing. An intermediate read must
// lie between the sums of the negative and of the positive deltas of the
// adds (not failed) invoked before the read completed: it may reflect any
// subset of them, but nothing invoked later. A key that had adds but no
// ok final read makes the verdict unknown.
func Counter(ops []history.Op) Result {
	const name = "counter"
	pairs, err := pairsOf(ops, "add", "read", "final-read")
	if err != nil {
		return malformed(name, err)
	}
	type add struct {
		delta     int64
		invokeIdx int
	}
	type keyState struct {
		adds               []add // not failed, in invoke order
		okSum, negI, posI  int64
		hadAdds, finalRead bool
		d                  CounterKey
	}
	keys := map[string]*keyState{}
	get := func(k string) *keyState {
		s := keys[k]
		if s == nil {
			s = &keyState{d: CounterKey{Final: map[string]int64{}}}
			keys[k] = s
		}
		return s
	}
	type read struct {
		p     history.Pair
		key   string
		value int64
	}
	var reads []read
	nAdds, nOK := 0, 0
	for _, p := range pairs {
		switch p.Invoke.F {
		case "add":
			var a CounterAdd
			if err := decodeInvoke(p, &a); err != nil {
				return malformed(name, err)
			}
			s := get(a.Key)
			s.hadAdds = true
			nAdds++
			switch {
			case p.Failed():
				continue
			case p.Done():
				nOK++
				s.okSum += a.Delta
			case a.Delta < 0:
				s.negI += a.Delta
			default:
				s.posI += a.Delta
			}
			s.adds = append(s.adds, add{a.Delta, p.Invoke.Index})
		default:
			if !p.Done() {
				continue
			}
			var r CounterRead
			if err := decodeComplete(p, &r); err != nil {
				return malformed(name, err)
			}
			if r.Value == nil {
				return malformed(name, fmt.Errorf("op %d: ok %s of key %q has no value", p.Complete.Index, p.Invoke.F, r.Key))
			}
			reads = append(reads, read{p, r.Key, *r.Value})
		}
	}

	var probs problems
	verdict := Valid
	badReads := 0
	for _, r := range reads {
		s := get(r.key)
		s.d.ReadsChecked++
		var lo, hi int64
		node := completeNode(r.p)
		if r.p.Invoke.F == "final-read" {
			s.finalRead = true
			s.d.Final[node] = r.value
			lo, hi = s.okSum+s.negI, s.okSum+s.posI
		} else {
			// Adds are in invoke order: sum those invoked before the read
			// completed.
			end := sort.Search(len(s.adds), func(i int) bool { return s.adds[i].invokeIdx > r.p.Complete.Index })
			for _, a := range s.adds[:end] {
				if a.delta < 0 {
					lo += a.delta
				} else {
					hi += a.delta
				}
			}
		}
		if r.value < lo || r.value > hi {
			verdict = Invalid
			badReads++
			probs.add(fmt.Sprintf("%s on node %s of key %q returned %d, outside [%d, %d] (op %d)",
				r.p.Invoke.F, node, r.key, r.value, lo, hi, r.p.Complete.Index))
		}
	}

	perKey := map[string]CounterKey{}
	for _, k := range sortedKeys(keys) {
		s := keys[k]
		s.d.OKSum, s.d.Lower, s.d.Upper = s.okSum, s.okSum+s.negI, s.okSum+s.posI
		perKey[k] = s.d
		if s.hadAdds && !s.finalRead {
			verdict = Combine(verdict, Unknown)
			probs.add(fmt.Sprintf("key %q: adds but no ok final read", k))
		}
	}
	return Result{
		Checker:  name,
		Valid:    verdict,
		Summary:  fmt.Sprintf("%d keys, %d adds (%d ok), %d reads checked, %d out of bounds", len(keys), nAdds, nOK, len(reads), badReads),
		Problems: probs.list(),
		Details:  details(perKey),
	}
}
