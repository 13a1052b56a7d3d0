package report

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"math"
	"sort"

	"github.com/statemesh/statemesh/jepsen/history"
)

// Plot geometry, in SVG user units (pixels when opened at 100%).
const (
	plotW, plotH = 960, 440
	marginL      = 70
	marginR      = 190 // room for the legends
	marginT      = 40
	marginB      = 50
	innerW       = plotW - marginL - marginR
	innerH       = plotH - marginT - marginB
)

// incomplete is the completion type given to an operation the history
// ended before completing; it is drawn like info (it may have happened).
const incomplete = "incomplete"

// typeColour colours a completion type: ok green, fail red, info and
// incomplete orange.
func typeColour(t string) string {
	switch t {
	case history.OK:
		return "#2e9e44"
	case history.Fail:
		return "#d62728"
	default:
		return "#f28e1c"
	}
}

// faultPalette colours fault windows by F, in order of first appearance.
var faultPalette = []string{"#7b68ee", "#1f77b4", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"}

// shapes are the markers per f, in order of the sorted f names; each is a
// path centred on 0,0 translated into place.
var shapes = []string{
	"M-3,0a3,3 0 1,0 6,0a3,3 0 1,0 -6,0Z", // circle
	"M-3,-3h6v6h-6Z",                      // square
	"M0,-3.6L3.4,2.6H-3.4Z",               // triangle
	"M0,-4L4,0L0,4L-4,0Z",                 // diamond
	"M-3,-1h2v-2h2v2h2v2h-2v2h-2v-2h-2Z",  // plus
}

// frame maps time in seconds to x in the plot area.
type frame struct {
	xMax float64 // seconds at the right edge
}

func (f frame) x(sec float64) float64 { return marginL + sec/f.xMax*innerW }

// span is the time the plot covers: the last entry or window end, in
// seconds, rounded up to a tick, never zero.
func span(ops []history.Op, windows []history.Window) float64 {
	var end int64
	for _, o := range ops {
		end = max(end, o.Time)
	}
	for _, w := range windows {
		end = max(end, w.End)
	}
	s := float64(end) / 1e9
	if s <= 0 {
		return 1
	}
	// End on a tick so the axis is labelled at both ends.
	step := niceStep(s, 10)
	return math.Ceil(s/step-1e-9) * step
}

// niceStep is a 1, 2 or 5 × 10^k step giving about n ticks over r.
func niceStep(r float64, n int) float64 {
	raw := r / float64(n)
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

// num formats a tick label without trailing zeros.
func num(v float64) string { return fmt.Sprintf("%g", math.Round(v*1e6)/1e6) }

// svgWriter writes formatted output; bufio keeps the first write error
// and Flush returns it.
type svgWriter struct{ w *bufio.Writer }

func (s svgWriter) p(format string, args ...any) { fmt.Fprintf(s.w, format, args...) }

func esc(s string) string { return html.EscapeString(s) }

func header(s svgWriter, title string) {
	s.p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", plotW, plotH, plotW, plotH)
	s.p(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	s.p(`<text x="%d" y="24" font-size="16" font-weight="bold">%s</text>`+"\n", marginL, esc(title))
}

// empty writes a plot that says there is nothing to plot.
func empty(w io.Writer, title string) error {
	s := svgWriter{bufio.NewWriter(w)}
	header(s, title)
	s.p(`<text class="empty" x="%d" y="%d" text-anchor="middle" font-size="20" fill="#666">no operations</text>`+"\n", plotW/2, plotH/2)
	s.p("</svg>\n")
	return s.w.Flush()
}

// xAxis draws the time axis, its grid and label.
func xAxis(s svgWriter, f frame) {
	step := niceStep(f.xMax, 10)
	for t := 0.0; t <= f.xMax+step/1e6; t += step {
		x := f.x(t)
		s.p(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#eee"/>`, x, marginT, x, marginT+innerH)
		s.p(`<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, marginT+innerH+16, num(t))
	}
	s.p(`<text x="%d" y="%d" text-anchor="middle">time since start (s)</text>`+"\n", marginL+innerW/2, plotH-10)
}

// box draws the plot border (after the data, so it stays visible).
func box(s svgWriter) {
	s.p(`<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>`+"\n", marginL, marginT, innerW, innerH)
}

// faults shades each window behind the data, labels it with its F, and
// returns the legend rows (F and colour, in order of first appearance).
func faults(s svgWriter, f frame, windows []history.Window) (names, colours []string) {
	colour := map[string]string{}
	for _, w := range windows {
		if _, ok := colour[w.F]; !ok {
			colour[w.F] = faultPalette[len(names)%len(faultPalette)]
			names = append(names, w.F)
			colours = append(colours, colour[w.F])
		}
	}
	for i, w := range windows {
		x0, x1 := f.x(float64(w.Start)/1e9), f.x(float64(w.End)/1e9)
		s.p(`<rect class="fault" x="%.1f" y="%d" width="%.1f" height="%d" fill="%s" fill-opacity="0.15"><title>%s %.3f–%.3f s %s</title></rect>`+"\n",
			x0, marginT, max(x1-x0, 1), innerH, colour[w.F], esc(w.F), float64(w.Start)/1e9, float64(w.End)/1e9, esc(w.Detail))
		// Stagger labels so overlapping windows stay readable.
		s.p(`<text x="%.1f" y="%d" font-size="10" fill="%s">%s</text>`+"\n", x0+2, marginT+11+(i%3)*11, colour[w.F], esc(w.F))
	}
	return names, colours
}

// legend draws rows of a swatch (drawn by mark at the given centre) and a
// label, starting at y, returning the y after the last row.
func legend(s svgWriter, y int, heading string, labels []string, mark func(i int, cx, cy float64)) int {
	if len(labels) == 0 {
		return y
	}
	x := plotW - marginR + 16
	s.p(`<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", x, y, esc(heading))
	for i, l := range labels {
		y += 17
		mark(i, float64(x+6), float64(y-4))
		s.p(`<text x="%d" y="%d">%s</text>`+"\n", x+18, y, esc(l))
	}
	return y + 24
}

// completions are the client operations with their completion type
// (incomplete when the history ended first) and latency in ns (to the end
// of the history for incomplete ones: a lower bound).
type completion struct {
	f, typ        string
	invoke, latNS int64
}

func completions(ops []history.Op) ([]completion, error) {
	pairs, err := history.Pairs(ops)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	var end int64
	for _, o := range ops {
		end = max(end, o.Time)
	}
	cs := make([]completion, 0, len(pairs))
	for _, p := range pairs {
		c := completion{f: p.Invoke.F, typ: p.Complete.Type, invoke: p.Invoke.Time}
		if c.typ == "" {
			c.typ, c.latNS = incomplete, end-p.Invoke.Time
		} else {
			c.latNS = p.Complete.Time - p.Invoke.Time
		}
		cs = append(cs, c)
	}
	return cs, nil
}

// LatencySVG writes a scatter plot of each client operation's latency (ms,
// log scale) against the time it was invoked, coloured by how it
// completed, shaped by its f, over the shaded fault windows. Operations
// still open when the history ended are drawn at their latency so far.
func LatencySVG(w io.Writer, ops []history.Op, windows []history.Window) error {
	const title = "Latency"
	cs, err := completions(ops)
	if err != nil {
		return err
	}
	if len(cs) == 0 {
		return empty(w, title)
	}
	// The axis covers the completed operations (incomplete ones too when
	// nothing completed); incomplete latencies are lower bounds, clamped
	// into that range.
	minMS, maxMS := math.Inf(1), math.Inf(-1)
	fIndex := map[string]int{}
	var fs []string
	for _, c := range cs {
		if c.typ != incomplete {
			ms := max(float64(c.latNS)/1e6, 1e-3) // log scale: floor at 1 µs
			minMS, maxMS = min(minMS, ms), max(maxMS, ms)
		}
		if _, ok := fIndex[c.f]; !ok {
			fIndex[c.f] = 0
			fs = append(fs, c.f)
		}
	}
	if math.IsInf(minMS, 1) {
		minMS, maxMS = 1e-3, 1e-3
		for _, c := range cs {
			maxMS = max(maxMS, float64(c.latNS)/1e6)
		}
	}
	sort.Strings(fs)
	for i, f := range fs {
		fIndex[f] = i
	}
	lo, hi := math.Floor(math.Log10(minMS)), math.Ceil(math.Log10(maxMS))
	if hi <= lo {
		hi = lo + 1
	}
	y := func(ms float64) float64 {
		return marginT + innerH - (math.Log10(max(ms, 1e-3))-lo)/(hi-lo)*innerH
	}
	fr := frame{xMax: span(ops, windows)}

	s := svgWriter{bufio.NewWriter(w)}
	header(s, title)
	for d := lo; d <= hi; d++ {
		yy := y(math.Pow(10, d))
		s.p(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`, marginL, yy, marginL+innerW, yy)
		s.p(`<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", marginL-6, yy+4, num(math.Pow(10, d)))
	}
	s.p(`<text transform="translate(18,%d) rotate(-90)" text-anchor="middle">latency (ms, log)</text>`+"\n", marginT+innerH/2)
	xAxis(s, fr)
	names, colours := faults(s, fr, windows)
	for _, c := range cs {
		ms := float64(c.latNS) / 1e6
		cls := c.typ
		if cls == incomplete {
			cls = history.Info // may have happened, like info
			ms = min(max(ms, math.Pow(10, lo)), math.Pow(10, hi))
		}
		s.p(`<path class="op %s" transform="translate(%.1f,%.1f)" d="%s" fill="%s" fill-opacity="0.75"><title>%s %s at %.3f s: %.3f ms</title></path>`+"\n",
			cls, fr.x(float64(c.invoke)/1e9), y(ms), shapes[fIndex[c.f]%len(shapes)], typeColour(c.typ),
			esc(c.f), c.typ, float64(c.invoke)/1e9, ms)
	}
	box(s)
	ly := legend(s, marginT+10, "completion", []string{"ok", "fail", "info / incomplete"}, func(i int, cx, cy float64) {
		s.p(`<circle cx="%.1f" cy="%.1f" r="4" fill="%s"/>`, cx, cy, typeColour([]string{history.OK, history.Fail, history.Info}[i]))
	})
	ly = legend(s, ly, "f", fs, func(i int, cx, cy float64) {
		s.p(`<path transform="translate(%.1f,%.1f)" d="%s" fill="#555"/>`, cx, cy, shapes[i%len(shapes)])
	})
	faultLegend(s, ly, names, colours)
	s.p("</svg>\n")
	return s.w.Flush()
}

func faultLegend(s svgWriter, y int, names, colours []string) {
	legend(s, y, "faults", names, func(i int, cx, cy float64) {
		s.p(`<rect x="%.1f" y="%.1f" width="12" height="12" fill="%s" fill-opacity="0.35"/>`, cx-6, cy-6, colours[i])
	})
}

// bucket is the throughput bucket width in seconds: 1 s, or for runs under
// 10 s the largest 1-2-5 width giving at least 10 buckets.
func bucket(spanSec float64) float64 {
	if spanSec >= 10 {
		return 1
	}
	b := niceStep(spanSec, 10)
	for spanSec/b < 10 {
		b = smaller(b)
	}
	return b
}

// smaller is the next 1-2-5 width below b (itself a 1-2-5 width).
func smaller(b float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(b)+1e-9))
	switch m := math.Round(b / p); m {
	case 5:
		return 2 * p
	case 2:
		return p
	default:
		return p / 2
	}
}

// ThroughputSVG writes completed client operations per second over time,
// one line per completion type (ok, fail, info), over the shaded fault
// windows. Buckets are 1 s wide, finer for runs under 10 s.
func ThroughputSVG(w io.Writer, ops []history.Op, windows []history.Window) error {
	const title = "Throughput (completed operations per second)"
	cs, err := completions(ops)
	if err != nil {
		return err
	}
	if len(cs) == 0 {
		return empty(w, title)
	}
	fr := frame{xMax: span(ops, windows)}
	b := bucket(fr.xMax)
	n := int(math.Ceil(fr.xMax/b - 1e-9))
	types := []string{history.OK, history.Fail, history.Info}
	counts := map[string][]int{}
	for _, t := range types {
		counts[t] = make([]int, n)
	}
	for _, c := range cs {
		if c.typ == incomplete {
			continue // never completed
		}
		i := min(int(float64(c.invoke+c.latNS)/1e9/b), n-1)
		counts[c.typ][i]++
	}
	peak := 0
	for _, t := range types {
		for _, k := range counts[t] {
			peak = max(peak, k)
		}
	}
	yMax := max(float64(peak)/b, 1)
	step := niceStep(yMax, 6)
	yMax = math.Ceil(yMax/step) * step
	y := func(rate float64) float64 { return marginT + innerH - rate/yMax*innerH }

	s := svgWriter{bufio.NewWriter(w)}
	header(s, title)
	for v := 0.0; v <= yMax+step/1e6; v += step {
		s.p(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`, marginL, y(v), marginL+innerW, y(v))
		s.p(`<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", marginL-6, y(v)+4, num(v))
	}
	s.p(`<text transform="translate(18,%d) rotate(-90)" text-anchor="middle">ops/s (%s s buckets)</text>`+"\n", marginT+innerH/2, num(b))
	xAxis(s, fr)
	names, colours := faults(s, fr, windows)
	for _, t := range types {
		s.p(`<polyline class="series %s" fill="none" stroke="%s" stroke-width="2" points="`, t, typeColour(t))
		for i, k := range counts[t] {
			// Each bucket's rate is plotted at the bucket's centre.
			s.p("%.1f,%.1f ", fr.x(min((float64(i)+0.5)*b, fr.xMax)), y(float64(k)/b))
		}
		s.p("\"/>\n")
	}
	box(s)
	ly := legend(s, marginT+10, "completion", types, func(i int, cx, cy float64) {
		s.p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="3"/>`, cx-6, cy, cx+6, cy, typeColour(types[i]))
	})
	faultLegend(s, ly, names, colours)
	s.p("</svg>\n")
	return s.w.Flush()
}
