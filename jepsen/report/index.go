// Package report turns a finished Jepsen-style run into files a person
// opens: index.html (the verdict, what ran, what each checker found, the
// faults, the operation counts and links to everything else), and two
// plots, latency.svg and throughput.svg, with the fault windows shaded.
//
// Everything is written by hand with the standard library: the SVGs with
// fmt, the page with html/template (which escapes what checkers and
// workloads wrote). The page needs no JavaScript and no network.
package report

import (
	"errors"
	"fmt"
	"html/template"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/statemesh/statemesh/jepsen/check"
	"github.com/statemesh/statemesh/jepsen/history"
)

// File names WriteAll writes.
const (
	LatencyFile    = "latency.svg"
	ThroughputFile = "throughput.svg"
	IndexFile      = "index.html"
)

// Page is what index.html shows.
type Page struct {
	Test, Backend, Workload string
	Nemeses                 []string
	Seed                    int64
	Command                 string
	Start                   time.Time
	// Duration is the run's length; zero: the span of Ops.
	Duration time.Duration
	// Valid is the overall verdict; "": check.Combine of Results (unknown
	// when there are none).
	Valid   check.Validity
	Results []check.Result
	Nodes   []string
	Windows []history.Window
	Ops     []history.Op
	// Files are the other files of the run, relative to the page (e.g.
	// "history.txt", "logs/n1.log"); plots among them are shown inline.
	Files []string
}

// verdict is the page's overall verdict.
func (p Page) verdict() check.Validity {
	if p.Valid != "" {
		return p.Valid
	}
	if len(p.Results) == 0 {
		return check.Unknown
	}
	vs := make([]check.Validity, len(p.Results))
	for i, r := range p.Results {
		vs[i] = r.Valid
	}
	return check.Combine(vs...)
}

// countRow is the number of entries of one f by type.
type countRow struct {
	F                            string
	Invoke, OK, Fail, Info, Open int
}

// counts tallies client entries by f and type; Open counts invokes with
// no completion.
func counts(ops []history.Op) []countRow {
	rows := map[string]*countRow{}
	for _, o := range ops {
		if o.Process < 0 {
			continue // nemesis entries: the faults table shows them
		}
		r := rows[o.F]
		if r == nil {
			r = &countRow{F: o.F}
			rows[o.F] = r
		}
		switch o.Type {
		case history.Invoke:
			r.Invoke++
		case history.OK:
			r.OK++
		case history.Fail:
			r.Fail++
		case history.Info:
			r.Info++
		}
	}
	if pairs, err := history.Pairs(ops); err == nil {
		for _, p := range pairs {
			if p.Complete.Type == "" {
				rows[p.Invoke.F].Open++
			}
		}
	}
	out := make([]countRow, 0, len(rows))
	for _, r := range rows {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].F < out[j].F })
	return out
}

type view struct {
	Page
	Verdict  check.Validity
	Span     time.Duration
	Counts   []countRow
	Plots    []string
	Untitled bool
}

var funcs = template.FuncMap{
	"sec": func(ns int64) string { return fmt.Sprintf("%.3f", float64(ns)/1e9) },
}

