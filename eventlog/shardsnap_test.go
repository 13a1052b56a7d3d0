package eventlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

func save(t testing.TB, s *Shard) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := s.Save(&buf, nil); err != nil {
		t.Fatalf("Save shard %d: %v", s.ID(), err)
	}
	return buf.Bytes()
}

// streamRecords decodes a stream with the production reader.
func streamRecords(t testing.TB, b []byte, shard uint64) []string {
	t.Helper()
	var recs []string
	err := readStream(bytes.NewReader(b), shard, MaxValueBytes, nil, func(table byte, suffix, value []byte) error {
		recs = append(recs, keyName(append(shardPrefix(table, shard), suffix...)))
		return nil
	})
	if err != nil {
		t.Fatalf("readStream: %v", err)
	}
	return recs
}

// shardView is everything the reads return for the entities populate
// writes.
type shardView struct {
	Applied  uint64
	Entities map[Entity]EntityState
	Values   map[Entity]Value
	Found    map[Entity]bool
	Requests map[string]string
}

func view(t testing.TB, s *Shard, tags ...string) shardView {
	t.Helper()
	v := shardView{Entities: map[Entity]EntityState{}, Values: map[Entity]Value{}, Found: map[Entity]bool{}, Requests: map[string]string{}}
	var err error
	if v.Applied, err = s.Applied(); err != nil {
		t.Fatal(err)
	}
	for _, tag := range tags {
		for i := range 3 {
			e := Entity{"cart", fmt.Sprintf("%s-%d", tag, i)}
			v.Entities[e] = mustLoad(t, s, e)
			r := Entity{"reg", e.ID}
			if v.Values[r], v.Found[r], err = s.Value(r); err != nil {
				t.Fatal(err)
			}
			id := fmt.Sprintf("req-%s-%d", tag, i)
			res, found, err := s.Request([]byte(id))
			if err != nil {
				t.Fatal(err)
			}
			if found {
				v.Requests[id] = string(res)
			}
		}
	}
	return v
}

func TestSaveRestoreRoundTrip(t *testing.T) {
	src := mustOpen(t, testOptions(t))
	populate(t, src.Shard(5), "a", 42)
	populate(t, src.Shard(6), "b", 7) // a neighbour, not in shard 5's stream
	stream := save(t, src.Shard(5))
	want := view(t, src.Shard(5), "a")
	if want.Applied != 42 || len(want.Requests) != 3 || !want.Values[Entity{"reg", "a-1"}].Deleted ||
		want.Entities[Entity{"cart", "a-2"}].SnapshotSeq != 2 {
		t.Fatalf("populate wrote %+v", want)
	}

	// Into a fresh DB, and into a shard that holds other data: the result
	// is the source exactly, and nothing of the old data is left.
	dst := mustOpen(t, testOptions(t))
	populate(t, dst.Shard(5), "old", 1000)
	populate(t, dst.Shard(4), "c", 3)
	neighbour := shardKeys(t, dst, 4)
	for _, db := range []*DB{mustOpen(t, memOptions()), dst} {
		s := db.Shard(5)
		if err := s.Restore(bytes.NewReader(stream), nil); err != nil {
			t.Fatalf("Restore: %v", err)
		}
		if got := view(t, s, "a"); !reflect.DeepEqual(got, want) {
			t.Errorf("restored shard differs:\n got %+v\nwant %+v", got, want)
		}
		if st := mustLoad(t, s, Entity{"cart", "old-0"}); st.Seq != 0 {
			t.Errorf("old data survived the restore: %+v", st)
		}
		if again := save(t, s); !bytes.Equal(again, stream) {
			t.Errorf("Save of the restored shard differs from the stream it came from")
		}
		if kv := shardKeys(t, db, 5); len(kv) != len(streamRecords(t, stream, 5)) {
			t.Errorf("restored shard has %d keys, the stream %d records", len(kv), len(streamRecords(t, stream, 5)))
		}
	}
	if !reflect.DeepEqual(shardKeys(t, dst, 4), neighbour) {
		t.Error("Restore of shard 5 changed shard 4")
	}
	// Nothing staged is left behind.
	if n := countPrefix(t, dst, []byte{tableStaging}) + countPrefix(t, dst, []byte{tablePending}); n != 0 {
		t.Errorf("%d staging or pending keys left after Restore", n)
	}
	// Save is deterministic.
	if again := save(t, src.Shard(5)); !bytes.Equal(again, stream) {
		t.Error("two Saves of an unchanged shard differ")
	}
	// An empty shard round-trips too (and clears the target).
	empty := save(t, src.Shard(99))
	if recs := streamRecords(t, empty, 99); len(recs) != 0 {
		t.Fatalf("empty shard streamed %v", recs)
	}
	s99 := dst.Shard(99)
	populate(t, s99, "z", 1)
	if err := s99.Restore(bytes.NewReader(empty), nil); err != nil {
		t.Fatal(err)
	}
	if kv := shardKeys(t, dst, 99); len(kv) != 0 {
		t.Errorf("restoring an empty shard left %d keys", len(kv))
	}
}

