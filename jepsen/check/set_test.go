package check

import (
	"testing"

	"github.com/statemesh/statemesh/jepsen/history"
)

func TestSet(t *testing.T) {
	so := func(e string) SetOp { return SetOp{Key: "s", Element: e} }
	rd := SetRead{Key: "s"}
	els := func(e ...string) SetRead { return SetRead{Key: "s", Elements: append([]string{}, e...)} }
	ok, fail, info := history.OK, history.Fail, history.Info
	runCases(t, Set, []checkCase{
		{"adds, remove, reads agree", func(h *hist) {
			h.op(0, "add", "n1", ok, so("x"), nil)
			h.op(1, "add", "n2", ok, so("y"), nil)
			h.op(0, "read", "n1", ok, rd, els("x"))
			h.op(1, "read", "n2", ok, rd, els("x", "y"))
			h.op(0, "remove", "n1", ok, so("x"), nil)
			h.op(0, "final-read", "n1", ok, rd, els("y"))
			h.op(1, "final-read", "n2", ok, rd, els("y"))
		}, Valid, nil},
		{"other node may not see an add yet", func(h *hist) {
			h.op(0, "add", "n1", ok, so("x"), nil)
			h.op(1, "read", "n2", ok, rd, els())
			h.op(0, "final-read", "n1", ok, rd, els("x"))
		}, Valid, nil},
		{"lost", func(h *hist) {
			h.op(0, "add", "n1", ok, so("x"), nil)
			h.op(0, "add", "n1", ok, so("y"), nil)
			h.op(0, "final-read", "n1", ok, rd, els("x", "y"))
			h.op(1, "final-read", "n2", ok, rd, els("y"))
		}, Invalid, []string{`lost: key "s" element "x"`, "final-read on node n2"}},
		{"indeterminate add seen then lost", func(h *hist) {
			h.op(0, "add", "n1", info, so("x"), nil)
			h.op(1, "read", "n2", ok, rd, els("x"))
			h.op(1, "final-read", "n2", ok, rd, els())
		}, Invalid, []string{`lost: key "s" element "x"`}},
		{"indeterminate add never seen may be absent", func(h *hist) {
			h.op(0, "add", "n1", info, so("x"), nil)
			h.op(0, "add", "n1", "", so("y"), nil)
			h.op(1, "final-read", "n2", ok, rd, els("y"))
		}, Valid, nil},
		{"indeterminate remove excuses absence", func(h *hist) {
			h.op(0, "add", "n1", ok, so("x"), nil)
			h.op(0, "remove", "n1", info, so("x"), nil)
			h.op(1, "final-read", "n2", ok, rd, els())
			h.op(2, "final-read", "n3", ok, rd, els("x"))
		}, Valid, nil},
		{"failed remove does not excuse absence", func(h *hist) {
			h.op(0, "add", "n1", ok, so("x"), nil)
			h.op(0, "remove", "n1", fail, so("x"), nil)
			h.op(1, "final-read", "n2", ok, rd, els())
		}, Invalid, []string{`lost: key "s" element "x"`}},
		{"resurrected", func(h *hist) {
			h.op(0, "add", "n1", ok, so("x"), nil)
			h.op(0, "remove", "n1", ok, so("x"), nil)
			h.op(1, "final-read", "n2", ok, rd, els("x"))
		}, Invalid, []string{`resurrected: key "s" element "x"`}},
		{"stale read on the adding node", func(h *hist) {
			h.op(0, "add", "n1", ok, so("x"), nil)
			h.op(1, "read", "n1", ok, rd, els())
			h.op(1, "final-read", "n1", ok, rd, els("x"))
		}, Invalid, []string{`stale: key "s" element "x" added ok on node n1`, "read on node n1"}},
		{"stale final read", func(h *hist) {
			h.op(0, "add", "n1", ok, so("x"), nil)
			h.op(1, "final-read", "n1", ok, rd, els())
			h.op(2, "final-read", "n2", ok, rd, els("x"))
		}, Invalid, []string{"stale:", "lost:"}},
		{"read concurrent with add may miss it", func(h *hist) {
			h.invoke(0, "add", "n1", so("x"))
			h.invoke(1, "read", "n1", rd)
			h.complete(ok, 0, "add", "n1", nil)
			h.complete(ok, 1, "read", "n1", els())
			h.op(1, "final-read", "n1", ok, rd, els("x"))
		}, Valid, nil},
		{"read concurrent with remove may miss it", func(h *hist) {
			h.op(0, "add", "n1", ok, so("x"), nil)
			h.invoke(1, "read", "n1", rd)
			h.invoke(0, "remove", "n1", so("x"))
			h.complete(ok, 1, "read", "n1", els())
			h.complete(ok, 0, "remove", "n1", nil)
			h.op(1, "final-read", "n1", ok, rd, els())
		}, Valid, nil},
		{"unexpected element", func(h *hist) {
			h.op(0, "add", "n1", ok, so("x"), nil)
			h.op(1, "read", "n2", ok, rd, els("x", "z"))
			h.op(1, "final-read", "n2", ok, rd, els("x"))
		}, Invalid, []string{`unexpected: read on node n2 (op 3) of key "s" holds "z": never added`}},
		{"failed add visible", func(h *hist) {
			h.op(0, "add", "n1", fail, so("x"), nil)
			h.op(1, "final-read", "n2", ok, rd, els("x"))
		}, Invalid, []string{`holds "x": its add (op 0) failed`}},
		{"read before the add was invoked", func(h *hist) {
			h.op(1, "read", "n2", ok, rd, els("x"))
			h.op(0, "add", "n1", ok, so("x"), nil)
			h.op(1, "final-read", "n2", ok, rd, els("x"))
		}, Invalid, []string{"was invoked later"}},
		{"no final read", func(h *hist) {
			h.op(0, "add", "n1", ok, so("x"), nil)
			h.op(1, "read", "n2", ok, rd, els("x"))
			h.op(1, "final-read", "n2", info, rd, nil)
		}, Unknown, []string{"no ok final read"}},
		{"key without final read", func(h *hist) {
			h.op(0, "add", "n1", ok, SetOp{Key: "t", Element: "x"}, nil)
			h.op(1, "final-read", "n2", ok, rd, els())
		}, Unknown, []string{`key "t": adds but no ok final read`}},
		{"element added twice is malformed", func(h *hist) {
			h.op(0, "add", "n1", ok, so("x"), nil)
			h.op(0, "add", "n1", ok, so("x"), nil)
		}, Invalid, []string{"a second time"}},
	})
}

