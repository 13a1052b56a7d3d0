package check

import (
	"fmt"
	"io"
	"math"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/statemesh/statemesh/jepsen/history"
)

// RegisterDetails are Register's figures.
type RegisterDetails struct {
	// Ops counts the operations checked per key (failed cas and reads
	// that did not complete ok are dropped before checking).
	Ops map[string]int `json:"ops"`
	// Keys lists the keys in the order of porcupine's partitions.
	Keys []string `json:"keys"`
	// Result is porcupine's verdict: "Ok", "Illegal" or "Unknown".
	Result string `json:"result"`
	// Illegal lists the keys no linearization was found for.
	Illegal []string `json:"illegal,omitempty"`
}

// regInput is a register operation's input as porcupine sees it.
type regInput struct {
	Key      string
	F        string // "read", "write", "cas"
	Value    string // written (write, cas)
	Expected string // cas
}

// regOutput is what the client learnt.
type regOutput struct {
	Unknown bool   // info or never completed: may or may not have applied
	Value   string // read: the value returned
}

// registerModel is a string register per key (porcupine partitions by
// key, so a state is one key's value); it starts at "".
func registerModel(keys []string) porcupine.Model {
	return porcupine.Model{
		Partition: func(ops []porcupine.Operation) [][]porcupine.Operation {
			idx := make(map[string]int, len(keys))
			for i, k := range keys {
				idx[k] = i
			}
			out := make([][]porcupine.Operation, len(keys))
			for _, o := range ops {
				i := idx[o.Input.(regInput).Key]
				out[i] = append(out[i], o)
			}
			return out
		},
		Init: func() any { return "" },
		Step: func(state, input, output any) (bool, any) {
			st, in, out := state.(string), input.(regInput), output.(regOutput)
			switch in.F {
			case "write":
				return true, in.Value
			case "cas":
				if st == in.Expected {
					return true, in.Value
				}
				// An indeterminate cas may have failed; an ok one cannot.
				return out.Unknown, st
			default: // read
				return out.Value == st, st
			}
		},
		DescribeOperation: func(input, output any) string {
			in, out := input.(regInput), output.(regOutput)
			res := "ok"
			if out.Unknown {
				res = "unknown"
			}
			switch in.F {
			case "write":
				return fmt.Sprintf("write(%q) -> %s", in.Value, res)
			case "cas":
				return fmt.Sprintf("cas(%q, %q) -> %s", in.Expected, in.Value, res)
			default:
				return fmt.Sprintf("read() -> %q", out.Value)
			}
		},
		DescribeState: func(state any) string { return fmt.Sprintf("%q", state) },
	}
}

// Register checks the register workload (f "read", "write", "cas") for
// linearizability with porcupine, each key a register starting at "".
//
// A failed cas certainly did not apply and a read that did not complete
// ok has no effect: both are dropped. A write or cas that completed info
// or never completed may have applied at any time after its invocation:
// it is kept with a return time after every other operation and output
// unknown (a cas then applies if the register held Expected, else is a
// no-op). A read that returns the register's version is not checked on
// it.
//
// timeout bounds porcupine (0: none); running out of it is Unknown,
// never Valid. If htmlOut is not nil, porcupine's visualisation is
// written to it.
func Register(ops []history.Op, timeout time.Duration, htmlOut io.Writer) Result {
	const name = "register"
	pairs, err := pairsOf(ops, "read", "write", "cas")
	if err != nil {
		return malformed(name, err)
	}
	var pops []porcupine.Operation
	d := RegisterDetails{Ops: map[string]int{}}
	clients := map[int]int{} // process -> dense client id for the visualisation
	for _, p := range pairs {
		var in RegisterOp
		if err := decodeInvoke(p, &in); err != nil {
			return malformed(name, err)
		}
		ri := regInput{Key: in.Key, F: p.Invoke.F, Value: in.Value, Expected: in.Expected}
		var out regOutput
		ret := p.Complete.Time
		switch {
		case p.Done() && p.Invoke.F == "read":
			var r RegisterOp
			if err := decodeComplete(p, &r); err != nil {
				return malformed(name, err)
			}
			out.Value = r.Value
		case p.Done():
		case p.Invoke.F == "read", p.Failed():
			// No effect: a read that did not return, or a write or cas
			// that certainly did not apply.
			continue
		default:
			out.Unknown = true
			ret = math.MaxInt64
		}
		if _, ok := d.Ops[in.Key]; !ok {
			d.Keys = append(d.Keys, in.Key)
		}
		d.Ops[in.Key]++
		c, ok := clients[p.Invoke.Process]
		if !ok {
			c = len(clients)
			clients[p.Invoke.Process] = c
		}
		pops = append(pops, porcupine.Operation{ClientId: c, Input: ri, Call: p.Invoke.Time, Output: out, Return: ret})
	}
	if len(pops) == 0 {
		return Result{Checker: name, Valid: Unknown, Summary: "no register operations to check",
			Problems: []string{history.ErrEmpty.Error()}, Details: details(d)}
	}
	model := registerModel(d.Keys)
	res, info := porcupine.CheckOperationsVerbose(model, pops, timeout)
	d.Result = string(res)

	var probs problems
	verdict := Valid
	switch res {
	case porcupine.Ok:
	case porcupine.Illegal:
		verdict = Invalid
		// A partition with a complete linearization passed; the others
		// are the culprits.
		for i, partials := range info.PartialLinearizationsOperations() {
			longest := 0
			for _, l := range partials {
				longest = max(longest, len(l))
			}
			if longest < d.Ops[d.Keys[i]] {
				d.Illegal = append(d.Illegal, d.Keys[i])
				probs.add(fmt.Sprintf("key %q: not linearizable (longest linearizable prefix %d of %d ops)", d.Keys[i], longest, d.Ops[d.Keys[i]]))
			}
		}
		if len(d.Illegal) == 0 {
			probs.add("not linearizable")
		}
	default:
		verdict = Unknown
		probs.add(fmt.Sprintf("checker timed out after %v", timeout))
	}
	if htmlOut != nil {
		if err := porcupine.Visualize(model, info, htmlOut); err != nil {
			probs.add(fmt.Sprintf("visualisation: %v", err))
		}
	}
	return Result{
		Checker:  name,
		Valid:    verdict,
		Summary:  fmt.Sprintf("%d ops on %d keys: %s", len(pops), len(d.Keys), res),
		Problems: probs.list(),
		Details:  details(d),
	}
}
