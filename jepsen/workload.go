package jepsen

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/statemesh/statemesh/jepsen/check"
	"github.com/statemesh/statemesh/jepsen/history"
)

// Workload names.
const (
	WorkloadCounter     = "counter"
	WorkloadSet         = "set"
	WorkloadRegister    = "register"
	WorkloadDurability  = "durability"
	WorkloadConvergence = "convergence"
)

// Workloads lists every workload.
var Workloads = []string{WorkloadCounter, WorkloadSet, WorkloadRegister, WorkloadDurability, WorkloadConvergence}

// workload generates one client's operations and, after the faults heal,
// the final reads; its checkers judge the history.
type workload interface {
	// step runs one operation as worker w.
	step(ctx context.Context, w *worker)
	// final runs after every fault has healed: final reads on every node.
	final(ctx context.Context, r *runner) error
	// check judges the history.
	check(r *runner, ops []history.Op) []check.Result
}

func newWorkload(name string) (workload, error) {
	switch name {
	case WorkloadCounter:
		return &counterWorkload{keys: 2}, nil
	case WorkloadSet:
		return &setWorkload{prefix: "jepsen-s", keys: 2}, nil
	case WorkloadRegister:
		return &registerWorkload{keys: 8}, nil
	case WorkloadDurability:
		return &durabilityWorkload{set: setWorkload{prefix: "jepsen-d", keys: 2}}, nil
	case WorkloadConvergence:
		return &convergenceWorkload{counter: counterWorkload{keys: 3}, set: setWorkload{prefix: "jepsen-s", keys: 3}}, nil
	}
	return nil, fmt.Errorf("jepsen: unknown workload %q (one of %v)", name, Workloads)
}

var consistencies = []string{"LOCAL", "MAJORITY", "ALL"}

// ---- counter ----

type counterWorkload struct{ keys int }

// counterPrefix starts the counter workload's key names.
const counterPrefix = "jepsen-c"

func (wl *counterWorkload) key(i int) string { return counterPrefix + strconv.Itoa(i) }

func (wl *counterWorkload) allKeys() []string { return keyNames(wl.keys, wl.key) }

// keyNames lists the names of keys 0..n-1.
func keyNames(n int, name func(int) string) []string {
	ks := make([]string, n)
	for i := range ks {
		ks[i] = name(i)
	}
	return ks
}

func (wl *counterWorkload) step(ctx context.Context, w *worker) {
	key := wl.key(w.rng.IntN(wl.keys))
	if w.rng.IntN(10) < 7 {
		delta := w.rng.Int64N(15) - 5
		if delta == 0 {
			delta = 1
		}
		v := check.CounterAdd{Key: key, Delta: delta, Consistency: consistencies[w.rng.IntN(len(consistencies))]}
		w.run("add", v, func(ctx context.Context) (any, outcome) {
			return v, w.c.counterAdd(ctx, key, delta, v.Consistency)
		})
		return
	}
	w.run("read", check.CounterRead{Key: key}, func(ctx context.Context) (any, outcome) {
		n, o := w.c.counterGet(ctx, key)
		return check.CounterRead{Key: key, Value: &n}, o
	})
}

// digest is a convergence digest: every key's value on one node.
func (wl *counterWorkload) digest(ctx context.Context, c client) (string, error) {
	out := ""
	for _, k := range wl.allKeys() {
		n, o := c.counterGet(ctx, k)
		if o.typ != history.OK {
			return "", fmt.Errorf("%s", o.err)
		}
		out += fmt.Sprintf("%s=%d;", k, n)
	}
	return out, nil
}

func (wl *counterWorkload) finalRead(ctx context.Context, w *worker, key string) {
	w.run("final-read", check.CounterRead{Key: key}, func(ctx context.Context) (any, outcome) {
		n, o := w.c.counterGet(ctx, key)
		return check.CounterRead{Key: key, Value: &n}, o
	})
}

func (wl *counterWorkload) final(ctx context.Context, r *runner) error {
	r.converge(ctx, wl.digest)
	return r.finalReads(ctx, wl.allKeys(), wl.finalRead)
}

