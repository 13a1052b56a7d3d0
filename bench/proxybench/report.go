package proxybench

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/statemesh/statemesh/bench/consensusbench"
)

// Verdict compares statemesh through gRPC with Redis against TargetRatio.
type Verdict struct {
	// Ratio is statemesh-grpc's requests/s over redis's (0 when either
	// is missing or made none).
	Ratio float64 `json:"ratio"`
	// Measured: both systems ran and Redis acknowledged requests.
	Measured bool   `json:"measured"`
	Met      bool   `json:"met"`
	Text     string `json:"verdict"`
}

// Judge applies the target to the counter rows.
func Judge(rows []consensusbench.Row) Verdict {
	var sm, rd *consensusbench.Row
	for i := range rows {
		switch rows[i].System {
		case SystemGRPC:
			sm = &rows[i]
		case SystemRedis:
			rd = &rows[i]
		}
	}
	switch {
	case sm == nil || rd == nil:
		return Verdict{Text: "not measured (needs statemesh-grpc and redis)"}
	case rd.OpsPerSec == 0:
		return Verdict{Text: "no Redis baseline: Redis acknowledged no INCR"}
	}
	v := Verdict{Ratio: sm.OpsPerSec / rd.OpsPerSec, Measured: true}
	var why []string
	if v.Ratio < TargetRatio {
		why = append(why, fmt.Sprintf("%.2f× Redis's throughput, under 1/3", v.Ratio))
	}
	if sm.Errors > 0 {
		why = append(why, fmt.Sprintf("%d statemesh-grpc requests failed", sm.Errors))
	}
	v.Met = len(why) == 0
	if v.Met {
		v.Text = fmt.Sprintf("met: %.2f× Redis's throughput (target ≥ 0.33)", v.Ratio)
	} else {
		v.Text = "NOT met: " + strings.Join(why, ", ")
	}
	return v
}

// Meta describes a proxy benchmark run for the report.
type Meta struct {
	Command string                 `json:"command"`
	Machine consensusbench.Machine `json:"machine"`
	Date    string                 `json:"date"`
	// LoadBefore and LoadAfter are /proc/loadavg's first three fields.
	LoadBefore string  `json:"load_before,omitempty"`
	LoadAfter  string  `json:"load_after,omitempty"`
	WallS      float64 `json:"wall_s"`
	// Counter, Register and Cart are the plans of the three parts.
	Counter  consensusbench.Plan `json:"counter"`
	Register consensusbench.Plan `json:"register"`
	Cart     consensusbench.Plan `json:"cart"`
	Systems  []string            `json:"systems,omitempty"`
	Notes    []string            `json:"notes,omitempty"`
	SVG      string              `json:"svg,omitempty"`
}

// NewMeta fills in the machine, the date and the load average.
func NewMeta(command string) Meta {
	return Meta{Command: command, Machine: consensusbench.LocalMachine(), Date: time.Now().UTC().Format("2006-01-02"), LoadBefore: consensusbench.LoadAvg()}
}

// WriteTable writes the rows as an aligned text table, then the verdict.
func WriteTable(w io.Writer, rows []consensusbench.Row) {
	fmt.Fprintf(w, "%-14s %7s %10s %8s %8s %8s %6s %6s\n", "system", "clients", "req/s", "p50_ms", "p99_ms", "max_ms", "errors", "rounds")
	for _, r := range rows {
		fmt.Fprintf(w, "%-14s %7d %10.0f %8.3f %8.3f %8.1f %6d %6d\n", r.System, r.Clients, r.OpsPerSec, r.P50Ms, r.P99Ms, r.MaxMs, r.Errors, len(r.Rounds))
	}
	if v := Judge(rows); v.Measured {
		fmt.Fprintf(w, "\nstatemesh-grpc / redis throughput: %.2f (%s)\n", v.Ratio, v.Text)
	}
	for _, f := range FloorRatios(rows) {
		fmt.Fprintln(w, f)
	}
}

// FloorRatios are the report's lines on the floors, for those that ran:
// each floor's throughput over Redis's (the most gRPC alone allows, one
// hop and two), and statemesh-grpc's over the two-hop floor's (what the
// proxy's own work costs on top of the transport).
func FloorRatios(rows []consensusbench.Row) []string {
	ops := opsBySystem(rows)
	var lines []string
	if rd := ops[SystemRedis]; rd > 0 {
		for _, f := range []string{SystemEcho, SystemRelay} {
			if v, ok := ops[f]; ok {
				lines = append(lines, fmt.Sprintf("%s / redis throughput: %.2f", f, v/rd))
			}
		}
	}
	if rl, sm := ops[SystemRelay], ops[SystemGRPC]; rl > 0 && sm > 0 {
		lines = append(lines, fmt.Sprintf("statemesh-grpc / grpc-relay throughput: %.2f", sm/rl))
	}
	return lines
}