var page = template.Must(template.New(IndexFile).Funcs(funcs).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{{.Test}}: {{.Verdict}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222;padding:0 1em}
h1{margin-bottom:.2em}
.verdict{font-size:2.6em;font-weight:bold;padding:.2em .5em;border-radius:6px;display:inline-block;color:white}
.valid{background:#2e9e44}.invalid{background:#d62728}.unknown{background:#e0a000}
td.valid,td.invalid,td.unknown{color:white;font-weight:bold;text-align:center}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}
td.n{text-align:right;font-variant-numeric:tabular-nums}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}
dt{font-weight:bold}dd{margin:0}
code{background:#f5f5f5;padding:.1em .3em;word-break:break-all}
ul.problems{margin:0;padding-left:1.2em;font-size:.9em}
img{max-width:100%;border:1px solid #ddd;margin:.5em 0}
</style></head><body>
<h1>{{if .Untitled}}Test run{{else}}{{.Test}}{{end}}</h1>
<div class="verdict {{.Verdict}}">{{.Verdict}}</div>
<h2>Run</h2>
<dl>
<dt>Command</dt><dd><code>{{.Command}}</code></dd>
<dt>Seed</dt><dd><code>{{.Seed}}</code></dd>
<dt>Backend</dt><dd>{{.Backend}}</dd>
<dt>Workload</dt><dd>{{.Workload}}</dd>
<dt>Nemeses</dt><dd>{{range $i, $n := .Nemeses}}{{if $i}}, {{end}}{{$n}}{{else}}none{{end}}</dd>
<dt>Start</dt><dd>{{if .Start.IsZero}}unknown{{else}}{{.Start.UTC.Format "2006-01-02 15:04:05 MST"}}{{end}}</dd>
<dt>Duration</dt><dd>{{.Span}}</dd>
<dt>Nodes</dt><dd>{{range $i, $n := .Nodes}}{{if $i}}, {{end}}{{$n}}{{else}}none listed{{end}}</dd>
</dl>
<h2>Checkers</h2>
{{if .Results}}<table><tr><th>checker</th><th>verdict</th><th>summary</th><th>problems</th></tr>
{{range .Results}}<tr><td>{{.Checker}}</td><td class="{{.Valid}}">{{.Valid}}</td><td>{{.Summary}}</td>
<td>{{if .Problems}}<ul class="problems">{{range .Problems}}<li>{{.}}</li>{{end}}</ul>{{end}}</td></tr>
{{end}}</table>{{else}}<p>No checker results.</p>{{end}}
{{range .Plots}}<img src="{{.}}" alt="{{.}}">
{{end}}
<h2>Faults</h2>
{{if .Windows}}<table><tr><th>fault</th><th>start (s)</th><th>end (s)</th><th>detail</th></tr>
{{range .Windows}}<tr><td>{{.F}}</td><td class="n">{{sec .Start}}</td><td class="n">{{sec .End}}</td><td><code>{{.Detail}}</code></td></tr>
{{end}}</table>{{else}}<p>No faults were injected.</p>{{end}}
<h2>Operations</h2>
{{if .Counts}}<table><tr><th>f</th><th>invoke</th><th>ok</th><th>fail</th><th>info</th><th>never completed</th></tr>
{{range .Counts}}<tr><td>{{.F}}</td><td class="n">{{.Invoke}}</td><td class="n">{{.OK}}</td><td class="n">{{.Fail}}</td><td class="n">{{.Info}}</td><td class="n">{{.Open}}</td></tr>
{{end}}</table>{{else}}<p>No operations.</p>{{end}}
<h2>Files</h2>
{{if .Files}}<ul>{{range .Files}}<li><a href="{{.}}">{{.}}</a></li>{{end}}</ul>{{else}}<p>No other files.</p>{{end}}
</body></html>
`))

// Index writes index.html for p. Plots named in p.Files (latency.svg,
// throughput.svg) are shown inline.
func Index(w io.Writer, p Page) error {
	v := view{Page: p, Verdict: p.verdict(), Span: p.Duration, Counts: counts(p.Ops), Untitled: p.Test == ""}
	if v.Span == 0 {
		for _, o := range p.Ops {
			v.Span = max(v.Span, time.Duration(o.Time))
		}
	}
	for _, f := range []string{LatencyFile, ThroughputFile} {
		if slices.Contains(p.Files, f) {
			v.Plots = append(v.Plots, f)
		}
	}
	if err := page.Execute(w, v); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}

// WriteAll writes latency.svg, throughput.svg and index.html into dir,
// which must exist. The page links p.Files, the plots, and whatever else
// is already in dir (history files, linearizability visualisations, node
// log directories).
func WriteAll(dir string, p Page) error {
	plots := []struct {
		name  string
		write func(io.Writer, []history.Op, []history.Window) error
	}{{LatencyFile, LatencySVG}, {ThroughputFile, ThroughputSVG}}
	for _, pl := range plots {
		if err := writeFile(filepath.Join(dir, pl.name), func(w io.Writer) error {
			return pl.write(w, p.Ops, p.Windows)
		}); err != nil {
			return err
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	files := slices.Clone(p.Files)
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() {
			name += "/"
		}
		files = append(files, name)
	}
	files = append(files, LatencyFile, ThroughputFile)
	slices.Sort(files)
	files = slices.Compact(files)
	p.Files = slices.DeleteFunc(files, func(f string) bool { return f == IndexFile })
	return writeFile(filepath.Join(dir, IndexFile), func(w io.Writer) error { return Index(w, p) })
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	err = write(f)
	return errors.Join(err, f.Close())
}