func (wl *counterWorkload) check(r *runner, ops []history.Op) []check.Result {
	return []check.Result{check.Counter(ops), r.convergence}
}

// ---- set ----

type setWorkload struct {
	prefix string // key names: prefix0, prefix1, ...
	keys   int
}

func (wl *setWorkload) key(i int) string { return wl.prefix + strconv.Itoa(i) }

func (wl *setWorkload) allKeys() []string { return keyNames(wl.keys, wl.key) }

func (wl *setWorkload) step(ctx context.Context, w *worker) {
	switch x := w.rng.IntN(20); {
	case x < 10:
		key := wl.key(w.rng.IntN(wl.keys))
		v := check.SetOp{Key: key, Element: w.unique()}
		if w.run("add", v, func(ctx context.Context) (any, outcome) { return v, w.c.setAdd(ctx, key, v.Element) }) == history.OK {
			w.added = append(w.added, v)
		}
	case x < 13 && len(w.added) > 0:
		// Remove an element this worker added, on the same node: the node
		// has observed the add, so the remove must win.
		i := w.rng.IntN(len(w.added))
		v := w.added[i]
		w.added = slices.Delete(w.added, i, i+1)
		w.run("remove", v, func(ctx context.Context) (any, outcome) { return v, w.c.setRemove(ctx, v.Key, v.Element) })
	default:
		key := wl.key(w.rng.IntN(wl.keys))
		w.run("read", check.SetRead{Key: key}, func(ctx context.Context) (any, outcome) {
			els, o := w.c.setGet(ctx, key)
			return check.SetRead{Key: key, Elements: els}, o
		})
	}
}

func (wl *setWorkload) digest(ctx context.Context, c client) (string, error) {
	out := ""
	for _, k := range wl.allKeys() {
		els, o := c.setGet(ctx, k)
		if o.typ != history.OK {
			return "", fmt.Errorf("%s", o.err)
		}
		slices.Sort(els)
		out += fmt.Sprintf("%s=%v;", k, els)
	}
	return out, nil
}

func (wl *setWorkload) finalRead(ctx context.Context, w *worker, key string) {
	w.run("final-read", check.SetRead{Key: key}, func(ctx context.Context) (any, outcome) {
		els, o := w.c.setGet(ctx, key)
		return check.SetRead{Key: key, Elements: els}, o
	})
}

func (wl *setWorkload) final(ctx context.Context, r *runner) error {
	r.converge(ctx, wl.digest)
	return r.finalReads(ctx, wl.allKeys(), wl.finalRead)
}

func (wl *setWorkload) check(r *runner, ops []history.Op) []check.Result {
	return []check.Result{check.Set(ops), r.convergence}
}

// ---- register ----

type registerWorkload struct{ keys int }

func (wl *registerWorkload) step(ctx context.Context, w *worker) {
	key := "jepsen-r" + strconv.Itoa(w.rng.IntN(wl.keys))
	// Values from a small set, as Jepsen's register tests do, so
	// compare-and-set succeeds often enough to matter.
	val := strconv.Itoa(w.rng.IntN(5))
	switch x := w.rng.IntN(10); {
	case x < 4:
		registerRead(w, "read", key)
	case x < 7:
		v := check.RegisterOp{Key: key, Value: val}
		w.run("write", v, func(ctx context.Context) (any, outcome) {
			rv, o := w.c.registerSet(ctx, key, val)
			v.Version = int64(rv.Version)
			return v, o
		})
	default:
		v := check.RegisterOp{Key: key, Expected: strconv.Itoa(w.rng.IntN(5)), Value: val}
		w.run("cas", v, func(ctx context.Context) (any, outcome) {
			rv, o := w.c.registerCAS(ctx, key, v.Expected, val)
			v.Version = int64(rv.Version)
			return v, o
		})
	}
}

