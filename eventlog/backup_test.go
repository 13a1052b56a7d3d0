package eventlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/dgraph-io/badger/v4/pb"
	"google.golang.org/protobuf/proto"
)

func TestBackupRestoreDir(t *testing.T) {
	db := mustOpen(t, testOptions(t))
	id1, _ := boot(t, db, "n1")
	crdtWant := map[string][]byte{"k1": []byte("v1"), "k2": bytes.Repeat([]byte{2}, 700<<10)} // one in the value log
	if err := db.CRDT().Apply([]Put{{"k1", crdtWant["k1"]}, {"k2", crdtWant["k2"]}, {"gone", []byte("x")}}, nil, false); err != nil {
		t.Fatal(err)
	}
	if err := db.CRDT().Apply(nil, []string{"gone"}, false); err != nil {
		t.Fatal(err)
	}
	populate(t, db.Shard(1), "a", 10)
	populate(t, db.Shard(2), "b", 20)
	if err := db.MarkClean(); err != nil { // a backup taken after a clean stop
		t.Fatal(err)
	}
	want1, want2 := view(t, db.Shard(1), "a"), view(t, db.Shard(2), "b")
	stream1 := save(t, db.Shard(1))

	var backup bytes.Buffer
	version, err := db.Backup(&backup)
	if err != nil || version == 0 {
		t.Fatalf("Backup = %d, %v", version, err)
	}
	// Into a directory that does not exist, and into an empty one.
	empty := t.TempDir()
	for _, dir := range []string{filepath.Join(t.TempDir(), "new", "dir"), empty} {
		if err := RestoreDir(dir, bytes.NewReader(backup.Bytes())); err != nil {
			t.Fatalf("RestoreDir(%s): %v", dir, err)
		}
		o := testOptions(t)
		o.Dir = dir
		r := mustOpen(t, o)
		checkState(t, r.CRDT(), crdtWant)
		if got := view(t, r.Shard(1), "a"); !reflect.DeepEqual(got, want1) {
			t.Errorf("restored shard 1 differs")
		}
		if got := view(t, r.Shard(2), "b"); !reflect.DeepEqual(got, want2) {
			t.Errorf("restored shard 2 differs")
		}
		if !bytes.Equal(save(t, r.Shard(1)), stream1) {
			t.Errorf("restored shard 1 saves differently")
		}
		// A restored node never keeps its incarnation, even from a
		// backup of a clean stop.
		id, fresh, err := r.Boot("n1")
		if err != nil || !fresh || id.Clean || id.Incarnation == id1.Incarnation || id.Boots != 2 {
			t.Errorf("Boot of a restored directory = %+v, fresh %v, %v (backed-up incarnation %d)", id, fresh, err, id1.Incarnation)
		}
		closeDB(t, r)
	}
}

func TestRestoreDirRefuses(t *testing.T) {
	db := mustOpen(t, memOptions())
	populate(t, db.Shard(1), "a", 1)
	var backup bytes.Buffer
	if _, err := db.Backup(&backup); err != nil {
		t.Fatal(err)
	}

	// A non-empty directory: refused, untouched.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "keep"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := RestoreDir(dir, bytes.NewReader(backup.Bytes())); !errors.Is(err, ErrDirNotEmpty) {
		t.Errorf("RestoreDir(non-empty) = %v, want ErrDirNotEmpty", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "keep")); err != nil || string(b) != "mine" {
		t.Errorf("the existing file: %q, %v", b, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("RestoreDir wrote into a non-empty directory: %d entries", len(entries))
	}
	// A file, not a directory.
	if err := RestoreDir(filepath.Join(dir, "keep"), bytes.NewReader(backup.Bytes())); err == nil {
		t.Error("RestoreDir onto a file succeeded")
	}
	if err := RestoreDir("", bytes.NewReader(backup.Bytes())); err == nil {
		t.Error("RestoreDir(\"\") succeeded")
	}

	// Bad backups: refused, and the directory is left as it was (absent,
	// or empty).
	frame := func(kvs ...*pb.KV) []byte {
		b, err := proto.Marshal(&pb.KVList{Kv: kvs})
		if err != nil {
			t.Fatal(err)
		}
		return append(binary.LittleEndian.AppendUint64(nil, uint64(len(b))), b...)
	}
	good := backup.Bytes()
	for name, b := range map[string][]byte{
		"truncated":      good[:len(good)-3],
		"truncated size": append(append([]byte{}, good...), 1, 2, 3),
		"huge frame":     binary.LittleEndian.AppendUint64(nil, 1<<62),
		"not protobuf":   append(binary.LittleEndian.AppendUint64(nil, 3), 0xff, 0xff, 0xff),
		"badger key":     frame(&pb.KV{Key: []byte("!badger!head"), Version: 1}),
		"foreign table":  frame(&pb.KV{Key: []byte("zzz"), Version: 1}),
		"empty key":      frame(&pb.KV{Version: 1}),
		"version 0":      frame(&pb.KV{Key: []byte("ck"), Version: 0}),
		"huge version":   frame(&pb.KV{Key: []byte("ck"), Version: 1<<64 - 1}),
		"meta bits":      frame(&pb.KV{Key: []byte("ck"), Version: 1, Meta: []byte{0x80}}),
		"two meta bytes": frame(&pb.KV{Key: []byte("ck"), Version: 1, Meta: []byte{0, 0}}),
	} {
		parent := t.TempDir()
		if err := RestoreDir(filepath.Join(parent, "absent", "dir"), bytes.NewReader(b)); !errors.Is(err, ErrBadStream) {
			t.Errorf("%s: RestoreDir = %v, want ErrBadStream", name, err)
		}
		if entries, err := os.ReadDir(parent); err != nil || len(entries) != 0 {
			t.Errorf("%s: RestoreDir left the directories it created: %d entries, %v", name, len(entries), err)
		}
		if name != "truncated" && name != "badger key" {
			continue // each RestoreDir opens a DB: keep the test quick
		}
		empty := t.TempDir()
		if err := RestoreDir(empty, bytes.NewReader(b)); !errors.Is(err, ErrBadStream) {
			t.Errorf("%s: RestoreDir(empty dir) = %v, want ErrBadStream", name, err)
		}
		if entries, err := os.ReadDir(empty); err != nil || len(entries) != 0 {
			t.Errorf("%s: RestoreDir left %d entries, %v", name, len(entries), err)
		}
	}
}
