package report

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/statemesh/statemesh/jepsen/check"
	"github.com/statemesh/statemesh/jepsen/history"
)

// synthetic builds a seeded history of n client ops on 5 processes over
// about dur, with a partition and a kill: during faults ops are slower
// and fail or time out more often. It returns the ops and their windows.
func synthetic(seed uint64, n int, dur time.Duration) ([]history.Op, []history.Window) {
	rng := rand.New(rand.NewPCG(seed, seed))
	start := time.Unix(0, 0)
	now := start
	rec := history.NewRecorder(start, func() time.Time { return now })
	type open struct {
		f   string
		end time.Duration
		typ string
	}
	procs := make([]*open, 5)
	// Tick finely so latencies are not multiples of the invoke interval;
	// invoke on a tick with probability pInvoke.
	step := min(dur/time.Duration(n)/20, 100*time.Microsecond)
	pInvoke := float64(step) * float64(n) / float64(dur)
	faulty := func(t time.Duration) bool {
		return (t > dur*3/10 && t < dur*5/10) || (t > dur*7/10 && t < dur*8/10)
	}
	fs := []string{"add", "read", "write"}
	nemesis := []struct {
		at    time.Duration
		f     string
		value any
	}{
		{dur * 3 / 10, "start-partition-halves", map[string][]string{"cut": {"n1 n2 | n3 n4 n5"}}},
		{dur * 5 / 10, "stop-partition-halves", nil},
		{dur * 7 / 10, "start-kill", map[string]string{"node": "n2"}},
		{dur * 8 / 10, "stop-kill", nil},
	}
	for t := time.Duration(0); t < dur; t += step {
		now = start.Add(t)
		for len(nemesis) > 0 && nemesis[0].at <= t {
			rec.Add(history.Info, history.NemesisProcess, nemesis[0].f, "", nemesis[0].value, "")
			nemesis = nemesis[1:]
		}
		for p, o := range procs {
			if o != nil && o.end <= t {
				rec.Add(o.typ, p, o.f, "n1", nil, "")
				procs[p] = nil
			}
		}
		if rng.Float64() >= pInvoke {
			continue
		}
		p := rng.IntN(len(procs))
		if procs[p] != nil {
			continue
		}
		f := fs[rng.IntN(len(fs))]
		lat := time.Duration(rng.ExpFloat64() * float64(2*time.Millisecond))
		typ := history.OK
		if faulty(t) {
			lat *= 30
			switch r := rng.Float64(); {
			case r < 0.25:
				typ = history.Fail
			case r < 0.4:
				typ, lat = history.Info, dur/20
			}
		} else if rng.Float64() < 0.02 {
			typ = history.Fail
		}
		rec.Add(history.Invoke, p, f, "n1", nil, "")
		procs[p] = &open{f: f, end: t + lat, typ: typ}
	}
	ops := rec.Ops()
	return ops, history.FaultWindows(ops, int64(dur))
}

// countClass parses an SVG and counts elements whose class attribute is
// exactly class.
func countClass(t *testing.T, svg []byte, class string) int {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(svg))
	n := 0
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return n
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v\n%s", err, svg)
		}
		if se, ok := tok.(xml.StartElement); ok {
			for _, a := range se.Attr {
				if a.Name.Local == "class" && a.Value == class {
					n++
				}
			}
		}
	}
}

func render(t *testing.T, f func(io.Writer, []history.Op, []history.Window) error, ops []history.Op, ws []history.Window) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := f(&b, ops, ws); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestLatencySVG(t *testing.T) {
	ops, ws := synthetic(1, 2000, 30*time.Second)
	// One operation the history ended before completing.
	last := ops[len(ops)-1]
	ops = append(ops, history.Op{Index: last.Index + 1, Time: last.Time, Type: history.Invoke, Process: 99, F: "read"})
	pairs, err := history.Pairs(ops)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{}
	for _, p := range pairs {
		typ := p.Complete.Type
		if typ == "" {
			typ = history.Info // incomplete: drawn as info
		}
		want[typ]++
	}
	if want[history.Fail] == 0 || want[history.Info] == 0 {
		t.Fatalf("synthetic history lacks fail or info ops: %v", want)
	}
	svg := render(t, LatencySVG, ops, ws)
	for _, typ := range []string{history.OK, history.Fail, history.Info} {
		if got := countClass(t, svg, "op "+typ); got != want[typ] {
			t.Errorf("%d points of class %q, want %d", got, "op "+typ, want[typ])
		}
	}
	if len(ws) != 2 {
		t.Fatalf("%d windows, want 2", len(ws))
	}
	if got := countClass(t, svg, "fault"); got != len(ws) {
		t.Errorf("%d fault rects, want %d", got, len(ws))
	}
}

func TestThroughputSVG(t *testing.T) {
	for _, dur := range []time.Duration{30 * time.Second, 3 * time.Second, 150 * time.Millisecond} {
		ops, ws := synthetic(2, 500, dur)
		svg := render(t, ThroughputSVG, ops, ws)
		for _, typ := range []string{history.OK, history.Fail, history.Info} {
			if got := countClass(t, svg, "series "+typ); got != 1 {
				t.Errorf("%v: %d lines of class %q, want 1", dur, got, "series "+typ)
			}
		}
		if got := countClass(t, svg, "fault"); got != len(ws) {
			t.Errorf("%v: %d fault rects, want %d", dur, got, len(ws))
		}
	}
}

