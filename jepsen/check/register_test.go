package check

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/statemesh/statemesh/jepsen/history"
)

func TestRegister(t *testing.T) {
	w := func(v string) RegisterOp { return RegisterOp{Key: "r", Value: v} }
	cas := func(from, to string) RegisterOp { return RegisterOp{Key: "r", Expected: from, Value: to} }
	rd := RegisterOp{Key: "r"}
	got := func(v string) RegisterOp { return RegisterOp{Key: "r", Value: v, Version: 1} }
	ok, fail, info := history.OK, history.Fail, history.Info
	runCases(t, func(ops []history.Op) Result { return Register(ops, 10*time.Second, nil) }, []checkCase{
		{"sequential", func(h *hist) {
			h.op(0, "read", "n1", ok, rd, got(""))
			h.op(0, "write", "n1", ok, w("a"), nil)
			h.op(1, "read", "n2", ok, rd, got("a"))
			h.op(1, "cas", "n2", ok, cas("a", "b"), nil)
			h.op(0, "read", "n1", ok, rd, got("b"))
		}, Valid, nil},
		{"stale read", func(h *hist) {
			h.op(0, "write", "n1", ok, w("a"), nil)
			h.op(1, "read", "n2", ok, rd, got(""))
		}, Invalid, []string{`key "r": not linearizable`}},
		{"read of a value never written", func(h *hist) {
			h.op(1, "read", "n2", ok, rd, got("zz"))
		}, Invalid, []string{`key "r"`}},
		{"concurrent read may see either", func(h *hist) {
			h.op(0, "write", "n1", ok, w("a"), nil)
			h.invoke(0, "write", "n1", w("b"))
			h.invoke(1, "read", "n2", rd)
			h.invoke(2, "read", "n3", rd)
			h.complete(ok, 1, "read", "n2", got("b"))
			h.complete(ok, 2, "read", "n3", got("a"))
			h.complete(ok, 0, "write", "n1", nil)
		}, Valid, nil},
		{"reads flip-flop", func(h *hist) {
			h.op(0, "write", "n1", ok, w("a"), nil)
			h.invoke(0, "write", "n1", w("b"))
			h.op(1, "read", "n2", ok, rd, got("b"))
			h.op(1, "read", "n2", ok, rd, got("a"))
			h.complete(ok, 0, "write", "n1", nil)
		}, Invalid, []string{`key "r"`}},
		{"ok cas from the wrong value", func(h *hist) {
			h.op(0, "write", "n1", ok, w("a"), nil)
			h.op(0, "cas", "n1", ok, cas("x", "b"), nil)
		}, Invalid, []string{`key "r"`}},
		{"failed cas dropped", func(h *hist) {
			h.op(0, "write", "n1", ok, w("a"), nil)
			h.op(0, "cas", "n1", fail, cas("a", "b"), nil)
			h.op(0, "read", "n1", ok, rd, got("a"))
		}, Valid, nil},
		{"failed cas took effect", func(h *hist) {
			h.op(0, "write", "n1", ok, w("a"), nil)
			h.op(0, "cas", "n1", fail, cas("a", "b"), nil)
			h.op(0, "read", "n1", ok, rd, got("b"))
		}, Invalid, []string{`key "r"`}},
		{"failed write took effect", func(h *hist) {
			h.op(0, "write", "n1", fail, w("a"), nil)
			h.op(0, "read", "n1", ok, rd, got("a"))
		}, Invalid, []string{`key "r"`}},
		{"failed and info reads dropped", func(h *hist) {
			h.op(0, "write", "n1", ok, w("a"), nil)
			h.op(0, "read", "n1", fail, rd, got("zz"))
			h.op(0, "read", "n1", info, rd, nil)
			h.op(0, "read", "n1", "", rd, nil)
		}, Valid, nil},
		{"info write may apply late", func(h *hist) {
			h.op(0, "write", "n1", info, w("a"), nil)
			h.op(1, "read", "n2", ok, rd, got(""))
			h.op(1, "read", "n2", ok, rd, got("a"))
		}, Valid, nil},
		{"info write may never apply", func(h *hist) {
			h.op(0, "write", "n1", info, w("a"), nil)
			h.op(1, "write", "n2", "", w("b"), nil)
			h.op(2, "read", "n3", ok, rd, got(""))
		}, Valid, nil},
		{"info write seen then unseen", func(h *hist) {
			h.op(0, "write", "n1", info, w("a"), nil)
			h.op(1, "read", "n2", ok, rd, got("a"))
			h.op(1, "read", "n2", ok, rd, got(""))
		}, Invalid, []string{`key "r"`}},
		{"info cas may apply", func(h *hist) {
			h.op(0, "write", "n1", ok, w("a"), nil)
			h.op(0, "cas", "n1", info, cas("a", "b"), nil)
			h.op(1, "read", "n2", ok, rd, got("a"))
			h.op(1, "read", "n2", ok, rd, got("b"))
		}, Valid, nil},
		{"info cas from the wrong value cannot apply", func(h *hist) {
			h.op(0, "write", "n1", ok, w("a"), nil)
			h.op(0, "cas", "n1", info, cas("x", "b"), nil)
			h.op(1, "read", "n2", ok, rd, got("b"))
		}, Invalid, []string{`key "r"`}},
		{"keys are independent registers", func(h *hist) {
			h.op(0, "write", "n1", ok, RegisterOp{Key: "k1", Value: "a"}, nil)
			h.op(1, "read", "n2", ok, RegisterOp{Key: "k2"}, RegisterOp{Key: "k2", Value: ""})
			h.op(1, "read", "n2", ok, RegisterOp{Key: "k1"}, RegisterOp{Key: "k1", Value: "a"})
		}, Valid, nil},
		{"no ops", func(h *hist) {}, Unknown, []string{"no operations"}},
	})
}

