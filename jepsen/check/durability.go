package check

import (
	"fmt"
	"sort"

	"github.com/statemesh/statemesh/jepsen/history"
)

// DurabilityDetails are Durability's figures.
type DurabilityDetails struct {
	AddsOK   int `json:"adds_ok"`
	WritesOK int `json:"writes_ok"`
	// SetNodes and RegisterNodes list, per key, the nodes whose final
	// read completed ok.
	SetNodes      map[string][]string `json:"set_nodes"`
	RegisterNodes map[string][]string `json:"register_nodes"`
	Lost          int                 `json:"lost"`
	Unexpected    int                 `json:"unexpected"`
}

// Durability checks that acknowledged writes survive every node being
// killed and restarted. Before the restarts: f "add" (SetOp, sync-mode
// set adds) and "write" (RegisterOp, each key written at most once with
// a unique value). After: "final-read" (SetRead) and
// "final-read-register" (RegisterOp; ok carries Value) on every node.
//
// Every ok add must be in every ok final read of its key, and every ok
// write's value must be what every ok final-read-register of its key
// returns (lost, invalid). A final read holding an element never added,
// or a register value no write (ok or indeterminate) wrote, is
// unexpected (invalid); "" is allowed for a key whose write was not
// acknowledged. No ok final read at all, or an acknowledged key with
// none, is unknown.
func Durability(ops []history.Op) Result {
	const name = "durability"
	pairs, err := pairsOf(ops, "add", "write", "final-read", "final-read-register")
	if err != nil {
		return malformed(name, err)
	}
	added := map[string]map[string]history.Pair{} // key -> element -> add (not failed)
	written := map[string]map[string]bool{}       // key -> values of writes not failed
	okWrite := map[string]string{}                // key -> acknowledged value
	type setRead struct {
		node string
		op   int
		has  map[string]bool
	}
	type regRead struct {
		node, value string
		op          int
	}
	setReads := map[string][]setRead{}
	regReads := map[string][]regRead{}
	d := DurabilityDetails{SetNodes: map[string][]string{}, RegisterNodes: map[string][]string{}}
	for _, p := range pairs {
		switch p.Invoke.F {
		case "add":
			var o SetOp
			if err := decodeInvoke(p, &o); err != nil {
				return malformed(name, err)
			}
			if p.Failed() {
				continue
			}
			if added[o.Key] == nil {
				added[o.Key] = map[string]history.Pair{}
			}
			added[o.Key][o.Element] = p
			if p.Done() {
				d.AddsOK++
			}
		case "write":
			var o RegisterOp
			if err := decodeInvoke(p, &o); err != nil {
				return malformed(name, err)
			}
			if p.Failed() {
				continue
			}
			if written[o.Key] == nil {
				written[o.Key] = map[string]bool{}
			}
			written[o.Key][o.Value] = true
			if p.Done() {
				if prev, ok := okWrite[o.Key]; ok {
					return malformed(name, fmt.Errorf("op %d writes key %q again (%q after %q)", p.Invoke.Index, o.Key, o.Value, prev))
				}
				okWrite[o.Key] = o.Value
				d.WritesOK++
			}
		case "final-read":
			if !p.Done() {
				continue
			}
			var r SetRead
			if err := decodeComplete(p, &r); err != nil {
				return malformed(name, err)
			}
			sr := setRead{node: completeNode(p), op: p.Complete.Index, has: r.has()}
			setReads[r.Key] = append(setReads[r.Key], sr)
			d.SetNodes[r.Key] = append(d.SetNodes[r.Key], sr.node)
		case "final-read-register":
			if !p.Done() {
				continue
			}
			var r RegisterOp
			if err := decodeComplete(p, &r); err != nil {
				return malformed(name, err)
			}
			rr := regRead{node: completeNode(p), value: r.Value, op: p.Complete.Index}
			regReads[r.Key] = append(regReads[r.Key], rr)
			d.RegisterNodes[r.Key] = append(d.RegisterNodes[r.Key], rr.node)
		}
	}

	var probs problems
	verdict := Valid
	if len(setReads) == 0 && len(regReads) == 0 {
		verdict = Unknown
		probs.add("no ok final read")
	}
	// Sets.
	for _, k := range sortedKeys(added) {
		acked := 0
		for _, x := range sortedKeys(added[k]) {
			if !added[k][x].Done() {
				continue
			}
			acked++
			for _, r := range setReads[k] {
				if !r.has[x] {
					verdict = Invalid
					d.Lost++
					probs.add(fmt.Sprintf("lost: set key %q element %q (add op %d) missing from final read on node %s (op %d)", k, x, added[k][x].Invoke.Index, r.node, r.op))
				}
			}
		}
		if acked > 0 && len(setReads[k]) == 0 {
			verdict = Combine(verdict, Unknown)
			probs.add(fmt.Sprintf("set key %q: %d acknowledged adds but no ok final read", k, acked))
		}
	}
	for _, k := range sortedKeys(setReads) {
		for _, r := range setReads[k] {
			for _, x := range sortedKeys(r.has) {
				if _, ok := added[k][x]; !ok {
					verdict = Invalid
					d.Unexpected++
					probs.add(fmt.Sprintf("unexpected: set key %q element %q, never added, in final read on node %s (op %d)", k, x, r.node, r.op))
				}
			}
		}
	}
	// Registers.
	for _, k := range sortedKeys(okWrite) {
		if len(regReads[k]) == 0 {
			verdict = Combine(verdict, Unknown)
			probs.add(fmt.Sprintf("register key %q: acknowledged write but no ok final read", k))
		}
	}
	for _, k := range sortedKeys(regReads) {
		want, acked := okWrite[k]
		for _, r := range regReads[k] {
			switch {
			case acked && r.value != want:
				verdict = Invalid
				d.Lost++
				probs.add(fmt.Sprintf("lost: register key %q wrote %q, final read on node %s (op %d) returned %q", k, want, r.node, r.op, r.value))
			case !acked && r.value != "" && !written[k][r.value]:
				verdict = Invalid
				d.Unexpected++
				probs.add(fmt.Sprintf("unexpected: register key %q final read on node %s (op %d) returned %q, never written", k, r.node, r.op, r.value))
			}
		}
	}
	for _, m := range []map[string][]string{d.SetNodes, d.RegisterNodes} {
		for _, nodes := range m {
			sort.Strings(nodes)
		}
	}
	finals := 0
	for _, rs := range setReads {
		finals += len(rs)
	}
	for _, rs := range regReads {
		finals += len(rs)
	}
	return Result{
		Checker: name,
		Valid:   verdict,
		Summary: fmt.Sprintf("%d acknowledged adds, %d acknowledged writes, %d final reads: %d lost, %d unexpected",
			d.AddsOK, d.WritesOK, finals, d.Lost, d.Unexpected),
		Problems: probs.list(),
		Details:  details(d),
	}
}