func TestSetDetails(t *testing.T) {
	so := func(e string) SetOp { return SetOp{Key: "s", Element: e} }
	rd := SetRead{Key: "s"}
	els := func(e ...string) SetRead { return SetRead{Key: "s", Elements: e} }
	ok := history.OK
	h := newHist()
	// Each entry is 1 ms after the last. x: add done at 11 ms; reads
	// invoked at 20 (lacks), 30 (has), 40 (lacks), 50 (has), 60 final
	// (has): stable from 50, 39 ms.
	h.at(9).op(0, "add", "n1", ok, so("x"), nil)
	// y: add done at 13 ms, in every read: stable from 20 ms, 7 ms.
	h.op(0, "add", "n1", ok, so("y"), nil)
	// z: added ok, never read (and never stable).
	h.op(0, "add", "n1", ok, so("z"), nil)
	// w: added and removed: not measured; read once.
	h.op(0, "add", "n1", ok, so("w"), nil)
	h.op(0, "remove", "n1", ok, so("w"), nil)
	h.at(19).op(1, "read", "n2", ok, rd, els("y", "w"))
	h.at(29).op(1, "read", "n2", ok, rd, els("x", "y"))
	h.at(39).op(2, "read", "n3", ok, rd, els("y"))
	h.at(49).op(2, "read", "n3", ok, rd, els("x", "y"))
	h.at(59).op(2, "final-read", "n3", ok, rd, els("x", "y"))
	ops := h.ops()
	r := Set(ops)
	// z is lost (missing from the final read), not stale: no read on
	// n1, the node that added it.
	wantResult(t, r, Invalid, `lost: key "s" element "z"`)
	d := decodeDetails[SetDetails](t, r)
	want := SetDetails{Adds: 4, AddsOK: 4, Removes: 1, Reads: 4, FinalReads: 1, Lost: 1, NeverRead: 1,
		Stable: 2, NeverStable: 1, StableMedian: 7, StableP95: 39, StableMax: 39}
	if d != want {
		t.Errorf("details\n got %+v\nwant %+v", d, want)
	}
	if want := "4 adds, 1 lost, 0 stale, 0 resurrected, 1 never read; stable after median 7 ms; 1 never stable"; r.Summary != want {
		t.Errorf("summary %q, want %q", r.Summary, want)
	}
}
