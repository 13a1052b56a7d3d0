package check

// The values workloads record in history entries (history.Op.Value).

// Counter workload (f "add", "read", "final-read"): one PN-counter per key
// of the counter example.
type CounterAdd struct {
	Key         string `json:"key"`
	Delta       int64  `json:"delta"`
	Consistency string `json:"consistency,omitempty"`
}

// CounterRead is the invoke (Value unset) and the completion of "read"
// and "final-read".
type CounterRead struct {
	Key   string `json:"key"`
	Value *int64 `json:"value,omitempty"`
}

// Set workload (f "add", "remove", "read", "final-read") on the sets
// example's ORSets. Each element is added at most once; a remove is sent
// only after its add completed ok, to the node that served the add.
type SetOp struct {
	Key     string `json:"key"`
	Element string `json:"element"`
}

// SetRead is the invoke (Elements nil) and the completion of "read" and
// "final-read".
type SetRead struct {
	Key      string   `json:"key"`
	Elements []string `json:"elements"`
}

// has returns the read's elements as a set.
func (r SetRead) has() map[string]bool {
	m := make(map[string]bool, len(r.Elements))
	for _, x := range r.Elements {
		m[x] = true
	}
	return m
}

// Register workload (f "read", "write", "cas") on the register example.
// Write: Value. CAS: Expected and Value. Read completion: Value and
// Version. A cas that completes "fail" certainly did not apply (the
// register did not hold Expected).
type RegisterOp struct {
	Key      string `json:"key"`
	Value    string `json:"value"`
	Expected string `json:"expected,omitempty"`
	Version  int64  `json:"version,omitempty"`
}
