// Package history records what a Jepsen-style test did: every operation a
// client invoked and how it completed, in the JSON-lines form Jepsen's
// tools read (one object per line with index, time, type, process, f,
// value, error and node).
//
// An operation is two entries sharing a process: an invoke, then its
// completion. The completion's type says what the client knows:
//
//   - ok: the operation took effect (and its value is the result);
//   - fail: it certainly did not take effect;
//   - info: unknown (a timeout, a dropped connection): it may have taken
//     effect, now or later. Checkers must allow both.
//
// Values are JSON, so each workload defines its own shapes and a stored
// history can be checked again without the code that produced it.
package history

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"
)

// Entry types.
const (
	Invoke = "invoke"
	OK     = "ok"
	Fail   = "fail"
	Info   = "info"
)

// NemesisProcess is the process number of fault entries (Jepsen uses
// :nemesis; JSON wants a number).
const NemesisProcess = -1

// Op is one history entry.
type Op struct {
	Index int `json:"index"`
	// Time is nanoseconds since the test started.
	Time    int64           `json:"time"`
	Type    string          `json:"type"`
	Process int             `json:"process"`
	F       string          `json:"f"`
	Value   json.RawMessage `json:"value,omitempty"`
	Error   string          `json:"error,omitempty"`
	// Node is the node the client talked to ("" for nemesis entries that
	// span nodes).
	Node string `json:"node,omitempty"`
}

// Decode unmarshals the op's value into v.
func (o Op) Decode(v any) error {
	if len(o.Value) == 0 {
		return fmt.Errorf("history: op %d (%s %s) has no value", o.Index, o.Type, o.F)
	}
	if err := json.Unmarshal(o.Value, v); err != nil {
		return fmt.Errorf("history: op %d (%s %s): %w", o.Index, o.Type, o.F, err)
	}
	return nil
}

// Recorder appends entries from many goroutines; indexes follow the order
// of the calls.
type Recorder struct {
	start time.Time
	now   func() time.Time
	mu    sync.Mutex
	ops   []Op
}

// NewRecorder starts a history at start; now reads the clock (time.Now in
// a run, a fake in tests).
func NewRecorder(start time.Time, now func() time.Time) *Recorder {
	return &Recorder{start: start, now: now}
}

// Add appends an entry; value is marshalled to JSON (nil: none).
func (r *Recorder) Add(typ string, process int, f, node string, value any, errText string) Op {
	var raw json.RawMessage
	if value != nil {
		b, err := json.Marshal(value)
		if err != nil {
			// Values are the workloads' own plain structs: a failure is a
			// programming error, kept visible in the history.
			b, _ = json.Marshal(map[string]string{"unencodable": err.Error()})
		}
		raw = b
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	o := Op{Index: len(r.ops), Time: r.now().Sub(r.start).Nanoseconds(), Type: typ, Process: process,
		F: f, Value: raw, Error: errText, Node: node}
	r.ops = append(r.ops, o)
	return o
}

// Ops returns a copy of the entries so far.
func (r *Recorder) Ops() []Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Op(nil), r.ops...)
}

// Start is the time entries are measured from.
func (r *Recorder) Start() time.Time { return r.start }

// Pair is one operation: its invoke and its completion (Complete.Type is
// "" when the history ended before it completed; treat it as info).
type Pair struct {
	Invoke, Complete Op
}

// Done reports whether the operation certainly took effect.
func (p Pair) Done() bool { return p.Complete.Type == OK }

// Failed reports whether the operation certainly did not take effect.
func (p Pair) Failed() bool { return p.Complete.Type == Fail }

// Indeterminate reports whether the operation may or may not have taken
// effect.
func (p Pair) Indeterminate() bool { return !p.Done() && !p.Failed() }

