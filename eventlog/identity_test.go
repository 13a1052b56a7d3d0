package eventlog

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

func boot(t *testing.T, db *DB, node string) (Identity, bool) {
	t.Helper()
	id, fresh, err := db.Boot(node)
	if err != nil {
		t.Fatalf("Boot(%q): %v", node, err)
	}
	return id, fresh
}

func closeDB(t *testing.T, db *DB) {
	t.Helper()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestBootSequence(t *testing.T) {
	o := testOptions(t)

	// A new directory: a fresh incarnation, first boot.
	db := mustOpen(t, o)
	id1, fresh := boot(t, db, "n1")
	if !fresh || id1.Node != "n1" || id1.Incarnation == 0 || id1.Boots != 1 || id1.Clean || id1.Previous != 0 {
		t.Fatalf("first Boot = %+v, fresh %v", id1, fresh)
	}
	if err := db.MarkClean(); err != nil {
		t.Fatal(err)
	}
	closeDB(t, db)

	// After a clean stop: same incarnation, Boots 2.
	db = mustOpen(t, o)
	id2, fresh := boot(t, db, "n1")
	if fresh || id2 != (Identity{Node: "n1", Incarnation: id1.Incarnation, Boots: 2, Clean: true}) {
		t.Fatalf("Boot after a clean stop = %+v, fresh %v", id2, fresh)
	}
	closeDB(t, db) // no MarkClean: a crash, as far as the next boot knows

	// After an unclean stop: a new incarnation, Boots 3.
	db = mustOpen(t, o)
	id3, fresh := boot(t, db, "n1")
	if !fresh || id3.Incarnation == 0 || id3.Incarnation == id1.Incarnation || id3.Boots != 3 || id3.Clean ||
		id3.Previous != id1.Incarnation {
		t.Fatalf("Boot after a crash = %+v, fresh %v (previous incarnation %d)", id3, fresh, id1.Incarnation)
	}

	// Another node's name: refused, and nothing changes.
	if _, _, err := db.Boot("n2"); !errors.Is(err, ErrWrongNode) {
		t.Fatalf("Boot(n2) = %v, want ErrWrongNode", err)
	}
	if err := db.MarkClean(); err != nil {
		t.Fatal(err)
	}
	closeDB(t, db)
	db = mustOpen(t, o)
	if _, _, err := db.Boot("n2"); !errors.Is(err, ErrWrongNode) {
		t.Fatalf("Boot(n2) after reopen = %v, want ErrWrongNode", err)
	}
	id4, fresh := boot(t, db, "n1")
	if fresh || id4 != (Identity{Node: "n1", Incarnation: id3.Incarnation, Boots: 4, Clean: true}) {
		t.Fatalf("Boot after a refused Boot = %+v, fresh %v", id4, fresh)
	}
}

// TestApplyAfterMarkClean: a write after MarkClean un-marks the clean stop,
// so a crash after it still changes the incarnation.
func TestApplyAfterMarkClean(t *testing.T) {
	o := testOptions(t)
	db := mustOpen(t, o)
	id1, _ := boot(t, db, "n1")
	if err := db.MarkClean(); err != nil {
		t.Fatal(err)
	}
	if err := db.CRDT().Apply([]Put{{"late", []byte("write")}}, nil, false); err != nil {
		t.Fatal(err)
	}
	closeDB(t, db)
	db = mustOpen(t, o)
	id2, fresh := boot(t, db, "n1")
	if !fresh || id2.Clean || id2.Incarnation == id1.Incarnation || id2.Boots != 2 {
		t.Fatalf("Boot after a write that followed MarkClean = %+v, fresh %v", id2, fresh)
	}
	// An empty Apply writes nothing and leaves the mark.
	if err := db.MarkClean(); err != nil {
		t.Fatal(err)
	}
	if err := db.CRDT().Apply(nil, nil, true); err != nil {
		t.Fatal(err)
	}
	closeDB(t, db)
	db = mustOpen(t, o)
	if id3, fresh := boot(t, db, "n1"); fresh || id3.Incarnation != id2.Incarnation {
		t.Fatalf("Boot after an empty Apply = %+v, fresh %v", id3, fresh)
	}
}

func TestBootInMemory(t *testing.T) {
	o := DefaultOptions("")
	o.InMemory = true
	db := mustOpen(t, o)
	id, fresh := boot(t, db, "n1")
	if !fresh || id.Boots != 1 {
		t.Fatalf("Boot = %+v, %v", id, fresh)
	}
	if err := db.MarkClean(); err != nil {
		t.Fatal(err)
	}
	if id2, fresh := boot(t, db, "n1"); fresh || id2.Incarnation != id.Incarnation || id2.Boots != 2 {
		t.Fatalf("second Boot = %+v, %v", id2, fresh)
	}
}

func TestBootBadNode(t *testing.T) {
	db := mustOpen(t, testOptions(t))
	for _, node := range []string{"", "\xff", strings.Repeat("n", maxNodeName+1)} {
		if _, _, err := db.Boot(node); err == nil {
			t.Errorf("Boot(%q) accepted", node)
		}
	}
	if err := db.MarkClean(); err == nil {
		t.Error("MarkClean before any Boot succeeded")
	}
}

func TestBootCorrupt(t *testing.T) {
	o := testOptions(t)
	db := mustOpen(t, o)
	boot(t, db, "n1")
	for _, garbage := range [][]byte{nil, {0xff, 0xff, 0xff}, {identityVersion, 0x0a, 0x7f}, {identityVersion}} {
		if err := db.putRaw(identityKey, garbage); err != nil {
			t.Fatal(err)
		}
		_, _, err := db.Boot("n1")
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `"midentity"`) {
			t.Errorf("Boot over %x = %v, want ErrCorrupt naming the key", garbage, err)
		}
		if err := db.MarkClean(); !errors.Is(err, ErrCorrupt) {
			t.Errorf("MarkClean over %x = %v, want ErrCorrupt", garbage, err)
		}
	}
	// Stays refused across a reopen; nothing was overwritten.
	closeDB(t, db)
	db = mustOpen(t, o)
	if _, _, err := db.Boot("n1"); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Boot after reopen = %v, want ErrCorrupt", err)
	}
}

