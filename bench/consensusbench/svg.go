package consensusbench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// WriteSVG draws two panels, writes/s and p99 latency against the client
// count, one line per system (medians of the rows), both on log scales:
// the values span decades between 1 and 128 clients.
func WriteSVG(w io.Writer, rows []Row) {
	const (
		left, top, width, height, gap = 70, 40, 300, 260, 90
	)
	colors := map[string]string{SystemStatemesh: "#1f77b4", SystemEtcd: "#d62728"}
	others := []string{"#2ca02c", "#9467bd", "#8c564b", "#ff7f0e"}
	var clients []int
	var systems []string
	for _, r := range rows {
		if !slices.Contains(clients, r.Clients) {
			clients = append(clients, r.Clients)
		}
		if !slices.Contains(systems, r.System) {
			systems = append(systems, r.System)
		}
	}
	slices.Sort(clients)
	for _, s := range systems {
		if colors[s] == "" {
			colors[s] = others[len(colors)%len(others)]
		}
	}
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", 2*left+2*width+gap+20, top+height+70)
	fmt.Fprintf(w, `<text x="10" y="18" font-size="14">Replicated writes on 3 nodes: writes/s and p99 latency per client count (log scales, medians over rounds)</text>`+"\n")
	panel := func(x0 int, title, unit string, value func(Row) float64) {
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, r := range rows {
			if v := value(r); v > 0 {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
		if math.IsInf(lo, 0) {
			lo, hi = 1, 10
		}
		plo, phi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
		if phi <= plo {
			phi = plo + 1
		}
		y := func(v float64) float64 {
			return top + height - (math.Log10(math.Max(v, math.Pow(10, plo)))-plo)/(phi-plo)*height
		}
		x := func(i int) float64 {
			if len(clients) == 1 {
				return float64(x0) + width/2
			}
			return float64(x0) + 20 + float64(i)*(width-40)/float64(len(clients)-1)
		}
		fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="middle" font-size="12">%s</text>`+"\n", x0+width/2, top-8, title)
		for p := plo; p <= phi; p++ {
			yy := y(math.Pow(10, p))
			fmt.Fprintf(w, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%g %s</text>`+"\n", x0, yy, x0+width, yy, x0-4, yy+4, math.Pow(10, p), unit)
		}
		for i, c := range clients {
			fmt.Fprintf(w, `<text x="%.1f" y="%d" text-anchor="middle">%d</text>`+"\n", x(i), top+height+15, c)
		}
		fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="middle">clients</text>`+"\n", x0+width/2, top+height+32)
		fmt.Fprintf(w, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>`+"\n", x0, top, width, height)
		for si, s := range systems {
			// Labels above the first system's points, below the second's.
			dy := -5.0
			if si%2 == 1 {
				dy = 14
			}
			var pts []string
			for i, c := range clients {
				for _, r := range rows {
					if r.System == s && r.Clients == c && value(r) > 0 {
						pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(value(r))))
						fmt.Fprintf(w, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/><text x="%.1f" y="%.1f" fill="%s">%s</text>`+"\n", x(i), y(value(r)), colors[s], x(i)+5, y(value(r))+dy, colors[s], label(value(r)))
					}
				}
			}
			if len(pts) > 1 {
				fmt.Fprintf(w, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n", colors[s], strings.Join(pts, " "))
			}
		}
	}
	panel(left, "writes/s (higher is better)", "", func(r Row) float64 { return r.OpsPerSec })
	panel(left+width+gap, "p99 latency (lower is better)", "ms", func(r Row) float64 { return r.P99Ms })
	for i, s := range systems {
		lx := left + i*120
		ly := top + height + 55
		fmt.Fprintf(w, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/><text x="%d" y="%d">%s</text>`+"\n", lx, ly, lx+14, ly, colors[s], lx+18, ly+4, s)
	}
	fmt.Fprintln(w, `</svg>`)
}

// label prints v with 3 significant digits, without exponents.
func label(v float64) string {
	if v >= 100 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}
