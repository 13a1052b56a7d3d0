package eventlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestOptionsValidate(t *testing.T) {
	if err := DefaultOptions("/x").Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	mem := DefaultOptions("")
	mem.InMemory = true
	if err := mem.Validate(); err != nil {
		t.Fatalf("in memory: %v", err)
	}
	for name, mut := range map[string]func(*Options){
		"no dir":            func(o *Options) { o.Dir = "" },
		"dir and in memory": func(o *Options) { o.InMemory = true },
		"memtable small":    func(o *Options) { o.MemTableSize = 1<<20 - 1 },
		"no memtables":      func(o *Options) { o.NumMemtables = 0 },
		"vlog small":        func(o *Options) { o.ValueLogFileSize = 1<<20 - 1 },
		"vlog 2 GiB":        func(o *Options) { o.ValueLogFileSize = 2 << 30 },
		"block cache < 0":   func(o *Options) { o.BlockCacheSize = -1 },
		"index cache < 0":   func(o *Options) { o.IndexCacheSize = -1 },
		"one compactor":     func(o *Options) { o.NumCompactors = 1 },
		"gc interval 0":     func(o *Options) { o.GCInterval = 0 },
		"discard ratio 0":   func(o *Options) { o.GCDiscardRatio = 0 },
		"discard ratio 1":   func(o *Options) { o.GCDiscardRatio = 1 },
	} {
		o := DefaultOptions("/x")
		mut(&o)
		if err := o.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, o)
		}
		if _, err := Open(o); err == nil {
			t.Errorf("%s: Open accepted %+v", name, o)
		}
	}
}

// load returns everything Load yields, checking that keys come in order.
func load(t *testing.T, s *CRDTStore) map[string][]byte {
	t.Helper()
	got := map[string][]byte{}
	prev := ""
	err := s.Load(func(k string, v []byte) error {
		if len(got) > 0 && k <= prev {
			t.Errorf("Load: key %q after %q", k, prev)
		}
		prev = k
		got[k] = v
		return nil
	})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	n, err := s.Len()
	if err != nil || n != len(got) {
		t.Fatalf("Len = %d, %v; Load yielded %d", n, err, len(got))
	}
	return got
}

func checkState(t *testing.T, s *CRDTStore, want map[string][]byte) {
	t.Helper()
	got := load(t, s)
	if len(got) != len(want) {
		t.Errorf("Load yielded %d keys, want %d", len(got), len(want))
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || !bytes.Equal(g, w) {
			t.Errorf("Load[%q] = %q, %v; want %q", k, g, ok, w)
		}
		g, ok, err := s.Get(k)
		if err != nil || !ok || !bytes.Equal(g, w) {
			t.Errorf("Get(%q) = %q, %v, %v; want %q", k, g, ok, err, w)
		}
	}
}

func TestApplyGetLoad(t *testing.T) {
	for _, inMemory := range []bool{false, true} {
		t.Run(fmt.Sprintf("inMemory=%v", inMemory), func(t *testing.T) {
			o := testOptions(t)
			if inMemory {
				o.Dir, o.InMemory = "", true
			}
			s := mustOpen(t, o).CRDT()
			want := map[string][]byte{
				"":          []byte("empty key"),
				"a":         []byte("1"),
				"a\x00b":    {0, 1, 2, 0xff},
				"b":         {},
				"\xff\xfe":  []byte("not UTF-8"),
				"zz":        []byte("2"),
				"to delete": []byte("x"),
			}
			var puts []Put
			for k, v := range want {
				puts = append(puts, Put{k, v})
			}
			if err := s.Apply(puts, nil, true); err != nil {
				t.Fatal(err)
			}
			checkState(t, s, want)

			// Overwrite, delete, delete a missing key; a key both put and
			// deleted ends deleted; of two puts the later wins.
			err := s.Apply([]Put{{"a", []byte("1'")}, {"zz", []byte("old")}, {"zz", []byte("new")}, {"gone", []byte("x")}},
				[]string{"to delete", "never existed", "gone"}, false)
			if err != nil {
				t.Fatal(err)
			}
			want["a"], want["zz"] = []byte("1'"), []byte("new")
			delete(want, "to delete")
			checkState(t, s, want)
			for _, k := range []string{"to delete", "never existed", "gone"} {
				if v, ok, err := s.Get(k); ok || err != nil || v != nil {
					t.Errorf("Get(%q) = %q, %v, %v; want absent", k, v, ok, err)
				}
			}

			// Load hands out copies, and its callback's error stops it.
			got := load(t, s)
			got["a"][0] = 'X'
			if v, _, _ := s.Get("a"); string(v) != "1'" {
				t.Errorf("mutating a loaded value changed the store: %q", v)
			}
			stop := errors.New("stop")
			calls := 0
			if err := s.Load(func(string, []byte) error { calls++; return stop }); err != stop || calls != 1 {
				t.Errorf("Load with a failing callback: %v after %d calls", err, calls)
			}

			// An empty Apply is fine, synced or not.
			if err := s.Apply(nil, nil, true); err != nil {
				t.Errorf("empty Apply: %v", err)
			}
		})
	}
}

