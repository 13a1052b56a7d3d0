package syncbench

import (
	"fmt"
	"io"
	"math"
)

// WriteSVG draws, for every (workload, topology) row, one bar per mode:
// bytes sent relative to state-based sync, on a log scale.
func WriteSVG(w io.Writer, rs []Result) {
	rws := rows(rs)
	const (
		rowH, barH, left, width = 70, 10, 190, 520
	)
	colors := map[string]string{"state": "#7f7f7f", "delta": "#d62728", "delta+bp": "#ff7f0e", "delta+rr": "#1f77b4", "delta+bp+rr": "#2ca02c"}
	h := len(rws)*rowH + 60
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", left+width+140, h)
	fmt.Fprintf(w, `<text x="10" y="18" font-size="14">Bytes sent, relative to state-based sync (log scale, 1 = state-based)</text>`+"\n")
	// x axis: 10^-3 .. 10^0.5
	lo, hi := -3.0, 0.5
	x := func(v float64) float64 {
		l := math.Log10(math.Max(v, 1e-3))
		return left + (l-lo)/(hi-lo)*width
	}
	for p := -3; p <= 0; p++ {
		xx := x(math.Pow10(p))
		fmt.Fprintf(w, `<line x1="%.1f" y1="30" x2="%.1f" y2="%d" stroke="#ddd"/><text x="%.1f" y="%d" text-anchor="middle">1e%d</text>`+"\n", xx, xx, h-20, xx, h-6, p)
	}
	for i, rw := range rws {
		y0 := 40 + i*rowH
		fmt.Fprintf(w, `<text x="10" y="%d">%s / %s</text>`+"\n", y0+rowH/2, rw.workload, rw.topology)
		st := float64(rw.byMode["state"].Bytes)
		for j, m := range rw.modes {
			v := float64(rw.byMode[m].Bytes) / st
			y := y0 + j*(barH+2)
			fmt.Fprintf(w, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/><text x="%.1f" y="%d">%s %.3g</text>`+"\n", left, y, x(v)-left, barH, colors[m], x(v)+4, y+barH-1, m, v)
		}
	}
	fmt.Fprintln(w, `</svg>`)
}
