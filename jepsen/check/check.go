// Package check holds the checkers of the Jepsen-style harness: pure
// functions from a history (jepsen/history) to a verdict. They never read
// a clock or the network, so a stored history can be checked again.
//
// The values each workload records (the JSON in history.Op.Value) are the
// types in values.go; a checker that meets a value of another shape
// reports the history as malformed (invalid), never as a pass.
package check

import "encoding/json"

// Validity is a checker's verdict.
type Validity string

// Verdicts. Unknown means the checker could not decide (it ran out of
// time, or the history held too little to judge): never a pass.
const (
	Valid   Validity = "valid"
	Invalid Validity = "invalid"
	Unknown Validity = "unknown"
)

// Combine is the verdict of several checks: invalid if any is, else
// unknown if any is, else valid.
func Combine(vs ...Validity) Validity {
	out := Valid
	for _, v := range vs {
		switch v {
		case Invalid:
			return Invalid
		case Unknown:
			out = Unknown
		case Valid:
		default:
			out = Unknown
		}
	}
	return out
}

// ExitCode is the process exit code of a verdict: 0 valid, 1 invalid, 2
// unknown.
func (v Validity) ExitCode() int {
	switch v {
	case Valid:
		return 0
	case Invalid:
		return 1
	default:
		return 2
	}
}

// Result is one checker's verdict and what it found.
type Result struct {
	Checker string   `json:"checker"`
	Valid   Validity `json:"valid"`
	// Summary is one line for people ("412 adds, 0 lost, 3 stale reads").
	Summary string `json:"summary"`
	// Problems lists what made the verdict invalid or unknown, one line
	// each, the first ones only (at most MaxProblems).
	Problems []string `json:"problems,omitempty"`
	// Details are the checker's own figures (counts, latencies, bounds).
	Details json.RawMessage `json:"details,omitempty"`
}

// MaxProblems bounds Result.Problems.
const MaxProblems = 50

// problems collects problem lines up to MaxProblems, counting the rest.
type problems struct {
	lines   []string
	dropped int
}

func (p *problems) add(s string) {
	if len(p.lines) < MaxProblems {
		p.lines = append(p.lines, s)
		return
	}
	p.dropped++
}

func (p *problems) list() []string {
	if p.dropped == 0 {
		return p.lines
	}
	return append(append([]string(nil), p.lines...), "... and more")
}

func details(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return b
}
