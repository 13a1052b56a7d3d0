package eventlog

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// memOptions returns in-memory options: shard tests that do not need a
// directory open faster.
func memOptions() Options {
	o := DefaultOptions("")
	o.InMemory = true
	o.BlockCacheSize = 1 << 20
	o.IndexCacheSize = 1 << 20
	return o
}

func update(t testing.TB, s *Shard, fn func(tx *ShardTxn) error) {
	t.Helper()
	if err := s.Update(fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

// appendEvents appends events in one Update and checks the first seq.
func appendEvents(t testing.TB, s *Shard, e Entity, wantFirst uint64, events ...string) {
	t.Helper()
	var evs [][]byte
	for _, ev := range events {
		evs = append(evs, []byte(ev))
	}
	update(t, s, func(tx *ShardTxn) error {
		first, err := tx.Append(e, evs)
		if err == nil && first != wantFirst {
			err = fmt.Errorf("Append(%v) = first %d, want %d", e, first, wantFirst)
		}
		return err
	})
}

func mustLoad(t testing.TB, s *Shard, e Entity) EntityState {
	t.Helper()
	st, err := s.Load(e)
	if err != nil {
		t.Fatalf("Load(%v): %v", e, err)
	}
	return st
}

func events(from uint64, data ...string) []Event {
	var evs []Event
	for i, d := range data {
		evs = append(evs, Event{Seq: from + uint64(i), Data: []byte(d)})
	}
	return evs
}

func TestEntityValidate(t *testing.T) {
	for _, e := range []Entity{{"t", "i"}, {"\xff", "\x00"}, {strings.Repeat("t", MaxEntityBytes-1), "i"}} {
		if err := e.Validate(); err != nil {
			t.Errorf("Validate(%v) = %v", e, err)
		}
	}
	for _, e := range []Entity{{}, {"", "i"}, {"t", ""}, {strings.Repeat("t", MaxEntityBytes), "i"}} {
		if err := e.Validate(); !errors.Is(err, ErrInvalidEntity) {
			t.Errorf("Validate(%v) = %v, want ErrInvalidEntity", e, err)
		}
	}
	s := mustOpen(t, memOptions()).Shard(1)
	bad := Entity{"", "i"}
	_, loadErr := s.Load(bad)
	_, headErr := s.Head(bad)
	_, eventsErr := s.Events(bad, 1, 0)
	_, _, valueErr := s.Value(bad)
	for name, err := range map[string]error{"Load": loadErr, "Head": headErr, "Events": eventsErr, "Value": valueErr} {
		if !errors.Is(err, ErrInvalidEntity) {
			t.Errorf("%s(invalid) = %v, want ErrInvalidEntity", name, err)
		}
	}
	err := s.Update(func(tx *ShardTxn) error {
		_, err := tx.Append(bad, [][]byte{[]byte("x")})
		return err
	})
	if !errors.Is(err, ErrInvalidEntity) {
		t.Errorf("Append(invalid) = %v, want ErrInvalidEntity", err)
	}
}

// TestEntityKeysDoNotCollide stores events under entities whose plain
// concatenations collide, or whose encodings would share a prefix, and
// checks that each reads back only its own.
func TestEntityKeysDoNotCollide(t *testing.T) {
	s := mustOpen(t, memOptions()).Shard(1)
	ents := []Entity{
		{"a", "bc"}, {"ab", "c"}, {"a", "b"}, {"a", "b\x00"}, {"a", "b\x00\x00\x00\x00\x00\x00\x00\x01"},
		{"a\x00\x01b", "c"}, {"a", "\x00\x01bc"},
	}
	for i, e := range ents {
		for j, f := range ents {
			ke, kf := entityKey(tableJournal, 1, e), entityKey(tableJournal, 1, f)
			if i != j && bytes.HasPrefix(kf, ke) {
				t.Fatalf("journal prefix of %v is a prefix of %v's", e, f)
			}
		}
		evs := make([]string, i+1)
		for k := range evs {
			evs[k] = fmt.Sprintf("%s|%s|%d", e.Type, e.ID, k)
		}
		appendEvents(t, s, e, 1, evs...)
		update(t, s, func(tx *ShardTxn) error {
			_, err := tx.PutValue(e, []byte(e.Type+"|"+e.ID))
			return err
		})
	}
	for i, e := range ents {
		st := mustLoad(t, s, e)
		if st.Seq != uint64(i+1) || len(st.Events) != i+1 {
			t.Fatalf("Load(%v) = seq %d with %d events, want %d", e, st.Seq, len(st.Events), i+1)
		}
		for k, ev := range st.Events {
			if want := fmt.Sprintf("%s|%s|%d", e.Type, e.ID, k); string(ev.Data) != want {
				t.Errorf("Load(%v) event %d = %q, want %q", e, k, ev.Data, want)
			}
		}
		v, found, err := s.Value(e)
		if err != nil || !found || string(v.State) != e.Type+"|"+e.ID || v.Version != 1 {
			t.Errorf("Value(%v) = %+v, %v, %v", e, v, found, err)
		}
	}
}

func TestAppendGapless(t *testing.T) {
	s := mustOpen(t, memOptions()).Shard(7)
	e, other := Entity{"cart", "c1"}, Entity{"cart", "c2"}
	appendEvents(t, s, e, 1, "e1", "e2")
	appendEvents(t, s, e, 3, "e3")
	appendEvents(t, s, other, 1, "o1")
	// Several appends in one transaction continue from each other.
	update(t, s, func(tx *ShardTxn) error {
		for i, want := range []uint64{4, 6} {
			first, err := tx.Append(e, [][]byte{[]byte(fmt.Sprint("e", want)), []byte(fmt.Sprint("e", want+1))})
			if err != nil || first != want {
				return fmt.Errorf("append %d: first %d, %v; want %d", i, first, err, want)
			}
		}
		first, err := tx.Append(e, nil) // no events: nothing written, head+1
		if err != nil || first != 8 {
			return fmt.Errorf("empty append: %d, %v", first, err)
		}
		return nil
	})
	want := events(1, "e1", "e2", "e3", "e4", "e5", "e6", "e7")
	if st := mustLoad(t, s, e); st.Seq != 7 || st.SnapshotSeq != 0 || st.Snapshot != nil || !reflect.DeepEqual(st.Events, want) {
		t.Fatalf("Load = %+v", st)
	}
	if h, err := s.Head(e); h != 7 || err != nil {
		t.Errorf("Head = %d, %v", h, err)
	}
	for _, c := range []struct {
		from  uint64
		limit int
		want  []Event
	}{
		{0, 0, want}, {1, 0, want}, {3, 0, want[2:]}, {3, 2, want[2:4]}, {6, 5, want[5:]},
		{7, 1, want[6:]}, {8, 0, nil}, {100, 0, nil}, {1, -1, want},
	} {
		got, err := s.Events(e, c.from, c.limit)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("Events(from %d, limit %d) = %v, %v; want %v", c.from, c.limit, got, err, c.want)
		}
	}
	if st := mustLoad(t, s, other); st.Seq != 1 || !reflect.DeepEqual(st.Events, events(1, "o1")) {
		t.Errorf("Load(other) = %+v", st)
	}
	if st := mustLoad(t, s, Entity{"cart", "never"}); !reflect.DeepEqual(st, EntityState{}) {
		t.Errorf("Load(unwritten) = %+v", st)
	}
	// An empty event is stored and read back as empty, not nil.
	appendEvents(t, s, other, 2, "")
	if evs, err := s.Events(other, 2, 0); err != nil || len(evs) != 1 || evs[0].Data == nil || len(evs[0].Data) != 0 {
		t.Errorf("empty event read back as %#v, %v", evs, err)
	}
}

// TestAppendCopies: Append copies the events, so the caller may reuse its
// buffer before the transaction commits.
func TestAppendCopies(t *testing.T) {
	s := mustOpen(t, memOptions()).Shard(1)
	e := Entity{"t", "i"}
	buf := []byte("first")
	update(t, s, func(tx *ShardTxn) error {
		if _, err := tx.Append(e, [][]byte{buf}); err != nil {
			return err
		}
		copy(buf, "XXXXX")
		return nil
	})
	if st := mustLoad(t, s, e); string(st.Events[0].Data) != "first" {
		t.Fatalf("stored event changed with the caller's buffer: %q", st.Events[0].Data)
	}
}

func TestUpdateReadsItsWrites(t *testing.T) {
	db := mustOpen(t, memOptions())
	s := db.Shard(3)
	e := Entity{"reg", "r1"}
	appendEvents(t, s, e, 1, "a")
	update(t, s, func(tx *ShardTxn) error {
		if _, err := tx.Append(e, [][]byte{[]byte("b"), []byte("c")}); err != nil {
			return err
		}
		if h, err := tx.Head(e); h != 3 || err != nil {
			return fmt.Errorf("tx.Head = %d, %v", h, err)
		}
		if err := tx.PutSnapshot(e, 2, []byte("ab")); err != nil {
			return err
		}
		st, err := tx.Load(e)
		if err != nil || st.Seq != 3 || st.SnapshotSeq != 2 || string(st.Snapshot) != "ab" || !reflect.DeepEqual(st.Events, events(3, "c")) {
			return fmt.Errorf("tx.Load = %+v, %v", st, err)
		}
		if _, err := tx.PutValue(e, []byte("v1")); err != nil {
			return err
		}
		if v, found, err := tx.Value(e); !found || err != nil || string(v.State) != "v1" || v.Version != 1 {
			return fmt.Errorf("tx.Value = %+v, %v, %v", v, found, err)
		}
		if err := tx.PutRequest([]byte("req"), 9, []byte("res")); err != nil {
			return err
		}
		if r, found, err := tx.Request([]byte("req")); !found || err != nil || string(r) != "res" {
			return fmt.Errorf("tx.Request = %q, %v, %v", r, found, err)
		}
		if err := tx.SetApplied(9); err != nil {
			return err
		}
		if a, err := tx.Applied(); a != 9 || err != nil {
			return fmt.Errorf("tx.Applied = %d, %v", a, err)
		}
		// ForgetRequests sees the request put in this transaction.
		if n, err := tx.ForgetRequestsN(10, 0); n != 1 || err != nil {
			return fmt.Errorf("ForgetRequestsN = %d, %v", n, err)
		}
		if _, found, err := tx.Request([]byte("req")); found || err != nil {
			return fmt.Errorf("tx.Request after forgetting = %v, %v", found, err)
		}
		// Nothing is visible outside before the commit.
		return db.bdb.View(func(txn *badger.Txn) error {
			if h, err := getHead(txn, 3, e); h != 1 || err != nil {
				return fmt.Errorf("head outside the transaction = %d, %v", h, err)
			}
			if a, err := getApplied(txn, 3); a != 0 || err != nil {
				return fmt.Errorf("applied outside the transaction = %d, %v", a, err)
			}
			return nil
		})
	})
	if a, err := s.Applied(); a != 9 || err != nil {
		t.Errorf("Applied = %d, %v", a, err)
	}
	if st := mustLoad(t, s, e); st.Seq != 3 || st.SnapshotSeq != 2 {
		t.Errorf("Load after commit = %+v", st)
	}
}

// shardKeys returns every key and value of a shard's tables, for
// before/after comparisons.
func shardKeys(t testing.TB, db *DB, shard uint64) map[string]string {
	t.Helper()
	kv := map[string]string{}
	err := db.bdb.View(func(txn *badger.Txn) error {
		for _, table := range append(shardTables[:], tablePending, tableStaging) {
			o := badger.DefaultIteratorOptions
			o.Prefix = shardPrefix(table, shard)
			it := txn.NewIterator(o)
			for it.Rewind(); it.Valid(); it.Next() {
				v, err := it.Item().ValueCopy(nil)
				if err != nil {
					it.Close()
					return err
				}
				kv[string(it.Item().Key())] = string(v)
			}
			it.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// populate writes a bit of everything into a shard.
func populate(t testing.TB, s *Shard, tag string, applied uint64) {
	t.Helper()
	update(t, s, func(tx *ShardTxn) error {
		for i := range 3 {
			e := Entity{"cart", fmt.Sprintf("%s-%d", tag, i)}
			if _, err := tx.Append(e, [][]byte{[]byte(tag + "1"), []byte(tag + "2"), []byte(tag + "3")}); err != nil {
				return err
			}
			if i > 0 {
				if err := tx.PutSnapshot(e, uint64(i), []byte(fmt.Sprintf("snap-%s-%d", tag, i))); err != nil {
					return err
				}
			}
			v := Entity{"reg", fmt.Sprintf("%s-%d", tag, i)}
			if _, err := tx.PutValue(v, []byte("value-"+tag)); err != nil {
				return err
			}
			if i == 1 {
				if _, err := tx.DeleteValue(v); err != nil {
					return err
				}
			}
			if err := tx.PutRequest([]byte(fmt.Sprintf("req-%s-%d", tag, i)), uint64(i+1), []byte("result-"+tag)); err != nil {
				return err
			}
		}
		return tx.SetApplied(applied)
	})
}

func TestUpdateRollback(t *testing.T) {
	db := mustOpen(t, memOptions())
	s := db.Shard(1)
	populate(t, s, "x", 10)
	before := shardKeys(t, db, 1)
	boom := errors.New("boom")
	err := s.Update(func(tx *ShardTxn) error {
		if _, err := tx.Append(Entity{"cart", "x-0"}, [][]byte{[]byte("more")}); err != nil {
			return err
		}
		if _, err := tx.PutValue(Entity{"reg", "new"}, []byte("v")); err != nil {
			return err
		}
		if err := tx.PutRequest([]byte("r"), 11, nil); err != nil {
			return err
		}
		if err := tx.ForgetRequests(100); err != nil {
			return err
		}
		if err := tx.SetApplied(11); err != nil {
			return err
		}
		return boom
	})
	if err != boom {
		t.Fatalf("Update = %v, want fn's error as is", err)
	}
	if after := shardKeys(t, db, 1); !reflect.DeepEqual(after, before) {
		t.Fatalf("a failed Update changed the shard: %d keys before, %d after", len(before), len(after))
	}
	if a, _ := s.Applied(); a != 10 {
		t.Errorf("Applied = %d after a rolled back Update, want 10", a)
	}
}

func TestUpdateBatchTooLarge(t *testing.T) {
	o := memOptions()
	o.MemTableSize = 1 << 20 // transactions of ~150 KiB
	db := mustOpen(t, o)
	s := db.Shard(1)
	e := Entity{"t", "big"}
	update(t, s, func(tx *ShardTxn) error { return tx.SetApplied(5) })
	before := shardKeys(t, db, 1)

	ev := bytes.Repeat([]byte{'x'}, 1000)
	batch := make([][]byte, 500) // ~500 KB inline: several transactions' worth
	for i := range batch {
		batch[i] = ev
	}
	for _, ignore := range []bool{false, true} {
		err := s.Update(func(tx *ShardTxn) error {
			if err := tx.SetApplied(6); err != nil {
				return err
			}
			if _, err := tx.PutValue(Entity{"v", "v"}, []byte("v")); err != nil {
				return err
			}
			_, err := tx.Append(e, batch)
			if !errors.Is(err, ErrBatchTooLarge) {
				return fmt.Errorf("Append = %v, want ErrBatchTooLarge", err)
			}
			// The failed write poisons the transaction.
			if _, perr := tx.PutValue(Entity{"v", "w"}, []byte("w")); !errors.Is(perr, ErrBatchTooLarge) {
				return fmt.Errorf("PutValue after the failure = %v, want the same error", perr)
			}
			if ignore {
				return nil
			}
			return err
		})
		if !errors.Is(err, ErrBatchTooLarge) {
			t.Fatalf("ignore=%v: Update = %v, want ErrBatchTooLarge", ignore, err)
		}
		if after := shardKeys(t, db, 1); !reflect.DeepEqual(after, before) {
			t.Fatalf("ignore=%v: a too large Update wrote %d keys", ignore, len(after)-len(before))
		}
	}
	// Split, it fits.
	for i := 0; i < len(batch); i += 50 {
		update(t, s, func(tx *ShardTxn) error {
			first, err := tx.Append(e, batch[i:i+50])
			if err == nil && first != uint64(i+1) {
				err = fmt.Errorf("first %d, want %d", first, i+1)
			}
			return err
		})
	}
	if h, err := s.Head(e); h != uint64(len(batch)) || err != nil {
		t.Errorf("Head after the split batch = %d, %v", h, err)
	}
}

func TestSnapshots(t *testing.T) {
	s := mustOpen(t, memOptions()).Shard(1)
	e := Entity{"cart", "c"}
	put := func(seq uint64, state string) error {
		return s.Update(func(tx *ShardTxn) error { return tx.PutSnapshot(e, seq, []byte(state)) })
	}
	if err := put(1, "s"); !errors.Is(err, ErrOutOfOrder) {
		t.Errorf("snapshot of an entity without events = %v, want ErrOutOfOrder", err)
	}
	appendEvents(t, s, e, 1, "1", "2", "3", "4", "5")
	for _, seq := range []uint64{0, 6} {
		if err := put(seq, "s"); !errors.Is(err, ErrOutOfOrder) {
			t.Errorf("snapshot at %d of 5 = %v, want ErrOutOfOrder", seq, err)
		}
	}
	if err := put(3, "123"); err != nil {
		t.Fatal(err)
	}
	appendEvents(t, s, e, 6, "6", "7")
	st := mustLoad(t, s, e)
	if st.Seq != 7 || st.SnapshotSeq != 3 || string(st.Snapshot) != "123" || !reflect.DeepEqual(st.Events, events(4, "4", "5", "6", "7")) {
		t.Fatalf("Load = %+v", st)
	}
	if err := put(2, "older"); !errors.Is(err, ErrOutOfOrder) {
		t.Errorf("older snapshot = %v, want ErrOutOfOrder", err)
	}
	if err := put(3, "again"); err != nil {
		t.Errorf("snapshot at the same seq = %v", err)
	}
	if err := put(7, ""); err != nil {
		t.Fatal(err)
	}
	st = mustLoad(t, s, e)
	if st.Seq != 7 || st.SnapshotSeq != 7 || st.Snapshot == nil || len(st.Snapshot) != 0 || len(st.Events) != 0 {
		t.Fatalf("Load after a snapshot at the head = %+v", st)
	}
	// The journal is kept whole.
	if evs, err := s.Events(e, 1, 0); err != nil || len(evs) != 7 {
		t.Errorf("Events(1) after snapshots: %d events, %v", len(evs), err)
	}
}

func TestValues(t *testing.T) {
	s := mustOpen(t, memOptions()).Shard(1)
	e := Entity{"reg", "r"}
	check := func(want Value, wantFound bool) {
		t.Helper()
		v, found, err := s.Value(e)
		if err != nil || found != wantFound || !reflect.DeepEqual(v, want) {
			t.Fatalf("Value = %+v, %v, %v; want %+v, %v", v, found, err, want, wantFound)
		}
	}
	check(Value{}, false)
	op := func(wantVersion uint64, fn func(tx *ShardTxn) (uint64, error)) {
		t.Helper()
		update(t, s, func(tx *ShardTxn) error {
			v, err := fn(tx)
			if err == nil && v != wantVersion {
				err = fmt.Errorf("version %d, want %d", v, wantVersion)
			}
			return err
		})
	}
	put := func(state string) func(tx *ShardTxn) (uint64, error) {
		return func(tx *ShardTxn) (uint64, error) { return tx.PutValue(e, []byte(state)) }
	}
	del := func(tx *ShardTxn) (uint64, error) { return tx.DeleteValue(e) }
	op(1, put("a"))
	check(Value{Version: 1, State: []byte("a")}, true)
	op(2, put(""))
	check(Value{Version: 2, State: []byte{}}, true)
	op(3, del)
	check(Value{Version: 3, Deleted: true}, true)
	op(4, del)
	check(Value{Version: 4, Deleted: true}, true)
	op(5, put("b")) // re-created: the version goes on, no ABA
	check(Value{Version: 5, State: []byte("b")}, true)

	// Deleting a value never written leaves a tombstone at version 1.
	e2 := Entity{"reg", "never"}
	update(t, s, func(tx *ShardTxn) error {
		v, err := tx.DeleteValue(e2)
		if err == nil && v != 1 {
			err = fmt.Errorf("version %d", v)
		}
		return err
	})
	if v, found, err := s.Value(e2); err != nil || !found || !v.Deleted || v.Version != 1 || v.State != nil {
		t.Errorf("Value(deleted, never written) = %+v, %v, %v", v, found, err)
	}
}

func TestRequests(t *testing.T) {
	db := mustOpen(t, memOptions())
	s := db.Shard(1)
	id := func(i int) []byte { return []byte(fmt.Sprintf("req-%02d", i)) }
	update(t, s, func(tx *ShardTxn) error {
		for i := 1; i <= 10; i++ {
			if err := tx.PutRequest(id(i), uint64(i), []byte(fmt.Sprint("result-", i))); err != nil {
				return err
			}
		}
		return tx.PutRequest(nil, 3, nil) // an empty id and an empty result are fine
	})
	check := func(i int, wantFound bool) {
		t.Helper()
		r, found, err := s.Request(id(i))
		if err != nil || found != wantFound || (found && string(r) != fmt.Sprint("result-", i)) {
			t.Errorf("Request(%s) = %q, %v, %v; want found %v", id(i), r, found, err, wantFound)
		}
	}
	for i := 1; i <= 10; i++ {
		check(i, true)
	}
	if r, found, err := s.Request(nil); err != nil || !found || r == nil || len(r) != 0 {
		t.Errorf("Request(empty) = %#v, %v, %v", r, found, err)
	}
	// req-07 is recorded again at a later index: its old index entry goes.
	update(t, s, func(tx *ShardTxn) error { return tx.PutRequest(id(7), 12, []byte("result-7")) })
	update(t, s, func(tx *ShardTxn) error { return tx.ForgetRequests(5) })
	for i := 1; i <= 10; i++ {
		check(i, i >= 5)
	}
	if _, found, _ := s.Request(nil); found {
		t.Error("the empty id (index 3) survived ForgetRequests(5)")
	}
	update(t, s, func(tx *ShardTxn) error {
		n, err := tx.ForgetRequestsN(11, 2) // 5 and 6 only
		if err == nil && n != 2 {
			err = fmt.Errorf("forgot %d", n)
		}
		return err
	})
	for i := 5; i <= 10; i++ {
		check(i, i >= 7)
	}
	update(t, s, func(tx *ShardTxn) error { return tx.ForgetRequests(11) })
	for i := 1; i <= 10; i++ {
		check(i, i == 7) // at index 12 now
	}
	if kv := shardKeys(t, db, 1); len(kv) != 2 {
		t.Errorf("%d keys left, want req-07's two", len(kv))
	}

	long := bytes.Repeat([]byte{'r'}, MaxRequestIDBytes+1)
	if _, _, err := s.Request(long); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Request(long id) = %v", err)
	}
	err := s.Update(func(tx *ShardTxn) error { return tx.PutRequest(long, 1, nil) })
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("PutRequest(long id) = %v", err)
	}
}

func TestAppliedMonotonic(t *testing.T) {
	s := mustOpen(t, memOptions()).Shard(1)
	if a, err := s.Applied(); a != 0 || err != nil {
		t.Fatalf("Applied of a new shard = %d, %v", a, err)
	}
	update(t, s, func(tx *ShardTxn) error { return tx.SetApplied(5) })
	update(t, s, func(tx *ShardTxn) error { return tx.SetApplied(5) }) // again: fine
	// A refused write leaves the transaction usable: the rest commits.
	update(t, s, func(tx *ShardTxn) error {
		if err := tx.SetApplied(4); !errors.Is(err, ErrOutOfOrder) {
			return fmt.Errorf("SetApplied(4) after 5 = %v, want ErrOutOfOrder", err)
		}
		_, err := tx.PutValue(Entity{"v", "v"}, []byte("x"))
		return err
	})
	if a, _ := s.Applied(); a != 5 {
		t.Errorf("Applied = %d, want 5", a)
	}
	if _, found, _ := s.Value(Entity{"v", "v"}); !found {
		t.Error("the write after a refused SetApplied was not committed")
	}
	update(t, s, func(tx *ShardTxn) error { return tx.SetApplied(1 << 40) })
	if a, _ := s.Applied(); a != 1<<40 {
		t.Errorf("Applied = %d", a)
	}
}

func TestShardLimits(t *testing.T) {
	db := mustOpen(t, testOptions(t))
	if db.MaxStateBytes() != MaxEventBytes {
		t.Fatalf("MaxStateBytes with the defaults = %d, want %d", db.MaxStateBytes(), MaxEventBytes)
	}
	s := db.Shard(1)
	e := Entity{"t", "i"}
	big := make([]byte, MaxEventBytes+1)
	for name, fn := range map[string]func(tx *ShardTxn) error{
		"event": func(tx *ShardTxn) error {
			_, err := tx.Append(e, [][]byte{[]byte("ok"), big})
			return err
		},
		"events": func(tx *ShardTxn) error {
			_, err := tx.Append(e, make([][]byte, MaxEventsPerAppend+1))
			return err
		},
		"snapshot": func(tx *ShardTxn) error { return tx.PutSnapshot(e, 1, big) },
		"value": func(tx *ShardTxn) error {
			_, err := tx.PutValue(e, big)
			return err
		},
		"result": func(tx *ShardTxn) error { return tx.PutRequest([]byte("r"), 1, big) },
	} {
		if err := s.Update(fn); !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: %v, want ErrTooLarge", name, err)
		}
		if kv := shardKeys(t, db, 1); len(kv) != 0 {
			t.Fatalf("%s: %d keys written", name, len(kv))
		}
	}
	// At the limit, it is stored (in the value log) and read back.
	max := bytes.Repeat([]byte{7}, MaxEventBytes)
	update(t, s, func(tx *ShardTxn) error {
		if _, err := tx.Append(e, [][]byte{max}); err != nil {
			return err
		}
		_, err := tx.PutValue(e, max)
		return err
	})
	if st := mustLoad(t, s, e); len(st.Events) != 1 || !bytes.Equal(st.Events[0].Data, max) {
		t.Error("a MaxEventBytes event did not read back")
	}

	// An in-memory DB stores less.
	mem := mustOpen(t, memOptions())
	if n := mem.MaxStateBytes(); n >= MaxEventBytes || n < 500<<10 {
		t.Fatalf("in-memory MaxStateBytes = %d", n)
	}
	err := mem.Shard(1).Update(func(tx *ShardTxn) error {
		_, err := tx.Append(e, [][]byte{make([]byte, mem.MaxStateBytes()+1)})
		return err
	})
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("in memory, MaxStateBytes+1: %v", err)
	}
}

func TestShardTxnAfterUpdate(t *testing.T) {
	s := mustOpen(t, memOptions()).Shard(1)
	var kept *ShardTxn
	update(t, s, func(tx *ShardTxn) error { kept = tx; return nil })
	if _, err := kept.Append(Entity{"t", "i"}, [][]byte{[]byte("x")}); err == nil {
		t.Error("Append on a finished ShardTxn succeeded")
	}
	if _, err := kept.Load(Entity{"t", "i"}); err == nil {
		t.Error("Load on a finished ShardTxn succeeded")
	}
	if err := kept.ForgetRequests(10); err == nil {
		t.Error("ForgetRequests on a finished ShardTxn succeeded")
	}
}

func TestShardClosed(t *testing.T) {
	db := mustOpen(t, memOptions())
	s := db.Shard(1)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	e := Entity{"t", "i"}
	_, appliedErr := s.Applied()
	_, loadErr := s.Load(e)
	_, _, requestErr := s.Request(nil)
	_, prepErr := s.PrepareSave()
	for name, err := range map[string]error{
		"Applied":     appliedErr,
		"Load":        loadErr,
		"Request":     requestErr,
		"Update":      s.Update(func(*ShardTxn) error { return nil }),
		"Save":        s.Save(&bytes.Buffer{}, nil),
		"PrepareSave": prepErr,
		"Restore":     s.Restore(strings.NewReader(""), nil),
		"Drop":        s.Drop(),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}

// TestCorruptRecords writes malformed records under every shard table and
// checks that reads fail with ErrCorrupt naming the key, and that Save
// refuses to stream a record that does not decode.
func TestCorruptRecords(t *testing.T) {
	e := Entity{"cart", "c1"}
	head := func(s *Shard) error { _, err := s.Head(e); return err }
	load := func(s *Shard) error { _, err := s.Load(e); return err }
	value := func(s *Shard) error { _, _, err := s.Value(e); return err }
	const del, undecodable, decodable = "delete", true, false
	for _, c := range []struct {
		name      string
		key       []byte
		value     any // []byte to write, or del
		read      func(s *Shard) error
		named     string
		saveFails bool
	}{
		{"head short", entityKey(tableHead, 7, e), []byte{recordVersion, 0, 1}, head, `h/7/"cart"/"c1"`, undecodable},
		{"head 0", entityKey(tableHead, 7, e), encodeHead(0), load, `h/7/"cart"/"c1"`, undecodable},
		{"snapshot version", entityKey(tableSnapshot, 7, e), append([]byte{9}, encodeSnapshot(1, nil)[1:]...), load, `s/7/"cart"/"c1"`, undecodable},
		{"snapshot beyond head", entityKey(tableSnapshot, 7, e), encodeSnapshot(9, []byte("s")), load, `s/7/"cart"/"c1"`, decodable},
		{"value flags", entityKey(tableValue, 7, e), []byte{recordVersion, 4, 0, 0, 0, 0, 0, 0, 0, 1}, value, `v/7/"cart"/"c1"`, undecodable},
		{"value version 0", entityKey(tableValue, 7, e), encodeValue(Value{}), value, `v/7/"cart"/"c1"`, undecodable},
		{"tombstone with state", entityKey(tableValue, 7, e), append(encodeValue(Value{Version: 2, Deleted: true}), 'x'), value, `v/7/"cart"/"c1"`, undecodable},
		{"request", requestKey(7, []byte("req")), []byte{recordVersion},
			func(s *Shard) error { _, _, err := s.Request([]byte("req")); return err }, `r/7/"req"`, undecodable},
		{"applied", appliedKey(7), encodeApplied(1)[:5],
			func(s *Shard) error { _, err := s.Applied(); return err }, `a/7`, undecodable},
		{"gap", journalKey(7, e, 2), del, load, `j/7/"cart"/"c1"/3`, decodable},
		{"missing tail", journalKey(7, e, 3), del,
			func(s *Shard) error { _, err := s.Events(e, 2, 0); return err }, `j/7/"cart"/"c1"/3`, decodable},
		{"event beyond head", journalKey(7, e, 4), []byte("extra"), load, `j/7/"cart"/"c1"/4`, decodable},
		{"orphan request index", requestIndexKey(7, 1, []byte("gone")), []byte{},
			func(s *Shard) error { return s.Update(func(tx *ShardTxn) error { return tx.ForgetRequests(5) }) }, `q/7/1/"gone"`, decodable},
		{"request index with a value", requestIndexKey(7, 1, []byte("x")), []byte("v"),
			func(s *Shard) error { return s.Update(func(tx *ShardTxn) error { return tx.ForgetRequests(5) }) }, `q/7/1/"x"`, undecodable},
		{"request batch", requestIndexKey(7, 1, nil), []byte{recordVersion, 0, 9, 'x'},
			func(s *Shard) error { return s.Update(func(tx *ShardTxn) error { return tx.ForgetRequests(5) }) }, `q/7/1/""`, undecodable},
	} {
		t.Run(c.name, func(t *testing.T) {
			db := mustOpen(t, memOptions())
			s := db.Shard(7)
			appendEvents(t, s, e, 1, "1", "2", "3")
			var err error
			if c.value == del {
				err = db.bdb.Update(func(txn *badger.Txn) error { return txn.Delete(c.key) })
			} else {
				err = db.putRaw(c.key, c.value.([]byte))
			}
			if err != nil {
				t.Fatal(err)
			}
			err = c.read(s)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "key "+c.named+":") {
				t.Errorf("read = %v, want ErrCorrupt naming %s", err, c.named)
			}
			err = s.Save(&bytes.Buffer{}, nil)
			if c.saveFails != errors.Is(err, ErrCorrupt) || (!c.saveFails && err != nil) {
				t.Errorf("Save = %v, want ErrCorrupt %v", err, c.saveFails)
			}
		})
	}
}

// TestHeadCache: with CacheHeads on, heads stay right across commits, a
// failed Update does not leak its writes into the cache, and Drop and
// Restore clear it.
func TestHeadCache(t *testing.T) {
	db := mustOpen(t, testOptions(t))
	s := db.Shard(7)
	s.CacheHeads(100)
	e := Entity{Type: "t", ID: "x"}
	appendOne := func() error {
		return s.Update(func(tx *ShardTxn) error {
			_, err := tx.Append(e, [][]byte{[]byte("ev")})
			return err
		})
	}
	head := func() uint64 {
		t.Helper()
		var h uint64
		if err := s.Update(func(tx *ShardTxn) error {
			var err error
			h, err = tx.Head(e)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return h
	}
	for range 3 {
		if err := appendOne(); err != nil {
			t.Fatal(err)
		}
	}
	if h := head(); h != 3 {
		t.Fatalf("head %d, want 3", h)
	}
	boom := errors.New("boom")
	if err := s.Update(func(tx *ShardTxn) error {
		if _, err := tx.Append(e, [][]byte{[]byte("lost")}); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if h := head(); h != 3 {
		t.Fatalf("after a failed Update: head %d, want 3", h)
	}
	var buf bytes.Buffer
	if err := s.Save(&buf, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Drop(); err != nil {
		t.Fatal(err)
	}
	if h := head(); h != 0 {
		t.Fatalf("after Drop: head %d, want 0", h)
	}
	if err := appendOne(); err != nil {
		t.Fatal(err)
	}
	if err := s.Restore(&buf, nil); err != nil {
		t.Fatal(err)
	}
	if h := head(); h != 3 {
		t.Fatalf("after Restore: head %d, want 3", h)
	}
	if err := appendOne(); err != nil {
		t.Fatal(err)
	}
	st, err := s.Load(e)
	if err != nil || st.Seq != 4 || len(st.Events) != 4 {
		t.Fatalf("load: %+v %v", st, err)
	}
}

// TestRequestBatchRecords checks that a transaction's requests share one
// 'q' record, listed in the order they were recorded, and that a
// transaction that records none writes none.
func TestRequestBatchRecords(t *testing.T) {
	db := mustOpen(t, memOptions())
	s := db.Shard(4)
	update(t, s, func(tx *ShardTxn) error {
		for i := uint64(20); i < 25; i++ {
			if err := tx.PutRequest([]byte(fmt.Sprint("id-", i)), i, []byte("res")); err != nil {
				return err
			}
		}
		return tx.SetApplied(24)
	})
	update(t, s, func(tx *ShardTxn) error { return tx.SetApplied(25) })
	var q []string
	for k, v := range shardKeys(t, db, 4) {
		if k[0] == tableRequestIndex {
			q = append(q, k)
			refs, err := decodeRequestBatch([]byte(k), 20, []byte(v))
			if err != nil || len(refs) != 5 || refs[0].index != 20 || string(refs[4].id) != "id-24" || refs[4].index != 24 {
				t.Errorf("batch record = %+v, %v", refs, err)
			}
		}
	}
	if len(q) != 1 || q[0] != string(requestIndexKey(4, 20, nil)) {
		t.Fatalf("'q' keys %q, want one at index 20", q)
	}
	update(t, s, func(tx *ShardTxn) error { return tx.ForgetRequests(23) })
	for i := uint64(20); i < 25; i++ {
		if _, found, err := s.Request([]byte(fmt.Sprint("id-", i))); err != nil || found != (i >= 23) {
			t.Errorf("Request(id-%d) found %v, %v", i, found, err)
		}
	}
	// What is left of the record moved to its lowest index.
	kv := shardKeys(t, db, 4)
	if _, ok := kv[string(requestIndexKey(4, 23, nil))]; !ok {
		t.Errorf("no batch record at index 23 after forgetting up to it")
	}
	update(t, s, func(tx *ShardTxn) error { return tx.ForgetRequests(100) })
	for k := range shardKeys(t, db, 4) {
		if k[0] == tableRequestIndex || k[0] == tableRequest {
			t.Errorf("key %s left after forgetting everything", keyName([]byte(k)))
		}
	}
}

// TestLegacyRequestIndex checks that shards written before request batch
// records (one empty 'q' entry per request, keyed by index and id) are
// still read, re-recorded and forgotten correctly, and that their
// records stream through Save and Restore.
func TestLegacyRequestIndex(t *testing.T) {
	db := mustOpen(t, memOptions())
	s := db.Shard(2)
	legacy := func(id string, index uint64) {
		t.Helper()
		if err := db.putRaw(requestKey(2, []byte(id)), encodeRequest(index, []byte("old-"+id))); err != nil {
			t.Fatal(err)
		}
		if err := db.putRaw(requestIndexKey(2, index, []byte(id)), []byte{}); err != nil {
			t.Fatal(err)
		}
	}
	legacy("a", 1)
	legacy("b", 2)
	legacy("", 5) // the empty id: its legacy key is a batch record's key
	legacy("c", 8)
	update(t, s, func(tx *ShardTxn) error {
		if r, found, err := tx.Request([]byte("a")); !found || err != nil || string(r) != "old-a" {
			return fmt.Errorf("Request(a) = %q, %v, %v", r, found, err)
		}
		// Re-recorded at a later index: its legacy entry goes.
		if err := tx.PutRequest([]byte("b"), 5, []byte("new-b")); err != nil {
			return err
		}
		return tx.PutRequest([]byte("d"), 6, []byte("new-d"))
	})
	kv := shardKeys(t, db, 2)
	if _, ok := kv[string(requestIndexKey(2, 2, []byte("b")))]; ok {
		t.Error("b's legacy index entry survived its re-recording")
	}
	refs, err := decodeRequestBatch(requestIndexKey(2, 5, nil), 5, []byte(kv[string(requestIndexKey(2, 5, nil))]))
	if err != nil || len(refs) != 3 || len(refs[0].id) != 0 || string(refs[1].id) != "b" || string(refs[2].id) != "d" || refs[2].index != 6 {
		t.Errorf("merged batch record = %+v, %v", refs, err)
	}
	// The stream of a shard holding both kinds restores.
	var buf bytes.Buffer
	if err := s.Save(&buf, nil); err != nil {
		t.Fatal(err)
	}
	other := mustOpen(t, memOptions()).Shard(2)
	if err := other.Restore(&buf, nil); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	for _, sh := range []*Shard{s, other} {
		update(t, sh, func(tx *ShardTxn) error { return tx.ForgetRequests(6) })
		for id, want := range map[string]bool{"a": false, "b": false, "": false, "d": true, "c": true} {
			if _, found, err := sh.Request([]byte(id)); err != nil || found != want {
				t.Errorf("Request(%q) after ForgetRequests(6) found %v, %v; want %v", id, found, err, want)
			}
		}
		update(t, sh, func(tx *ShardTxn) error { return tx.ForgetRequests(9) })
		for k := range shardKeys(t, sh.db, 2) {
			if k[0] == tableRequestIndex || k[0] == tableRequest {
				t.Errorf("key %s left after forgetting everything", keyName([]byte(k)))
			}
		}
	}
}

// TestAppliedCache checks SetApplied's order check with the applied index
// cached (CacheHeads), across Restore.
func TestAppliedCache(t *testing.T) {
	db := mustOpen(t, memOptions())
	s := db.Shard(3)
	s.CacheHeads(16)
	update(t, s, func(tx *ShardTxn) error { return tx.SetApplied(2) })
	var saved bytes.Buffer
	if err := s.Save(&saved, nil); err != nil {
		t.Fatal(err)
	}
	update(t, s, func(tx *ShardTxn) error { return tx.SetApplied(9) })
	if err := s.Update(func(tx *ShardTxn) error { return tx.SetApplied(8) }); !errors.Is(err, ErrOutOfOrder) {
		t.Errorf("SetApplied(8) after 9 = %v, want ErrOutOfOrder", err)
	}
	if err := s.Restore(&saved, nil); err != nil {
		t.Fatal(err)
	}
	update(t, s, func(tx *ShardTxn) error { return tx.SetApplied(3) }) // 2 restored, not 9 cached
	if a, err := s.Applied(); a != 3 || err != nil {
		t.Errorf("Applied = %d, %v", a, err)
	}
	update(t, s, func(tx *ShardTxn) error { return tx.ResetApplied() })
	update(t, s, func(tx *ShardTxn) error { return tx.SetApplied(1) })
}

// TestRequestBatchMergeFailure: when the batch record a transaction's
// requests must be merged into does not decode, Update fails naming it and
// commits nothing (a request without its index entry would never be
// forgotten).
func TestRequestBatchMergeFailure(t *testing.T) {
	db := mustOpen(t, memOptions())
	s := db.Shard(2)
	if err := db.putRaw(requestIndexKey(2, 5, nil), []byte{recordVersion, 0, 9}); err != nil {
		t.Fatal(err)
	}
	err := s.Update(func(tx *ShardTxn) error { return tx.PutRequest([]byte("x"), 5, nil) })
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `q/2/5/""`) {
		t.Fatalf("Update = %v, want ErrCorrupt naming the batch record", err)
	}
	if _, found, err := s.Request([]byte("x")); found || err != nil {
		t.Errorf("Request(x) after a failed Update: found %v, %v", found, err)
	}
}
