package check

import (
	"testing"

	"github.com/statemesh/statemesh/jepsen/history"
)

func TestDurability(t *testing.T) {
	add := func(e string) SetOp { return SetOp{Key: "s", Element: e} }
	w := func(k, v string) RegisterOp { return RegisterOp{Key: k, Value: v} }
	fr := SetRead{Key: "s"}
	els := func(e ...string) SetRead { return SetRead{Key: "s", Elements: append([]string{}, e...)} }
	frr := func(k string) RegisterOp { return RegisterOp{Key: k} }
	ok, fail, info := history.OK, history.Fail, history.Info
	// finals reads everything back on n1 and n2 with the given results.
	finals := func(h *hist, n1, n2 SetRead, r1, r2 string) {
		h.op(0, "final-read", "n1", ok, fr, n1)
		h.op(1, "final-read", "n2", ok, fr, n2)
		h.op(0, "final-read-register", "n1", ok, frr("r"), w("r", r1))
		h.op(1, "final-read-register", "n2", ok, frr("r"), w("r", r2))
	}
	runCases(t, Durability, []checkCase{
		{"all survive", func(h *hist) {
			h.op(0, "add", "n1", ok, add("x"), nil)
			h.op(1, "add", "n2", ok, add("y"), nil)
			h.op(0, "write", "n1", ok, w("r", "v1"), nil)
			finals(h, els("x", "y"), els("y", "x"), "v1", "v1")
		}, Valid, nil},
		{"set add lost on one node", func(h *hist) {
			h.op(0, "add", "n1", ok, add("x"), nil)
			h.op(1, "add", "n2", ok, add("y"), nil)
			h.op(0, "write", "n1", ok, w("r", "v1"), nil)
			finals(h, els("x", "y"), els("y"), "v1", "v1")
		}, Invalid, []string{`lost: set key "s" element "x" (add op 0) missing from final read on node n2`}},
		{"register write lost on one node", func(h *hist) {
			h.op(0, "write", "n1", ok, w("r", "v1"), nil)
			finals(h, els(), els(), "v1", "")
		}, Invalid, []string{`lost: register key "r" wrote "v1", final read on node n2`}},
		{"indeterminate and failed ops may be absent", func(h *hist) {
			h.op(0, "add", "n1", info, add("x"), nil)
			h.op(0, "add", "n1", fail, add("y"), nil)
			h.op(5, "add", "n1", "", add("z"), nil)
			h.op(1, "write", "n2", info, w("r", "v1"), nil)
			finals(h, els("x"), els(), "v1", "")
		}, Valid, nil},
		{"failed add appears", func(h *hist) {
			h.op(0, "add", "n1", fail, add("y"), nil)
			finals(h, els("y"), els(), "", "")
		}, Invalid, []string{`unexpected: set key "s" element "y", never added, in final read on node n1`}},
		{"register value never written", func(h *hist) {
			h.op(1, "write", "n2", fail, w("r", "v1"), nil)
			finals(h, els(), els(), "", "v1")
		}, Invalid, []string{`unexpected: register key "r" final read on node n2`}},
		{"no final reads", func(h *hist) {
			h.op(0, "add", "n1", ok, add("x"), nil)
			h.op(0, "final-read", "n1", info, fr, nil)
		}, Unknown, []string{"no ok final read"}},
		{"register key without final read", func(h *hist) {
			h.op(0, "add", "n1", ok, add("x"), nil)
			h.op(0, "write", "n1", ok, w("q", "v"), nil)
			h.op(0, "final-read", "n1", ok, fr, els("x"))
		}, Unknown, []string{`register key "q": acknowledged write but no ok final read`}},
		{"set key without final read", func(h *hist) {
			h.op(0, "add", "n1", ok, add("x"), nil)
			h.op(0, "write", "n1", ok, w("r", "v"), nil)
			h.op(0, "final-read-register", "n1", ok, frr("r"), w("r", "v"))
		}, Unknown, []string{`set key "s": 1 acknowledged adds but no ok final read`}},
		{"key written twice is malformed", func(h *hist) {
			h.op(0, "write", "n1", ok, w("r", "a"), nil)
			h.op(0, "write", "n1", ok, w("r", "b"), nil)
		}, Invalid, []string{`writes key "r" again`}},
	})
}

func TestDurabilityDetails(t *testing.T) {
	h := newHist()
	h.op(0, "add", "n1", history.OK, SetOp{Key: "s", Element: "x"}, nil)
	h.op(0, "write", "n1", history.OK, RegisterOp{Key: "r", Value: "v"}, nil)
	h.op(1, "final-read", "n2", history.OK, SetRead{Key: "s"}, SetRead{Key: "s", Elements: []string{"x"}})
	h.op(0, "final-read", "n1", history.OK, SetRead{Key: "s"}, SetRead{Key: "s", Elements: []string{"x"}})
	h.op(0, "final-read-register", "n1", history.OK, RegisterOp{Key: "r"}, RegisterOp{Key: "r", Value: "v"})
	r := Durability(h.ops())
	wantResult(t, r, Valid)
	d := decodeDetails[DurabilityDetails](t, r)
	if d.AddsOK != 1 || d.WritesOK != 1 || len(d.SetNodes["s"]) != 2 || d.SetNodes["s"][0] != "n1" || len(d.RegisterNodes["r"]) != 1 {
		t.Errorf("details %+v", d)
	}
	if want := "1 acknowledged adds, 1 acknowledged writes, 3 final reads: 0 lost, 0 unexpected"; r.Summary != want {
		t.Errorf("summary %q, want %q", r.Summary, want)
	}
}
