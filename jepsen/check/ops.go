package check

import (
	"fmt"
	"math"
	"sort"

	"github.com/statemesh/statemesh/jepsen/history"
)

// pairsOf returns the history's client operations whose f is one of fs,
// in invoke order.
func pairsOf(ops []history.Op, fs ...string) ([]history.Pair, error) {
	all, err := history.Pairs(ops)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, f := range fs {
		want[f] = true
	}
	var out []history.Pair
	for _, p := range all {
		if want[p.Invoke.F] {
			out = append(out, p)
		}
	}
	return out, nil
}

// completeNode is the node that served an operation: the completion's,
// else the invoke's.
func completeNode(p history.Pair) string {
	if p.Complete.Node != "" {
		return p.Complete.Node
	}
	return p.Invoke.Node
}

// malformed is the verdict on a history a checker cannot read.
func malformed(checker string, err error) Result {
	return Result{
		Checker:  checker,
		Valid:    Invalid,
		Summary:  "malformed history",
		Problems: []string{err.Error()},
	}
}

// decodeInvoke decodes the invoke's value, which every workload sets.
func decodeInvoke(p history.Pair, v any) error {
	return p.Invoke.Decode(v)
}

// decodeComplete decodes an ok completion's value.
func decodeComplete(p history.Pair, v any) error {
	if err := p.Complete.Decode(v); err != nil {
		return fmt.Errorf("completion of op %d: %w", p.Invoke.Index, err)
	}
	return nil
}

// percentile is the nearest-rank p-th percentile (0 < p <= 100) of sorted
// values (0 when there are none).
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