// TestApplySplits writes a batch far larger than one Badger transaction
// (15% of a 1 MiB memtable) and checks that all of it lands, and survives a
// reopen.
func TestApplySplits(t *testing.T) {
	o := testOptions(t)
	o.MemTableSize = 1 << 20
	db := mustOpen(t, o)
	const n, size = 5000, 1 << 10
	if total := int64(n * size); total < 10*db.bdb.MaxBatchSize() {
		t.Fatalf("batch of %d B does not need several transactions (max %d B)", total, db.bdb.MaxBatchSize())
	}
	want := map[string][]byte{}
	puts := make([]Put, 0, n)
	for i := range n {
		k := fmt.Sprintf("key-%05d", i)
		v := bytes.Repeat([]byte{byte(i)}, size)
		want[k] = v
		puts = append(puts, Put{k, v})
	}
	start := time.Now()
	if err := db.CRDT().Apply(puts, nil, true); err != nil {
		t.Fatal(err)
	}
	t.Logf("Apply of %d × %d B: %v", n, size, time.Since(start))
	checkState(t, db.CRDT(), want)

	// Delete most of them in one Apply, also split.
	var dels []string
	for i := 100; i < n; i++ {
		k := fmt.Sprintf("key-%05d", i)
		dels = append(dels, k)
		delete(want, k)
	}
	if err := db.CRDT().Apply(nil, dels, true); err != nil {
		t.Fatal(err)
	}
	checkState(t, db.CRDT(), want)

	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	checkState(t, mustOpen(t, o).CRDT(), want)
}

func TestReopenKeepsData(t *testing.T) {
	o := testOptions(t)
	db := mustOpen(t, o)
	want := map[string][]byte{"k1": []byte("v1"), "k2": []byte("v2")}
	if err := db.CRDT().Apply([]Put{{"k1", want["k1"]}, {"k2", want["k2"]}, {"k3", nil}}, nil, false); err != nil {
		t.Fatal(err)
	}
	if err := db.CRDT().Apply(nil, []string{"k3"}, false); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// The directory is locked while open, and free again after Close.
	db = mustOpen(t, o)
	if _, err := Open(o); err == nil {
		t.Error("second Open of an open directory succeeded")
	}
	checkState(t, db.CRDT(), want)
}

func TestTooLarge(t *testing.T) {
	o := testOptions(t)
	o.ValueLogFileSize = 1 << 20 // bounds values to 1 MiB
	s := mustOpen(t, o).CRDT()
	ok := []Put{{"fine", []byte("v")}}
	bigKey := strings.Repeat("k", MaxKeyBytes+1)
	for name, c := range map[string]struct {
		puts []Put
		dels []string
	}{
		"put key":   {append(ok, Put{bigKey, nil}), nil},
		"del key":   {ok, []string{bigKey}},
		"put value": {append(ok, Put{"v", make([]byte, 1<<20+1)}), nil},
	} {
		if err := s.Apply(c.puts, c.dels, true); !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: Apply = %v, want ErrTooLarge", name, err)
		}
		if n, err := s.Len(); n != 0 || err != nil {
			t.Fatalf("%s: Len = %d, %v after a refused Apply", name, n, err)
		}
	}
	if _, _, err := s.Get(bigKey); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Get(oversized key) = %v, want ErrTooLarge", err)
	}
	// The limits themselves are fine.
	maxKey := strings.Repeat("k", MaxKeyBytes)
	maxVal := bytes.Repeat([]byte{7}, 1<<20)
	if err := s.Apply([]Put{{maxKey, []byte("v")}, {"v", maxVal}}, nil, true); err != nil {
		t.Fatalf("Apply at the limits: %v", err)
	}
	checkState(t, s, map[string][]byte{maxKey: []byte("v"), "v": maxVal})
}