// Pairs matches each client invoke (process >= 0) with the next
// completion of the same process, in invoke order. A completion without an
// invoke, or a second invoke before a completion, is an error: the
// history is malformed.
func Pairs(ops []Op) ([]Pair, error) {
	open := map[int]int{} // process -> index into pairs
	var pairs []Pair
	for _, o := range ops {
		if o.Process < 0 {
			continue
		}
		switch o.Type {
		case Invoke:
			if i, ok := open[o.Process]; ok {
				return nil, fmt.Errorf("history: process %d invoked op %d before op %d completed", o.Process, o.Index, pairs[i].Invoke.Index)
			}
			open[o.Process] = len(pairs)
			pairs = append(pairs, Pair{Invoke: o})
		case OK, Fail, Info:
			i, ok := open[o.Process]
			if !ok {
				return nil, fmt.Errorf("history: op %d completes nothing on process %d", o.Index, o.Process)
			}
			if o.F != pairs[i].Invoke.F {
				return nil, fmt.Errorf("history: op %d (%s) completes op %d (%s)", o.Index, o.F, pairs[i].Invoke.Index, pairs[i].Invoke.F)
			}
			pairs[i].Complete = o
			delete(open, o.Process)
		default:
			return nil, fmt.Errorf("history: op %d has type %q", o.Index, o.Type)
		}
	}
	return pairs, nil
}

// WriteJSONL writes one JSON object per line.
func WriteJSONL(w io.Writer, ops []Op) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	for _, o := range ops {
		if err := enc.Encode(o); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// MaxLine bounds one line of a history read back (a read of a big set is
// the longest).
const MaxLine = 16 << 20

// ReadJSONL reads a history written by WriteJSONL, validating each entry.
func ReadJSONL(r io.Reader) ([]Op, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), MaxLine)
	var ops []Op
	for line := 1; sc.Scan(); line++ {
		if len(strings.TrimSpace(sc.Text())) == 0 {
			continue
		}
		var o Op
		if err := json.Unmarshal(sc.Bytes(), &o); err != nil {
			return nil, fmt.Errorf("history: line %d: %w", line, err)
		}
		switch o.Type {
		case Invoke, OK, Fail, Info:
		default:
			return nil, fmt.Errorf("history: line %d: type %q", line, o.Type)
		}
		ops = append(ops, o)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	return ops, nil
}

// WriteText writes the history for people: one line per entry, time in
// seconds, process, type, f, node, value, error; nemesis entries stand
// out.
func WriteText(w io.Writer, ops []Op) error {
	bw := bufio.NewWriter(w)
	for _, o := range ops {
		proc := fmt.Sprint(o.Process)
		if o.Process == NemesisProcess {
			proc = "nemesis"
		}
		fmt.Fprintf(bw, "%10.3f  %-7s  %-6s  %-12s  %-4s  %s", float64(o.Time)/1e9, proc, o.Type, o.F, o.Node, o.Value)
		if o.Error != "" {
			fmt.Fprintf(bw, "  error: %s", o.Error)
		}
		bw.WriteByte('\n')
	}
	return bw.Flush()
}

// Window is a span of time a fault was active: from the nemesis entry
// that started it to the one that ended it.
type Window struct {
	F          string // the fault, e.g. "partition-halves"
	Start, End int64  // ns since the test started
	Detail     string // what the nemesis did, e.g. the cut
}

// FaultWindows pairs the nemesis's start and stop entries: an entry with
// f "start-X" opens a window closed by the next "stop-X" (or the end of
// the history, end).
func FaultWindows(ops []Op, end int64) []Window {
	open := map[string]int{}
	var ws []Window
	for _, o := range ops {
		if o.Process != NemesisProcess || o.Type != Info {
			continue
		}
		switch {
		case strings.HasPrefix(o.F, "start-"):
			name := strings.TrimPrefix(o.F, "start-")
			if _, ok := open[name]; ok {
				continue
			}
			open[name] = len(ws)
			ws = append(ws, Window{F: name, Start: o.Time, End: end, Detail: string(o.Value)})
		case strings.HasPrefix(o.F, "stop-"):
			name := strings.TrimPrefix(o.F, "stop-")
			if i, ok := open[name]; ok {
				ws[i].End = o.Time
				delete(open, name)
			}
		}
	}
	sort.SliceStable(ws, func(i, j int) bool { return ws[i].Start < ws[j].Start })
	return ws
}

// ErrEmpty is returned by checkers given no operations to check.
var ErrEmpty = errors.New("history: no operations")
