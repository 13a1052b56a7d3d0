package consensusbench

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// TargetClients is the client count at which statemesh is held to the
// target: at least etcd's throughput, with a p99 latency no worse.
const TargetClients = 128

// Row is one system at one client count, over the rounds.
type Row struct {
	System  string `json:"system"`
	Clients int    `json:"clients"`
	// OpsPerSec, P50Ms, P99Ms and MaxMs are each the median of that value
	// over the rounds (the mean of the middle two for an even number).
	OpsPerSec float64 `json:"ops_per_s"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
	MaxMs     float64 `json:"max_ms"`
	// Errors is the sum over the rounds.
	Errors int64 `json:"errors"`
	// Rounds are the per-round results the medians come from.
	Rounds []Result `json:"rounds"`
}

// Rows groups results by system and client count and takes the medians,
// ordered by client count, statemesh before etcd before the rest.
func Rows(results []Result) []Row {
	type group struct {
		system  string
		clients int
	}
	by := map[group][]Result{}
	for _, r := range results {
		g := group{r.System, r.Clients}
		by[g] = append(by[g], r)
	}
	var rows []Row
	for g, rs := range by {
		row := Row{System: g.system, Clients: g.clients, Rounds: rs}
		pick := func(f func(Result) float64) float64 {
			xs := make([]float64, len(rs))
			for i, r := range rs {
				xs[i] = f(r)
			}
			return Median(xs)
		}
		row.OpsPerSec = pick(func(r Result) float64 { return r.OpsPerSec })
		row.P50Ms = pick(func(r Result) float64 { return r.P50Ms })
		row.P99Ms = pick(func(r Result) float64 { return r.P99Ms })
		row.MaxMs = pick(func(r Result) float64 { return r.MaxMs })
		for _, r := range rs {
			row.Errors += r.Errors
		}
		rows = append(rows, row)
	}
	slices.SortFunc(rows, compareRows)
	return rows
}

func compareRows(a, b Row) int {
	return cmp.Or(cmp.Compare(a.Clients, b.Clients), cmp.Compare(systemRank(a.System), systemRank(b.System)), cmp.Compare(a.System, b.System))
}

func systemRank(s string) int {
	switch s {
	case SystemStatemesh:
		return 0
	case SystemEtcd:
		return 1
	}
	return 2
}

// Median is the median of xs (0 for none); xs is not modified.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Ratio compares statemesh with etcd at one client count.
type Ratio struct {
	Clients int `json:"clients"`
	// Throughput is statemesh's writes/s over etcd's: above 1, statemesh
	// is faster. P99 is statemesh's p99 over etcd's: below 1, statemesh's
	// tail is shorter. Both 0 when either system made no writes.
	Throughput float64 `json:"throughput_ratio"`
	P99        float64 `json:"p99_ratio"`
	// Met: Throughput >= 1, P99 <= 1 and no statemesh write failed.
	Met     bool   `json:"met"`
	Verdict string `json:"verdict"`
}

// Ratios compares the statemesh and etcd rows at every client count that
// has both, in order.
func Ratios(rows []Row) []Ratio {
	type pair struct{ sm, etcd *Row }
	by := map[int]*pair{}
	for i := range rows {
		r := &rows[i]
		p := by[r.Clients]
		if p == nil {
			p = &pair{}
			by[r.Clients] = p
		}
		switch r.System {
		case SystemStatemesh:
			p.sm = r
		case SystemEtcd:
			p.etcd = r
		}
	}
	var out []Ratio
	for _, clients := range slices.Sorted(maps.Keys(by)) {
		p := by[clients]
		if p.sm == nil || p.etcd == nil {
			continue
		}
		out = append(out, ratio(*p.sm, *p.etcd))
	}
	return out
}

func ratio(sm, etcd Row) Ratio {
	r := Ratio{Clients: sm.Clients}
	switch {
	case etcd.OpsPerSec == 0:
		r.Verdict = "no etcd baseline: etcd acknowledged no write"
		return r
	case sm.OpsPerSec == 0:
		r.Verdict = "NOT met: statemesh acknowledged no write"
		return r
	}
	r.Throughput = sm.OpsPerSec / etcd.OpsPerSec
	r.P99 = sm.P99Ms / etcd.P99Ms
	var why []string
	if r.Throughput < 1 {
		why = append(why, fmt.Sprintf("throughput %.2f× etcd's", r.Throughput))
	}
	if r.P99 > 1 {
		why = append(why, fmt.Sprintf("p99 %.2f× etcd's", r.P99))
	}
	if sm.Errors > 0 {
		why = append(why, fmt.Sprintf("%d statemesh writes failed", sm.Errors))
	}
	r.Met = len(why) == 0
	r.Verdict = "met"
	if !r.Met {
		r.Verdict = "NOT met: " + strings.Join(why, ", ")
	}
	return r
}

// TargetVerdict judges the target at TargetClients. measured is false when
// the rows lack statemesh or etcd at that client count.
func TargetVerdict(rows []Row) (met, measured bool, text string) {
	for _, r := range Ratios(rows) {
		if r.Clients == TargetClients {
			return r.Met, true, r.Verdict
		}
	}
	return false, false, fmt.Sprintf("not measured (needs statemesh and etcd at %d clients)", TargetClients)
}

// Machine describes the machine a run was on.
type Machine struct {
	CPUModel   string `json:"cpu_model"`
	CPUs       int    `json:"cpus"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	GOOS       string `json:"goos"`
	GOARCH     string `json:"goarch"`
	GoVersion  string `json:"go_version"`
}

