package eventlog

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestShardTablesSorted(t *testing.T) {
	if !slices.IsSorted(shardTables[:]) {
		t.Fatalf("shardTables %q not in key order: Save's stream must be", shardTables)
	}
	for _, b := range shardTables {
		if b == tableMeta || b == tableCRDT || b == tablePending || b == tableStaging {
			t.Errorf("table %q is both a shard table and another", b)
		}
	}
}

func TestKeyName(t *testing.T) {
	e := Entity{"cart", "c\x001"}
	for key, want := range map[string]string{
		string(journalKey(7, e, 3)):                    `j/7/"cart"/"c\x001"/3`,
		string(entityKey(tableHead, 1<<40, e)):         `h/1099511627776/"cart"/"c\x001"`,
		string(appliedKey(0)):                          `a/0`,
		string(requestKey(2, []byte("r\xff"))):         `r/2/"r\xff"`,
		string(requestIndexKey(2, 9, []byte("r"))):     `q/2/9/"r"`,
		string(pendingKey(5)):                          `p/5`,
		string(stagingKey(5, tableApplied, nil)):       `x/5/"a"`,
		"midentity":                                    `"midentity"`,
		string(append(appliedKey(1), 'x')):             `"a\x00\x00\x00\x00\x00\x00\x00\x01x"`,
		string(entityKey(tableHead, 1, e)[:12]):        `"h\x00\x00\x00\x00\x00\x00\x00\x01\x00\x04c"`,
		string(append(entityKey(tableValue, 1, e), 1)): `"v\x00\x00\x00\x00\x00\x00\x00\x01\x00\x04cart\x00\x03c\x001\x01"`,
	} {
		if got := keyName([]byte(key)); got != want {
			t.Errorf("keyName(%q) = %s, want %s", key, got, want)
		}
	}
	long := keyName(requestKey(1, bytes.Repeat([]byte{'r'}, 200)))
	if len(long) > 100 || !strings.HasSuffix(long, `..."`) {
		t.Errorf("long key named %s", long)
	}
}