func TestBucket(t *testing.T) {
	for _, c := range []struct{ span, want float64 }{
		{60, 1}, {10, 1}, {9.9, 0.5}, {3, 0.2}, {1, 0.1}, {0.15, 0.01},
	} {
		if got := bucket(c.span); got != c.want || c.span/got < 10 {
			t.Errorf("bucket(%v) = %v, want %v", c.span, got, c.want)
		}
	}
}

func TestEmptyAndOnlyFailures(t *testing.T) {
	for _, f := range []func(io.Writer, []history.Op, []history.Window) error{LatencySVG, ThroughputSVG} {
		svg := render(t, f, nil, nil)
		if countClass(t, svg, "empty") != 1 || !bytes.Contains(svg, []byte("no operations")) {
			t.Errorf("empty history:\n%s", svg)
		}
		// Only nemesis entries: still no client operations.
		nem := []history.Op{{Time: 1e9, Type: history.Info, Process: history.NemesisProcess, F: "start-kill"}}
		if svg := render(t, f, nem, history.FaultWindows(nem, 2e9)); countClass(t, svg, "empty") != 1 {
			t.Errorf("nemesis-only history:\n%s", svg)
		}
	}
	var fails []history.Op
	for i := range 5 {
		at := int64(i) * 1e8
		fails = append(fails,
			history.Op{Index: 2 * i, Time: at, Type: history.Invoke, Process: 0, F: "read"},
			history.Op{Index: 2*i + 1, Time: at + 5e6, Type: history.Fail, Process: 0, F: "read"})
	}
	svg := render(t, LatencySVG, fails, nil)
	if got := countClass(t, svg, "op fail"); got != 5 {
		t.Errorf("%d fail points, want 5", got)
	}
	if got := countClass(t, render(t, ThroughputSVG, fails, nil), "series fail"); got != 1 {
		t.Errorf("%d fail lines, want 1", got)
	}
}

func TestIndex(t *testing.T) {
	ops, ws := synthetic(3, 200, 10*time.Second)
	p := Page{
		Test: "counter-partition", Backend: "memory", Workload: "counter",
		Nemeses: []string{"partition-halves", "kill"}, Seed: 42,
		Command: "statemesh-jepsen -workload counter -seed 42",
		Start:   time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Valid: check.Invalid,
		Results: []check.Result{
			{Checker: "counter", Valid: check.Valid, Summary: "412 adds, 0 lost"},
			{Checker: "evil", Valid: check.Invalid, Summary: `<script>alert("x")</script>`,
				Problems: []string{"read <b>7</b> at 3.2 s"}},
		},
		Nodes: []string{"n1", "n2"}, Windows: ws, Ops: ops,
		Files: []string{"history.txt", LatencyFile},
	}
	var b bytes.Buffer
	if err := Index(&b, p); err != nil {
		t.Fatal(err)
	}
	s := b.String()
	for _, want := range []string{
		`class="verdict invalid">invalid<`, "412 adds, 0 lost", "&lt;script&gt;", "&lt;b&gt;7&lt;/b&gt;",
		"partition-halves", `href="history.txt"`, `<img src="latency.svg"`, "<code>42</code>", "n1, n2",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("index lacks %q", want)
		}
	}
	if strings.Contains(s, "<script>") || strings.Contains(s, "<b>7") {
		t.Error("index does not escape a checker's summary or problems")
	}
	if strings.Contains(s, `<img src="throughput.svg"`) {
		t.Error("index shows a plot not among its files")
	}

	// With no Valid set, the verdict combines the results.
	p.Valid = ""
	p.Results = p.Results[:1]
	b.Reset()
	if err := Index(&b, p); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `class="verdict valid">valid<`) {
		t.Error("verdict not combined from results")
	}
}

// TestWriteAll renders an example run into $REPORT_EXAMPLE_DIR (default:
// a temporary directory) and checks the files are there and linked.
func TestWriteAll(t *testing.T) {
	dir := os.Getenv("REPORT_EXAMPLE_DIR")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	ops, ws := synthetic(4, 3000, 40*time.Second)
	if err := os.WriteFile(filepath.Join(dir, "history.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p := Page{
		Test: "set-partition-kill", Backend: "grpc", Workload: "set",
		Nemeses: []string{"partition-halves", "kill"}, Seed: 1234567,
		Command: "go run ./cmd/statemesh-jepsen -workload set -nemesis partition-halves,kill -time-limit 40s -seed 1234567",
		Start:   time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC), Duration: 40 * time.Second,
		Results: []check.Result{
			{Checker: "set", Valid: check.Valid, Summary: "1210 adds, 0 lost, 14 unknown recovered"},
			{Checker: "linearizable", Valid: check.Unknown, Summary: "search timed out after 60 s",
				Problems: []string{"porcupine: timeout over 3000 ops"}},
			{Checker: "stats", Valid: check.Valid, Summary: "74% ok, 12% fail, 14% info"},
		},
		Nodes: []string{"n1", "n2", "n3", "n4", "n5"}, Windows: ws, Ops: ops,
		Files: []string{"history.jsonl", "results.json"},
	}
	if err := WriteAll(dir, p); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{LatencyFile, ThroughputFile, IndexFile} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	idx, err := os.ReadFile(filepath.Join(dir, IndexFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`href="history.txt"`, `href="history.jsonl"`, `<img src="latency.svg"`, `<img src="throughput.svg"`, "unknown"} {
		if !bytes.Contains(idx, []byte(want)) {
			t.Errorf("index lacks %q", want)
		}
	}
	if bytes.Contains(idx, []byte(`href="index.html"`)) {
		t.Error("index links itself")
	}
}