// appendField appends one protowire field for the decoder tests.
func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
}

func appendBytesField(b []byte, num protowire.Number, v string) []byte {
	return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), v)
}

func TestDecodeIdentity(t *testing.T) {
	for _, id := range []Identity{
		{Node: "n", Incarnation: 1, Boots: 1},
		{Node: "node-1.example", Incarnation: 1<<64 - 1, Boots: 1<<64 - 1, Clean: true},
		{Node: strings.Repeat("é", maxNodeName/2), Incarnation: 42, Boots: 7},
	} {
		got, err := decodeIdentity("k", encodeIdentity(id))
		if err != nil || got != id {
			t.Errorf("round trip of %+v = %+v, %v", id, got, err)
		}
	}

	v := []byte{identityVersion}
	node := appendBytesField(nil, fieldNode, "n")
	inc := appendVarintField(nil, fieldIncarnation, 9)
	boots := appendVarintField(nil, fieldBoots, 2)
	join := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}

	// Any field order, unknown fields skipped, clean optional.
	want := Identity{Node: "n", Incarnation: 9, Boots: 2}
	for name, b := range map[string][]byte{
		"reordered":     join(v, boots, inc, node),
		"unknown field": join(v, node, appendBytesField(nil, 9, "future"), inc, appendVarintField(nil, 5, 1), boots),
	} {
		if got, err := decodeIdentity("k", b); err != nil || got != want {
			t.Errorf("%s: %+v, %v; want %+v", name, got, err, want)
		}
	}

	for name, b := range map[string][]byte{
		"empty":            nil,
		"version 0":        join([]byte{0}, node, inc, boots),
		"version 2":        join([]byte{2}, node, inc, boots),
		"truncated":        join(v, node, inc, boots)[:7],
		"bad tag":          join(v, []byte{0x80}),
		"field 0":          join(v, node, inc, boots, []byte{0x00}),
		"no node":          join(v, inc, boots),
		"no incarnation":   join(v, node, boots),
		"no boots":         join(v, node, inc),
		"incarnation 0":    join(v, node, appendVarintField(nil, fieldIncarnation, 0), boots),
		"boots 0":          join(v, node, inc, appendVarintField(nil, fieldBoots, 0)),
		"clean 2":          join(v, node, inc, boots, appendVarintField(nil, fieldClean, 2)),
		"repeated node":    join(v, node, inc, boots, node),
		"node as varint":   join(v, appendVarintField(nil, fieldNode, 1), inc, boots),
		"boots as bytes":   join(v, node, inc, appendBytesField(nil, fieldBoots, "2")),
		"empty node":       join(v, appendBytesField(nil, fieldNode, ""), inc, boots),
		"node not UTF-8":   join(v, appendBytesField(nil, fieldNode, "\xff"), inc, boots),
		"node too long":    join(v, appendBytesField(nil, fieldNode, strings.Repeat("n", maxNodeName+1)), inc, boots),
		"bad unknown wire": join(v, node, inc, boots, protowire.AppendTag(nil, 9, 7)),
		"unclosed group":   join(v, node, inc, boots, protowire.AppendTag(nil, 9, protowire.StartGroupType)),
	} {
		_, err := decodeIdentity("k", b)
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `key "k"`) {
			t.Errorf("%s (%x): %v, want ErrCorrupt naming the key", name, b, err)
		}
	}
}

func FuzzDecodeIdentity(f *testing.F) {
	f.Add(encodeIdentity(Identity{Node: "n1", Incarnation: 1, Boots: 1}))
	f.Add(encodeIdentity(Identity{Node: "node-2", Incarnation: 1<<64 - 1, Boots: 3, Clean: true}))
	f.Add(append(encodeIdentity(Identity{Node: "n", Incarnation: 5, Boots: 9}), appendBytesField(nil, 7, "x")...))
	f.Add([]byte{})
	f.Add([]byte{identityVersion, 0x0a})
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := decodeIdentity("k", b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		if id.Node == "" || id.Incarnation == 0 || id.Boots == 0 {
			t.Fatalf("accepted an invalid identity %+v", id)
		}
		enc := encodeIdentity(id)
		id2, err := decodeIdentity("k", enc)
		if err != nil || id2 != id {
			t.Fatalf("re-encoding %+v decodes to %+v, %v", id, id2, err)
		}
		if enc2 := encodeIdentity(id2); string(enc2) != string(enc) {
			t.Fatalf("encoding not deterministic: %x vs %x", enc, enc2)
		}
	})
}
