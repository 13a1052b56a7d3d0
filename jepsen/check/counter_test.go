package check

import (
	"testing"

	"github.com/statemesh/statemesh/jepsen/history"
)

func TestCounter(t *testing.T) {
	add := func(k string, d int64) CounterAdd { return CounterAdd{Key: k, Delta: d} }
	rd := func(k string) CounterRead { return CounterRead{Key: k} }
	val := func(k string, v int64) CounterRead { return CounterRead{Key: k, Value: i64(v)} }
	ok, fail, info := history.OK, history.Fail, history.Info
	runCases(t, Counter, []checkCase{
		{"ok adds, final reads agree", func(h *hist) {
			h.op(0, "add", "n1", ok, add("a", 3), nil)
			h.op(1, "add", "n2", ok, add("a", -1), nil)
			h.op(0, "read", "n1", ok, rd("a"), val("a", 2))
			h.op(0, "final-read", "n1", ok, rd("a"), val("a", 2))
			h.op(1, "final-read", "n2", ok, rd("a"), val("a", 2))
		}, Valid, nil},
		{"final read short of ok adds", func(h *hist) {
			h.op(0, "add", "n1", ok, add("a", 3), nil)
			h.op(1, "final-read", "n2", ok, rd("a"), val("a", 2))
		}, Invalid, []string{`final-read on node n2 of key "a" returned 2, outside [3, 3]`}},
		{"failed add counted", func(h *hist) {
			h.op(0, "add", "n1", ok, add("a", 3), nil)
			h.op(0, "add", "n1", fail, add("a", 4), nil)
			h.op(1, "final-read", "n2", ok, rd("a"), val("a", 7))
		}, Invalid, []string{"returned 7, outside [3, 3]"}},
		{"indeterminate adds widen bounds", func(h *hist) {
			h.op(0, "add", "n1", ok, add("a", 3), nil)
			h.op(1, "add", "n1", info, add("a", 4), nil)
			h.op(2, "add", "n1", info, add("a", -2), nil)
			h.op(3, "add", "n1", "", add("a", 5), nil) // never completed
			h.op(4, "final-read", "n1", ok, rd("a"), val("a", 1))
			h.op(5, "final-read", "n2", ok, rd("a"), val("a", 12))
			h.op(6, "final-read", "n3", ok, rd("a"), val("a", 7))
		}, Valid, nil},
		{"above indeterminate bound", func(h *hist) {
			h.op(0, "add", "n1", ok, add("a", 3), nil)
			h.op(1, "add", "n1", info, add("a", 4), nil)
			h.op(4, "final-read", "n1", ok, rd("a"), val("a", 8))
		}, Invalid, []string{"returned 8, outside [3, 7]"}},
		{"below indeterminate bound", func(h *hist) {
			h.op(0, "add", "n1", ok, add("a", 3), nil)
			h.op(1, "add", "n1", info, add("a", -4), nil)
			h.op(4, "final-read", "n1", ok, rd("a"), val("a", -2))
		}, Invalid, []string{"returned -2, outside [-1, 3]"}},
		{"keys independent", func(h *hist) {
			h.op(0, "add", "n1", ok, add("a", 3), nil)
			h.op(0, "add", "n1", ok, add("b", 5), nil)
			h.op(0, "final-read", "n1", ok, rd("a"), val("a", 3))
			h.op(0, "final-read", "n1", ok, rd("b"), val("b", 3))
		}, Invalid, []string{`key "b"`, "outside [5, 5]"}},
		{"read may miss anything, ok or not", func(h *hist) {
			h.op(0, "add", "n1", ok, add("a", 3), nil)
			h.op(1, "add", "n1", ok, add("a", -2), nil)
			h.op(2, "read", "n2", ok, rd("a"), val("a", -2))
			h.op(2, "read", "n2", ok, rd("a"), val("a", 0))
			h.op(0, "final-read", "n1", ok, rd("a"), val("a", 1))
		}, Valid, nil},
		{"read reflects concurrent add", func(h *hist) {
			h.invoke(2, "read", "n2", rd("a"))
			h.invoke(0, "add", "n1", add("a", 3))
			h.complete(ok, 2, "read", "n2", val("a", 3))
			h.complete(ok, 0, "add", "n1", nil)
			h.op(0, "final-read", "n1", ok, rd("a"), val("a", 3))
		}, Valid, nil},
		{"read from the future", func(h *hist) {
			h.op(2, "read", "n2", ok, rd("a"), val("a", 3))
			h.op(0, "add", "n1", ok, add("a", 3), nil)
			h.op(0, "final-read", "n1", ok, rd("a"), val("a", 3))
		}, Invalid, []string{"read on node n2", "returned 3, outside [0, 0]"}},
		{"read reflects a failed add", func(h *hist) {
			h.op(0, "add", "n1", fail, add("a", 3), nil)
			h.op(2, "read", "n2", ok, rd("a"), val("a", 3))
			h.op(0, "final-read", "n1", ok, rd("a"), val("a", 0))
		}, Invalid, []string{"outside [0, 0]"}},
		{"no final read", func(h *hist) {
			h.op(0, "add", "n1", ok, add("a", 3), nil)
			h.op(0, "final-read", "n1", info, rd("a"), nil)
		}, Unknown, []string{`key "a": adds but no ok final read`}},
		{"invalid beats unknown", func(h *hist) {
			h.op(0, "add", "n1", ok, add("a", 3), nil)
			h.op(0, "add", "n1", ok, add("b", 3), nil)
			h.op(0, "final-read", "n1", ok, rd("b"), val("b", 4))
		}, Invalid, []string{`key "a": adds but no ok final read`, "outside [3, 3]"}},
		{"ok read without value is malformed", func(h *hist) {
			h.op(0, "final-read", "n1", ok, rd("a"), rd("a"))
		}, Invalid, []string{"has no value"}},
	})
}

func TestCounterDetails(t *testing.T) {
	h := newHist()
	h.op(0, "add", "n1", history.OK, CounterAdd{Key: "a", Delta: 3}, nil)
	h.op(1, "add", "n1", history.Info, CounterAdd{Key: "a", Delta: -1}, nil)
	h.op(0, "read", "n1", history.OK, CounterRead{Key: "a"}, CounterRead{Key: "a", Value: i64(3)})
	h.op(0, "final-read", "n1", history.OK, CounterRead{Key: "a"}, CounterRead{Key: "a", Value: i64(2)})
	h.op(1, "final-read", "n2", history.OK, CounterRead{Key: "a"}, CounterRead{Key: "a", Value: i64(3)})
	r := Counter(h.ops())
	wantResult(t, r, Valid)
	d := decodeDetails[map[string]CounterKey](t, r)["a"]
	if d.OKSum != 3 || d.Lower != 2 || d.Upper != 3 || d.ReadsChecked != 3 || d.Final["n1"] != 2 || d.Final["n2"] != 3 {
		t.Errorf("details %+v", d)
	}
}

func TestCounterMalformed(t *testing.T) {
	ops := []history.Op{{Index: 0, Type: history.OK, Process: 0, F: "add"}}
	wantResult(t, Counter(ops), Invalid, "completes nothing")
}
