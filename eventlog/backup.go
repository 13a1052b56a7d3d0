package eventlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/pb"
	"google.golang.org/protobuf/proto"
)

// Backup writes a full backup of the DB to w (Badger's DB.Backup from
// version 0: every table, the node's identity included) while the DB stays
// in use; it is one consistent point in time. It returns the version of the
// last entry written: Badger can produce an incremental backup of what
// changed after it (DB.Backup(w, version+1)); this package does not offer
// that yet.
func (db *DB) Backup(w io.Writer) (uint64, error) {
	if err := db.enter(); err != nil {
		return 0, err
	}
	defer db.exit()
	v, err := db.bdb.Backup(w, 0)
	if err != nil {
		return 0, fmt.Errorf("eventlog: backup: %w", err)
	}
	return v, nil
}

// RestoreDir loads a backup written by DB.Backup into dir, which must not
// exist or be an empty directory (ErrDirNotEmpty otherwise). It opens the
// DB itself with DefaultOptions(dir), loads the backup with Badger's Load,
// finishes any shard Restore or Drop the backup caught half way (as Open
// does), and closes it.
//
// The backup is validated frame by frame before Badger sees it (frame
// sizes, protobuf, keys of this package's tables, sane versions and
// metadata), so a truncated or corrupt file fails with ErrBadStream instead
// of crashing Badger. On any error dir is left as it was: removed (with
// the parents RestoreDir created) if it did not exist, emptied otherwise.
//
// The restored identity is marked not clean, so the node's next Boot takes
// a new incarnation: the backed-up state is older than what the node may
// have issued since, and its dots must never be reissued.
func RestoreDir(dir string, r io.Reader) (err error) {
	if dir == "" {
		return errors.New("eventlog: restore: no directory")
	}
	created := "" // the highest directory RestoreDir creates, if any
	switch entries, rerr := os.ReadDir(dir); {
	case errors.Is(rerr, fs.ErrNotExist):
		created = filepath.Clean(dir)
		for {
			parent := filepath.Dir(created)
			if _, err := os.Stat(parent); parent == created || err == nil {
				break
			}
			created = parent
		}
	case rerr != nil:
		return fmt.Errorf("eventlog: restore into %q: %w", dir, rerr)
	case len(entries) > 0:
		return fmt.Errorf("%w: refusing to restore into %q (%d entries)", ErrDirNotEmpty, dir, len(entries))
	}
	defer func() {
		if err == nil {
			return
		}
		if created != "" {
			_ = os.RemoveAll(created)
			return
		}
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			_ = os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}()
	db, err := Open(DefaultOptions(dir))
	if err != nil {
		return err
	}
	defer func() {
		if cerr := db.Close(); err == nil {
			err = cerr
		}
	}()
	if err := db.bdb.Load(&backupReader{r: r}, 256); err != nil {
		return fmt.Errorf("eventlog: restore into %q: %w", dir, err)
	}
	if err := db.recoverShards(); err != nil {
		return err
	}
	return db.bdb.Update(func(txn *badger.Txn) error {
		id, found, err := getIdentity(txn)
		if err != nil || !found || !id.Clean {
			return err
		}
		id.Clean = false
		return txn.Set(identityKey, encodeIdentity(id))
	})
}

// A backup is a sequence of frames: a little-endian uint64 size, then a
// protobuf pb.KVList of that size.
const (
	// maxBackupFrame bounds one frame. Badger's Backup writes batches of
	// about 16 MiB, and at most a little over 100 MiB.
	maxBackupFrame = 1 << 30
	// maxBadgerKey is the longest key Badger writes.
	maxBadgerKey = 65000
	// maxBackupVersion bounds an entry's version: Badger's Load sets its
	// next transaction timestamp to version+1.
	maxBackupVersion = 1 << 62
	// backupMetaBits are the entry meta bits a backup may carry: deleted,
	// value pointer, discard earlier versions (Badger's bitDelete,
	// bitValuePointer, bitDiscardEarlierVersions; Backup clears the
	// transaction bits).
	backupMetaBits = 1<<0 | 1<<1 | 1<<2
)

// backupTables are the tables a backup may hold.
var backupTables = func() (t [256]bool) {
	for _, b := range []byte{tableMeta, tableCRDT, tablePending, tableStaging} {
		t[b] = true
	}
	for _, b := range shardTables {
		t[b] = true
	}
	return t
}()

// backupReader passes a backup through to Badger's Load one validated
// frame at a time. Load trusts its input: it allocates whatever a frame
// header claims and writes any key, internal ones included.
type backupReader struct {
	r     io.Reader
	frame []byte // the frame being passed on, header included
	off   int
	n     int // frames read
}

func (b *backupReader) Read(p []byte) (int, error) {
	for b.off == len(b.frame) {
		if err := b.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, b.frame[b.off:])
	b.off += n
	return n, nil
}

// next reads and validates the next frame; io.EOF at a clean end.
func (b *backupReader) next() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: backup frame %d: %s", ErrBadStream, b.n, fmt.Sprintf(format, a...))
	}
	var hdr [8]byte
	if _, err := io.ReadFull(b.r, hdr[:]); err != nil {
		switch {
		case errors.Is(err, io.EOF):
			// Between frames (the backup of an empty DB has none).
			return io.EOF
		case errors.Is(err, io.ErrUnexpectedEOF):
			return bad("truncated size")
		}
		return err
	}
	size := binary.LittleEndian.Uint64(hdr[:])
	if size > maxBackupFrame {
		return bad("size %d", size)
	}
	// Grow with what arrives, not with what the header claims.
	var buf bytes.Buffer
	buf.Write(hdr[:])
	if n, err := io.CopyN(&buf, b.r, int64(size)); err != nil {
		if errors.Is(err, io.EOF) {
			return bad("truncated: %d of %d bytes", n, size)
		}
		return err
	}
	list := &pb.KVList{}
	if err := proto.Unmarshal(buf.Bytes()[8:], list); err != nil {
		return bad("%v", err)
	}
	for i, kv := range list.Kv {
		switch {
		case len(kv.Key) == 0 || len(kv.Key) > maxBadgerKey:
			return bad("entry %d: key of %d bytes", i, len(kv.Key))
		case !backupTables[kv.Key[0]]:
			return bad("entry %d: key %s of no eventlog table", i, keyName(kv.Key))
		case kv.Version == 0 || kv.Version >= maxBackupVersion:
			return bad("entry %d: key %s: version %d", i, keyName(kv.Key), kv.Version)
		case len(kv.Meta) > 1 || len(kv.UserMeta) > 1:
			return bad("entry %d: key %s: %d meta and %d user meta bytes", i, keyName(kv.Key), len(kv.Meta), len(kv.UserMeta))
		case len(kv.Meta) == 1 && kv.Meta[0]&^backupMetaBits != 0:
			return bad("entry %d: key %s: meta %#x", i, keyName(kv.Key), kv.Meta[0])
		case len(kv.Value) > MaxValueBytes:
			return bad("entry %d: key %s: value of %d bytes", i, keyName(kv.Key), len(kv.Value))
		}
	}
	b.frame, b.off = buf.Bytes(), 0
	b.n++
	return nil
}
