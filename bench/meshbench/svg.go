package meshbench

import (
	"fmt"
	"io"
	"math"
)

// WriteConvergenceSVG draws, for every cluster size, the CDF of the time
// until a write is on every node (log-scale x axis, ms), with its p99
// target as a dashed vertical line of the same colour.
func WriteConvergenceSVG(w io.Writer, rs []ConvergenceResult) {
	const (
		left, top, width, height = 60, 40, 560, 300
	)
	colors := []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, r := range rs {
		for _, v := range r.Latencies {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
		hi = math.Max(hi, r.TargetP99Ms)
	}
	if math.IsInf(lo, 0) {
		lo, hi = 1, 1000
	}
	// Whole decades around the data.
	plo, phi := math.Floor(math.Log10(math.Max(lo, 0.01))), math.Ceil(math.Log10(math.Max(hi, 0.01)))
	if phi <= plo {
		phi = plo + 1
	}
	x := func(v float64) float64 {
		l := math.Log10(math.Max(v, math.Pow(10, plo)))
		return left + (l-plo)/(phi-plo)*width
	}
	y := func(f float64) float64 { return top + (1-f)*height }
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", left+width+160, top+height+50)
	fmt.Fprintf(w, `<text x="10" y="18" font-size="14">Time until a write is on every node: CDF (log scale); dashed: each size's p99 target; grey: one anti-entropy interval</text>`+"\n")
	for p := plo; p <= phi; p++ {
		xx := x(math.Pow(10, p))
		fmt.Fprintf(w, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/><text x="%.1f" y="%d" text-anchor="middle">%g ms</text>`+"\n", xx, top, xx, top+height, xx, top+height+15, math.Pow(10, p))
	}
	for _, f := range []float64{0, 0.25, 0.5, 0.75, 0.9, 1} {
		fmt.Fprintf(w, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/><text x="%d" y="%.1f" text-anchor="end">%g</text>`+"\n", left, y(f), left+width, y(f), left-4, y(f)+4, f)
	}
	fmt.Fprintf(w, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>`+"\n", left, top, width, height)
	fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="middle">latency (ms)</text>`+"\n", left+width/2, top+height+35)
	if len(rs) > 0 && rs[0].TickMs > 0 {
		tx := x(rs[0].TickMs)
		fmt.Fprintf(w, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#888" stroke-dasharray="2,2"/><text x="%.1f" y="%d" fill="#666">1 interval</text>`+"\n", tx, top, tx, top+height, tx+3, top+height-5)
	}
	for i, r := range rs {
		c := colors[i%len(colors)]
		n := len(r.Latencies)
		if n > 0 {
			fmt.Fprintf(w, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="`, c)
			fmt.Fprintf(w, "%.1f,%.1f", x(r.Latencies[0]), y(0))
			for j, v := range r.Latencies {
				// A step function: up at each sample.
				fmt.Fprintf(w, " %.1f,%.1f %.1f,%.1f", x(v), y(float64(j)/float64(n)), x(v), y(float64(j+1)/float64(n)))
			}
			fmt.Fprintf(w, `"/>`+"\n")
		}
		tx := x(r.TargetP99Ms)
		fmt.Fprintf(w, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-dasharray="4,3"/>`+"\n", tx, top, tx, top+height, c)
		ly := top + 10 + i*16
		fmt.Fprintf(w, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/><text x="%d" y="%d">N=%d p50 %.0f p99 %.0f ms</text>`+"\n",
			left+width+8, ly, left+width+22, ly, c, left+width+26, ly+4, r.Nodes, r.P50Ms, r.P99Ms)
	}
	fmt.Fprintln(w, `</svg>`)
}