// opsBySystem maps each system that ran to its requests/s.
func opsBySystem(rows []consensusbench.Row) map[string]float64 {
	ops := map[string]float64{}
	for _, x := range rows {
		ops[x.System] = x.OpsPerSec
	}
	return ops
}

// SortRows orders rows as the report shows them: the counter systems,
// the floors, then the register, then the cart.
func SortRows(rows []consensusbench.Row) {
	rank := func(s string) int {
		return cmp.Or(slices.Index([]string{SystemGRPC, SystemHTTP, SystemRedis, SystemEcho, SystemRelay, SystemRegister, SystemCart}, s)+1, 99)
	}
	slices.SortStableFunc(rows, func(a, b consensusbench.Row) int {
		return cmp.Or(cmp.Compare(rank(a.System), rank(b.System)), cmp.Compare(a.Clients, b.Clients))
	})
}

// RenderMarkdown writes the report kept in bench/results/proxy.md.
func RenderMarkdown(w io.Writer, rows []consensusbench.Row, meta Meta) {
	c, r, ct := meta.Counter, meta.Register, meta.Cart
	fmt.Fprintf(w, "# Proxy benchmark: requests through a node to a function, vs Redis\n\n")
	fmt.Fprintf(w, "A 3-node statemesh mesh fronting the example functions (counter, register, cart) on loopback, and a redis-server, on the same machine, in the same run. ")
	fmt.Fprintf(w, "Each client is a goroutine with one request outstanding (a closed loop) on one of %d ids (keys) picked at random; clients are spread over the 3 nodes (client c on node c mod 3). ", c.Load.Keys)
	fmt.Fprintf(w, "Each run is %s of warm-up, then %s measured: req/s are the requests answered within the window divided by its length, latencies those of the same requests (exact quantiles); failed requests are errors and nowhere else. ", c.Load.Warmup, c.Load.Duration)
	fmt.Fprintf(w, "%d round(s); within a round the systems take turns, in the opposite order every other round; each value is the median over the rounds (errors: the sum).\n\n", c.Repeat)
	fmt.Fprintf(w, "- **statemesh-grpc**: `Counter/Increment` (value 1, consistency LOCAL) through the nodes' gRPC endpoints, one `grpc.ClientConn` per node shared by its clients.\n")
	fmt.Fprintf(w, "- **statemesh-http**: the same through the HTTP/JSON fallback route `POST %s`, keep-alive connections (up to one idle per client per node).\n", MethodIncrement)
	fmt.Fprintf(w, "- **redis**: `INCR` on the same keys, one connection per client, RESP spoken by hand; redis-server with no persistence (`--save \"\" --appendonly no`), as a LOCAL increment is acknowledged before any replication.\n")
	ops := opsBySystem(rows)
	if _, ok := ops[SystemEcho]; ok {
		fmt.Fprintf(w, "- **grpc-echo** (a floor, not a design): the same `Counter/Increment` calls to 3 bare gRPC servers of the counter service in this process, each adding to an in-memory map, with the proxy's server options: the client → node hop alone.\n")
	}
	if _, ok := ops[SystemRelay]; ok {
		fmt.Fprintf(w, "- **grpc-relay** (a floor, not a design): the same calls to 3 bare gRPC servers that relay each one, as the proxy does, over one `Crdt.Handle` stream per counter id to a bare function server (in-memory count, no SDK): both hops, client → node → function, with no state, replication or checks.\n")
	}
	fmt.Fprintf(w, "- **register-grpc**: the event-sourced register's `Register/Set` through gRPC (linearizable: a Raft write), %d clients, no baseline.\n", firstOr(r.Clients, 0))
	fmt.Fprintf(w, "- **cart-grpc**: the event-sourced shopping cart's `Cart/AddItem` (one more of one of 10 products: every command loads the cart, runs the function's handler and appends one event through Raft), %d clients, no baseline.\n\n", firstOr(ct.Clients, 0))
	fmt.Fprintf(w, "- Command: `%s`\n- Machine: %s\n- Load average before the run: %s; after: %s\n- Date: %s\n", meta.Command, meta.Machine, cmp.Or(meta.LoadBefore, "unknown"), cmp.Or(meta.LoadAfter, "unknown"), meta.Date)
	if meta.WallS > 0 {
		fmt.Fprintf(w, "- Wall time: %.1f s (start-up included)\n", meta.WallS)
	}
	v := Judge(rows)
	if v.Measured {
		fmt.Fprintf(w, "- statemesh-grpc / redis throughput: **%.2f**\n", v.Ratio)
	}
	for _, f := range FloorRatios(rows) {
		fmt.Fprintf(w, "- %s\n", f)
	}
	if v.Met {
		fmt.Fprintf(w, "- Target (at least a third of Redis's throughput through gRPC): **met**\n")
	} else {
		fmt.Fprintf(w, "- Target (at least a third of Redis's throughput through gRPC): **%s**\n", v.Text)
	}
	if len(meta.Systems) > 0 {
		fmt.Fprintf(w, "\n## Systems\n\n- %s\n", strings.Join(meta.Systems, "\n- "))
	}
	rounds := 0
	for _, x := range rows {
		rounds = max(rounds, len(x.Rounds))
	}
	fmt.Fprintf(w, "\n## Results (median of %d round(s))\n\n", rounds)
	fmt.Fprintf(w, "| system | clients | req/s | p50 ms | p99 ms | max ms | errors | vs redis |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	redis := ops[SystemRedis]
	for _, x := range rows {
		vs := "–"
		if redis > 0 && x.System != SystemRegister && x.System != SystemCart {
			vs = fmt.Sprintf("%.2f", x.OpsPerSec/redis)
		}
		fmt.Fprintf(w, "| %s | %d | %.0f | %.3f | %.3f | %.1f | %d | %s |\n", x.System, x.Clients, x.OpsPerSec, x.P50Ms, x.P99Ms, x.MaxMs, x.Errors, vs)
	}
	if rounds > 1 {
		fmt.Fprintf(w, "\n## Per round\n\n| round | system | clients | req/s | p50 ms | p99 ms | max ms | errors |\n|---:|---|---:|---:|---:|---:|---:|---:|\n")
		for _, x := range rows {
			rs := slices.Clone(x.Rounds)
			slices.SortFunc(rs, func(a, b consensusbench.Result) int { return cmp.Compare(a.Round, b.Round) })
			for _, y := range rs {
				fmt.Fprintf(w, "| %d | %s | %d | %.0f | %.3f | %.3f | %.1f | %d |\n", y.Round, y.System, y.Clients, y.OpsPerSec, y.P50Ms, y.P99Ms, y.MaxMs, y.Errors)
			}
		}
	}
	var notes []string
	for _, x := range rows {
		for _, y := range x.Rounds {
			if y.FirstError != "" {
				notes = append(notes, fmt.Sprintf("%s, round %d: %d failed requests (%d in the warm-up); the first: `%s`", y.System, y.Round, y.Errors, y.WarmupErrors, oneLine(y.FirstError)))
			}
		}
	}
	notes = append(notes, meta.Notes...)
	if len(notes) > 0 {
		fmt.Fprintf(w, "\n## Notes\n\n- %s\n", strings.Join(notes, "\n- "))
	}
	if meta.SVG != "" {
		fmt.Fprintf(w, "\n![req/s and p99 per system](%s)\n", meta.SVG)
	}
}

func firstOr(xs []int, d int) int {
	if len(xs) == 0 {
		return d
	}
	return xs[0]
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return strings.ReplaceAll(s, "`", "'")
}

// WriteSVG draws two bar panels, req/s and p99 latency per system
// (medians over the rounds).
func WriteSVG(w io.Writer, rows []consensusbench.Row) {
	const left, top, width, barH, gap = 110, 50, 300, 26, 140
	colors := map[string]string{SystemGRPC: "#1f77b4", SystemHTTP: "#17becf", SystemRedis: "#d62728", SystemEcho: "#bbbbbb", SystemRelay: "#888888", SystemRegister: "#2ca02c", SystemCart: "#9467bd"}
	height := len(rows)*(barH+10) + 10
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", 2*left+2*width+gap-60, top+height+30)
	fmt.Fprintf(w, `<text x="10" y="18" font-size="14">Requests through a statemesh node vs Redis INCR: req/s and p99 (medians over rounds)</text>`+"\n")
	panel := func(x0 int, title string, value func(consensusbench.Row) float64, format func(float64) string) {
		hi := 0.0
		for _, r := range rows {
			hi = math.Max(hi, value(r))
		}
		if hi == 0 {
			hi = 1
		}
		fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="middle" font-size="12">%s</text>`+"\n", x0+width/2, top-10, title)
		fmt.Fprintf(w, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999"/>`+"\n", x0, top, x0, top+height)
		for i, r := range rows {
			y := top + 10 + i*(barH+10)
			bw := value(r) / hi * (width - 70)
			color := cmp.Or(colors[r.System], "#8c564b")
			fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="end">%s (%d)</text>`+"\n", x0-4, y+barH/2+4, r.System, r.Clients)
			fmt.Fprintf(w, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", x0, y, bw, barH, color)
			fmt.Fprintf(w, `<text x="%.1f" y="%d">%s</text>`+"\n", float64(x0)+bw+4, y+barH/2+4, format(value(r)))
		}
	}
	panel(left, "requests/s (higher is better)", func(r consensusbench.Row) float64 { return r.OpsPerSec },
		func(v float64) string { return fmt.Sprintf("%.0f", v) })
	panel(left+width+gap, "p99 latency, ms (lower is better)", func(r consensusbench.Row) float64 { return r.P99Ms },
		func(v float64) string { return fmt.Sprintf("%.2f ms", v) })
	fmt.Fprintf(w, `<text x="10" y="%d" fill="#555">clients in parentheses</text>`+"\n", top+height+20)
	fmt.Fprintln(w, `</svg>`)
}
