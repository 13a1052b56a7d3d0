package check

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/statemesh/statemesh/jepsen/history"
)

// hist builds a history by hand with a fake clock: each entry is one
// millisecond after the last unless at() moves the clock.
type hist struct {
	now time.Time
	rec *history.Recorder
}

func newHist() *hist {
	h := &hist{now: time.Unix(0, 0)}
	h.rec = history.NewRecorder(h.now, func() time.Time { return h.now })
	return h
}

func (h *hist) tick() { h.now = h.now.Add(time.Millisecond) }

// at sets the clock to ms milliseconds after the start.
func (h *hist) at(ms int64) *hist {
	h.now = time.Unix(0, 0).Add(time.Duration(ms) * time.Millisecond)
	return h
}

func (h *hist) invoke(proc int, f, node string, v any) *hist {
	h.tick()
	h.rec.Add(history.Invoke, proc, f, node, v, "")
	return h
}

func (h *hist) complete(typ string, proc int, f, node string, v any) *hist {
	h.tick()
	h.rec.Add(typ, proc, f, node, v, "")
	return h
}

// op records a whole operation: invoke then completion (typ "" leaves it
// open).
func (h *hist) op(proc int, f, node, typ string, in, out any) *hist {
	h.invoke(proc, f, node, in)
	if typ != "" {
		h.complete(typ, proc, f, node, out)
	}
	return h
}

func (h *hist) ops() []history.Op { return h.rec.Ops() }

func i64(v int64) *int64 { return &v }

// wantResult asserts a verdict and that each want substring appears in
// some problem line.
func wantResult(t *testing.T, r Result, valid Validity, problems ...string) {
	t.Helper()
	if r.Valid != valid {
		t.Errorf("verdict %s, want %s; summary %q; problems %q", r.Valid, valid, r.Summary, r.Problems)
	}
	for _, p := range problems {
		if !slices.ContainsFunc(r.Problems, func(s string) bool { return strings.Contains(s, p) }) {
			t.Errorf("no problem mentions %q: %q", p, r.Problems)
		}
	}
	if valid == Valid && len(r.Problems) > 0 {
		t.Errorf("valid with problems %q", r.Problems)
	}
	if r.Valid != Valid && len(r.Problems) == 0 {
		t.Errorf("%s without problems", r.Valid)
	}
}

// checkCase is one history built by hand and the verdict a checker must
// reach on it, with substrings its problem lines must hold.
type checkCase struct {
	name     string
	build    func(h *hist)
	valid    Validity
	problems []string
}

// runCases runs checker on each case's history as a subtest.
func runCases(t *testing.T, checker func([]history.Op) Result, cases []checkCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHist()
			tc.build(h)
			wantResult(t, checker(h.ops()), tc.valid, tc.problems...)
		})
	}
}

func decodeDetails[T any](t *testing.T, r Result) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.Details, &v); err != nil {
		t.Fatalf("details %s: %v", r.Details, err)
	}
	return v
}