// LocalMachine describes this machine.
func LocalMachine() Machine {
	m := Machine{CPUModel: "unknown CPU", CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				if _, v, ok := strings.Cut(l, ":"); ok {
					m.CPUModel = strings.TrimSpace(v)
				}
				break
			}
		}
	}
	return m
}

func (m Machine) String() string {
	return fmt.Sprintf("%s, %d cores (GOMAXPROCS %d), %s/%s, %s", m.CPUModel, m.CPUs, m.GOMAXPROCS, m.GOOS, m.GOARCH, m.GoVersion)
}

// SystemInfo says what one system under test was, for the report.
type SystemInfo struct {
	Name   string `json:"name"`
	Detail string `json:"detail"`
}

// Meta describes a run for the report.
type Meta struct {
	Command string  `json:"command"`
	Machine Machine `json:"machine"`
	// Date is the UTC date of the run (2006-01-02).
	Date string `json:"date"`
	// LoadAvg is /proc/loadavg before the run: other processes compete
	// with both systems for the CPU.
	LoadAvg string       `json:"load_avg,omitempty"`
	WallS   float64      `json:"wall_s"`
	Plan    Plan         `json:"plan"`
	Systems []SystemInfo `json:"systems,omitempty"`
	Notes   []string     `json:"notes,omitempty"`
	// SVG, if set, is the file name of the plot beside the report
	// (WriteSVG), linked from it.
	SVG string `json:"svg,omitempty"`
}

// NewMeta fills in the machine, the date and the load average.
func NewMeta(command string, plan Plan) Meta {
	return Meta{Command: command, Machine: LocalMachine(), Date: time.Now().UTC().Format("2006-01-02"), Plan: plan, LoadAvg: LoadAvg()}
}

// LoadAvg is /proc/loadavg's first three fields, or "".
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// WriteTable writes the rows as an aligned text table, then the ratios.
func WriteTable(w io.Writer, rows []Row) {
	fmt.Fprintf(w, "%-10s %7s %10s %8s %8s %8s %6s %6s\n", "system", "clients", "writes/s", "p50_ms", "p99_ms", "max_ms", "errors", "rounds")
	for _, r := range rows {
		fmt.Fprintf(w, "%-10s %7d %10.0f %8.2f %8.2f %8.1f %6d %6d\n", r.System, r.Clients, r.OpsPerSec, r.P50Ms, r.P99Ms, r.MaxMs, r.Errors, len(r.Rounds))
	}
	if rs := Ratios(rows); len(rs) > 0 {
		fmt.Fprintf(w, "\n%7s %16s %9s  %s\n", "clients", "throughput_ratio", "p99_ratio", "verdict")
		for _, r := range rs {
			fmt.Fprintf(w, "%7d %16.2f %9.2f  %s\n", r.Clients, r.Throughput, r.P99, r.Verdict)
		}
	}
}

