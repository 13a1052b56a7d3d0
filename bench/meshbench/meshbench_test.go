package meshbench

import (
	"bytes"
	"context"
	"encoding/xml"
	"strings"
	"testing"
	"time"
)

func TestConvergenceSmall(t *testing.T) {
	o := DefaultConvergenceOptions()
	o.Nodes, o.Writes = []int{3}, 5
	rs, err := RunConvergence(context.Background(), o, func(s string) { t.Log(s) })
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 {
		t.Fatalf("%d results, want 1", len(rs))
	}
	r := rs[0]
	if r.Nodes != 3 || r.Writes != 5 || len(r.Latencies) != 5 || r.Timeouts != 0 {
		t.Fatalf("result %+v", r)
	}
	if r.P50Ms <= 0 || r.P50Ms > r.P99Ms || r.P99Ms > r.MaxMs {
		t.Fatalf("percentiles out of order: p50 %v p99 %v max %v", r.P50Ms, r.P99Ms, r.MaxMs)
	}
	if r.BytesPerUpdatePerNode <= 0 || r.MessagesPerUpdatePerNode <= 0 {
		t.Fatalf("no anti-entropy traffic counted: %+v", r)
	}
	var md, svg, table bytes.Buffer
	WriteConvergenceTable(&table, rs)
	WriteConvergenceMarkdown(&md, rs, o, Env{Command: "test", Machine: "test machine", Date: "today", WallS: 1})
	WriteConvergenceSVG(&svg, rs)
	if !strings.Contains(table.String(), "p99") || !strings.Contains(md.String(), "| 3 |") {
		t.Fatalf("table or report incomplete:\n%s\n%s", table.String(), md.String())
	}
	if err := xml.Unmarshal(svg.Bytes(), new(struct{})); err != nil {
		t.Fatalf("SVG is not well-formed XML: %v", err)
	}
}

func TestThroughputShort(t *testing.T) {
	o := DefaultThroughputOptions()
	o.Duration, o.Keys, o.Writers, o.Rates = time.Second, 100, 2, []float64{0}
	rs, err := RunThroughput(context.Background(), o, func(s string) { t.Log(s) })
	if err != nil {
		t.Fatal(err)
	}
	r := rs[0]
	if len(rs) != 1 || len(r.PerNode) != 3 || r.UpdatesPerSPerNode <= 0 || r.MinUpdatesPerS <= 0 {
		t.Fatalf("result %+v", r)
	}
	for _, n := range r.PerNode {
		if n.Updates == 0 {
			t.Fatalf("node %s made no updates", n.Node)
		}
	}
	var md, table bytes.Buffer
	WriteThroughputTable(&table, rs)
	WriteThroughputMarkdown(&md, rs, o, Env{Command: "test", Machine: "test machine, 2 cores (GOMAXPROCS 2)", Date: "today", WallS: 1})
	if !strings.Contains(table.String(), "max") || !strings.Contains(md.String(), "| max | n01 |") {
		t.Fatalf("table or report incomplete:\n%s\n%s", table.String(), md.String())
	}
}

func TestPacer(t *testing.T) {
	start := time.Now()
	p := newPacer(start, 2000) // one every 500 µs
	for range 100 {
		if !p.wait(context.Background()) {
			t.Fatal("pacer gave up")
		}
	}
	// 100 updates at 2000/s take about 50 ms, minus the last interval.
	if d := time.Since(start); d < 45*time.Millisecond || d > 2*time.Second {
		t.Fatalf("100 paced updates at 2000/s took %s", d)
	}
	if !newPacer(start, 0).wait(context.Background()) {
		t.Fatal("an unpaced writer waited")
	}
}

func TestPercentile(t *testing.T) {
	xs := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, c := range []struct{ p, want float64 }{{50, 5}, {90, 9}, {99, 10}, {100, 10}, {1, 1}} {
		if got := percentile(xs, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("p50 of nothing = %v", got)
	}
	for n, want := range map[int]time.Duration{8: 5, 16: 6, 32: 7, 64: 8, 3: 4} {
		if got := TargetP99(n, time.Millisecond); got != want*time.Millisecond {
			t.Errorf("TargetP99(%d) = %s, want %s", n, got, want*time.Millisecond)
		}
	}
}