// registerRead reads a register as operation f.
func registerRead(w *worker, f, key string) {
	w.run(f, check.RegisterOp{Key: key}, func(ctx context.Context) (any, outcome) {
		rv, o := w.c.registerGet(ctx, key)
		return check.RegisterOp{Key: key, Value: rv.Value, Version: int64(rv.Version)}, o
	})
}

func (wl *registerWorkload) final(context.Context, *runner) error { return nil }

func (wl *registerWorkload) check(r *runner, ops []history.Op) []check.Result {
	return []check.Result{r.checkRegister(ops)}
}

// ---- durability ----

// durabilityWorkload writes sync-mode CRDT set elements and event-sourced
// register values (each register key written once); at the time limit
// every node is killed with kill -9 while the clients still write, then
// they restart and everything is read back on every node.
type durabilityWorkload struct{ set setWorkload }

func (wl *durabilityWorkload) step(ctx context.Context, w *worker) {
	if w.rng.IntN(2) == 0 {
		key := wl.set.key(w.rng.IntN(wl.set.keys))
		v := check.SetOp{Key: key, Element: w.unique()}
		if w.run("add", v, func(ctx context.Context) (any, outcome) { return v, w.c.setAdd(ctx, key, v.Element) }) == history.OK {
			w.added = append(w.added, v)
		}
		return
	}
	id := w.unique()
	v := check.RegisterOp{Key: "jepsen-dur-" + id, Value: id}
	w.run("write", v, func(ctx context.Context) (any, outcome) {
		_, o := w.c.registerSet(ctx, v.Key, v.Value)
		return v, o
	})
	w.written = append(w.written, v.Key)
}

func (wl *durabilityWorkload) final(ctx context.Context, r *runner) error {
	r.converge(ctx, wl.set.digest)
	if err := r.finalReads(ctx, wl.set.allKeys(), wl.set.finalRead); err != nil {
		return err
	}
	var regKeys []string
	for _, w := range r.workers {
		regKeys = append(regKeys, w.written...)
	}
	return r.finalReads(ctx, regKeys, func(_ context.Context, w *worker, key string) {
		registerRead(w, "final-read-register", key)
	})
}

func (wl *durabilityWorkload) check(_ *runner, ops []history.Op) []check.Result {
	return []check.Result{check.Durability(ops)}
}

// ---- convergence ----

// convergenceWorkload writes counters and sets at mixed consistency; the
// verdict is that after the faults heal every replica's state agrees,
// within the deadline, and that nothing acknowledged was lost.
type convergenceWorkload struct {
	counter counterWorkload
	set     setWorkload
}

func (wl *convergenceWorkload) step(ctx context.Context, w *worker) {
	if w.rng.IntN(2) == 0 {
		wl.counter.step(ctx, w)
		return
	}
	wl.set.step(ctx, w)
}

func (wl *convergenceWorkload) final(ctx context.Context, r *runner) error {
	r.converge(ctx, func(ctx context.Context, c client) (string, error) {
		a, err := wl.counter.digest(ctx, c)
		if err != nil {
			return "", err
		}
		b, err := wl.set.digest(ctx, c)
		return a + b, err
	})
	if err := r.finalReads(ctx, wl.counter.allKeys(), wl.counter.finalRead); err != nil {
		return err
	}
	return r.finalReads(ctx, wl.set.allKeys(), wl.set.finalRead)
}

func (wl *convergenceWorkload) check(r *runner, ops []history.Op) []check.Result {
	// The counter and set checkers each see only their own keys' ops.
	var cops, sops []history.Op
	for _, o := range ops {
		var k struct {
			Key string `json:"key"`
		}
		if o.Process == history.NemesisProcess || o.Decode(&k) != nil {
			cops, sops = append(cops, o), append(sops, o)
			continue
		}
		if strings.HasPrefix(k.Key, counterPrefix) {
			cops = append(cops, o)
		} else {
			sops = append(sops, o)
		}
	}
	return []check.Result{r.convergence, check.Counter(cops), check.Set(sops)}
}

// stableFor is how long a final digest must hold on every node.
const stableFor = 500 * time.Millisecond