func countPrefix(t testing.TB, db *DB, prefix []byte) int {
	t.Helper()
	n := 0
	err := db.bdb.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.PrefetchValues = false
		o.Prefix = prefix
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestShardsIsolated(t *testing.T) {
	db := mustOpen(t, memOptions())
	// Ids whose big-endian forms share long prefixes.
	a, b := db.Shard(1), db.Shard(1<<8|1)
	populate(t, a, "a", 10)
	populate(t, b, "b", 20)
	wantB := view(t, b, "b")

	recs := streamRecords(t, save(t, a), 1)
	if want := len(shardKeys(t, db, 1)); len(recs) != want {
		t.Fatalf("Save of shard 1 has %d records, shard 1 has %d keys", len(recs), want)
	}
	for _, r := range recs {
		if !strings.HasPrefix(r, fmt.Sprintf("%c/1", r[0])) || strings.Contains(r, `"b-`) || strings.Contains(r, "req-b") {
			t.Errorf("shard 1's stream has %s", r)
		}
	}
	if view(t, a, "b").Applied != 10 || mustLoad(t, a, Entity{"cart", "b-0"}).Seq != 0 {
		t.Error("shard 1 sees shard 257's entities")
	}

	if err := a.Drop(); err != nil {
		t.Fatal(err)
	}
	if kv := shardKeys(t, db, 1); len(kv) != 0 {
		t.Errorf("Drop left %d keys", len(kv))
	}
	if got := view(t, a, "a"); got.Applied != 0 || got.Entities[Entity{"cart", "a-0"}].Seq != 0 || len(got.Requests) != 0 {
		t.Errorf("dropped shard reads %+v", got)
	}
	if got := view(t, b, "b"); !reflect.DeepEqual(got, wantB) {
		t.Error("Drop of shard 1 changed shard 257")
	}
	// A dropped shard can be written again from scratch.
	populate(t, a, "a", 1)
	if got := view(t, a, "a"); got.Applied != 1 || got.Entities[Entity{"cart", "a-0"}].Seq != 3 {
		t.Errorf("rewritten shard reads %+v", got)
	}
}

// TestSavePoint: a SavePoint streams the shard as it was when prepared,
// while Updates go on.
func TestSavePoint(t *testing.T) {
	db := mustOpen(t, memOptions())
	s := db.Shard(1)
	populate(t, s, "a", 10)
	want := save(t, s)
	p, err := s.PrepareSave()
	if err != nil {
		t.Fatal(err)
	}
	if p.Applied() != 10 {
		t.Errorf("SavePoint.Applied = %d", p.Applied())
	}
	populate(t, s, "b", 11)
	var buf bytes.Buffer
	if err := p.Save(&buf, nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Error("SavePoint saw writes made after it")
	}
	if err := p.Save(&buf, nil); err == nil {
		t.Error("second Save of one SavePoint succeeded")
	}
	p.Release() // no-op after Save

	// Release lets Close proceed; a stopped Save reports ErrStopped.
	p, err = s.PrepareSave()
	if err != nil {
		t.Fatal(err)
	}
	p.Release()
	stop := make(chan struct{})
	close(stop)
	if err := s.Save(io.Discard, stop); !errors.Is(err, ErrStopped) {
		t.Errorf("stopped Save = %v, want ErrStopped", err)
	}
	failing := errors.New("disk full")
	if err := s.Save(failWriter{failing}, nil); !errors.Is(err, failing) {
		t.Errorf("Save to a failing writer = %v", err)
	}
	// A SavePoint neither saved nor released does not hold Close up; it
	// is unusable afterwards.
	leaked, err := s.PrepareSave()
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- db.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close hangs on a SavePoint never saved")
	}
	if err := leaked.Save(io.Discard, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Save after Close = %v, want ErrClosed", err)
	}
	leaked.Release()
}