// WriteMarkdown writes the report (RenderMarkdown) to path, creating its
// directory.
func WriteMarkdown(path string, rows []Row, meta Meta) error {
	var b bytes.Buffer
	RenderMarkdown(&b, rows, meta)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// RenderMarkdown writes the report kept in bench/results/consensus.md.
func RenderMarkdown(w io.Writer, rows []Row, meta Meta) {
	p := meta.Plan
	l := p.Load
	fmt.Fprintf(w, "# Consensus benchmark: replicated writes, statemesh vs etcd\n\n")
	fmt.Fprintf(w, "Three nodes of each system on loopback, on the same machine, in the same run. Each client is a goroutine with one write outstanding (a closed loop) writing a %d-byte value to one of %d keys picked at random; a write counts when the system acknowledges it (durable and replicated, as each system defines it). ", l.ValueBytes, l.Keys)
	fmt.Fprintf(w, "Each run is %s of warm-up, then %s measured: writes/s are the writes acknowledged within the window divided by its length; the latencies are those of the same writes, from the call to its acknowledgement (exact quantiles over all of them); failed writes are counted as errors and nowhere else. ", l.Warmup, l.Duration)
	fmt.Fprintf(w, "Client counts %s, %d round(s); within a round the systems take turns at each client count, in the opposite order every other round; each value in the results table is the median over the rounds of that value (errors: the sum). The same key sequence (seed %d + round - 1) is used for both systems.\n\n", joinInts(p.Clients), p.Repeat, l.Seed)
	fmt.Fprintf(w, "- Command: `%s`\n- Machine: %s\n- Load average before the run: %s\n- Date: %s\n", meta.Command, meta.Machine, cmp.Or(meta.LoadAvg, "unknown"), meta.Date)
	if meta.WallS > 0 {
		fmt.Fprintf(w, "- Wall time: %.1f s (cluster start-up included)\n", meta.WallS)
	}
	met, measured, text := TargetVerdict(rows)
	switch {
	case !measured:
		fmt.Fprintf(w, "- Target at %d clients (at least etcd's throughput, p99 no worse than etcd's): %s\n", TargetClients, text)
	case met:
		fmt.Fprintf(w, "- Target at %d clients (at least etcd's throughput, p99 no worse than etcd's): **met**\n", TargetClients)
	default:
		fmt.Fprintf(w, "- Target at %d clients (at least etcd's throughput, p99 no worse than etcd's): **%s**\n", TargetClients, text)
	}
	if len(meta.Systems) > 0 {
		fmt.Fprintf(w, "\n## Systems\n\n")
		for _, s := range meta.Systems {
			fmt.Fprintf(w, "- **%s**: %s\n", s.Name, s.Detail)
		}
	}
	rounds := 0
	for _, r := range rows {
		rounds = max(rounds, len(r.Rounds))
	}
	fmt.Fprintf(w, "\n## Results (median of %d round(s))\n\n", rounds)
	fmt.Fprintf(w, "| system | clients | writes/s | p50 ms | p99 ms | max ms | errors |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		fmt.Fprintf(w, "| %s | %d | %.0f | %.2f | %.2f | %.1f | %d |\n", r.System, r.Clients, r.OpsPerSec, r.P50Ms, r.P99Ms, r.MaxMs, r.Errors)
	}
	if rs := Ratios(rows); len(rs) > 0 {
		fmt.Fprintf(w, "\n## statemesh / etcd\n\n")
		fmt.Fprintf(w, "Throughput ratio above 1: statemesh acknowledges more writes per second; p99 ratio below 1: its slowest writes are faster. The verdict applies the target (throughput ratio at least 1, p99 ratio at most 1, no failed statemesh write) at every client count; it is judged at %d.\n\n", TargetClients)
		fmt.Fprintf(w, "| clients | throughput ratio | p99 ratio | verdict |\n|---:|---:|---:|---|\n")
		for _, r := range rs {
			fmt.Fprintf(w, "| %d | %.2f | %.2f | %s |\n", r.Clients, r.Throughput, r.P99, r.Verdict)
		}
	}
	if rounds > 1 {
		fmt.Fprintf(w, "\n## Per round\n\n| round | system | clients | writes/s | p50 ms | p99 ms | max ms | errors |\n|---:|---|---:|---:|---:|---:|---:|---:|\n")
		var all []Result
		for _, r := range rows {
			all = append(all, r.Rounds...)
		}
		slices.SortStableFunc(all, func(a, b Result) int {
			return cmp.Or(cmp.Compare(a.Clients, b.Clients), cmp.Compare(systemRank(a.System), systemRank(b.System)), cmp.Compare(a.System, b.System), cmp.Compare(a.Round, b.Round))
		})
		for _, r := range all {
			fmt.Fprintf(w, "| %d | %s | %d | %.0f | %.2f | %.2f | %.1f | %d |\n", r.Round, r.System, r.Clients, r.OpsPerSec, r.P50Ms, r.P99Ms, r.MaxMs, r.Errors)
		}
	}
	var notes []string
	for _, r := range rows {
		for _, x := range r.Rounds {
			if x.FirstError != "" {
				notes = append(notes, fmt.Sprintf("%s, %d clients, round %d: %d failed writes (%d in the warm-up); the first: `%s`", x.System, x.Clients, x.Round, x.Errors, x.WarmupErrors, oneLine(x.FirstError)))
			}
		}
	}
	notes = append(notes, meta.Notes...)
	if len(notes) > 0 {
		fmt.Fprintf(w, "\n## Notes\n\n- %s\n", strings.Join(notes, "\n- "))
	}
	if meta.SVG != "" {
		fmt.Fprintf(w, "\n![writes/s and p99 per client count](%s)\n", meta.SVG)
	}
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return strings.ReplaceAll(s, "`", "'")
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ", ")
}