func TestRegisterNamesOnlyBadKeys(t *testing.T) {
	h := newHist()
	h.op(0, "write", "n1", history.OK, RegisterOp{Key: "good", Value: "a"}, nil)
	h.op(0, "read", "n1", history.OK, RegisterOp{Key: "good"}, RegisterOp{Key: "good", Value: "a"})
	h.op(0, "write", "n1", history.OK, RegisterOp{Key: "bad", Value: "a"}, nil)
	h.op(0, "read", "n1", history.OK, RegisterOp{Key: "bad"}, RegisterOp{Key: "bad", Value: "b"})
	r := Register(h.ops(), 10*time.Second, nil)
	wantResult(t, r, Invalid, `key "bad"`)
	if slices.ContainsFunc(r.Problems, func(s string) bool { return strings.Contains(s, `"good"`) }) {
		t.Errorf("problems name the good key: %q", r.Problems)
	}
	d := decodeDetails[RegisterDetails](t, r)
	if !slices.Equal(d.Illegal, []string{"bad"}) || d.Ops["good"] != 2 || d.Ops["bad"] != 2 || d.Result != "Illegal" {
		t.Errorf("details %+v", d)
	}
}

func TestRegisterHTML(t *testing.T) {
	h := newHist()
	h.op(0, "write", "n1", history.OK, RegisterOp{Key: "r", Value: "a"}, nil)
	h.op(7, "write", "n1", history.Info, RegisterOp{Key: "r", Value: "b"}, nil)
	h.op(3, "read", "n1", history.OK, RegisterOp{Key: "r"}, RegisterOp{Key: "r", Value: "c"})
	var buf bytes.Buffer
	r := Register(h.ops(), 10*time.Second, &buf)
	wantResult(t, r, Invalid, `key "r"`)
	out := buf.String()
	for _, want := range []string{"<html", `write(\"a\") -\u003e ok`, `read() -\u003e \"c\"`} {
		if !strings.Contains(out, want) {
			t.Errorf("visualisation lacks %q", want)
		}
	}
}

// TestRegisterTimeout checks that running out of time is unknown, never
// valid: many concurrent writes and reads of distinct values keep
// porcupine searching far longer than a microsecond.
func TestRegisterTimeout(t *testing.T) {
	h := newHist()
	const n = 60
	for p := range n {
		h.invoke(p, "write", "n1", RegisterOp{Key: "r", Value: fmt.Sprint(p)})
	}
	for p := range n {
		h.invoke(n+p, "read", "n1", RegisterOp{Key: "r"})
	}
	for p := range n {
		h.complete(history.OK, n+p, "read", "n1", RegisterOp{Key: "r", Value: fmt.Sprint((p * 7) % n)})
	}
	for p := range n {
		h.complete(history.OK, p, "write", "n1", nil)
	}
	r := Register(h.ops(), time.Microsecond, nil)
	wantResult(t, r, Unknown, "checker timed out after 1µs")
}