type failWriter struct{ err error }

func (w failWriter) Write([]byte) (int, error) { return 0, w.err }

// restoreMust fails the test unless Restore of b into s fails with an
// error matching want (if not nil) and leaves s exactly as it was.
func restoreMustFail(t *testing.T, s *Shard, b []byte, want error, what string) {
	t.Helper()
	before := save(t, s)
	err := s.Restore(bytes.NewReader(b), nil)
	if err == nil {
		t.Fatalf("%s: Restore succeeded", what)
	}
	if want != nil && !errors.Is(err, want) {
		t.Fatalf("%s: Restore = %v, want %v", what, err, want)
	}
	if after := save(t, s); !bytes.Equal(after, before) {
		t.Fatalf("%s: a failed Restore changed the shard", what)
	}
	if n := countPrefix(t, s.db, shardPrefix(tableStaging, s.id)); n != 0 {
		t.Fatalf("%s: %d staged keys left", what, n)
	}
}

// reseal recomputes the checksum of a stream whose body was edited.
func reseal(b []byte) []byte {
	b = slices.Clone(b)
	n := len(b) - 4
	binary.BigEndian.PutUint32(b[n:], crc32.Checksum(b[:n], castagnoli))
	return b
}

func TestRestoreRejectsBadStreams(t *testing.T) {
	src := mustOpen(t, memOptions())
	populate(t, src.Shard(1), "new", 50)
	populate(t, src.Shard(2), "other", 60)
	good := save(t, src.Shard(1))
	other := save(t, src.Shard(2))

	db := mustOpen(t, memOptions())
	s := db.Shard(1)
	populate(t, s, "old", 5)
	wantOld := view(t, s, "old")

	restoreMustFail(t, s, other, ErrBadStream, "another shard's stream")
	restoreMustFail(t, s, nil, ErrBadStream, "empty")
	restoreMustFail(t, s, append(slices.Clone(good), 0), ErrBadStream, "trailing byte")
	restoreMustFail(t, s, []byte(strings.Repeat("x", 100)), ErrBadStream, "not a stream")
	for i := 0; i < len(good); i += 1 + i/8 {
		restoreMustFail(t, s, good[:i], ErrBadStream, fmt.Sprintf("truncated at %d of %d", i, len(good)))
	}
	for i := 0; i < len(good); i += 1 + i/16 {
		b := slices.Clone(good)
		b[i] ^= 0x20
		restoreMustFail(t, s, b, nil, fmt.Sprintf("byte %d flipped", i))
	}
	// Well sealed but wrong inside: the checks do not rely on the checksum.
	hdr := len(streamMagic) + 1 + 8
	for name, edit := range map[string]func(b []byte){
		"version":  func(b []byte) { b[len(streamMagic)] = 2 },
		"tag":      func(b []byte) { b[hdr] = 9 },
		"table":    func(b []byte) { b[hdr+1] = 'c' },
		"count":    func(b []byte) { b[len(b)-5]++ },
		"key len":  func(b []byte) { b[hdr+2] = 0xff },
		"applied":  func(b []byte) { b[hdr+4+4] = 7 }, // the applied record's version byte
		"shard id": func(b []byte) { b[hdr-1]++ },
	} {
		b := slices.Clone(good)
		edit(b)
		restoreMustFail(t, s, reseal(b), ErrBadStream, name)
	}
	// Records out of order (the first two swapped).
	recs := splitRecords(t, good)
	swapped := slices.Concat(good[:hdr], recs[1], recs[0], slices.Concat(recs[2:]...), good[len(good)-13:])
	restoreMustFail(t, s, reseal(swapped), ErrBadStream, "out of order")
	dup := slices.Concat(good[:hdr], recs[0], slices.Concat(recs...), good[len(good)-13:])
	binary.BigEndian.PutUint64(dup[len(dup)-12:], uint64(len(recs)+1))
	restoreMustFail(t, s, reseal(dup), ErrBadStream, "duplicate key")

	stop := make(chan struct{})
	close(stop)
	if err := s.Restore(bytes.NewReader(good), stop); !errors.Is(err, ErrStopped) {
		t.Errorf("stopped Restore = %v, want ErrStopped", err)
	}
	failing := errors.New("read failed")
	if err := s.Restore(io.MultiReader(bytes.NewReader(good[:40]), errReader{failing}), nil); !errors.Is(err, failing) {
		t.Errorf("Restore from a failing reader = %v", err)
	}
	if got := view(t, s, "old"); !reflect.DeepEqual(got, wantOld) {
		t.Fatal("failed restores changed the shard")
	}
	// And the good stream still works after all that.
	if err := s.Restore(bytes.NewReader(good), nil); err != nil {
		t.Fatal(err)
	}
	if got := view(t, s, "new"); !reflect.DeepEqual(got, view(t, src.Shard(1), "new")) {
		t.Error("restore after failed ones differs from the source")
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// splitRecords returns the encoded records of a stream.
func splitRecords(t *testing.T, b []byte) [][]byte {
	t.Helper()
	b = b[len(streamMagic)+1+8:]
	var recs [][]byte
	for b[0] == tagRecord {
		klen := int(binary.BigEndian.Uint16(b[2:]))
		vlen := int(binary.BigEndian.Uint32(b[4+klen:]))
		n := 4 + klen + 4 + vlen
		recs = append(recs, b[:n])
		b = b[n:]
	}
	if len(recs) < 3 || len(b) != 13 {
		t.Fatalf("split %d records, %d bytes of trailer", len(recs), len(b))
	}
	return recs
}

// TestRestoreTooLargeForDB: a valid stream with a value this DB cannot
// store is refused before anything changes.
func TestRestoreTooLargeForDB(t *testing.T) {
	src := mustOpen(t, testOptions(t))
	update(t, src.Shard(1), func(tx *ShardTxn) error {
		_, err := tx.PutValue(Entity{"v", "big"}, make([]byte, MaxEventBytes))
		return err
	})
	s := mustOpen(t, memOptions()).Shard(1)
	populate(t, s, "old", 1)
	restoreMustFail(t, s, save(t, src.Shard(1)), ErrTooLarge, "1 MiB value into an in-memory DB")
}

// TestRestoreLarge restores a stream larger than many transactions and
// than the restore batch bound, with values in the value log.
func TestRestoreLarge(t *testing.T) {
	o := testOptions(t)
	o.MemTableSize = 1 << 20
	src := mustOpen(t, o)
	s := src.Shard(3)
	big := bytes.Repeat([]byte{'v'}, 200<<10) // above the value threshold
	for i := range 45 {
		update(t, s, func(tx *ShardTxn) error {
			e := Entity{"t", fmt.Sprint(i)}
			if _, err := tx.PutValue(e, big); err != nil {
				return err
			}
			evs := make([][]byte, 40)
			for j := range evs {
				evs[j] = []byte(fmt.Sprint("event-", i, "-", j))
			}
			_, err := tx.Append(e, evs)
			return err
		})
	}
	stream := save(t, s)
	if len(stream) <= restoreBatchBytes {
		t.Fatalf("stream of %d bytes is not large", len(stream))
	}
	o2 := testOptions(t)
	o2.MemTableSize = 1 << 20
	dst := mustOpen(t, o2)
	if err := dst.Shard(3).Restore(bytes.NewReader(stream), nil); err != nil {
		t.Fatal(err)
	}
	if again := save(t, dst.Shard(3)); !bytes.Equal(again, stream) {
		t.Error("large restore differs")
	}
}

// TestRestoreCrash simulates crashes at every stage of Restore and Drop
// and checks that Open finishes or undoes them.
func TestRestoreCrash(t *testing.T) {
	src := mustOpen(t, memOptions())
	populate(t, src.Shard(1), "new", 50)
	stream := save(t, src.Shard(1))
	wantNew := view(t, src.Shard(1), "new")

	setup := func(t *testing.T) (Options, *DB, shardView) {
		o := testOptions(t)
		db := mustOpen(t, o)
		populate(t, db.Shard(1), "old", 5)
		populate(t, db.Shard(2), "n", 9)
		return o, db, view(t, db.Shard(1), "old")
	}
	reopen := func(t *testing.T, o Options, db *DB) *DB {
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		db = mustOpen(t, o)
		if n := countPrefix(t, db, []byte{tableStaging}) + countPrefix(t, db, []byte{tablePending}); n != 0 {
			t.Errorf("%d staging or pending keys after Open", n)
		}
		if got := view(t, db.Shard(2), "n"); got.Applied != 9 {
			t.Errorf("neighbour shard changed: %+v", got)
		}
		return db
	}

	t.Run("staged, not committed", func(t *testing.T) {
		o, db, wantOld := setup(t)
		if err := db.Shard(1).stage(bytes.NewReader(stream), nil); err != nil {
			t.Fatal(err)
		}
		db = reopen(t, o, db)
		if got := view(t, db.Shard(1), "old"); !reflect.DeepEqual(got, wantOld) {
			t.Error("an uncommitted restore changed the shard")
		}
	})
	t.Run("committed, half replaced", func(t *testing.T) {
		o, db, _ := setup(t)
		if err := db.Shard(1).stage(bytes.NewReader(stream), nil); err != nil {
			t.Fatal(err)
		}
		if err := db.setPending(1, opRestore); err != nil {
			t.Fatal(err)
		}
		// Half of the live data deleted, as a crash in deleteLive would.
		if err := db.deletePrefix(shardPrefix(tableJournal, 1)); err != nil {
			t.Fatal(err)
		}
		db = reopen(t, o, db)
		if got := view(t, db.Shard(1), "new"); !reflect.DeepEqual(got, wantNew) {
			t.Error("Open did not finish a committed restore")
		}
		if st := mustLoad(t, db.Shard(1), Entity{"cart", "old-0"}); st.Seq != 0 {
			t.Error("old data survived a finished restore")
		}
	})
	t.Run("replaced, cleaning up", func(t *testing.T) {
		o, db, _ := setup(t)
		s := db.Shard(1)
		if err := s.Restore(bytes.NewReader(stream), nil); err != nil {
			t.Fatal(err)
		}
		// Put back a staged copy and the cleanup record.
		if err := s.stage(bytes.NewReader(stream), nil); err != nil {
			t.Fatal(err)
		}
		if err := db.setPending(1, opRestoreCleanup); err != nil {
			t.Fatal(err)
		}
		db = reopen(t, o, db)
		if got := view(t, db.Shard(1), "new"); !reflect.DeepEqual(got, wantNew) {
			t.Error("cleanup changed the restored shard")
		}
	})
	t.Run("drop", func(t *testing.T) {
		o, db, _ := setup(t)
		if err := db.setPending(1, opDrop); err != nil {
			t.Fatal(err)
		}
		db = reopen(t, o, db)
		if kv := shardKeys(t, db, 1); len(kv) != 0 {
			t.Errorf("Open did not finish a drop: %d keys", len(kv))
		}
	})
	t.Run("corrupt pending record", func(t *testing.T) {
		o, db, _ := setup(t)
		if err := db.putRaw(pendingKey(1), []byte{recordVersion, 9}); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		_, err := Open(o)
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "key p/1:") {
			t.Errorf("Open over a corrupt pending record = %v, want ErrCorrupt naming p/1", err)
		}
	})
}

// TestShardPending: after a restore failed past its commit point, the
// shard refuses reads and writes until a Restore (or Drop) finishes it.
func TestShardPending(t *testing.T) {
	src := mustOpen(t, memOptions())
	populate(t, src.Shard(1), "new", 50)
	stream := save(t, src.Shard(1))

	db := mustOpen(t, memOptions())
	s := db.Shard(1)
	populate(t, s, "old", 5)
	// The state a failed finishPending leaves: staged copy, 'p' record,
	// pending flag.
	if err := s.stage(bytes.NewReader(stream), nil); err != nil {
		t.Fatal(err)
	}
	if err := db.setPending(1, opRestore); err != nil {
		t.Fatal(err)
	}
	s.st.mu.Lock()
	s.st.mu.pending = true
	s.st.mu.Unlock()

	_, appliedErr := s.Applied()
	_, prepErr := s.PrepareSave()
	_, loadErr := db.Shard(1).Load(Entity{"cart", "old-0"}) // another handle, same state
	for name, err := range map[string]error{
		"Applied":     appliedErr,
		"PrepareSave": prepErr,
		"Load":        loadErr,
		"Update":      s.Update(func(*ShardTxn) error { return nil }),
	} {
		if !errors.Is(err, ErrShardPending) {
			t.Errorf("%s on a pending shard = %v, want ErrShardPending", name, err)
		}
	}
	if a, err := db.Shard(2).Applied(); err != nil || a != 0 {
		t.Errorf("another shard: %d, %v", a, err)
	}
	// A failing Restore first finishes the pending one, then refuses its
	// own stream: the shard is then the pending restore's result.
	if err := s.Restore(strings.NewReader("junk"), nil); !errors.Is(err, ErrBadStream) {
		t.Fatalf("Restore = %v", err)
	}
	if got := view(t, s, "new"); !reflect.DeepEqual(got, view(t, src.Shard(1), "new")) {
		t.Error("the pending restore was not finished")
	}
}

// TestRestoreConcurrentReads reads a shard while it is restored over and
// over: a reader sees the old data or the new, never a half-replaced shard
// (which would read as ErrCorrupt or as a vanished entity).
func TestRestoreConcurrentReads(t *testing.T) {
	src := mustOpen(t, memOptions())
	populate(t, src.Shard(1), "new", 50)
	stream := save(t, src.Shard(1))
	db := mustOpen(t, memOptions())
	s := db.Shard(1)
	populate(t, s, "old", 5)
	done := make(chan struct{})
	errs := make(chan error, 1)
	var reads atomic.Int64 // reads completed, so restores interleave with them
	go func() {
		defer close(errs)
		restored := false
		for {
			select {
			case <-done:
				return
			default:
			}
			st, err := s.Load(Entity{"cart", "new-1"})
			if err != nil {
				errs <- err
				return
			}
			a, err := s.Applied()
			if err != nil {
				errs <- err
				return
			}
			restored = restored || st.Seq != 0
			if restored && (st.Seq != 3 || len(st.Events) != 2 || a != 50) {
				errs <- fmt.Errorf("after the first restore: %+v, applied %d", st, a)
				return
			}
			reads.Add(1)
		}
	}()
	for range 20 {
		// At least one read between two restores: the reads run
		// concurrently with restores however the goroutines are scheduled.
		for before := reads.Load(); reads.Load() == before; {
			select {
			case err := <-errs:
				t.Fatal(err)
			default:
				runtime.Gosched()
			}
		}
		if err := s.Restore(bytes.NewReader(stream), nil); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
}