func TestDecodeRecords(t *testing.T) {
	key := []byte("k")
	for _, seq := range []uint64{1, 1 << 63} {
		if got, err := decodeHead(key, encodeHead(seq)); got != seq || err != nil {
			t.Errorf("head %d: %d, %v", seq, got, err)
		}
		s, state, err := decodeSnapshot(key, encodeSnapshot(seq, []byte("st")))
		if s != seq || string(state) != "st" || err != nil {
			t.Errorf("snapshot %d: %d, %q, %v", seq, s, state, err)
		}
		i, res, err := decodeRequest(key, encodeRequest(seq-1, nil))
		if i != seq-1 || len(res) != 0 || err != nil {
			t.Errorf("request %d: %d, %q, %v", seq-1, i, res, err)
		}
		if got, err := decodeApplied(key, encodeApplied(seq-1)); got != seq-1 || err != nil {
			t.Errorf("applied %d: %d, %v", seq-1, got, err)
		}
	}
	for _, v := range []Value{{Version: 1, State: []byte("x")}, {Version: 2, State: []byte{}}, {Version: 1<<64 - 1, Deleted: true}} {
		if got, err := decodeValue(key, encodeValue(v)); err != nil || !reflect.DeepEqual(got, v) {
			t.Errorf("value %+v: %+v, %v", v, got, err)
		}
	}
	for _, op := range []byte{opRestore, opRestoreCleanup, opDrop} {
		if got, err := decodePending(key, encodePending(op)); got != op || err != nil {
			t.Errorf("pending %d: %d, %v", op, got, err)
		}
	}

	big := make([]byte, MaxEventBytes+1)
	for name, err := range map[string]error{
		"head empty":        second(decodeHead(key, nil)),
		"head 0":            second(decodeHead(key, encodeHead(0))),
		"head long":         second(decodeHead(key, append(encodeHead(1), 0))),
		"head version":      second(decodeHead(key, append([]byte{2}, encodeHead(1)[1:]...))),
		"snapshot 0":        third(decodeSnapshot(key, encodeSnapshot(0, nil))),
		"snapshot short":    third(decodeSnapshot(key, encodeSnapshot(1, nil)[:8])),
		"snapshot too big":  third(decodeSnapshot(key, encodeSnapshot(1, big))),
		"request short":     third(decodeRequest(key, []byte{recordVersion})),
		"applied long":      second(decodeApplied(key, append(encodeApplied(1), 0))),
		"value short":       second(decodeValue(key, encodeValue(Value{Version: 1})[:9])),
		"value version 0":   second(decodeValue(key, encodeValue(Value{}))),
		"value flags":       second(decodeValue(key, append([]byte{recordVersion, 2}, encodeValue(Value{Version: 1})[2:]...))),
		"value tombstone":   second(decodeValue(key, append(encodeValue(Value{Version: 1, Deleted: true}), 'x'))),
		"value too big":     second(decodeValue(key, encodeValue(Value{Version: 1, State: big}))),
		"value version":     second(decodeValue(key, append([]byte{0}, encodeValue(Value{Version: 1})[1:]...))),
		"pending op":        second(decodePending(key, []byte{recordVersion, 0})),
		"pending long":      second(decodePending(key, []byte{recordVersion, opDrop, 0})),
		"q with a value":    checkShardRecord(1, tableRequestIndex, make([]byte, 8), []byte{1}),
		"event too big":     checkShardRecord(1, tableJournal, append(appendEntity(nil, Entity{"t", "i"}), 0, 0, 0, 0, 0, 0, 0, 1), big),
		"applied in stream": checkShardRecord(1, tableApplied, nil, []byte{recordVersion}),
	} {
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "key ") {
			t.Errorf("%s: %v, want ErrCorrupt naming the key", name, err)
		}
	}

	// Keys of the stream.
	ent := appendEntity(nil, Entity{"t", "i"})
	for name, c := range map[string]struct {
		table  byte
		suffix []byte
	}{
		"applied suffix":   {tableApplied, []byte{0}},
		"entity truncated": {tableHead, ent[:3]},
		"entity trailing":  {tableValue, append(ent, 0)},
		"empty type":       {tableSnapshot, appendEntity(nil, Entity{"", "i"})},
		"journal no seq":   {tableJournal, ent},
		"journal seq 0":    {tableJournal, append(ent, 0, 0, 0, 0, 0, 0, 0, 0)},
		"request id long":  {tableRequest, make([]byte, MaxRequestIDBytes+1)},
		"q short":          {tableRequestIndex, make([]byte, 7)},
		"crdt table":       {tableCRDT, nil},
		"staging table":    {tableStaging, nil},
	} {
		if err := checkShardKey(c.table, c.suffix); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func second[T any](_ T, err error) error        { return err }
func third[T, U any](_ T, _ U, err error) error { return err }

// FuzzDecodeJournalRecords feeds arbitrary bytes to every record decoder
// and to the stream's key and record checks: they never panic, fail only
// with ErrCorrupt (decoders), and what they accept re-encodes to the same
// bytes.
func FuzzDecodeJournalRecords(f *testing.F) {
	ent := appendEntity(nil, Entity{"cart", "c1"})
	f.Add(tableHead, ent, encodeHead(3))
	f.Add(tableSnapshot, ent, encodeSnapshot(2, []byte("state")))
	f.Add(tableValue, ent, encodeValue(Value{Version: 4, State: []byte("v")}))
	f.Add(tableValue, ent, encodeValue(Value{Version: 5, Deleted: true}))
	f.Add(tableRequest, []byte("req"), encodeRequest(9, []byte("result")))
	f.Add(tableRequestIndex, append(make([]byte, 8), "req"...), []byte{})
	f.Add(tableApplied, []byte{}, encodeApplied(42))
	f.Add(tableJournal, append(ent, 0, 0, 0, 0, 0, 0, 0, 1), []byte("event"))
	f.Add(tablePending, []byte{}, encodePending(opRestore))
	f.Add(byte('z'), []byte{0xff}, []byte{recordVersion})
	f.Fuzz(func(t *testing.T, table byte, suffix, value []byte) {
		key := append(shardPrefix(table, 1), suffix...)
		_ = keyName(key)
		_ = keyName(suffix)
		if err := checkShardRecord(1, table, suffix, value); err == nil && checkShardKey(table, suffix) != nil {
			t.Fatal("checkShardRecord accepted a key checkShardKey refuses")
		}
		if e, rest, ok := parseEntity(suffix); ok {
			if enc := appendEntity(nil, e); !bytes.Equal(append(enc, rest...), suffix) {
				t.Fatalf("entity %q re-encodes to %x, from %x", e, enc, suffix)
			}
		}
		check := func(what string, err error, reencoded func() []byte) {
			t.Helper()
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("%s: error does not wrap ErrCorrupt: %v", what, err)
				}
				return
			}
			if got := reencoded(); !bytes.Equal(got, value) {
				t.Fatalf("%s: %x decodes and re-encodes to %x", what, value, got)
			}
		}
		seq, err := decodeHead(key, value)
		check("head", err, func() []byte { return encodeHead(seq) })
		sseq, state, err := decodeSnapshot(key, value)
		check("snapshot", err, func() []byte { return encodeSnapshot(sseq, state) })
		v, err := decodeValue(key, value)
		check("value", err, func() []byte { return encodeValue(v) })
		index, result, err := decodeRequest(key, value)
		check("request", err, func() []byte { return encodeRequest(index, result) })
		applied, err := decodeApplied(key, value)
		check("applied", err, func() []byte { return encodeApplied(applied) })
		op, err := decodePending(key, value)
		check("pending", err, func() []byte { return encodePending(op) })
	})
}

// FuzzShardRestore restores arbitrary bytes into a shard holding data: it
// never panics, and when it fails the shard is exactly as before.
func FuzzShardRestore(f *testing.F) {
	src := mustOpen(f, memOptions())
	populate(f, src.Shard(1), "new", 50)
	populate(f, src.Shard(2), "other", 60)
	good := save(f, src.Shard(1))
	f.Add(good)
	f.Add(save(f, src.Shard(2)))
	f.Add(save(f, src.Shard(3))) // empty
	f.Add(good[:len(good)/2])
	f.Add(append(slices.Clone(good), 0))
	f.Add([]byte(streamMagic))
	f.Add([]byte{})

	db := mustOpen(f, memOptions())
	s := db.Shard(1)
	populate(f, s, "old", 5)
	old := save(f, s)
	f.Fuzz(func(t *testing.T, b []byte) {
		err := s.Restore(bytes.NewReader(b), nil)
		if err == nil {
			// A valid stream: put the old data back for the next input.
			if err := s.Restore(bytes.NewReader(old), nil); err != nil {
				t.Fatalf("restoring the old data: %v", err)
			}
			return
		}
		if !errors.Is(err, ErrBadStream) && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("Restore failed with an unexpected error: %v", err)
		}
		if now := save(t, s); !bytes.Equal(now, old) {
			t.Fatalf("a failed Restore (%v) changed the shard", err)
		}
	})
}