// TestMaxValue stores one MaxValueBytes value with the default options.
func TestMaxValue(t *testing.T) {
	o := testOptions(t)
	db := mustOpen(t, o)
	v := bytes.Repeat([]byte("0123456789abcdef"), MaxValueBytes/16)
	if err := db.CRDT().Apply([]Put{{"big", v}}, nil, true); err != nil {
		t.Fatal(err)
	}
	if err := db.CRDT().Apply([]Put{{"big", append(v, 0)}}, nil, true); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("MaxValueBytes+1: %v, want ErrTooLarge", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	got, ok, err := mustOpen(t, o).CRDT().Get("big")
	if err != nil || !ok || !bytes.Equal(got, v) {
		t.Fatalf("Get after reopen: %d B, %v, %v", len(got), ok, err)
	}
}

func TestClosed(t *testing.T) {
	db := mustOpen(t, testOptions(t))
	if _, _, err := db.Boot("n1"); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	s := db.CRDT()
	_, _, getErr := s.Get("k")
	_, lenErr := s.Len()
	_, _, bootErr := db.Boot("n1")
	for name, err := range map[string]error{
		"Apply":     s.Apply([]Put{{"k", nil}}, nil, false),
		"Get":       getErr,
		"Load":      s.Load(func(string, []byte) error { return nil }),
		"Len":       lenErr,
		"Sync":      db.Sync(),
		"Boot":      bootErr,
		"MarkClean": db.MarkClean(),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}

// TestCloseWaitsForOperations closes the DB while a Load is in its
// callback: new operations fail at once, the Load finishes normally, and
// only then does Close return.
func TestCloseWaitsForOperations(t *testing.T) {
	db := mustOpen(t, testOptions(t))
	s := db.CRDT()
	if err := s.Apply([]Put{{"a", []byte("1")}, {"b", []byte("2")}}, nil, false); err != nil {
		t.Fatal(err)
	}
	inside, release := make(chan struct{}), make(chan struct{})
	loadDone := make(chan error, 1)
	go func() {
		n := 0
		loadDone <- s.Load(func(k string, v []byte) error {
			if n++; n == 1 {
				close(inside)
				<-release
			}
			return nil
		})
	}()
	<-inside
	closeDone := make(chan error, 1)
	go func() { closeDone <- db.Close() }()
	eventually(t, 5*time.Second, "Close to begin", func() bool {
		db.mu.Lock()
		defer db.mu.Unlock()
		return db.mu.closed
	})
	if _, _, err := s.Get("a"); !errors.Is(err, ErrClosed) {
		t.Errorf("Get while closing = %v, want ErrClosed", err)
	}
	select {
	case err := <-closeDone:
		t.Fatalf("Close returned (%v) while a Load was running", err)
	default:
	}
	close(release)
	if err := <-loadDone; err != nil {
		t.Errorf("Load across Close: %v", err)
	}
	if err := <-closeDone; err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestGCStopsOnClose runs value-log GC on a short interval and checks that
// Close stops it and that every goroutine Open started is gone.
func TestGCStopsOnClose(t *testing.T) {
	base := runtime.NumGoroutine()
	o := testOptions(t)
	o.GCInterval = 2 * time.Millisecond
	db := mustOpen(t, o)
	eventually(t, 5*time.Second, "value-log GC to run", func() bool { return db.gcRuns.Load() >= 2 })
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-db.gcDone:
	default:
		t.Fatal("GC goroutine still running after Close")
	}
	eventually(t, 5*time.Second, fmt.Sprintf("goroutines back to %d", base), func() bool {
		return runtime.NumGoroutine() <= base
	})
}

// TestGCDisabled: a negative interval starts no GC goroutine.
func TestGCDisabled(t *testing.T) {
	o := testOptions(t)
	o.GCInterval = -1
	db := mustOpen(t, o)
	select {
	case <-db.gcDone:
	default:
		t.Fatal("GC goroutine started although disabled")
	}
}

// recorder is a slog.Handler that keeps every record.
type recorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec)
	return nil
}

func TestLoggerRoutesBadger(t *testing.T) {
	rec := &recorder{}
	o := testOptions(t)
	o.Logger = slog.New(rec)
	db := mustOpen(t, o)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	badgerRecords := 0
	for _, r := range rec.records {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "lib" && a.Value.String() == "badger" {
				badgerRecords++
				if r.Level > slog.LevelDebug {
					t.Errorf("badger record at %v on a clean open and close: %s", r.Level, r.Message)
				}
				if strings.HasSuffix(r.Message, "\n") {
					t.Errorf("record ends in a newline: %q", r.Message)
				}
			}
			return true
		})
	}
	if badgerRecords == 0 {
		t.Error("no badger records reached the logger")
	}
}
