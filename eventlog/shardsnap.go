package eventlog

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"math"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// A shard snapshot stream (Save, Restore) is:
//
//	header   magic "SMSHARD\n", format version (1 byte), shard id (u64)
//	records  one per key of the shard, in key order (shardTables order,
//	         then Badger's bytewise order within a table):
//	         tag 1, table byte, suffix length (u16), suffix,
//	         value length (u32), value
//	trailer  tag 2, number of records (u64),
//	         CRC-32C of every byte before it (u32)
//
// and nothing after. Numbers are big-endian; the suffix is the key after
// the table byte and the shard id, so a record cannot name another shard.
const (
	streamMagic   = "SMSHARD\n"
	streamVersion = 1

	tagRecord byte = 1
	tagEnd    byte = 2

	// maxSuffixBytes bounds a key suffix in a stream: an entity key with a
	// journal seq is the longest (2+2+MaxEntityBytes+8).
	maxSuffixBytes = 4 + MaxEntityBytes + 8
	// maxStreamValue bounds a value in a stream: a state and its record
	// header.
	maxStreamValue = MaxEventBytes + recordOverhead

	// restoreBatchBytes bounds the keys and values one staging or copying
	// transaction holds in memory.
	restoreBatchBytes = 8 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func stopped(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

// SavePoint is a point-in-time view of a shard, taken by PrepareSave and
// streamed later by Save: Dragonboat's PrepareSnapshot and SaveSnapshot,
// where the snapshot must be the state at the applied index
// PrepareSnapshot saw while Update goes on. It holds a Badger read
// transaction, which keeps the versions it sees from compaction, until
// Save or Release; DB.Close discards one that was neither.
type SavePoint struct {
	s       *Shard
	txn     *badger.Txn
	applied uint64

	mu   sync.Mutex
	used bool // Save, Release or DB.Close took it
}

// PrepareSave takes a point-in-time view of the shard for a later Save.
// The caller should call its Save or Release.
func (s *Shard) PrepareSave() (*SavePoint, error) {
	db := s.db
	if err := db.enter(); err != nil {
		return nil, err
	}
	defer db.exit()
	s.st.mu.RLock()
	if s.st.mu.pending {
		s.st.mu.RUnlock()
		return nil, s.pendingErr()
	}
	txn := db.bdb.NewTransaction(false)
	s.st.mu.RUnlock()
	applied, err := getApplied(txn, s.id)
	if err != nil {
		txn.Discard()
		return nil, err
	}
	p := &SavePoint{s: s, txn: txn, applied: applied}
	db.savePoints.Lock()
	defer db.savePoints.Unlock()
	if db.savePoints.m == nil {
		db.savePoints.m = map[*SavePoint]struct{}{}
	}
	db.savePoints.m[p] = struct{}{}
	return p, nil
}

// Applied returns the applied index of the view.
func (p *SavePoint) Applied() uint64 { return p.applied }

// take marks p used and reports whether it was not yet. Whoever takes it
// discards its transaction, while holding enter (Save, Release) or after
// every operation drained (Close): never concurrently with Badger's Close.
func (p *SavePoint) take() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	was := p.used
	p.used = true
	return !was
}

func (p *SavePoint) discard() {
	p.txn.Discard()
	db := p.s.db
	db.savePoints.Lock()
	defer db.savePoints.Unlock()
	delete(db.savePoints.m, p)
}

// Release releases a SavePoint that will not be saved. It is a no-op after
// Save, an earlier Release, or DB.Close.
func (p *SavePoint) Release() {
	if p.s.db.enter() != nil {
		return // Close discards it
	}
	defer p.s.db.exit()
	if p.take() {
		p.discard()
	}
}

// discardSavePoints discards the SavePoints left open. Close calls it once
// every operation has drained.
func (db *DB) discardSavePoints() {
	db.savePoints.Lock()
	points := db.savePoints.m
	db.savePoints.m = nil
	db.savePoints.Unlock()
	for p := range points {
		if p.take() {
			p.txn.Discard()
		}
	}
}

// Save writes the shard as it was at PrepareSave to w (see the stream
// format above) and releases p; it may be called once. The stream is
// deterministic: the same view always gives the same bytes. Every record is
// checked as Restore will check it, so a corrupt stored record fails Save
// with ErrCorrupt instead of producing a stream no replica accepts. A
// closed stop stops it with ErrStopped; an error of w is returned wrapped.
func (p *SavePoint) Save(w io.Writer, stop <-chan struct{}) error {
	s := p.s
	if err := s.db.enter(); err != nil {
		return err
	}
	defer s.db.exit()
	if !p.take() {
		return errors.New("eventlog: SavePoint already saved or released")
	}
	defer p.discard()
	bw := bufio.NewWriterSize(w, 64<<10)
	crc := crc32.New(castagnoli)
	out := io.MultiWriter(bw, crc)
	werr := func(err error) error { return fmt.Errorf("eventlog: shard %d: save: %w", s.id, err) }

	hdr := append([]byte(streamMagic), streamVersion)
	hdr = binary.BigEndian.AppendUint64(hdr, s.id)
	if _, err := out.Write(hdr); err != nil {
		return werr(err)
	}
	var count uint64
	for _, table := range shardTables {
		err := func() error {
			o := badger.DefaultIteratorOptions
			o.PrefetchValues = false // values of up to MaxEventBytes
			o.Prefix = shardPrefix(table, s.id)
			it := p.txn.NewIterator(o)
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				if stopped(stop) {
					return fmt.Errorf("eventlog: shard %d: save: %w", s.id, ErrStopped)
				}
				item := it.Item()
				key := item.Key()
				suffix := key[shardPrefixLen:]
				err := item.Value(func(v []byte) error {
					if err := checkShardRecord(s.id, table, suffix, v); err != nil {
						if !errors.Is(err, ErrCorrupt) {
							err = corrupt(key, "save", "%v", err)
						}
						return err
					}
					rec := make([]byte, 0, 8+len(suffix))
					rec = append(rec, tagRecord, table)
					rec = binary.BigEndian.AppendUint16(rec, uint16(len(suffix)))
					rec = append(rec, suffix...)
					rec = binary.BigEndian.AppendUint32(rec, uint32(len(v)))
					if _, err := out.Write(rec); err != nil {
						return werr(err)
					}
					if _, err := out.Write(v); err != nil {
						return werr(err)
					}
					return nil
				})
				if err != nil {
					return err
				}
				count++
			}
			return nil
		}()
		if err != nil {
			return err
		}
	}
	end := binary.BigEndian.AppendUint64([]byte{tagEnd}, count)
	if _, err := out.Write(end); err != nil {
		return werr(err)
	}
	if _, err := bw.Write(binary.BigEndian.AppendUint32(nil, crc.Sum32())); err != nil {
		return werr(err)
	}
	if err := bw.Flush(); err != nil {
		return werr(err)
	}
	return nil
}

// Save is PrepareSave followed by SavePoint.Save: the shard as it is now.
func (s *Shard) Save(w io.Writer, stop <-chan struct{}) error {
	p, err := s.PrepareSave()
	if err != nil {
		return err
	}
	return p.Save(w, stop)
}

// streamReader reads a stream and hashes what it reads.
type streamReader struct {
	r   *bufio.Reader
	crc hash.Hash32
}

// read returns the next n bytes, in a new slice.
func (sr *streamReader) read(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(sr.r, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	sr.crc.Write(b)
	return b, nil
}

// readStream reads and validates a snapshot stream of shard, calling fn
// for each record in order with fresh slices (fn may keep them). maxValue
// is the largest value the destination stores. Errors wrap ErrBadStream,
// ErrStopped, ErrTooLarge (a valid record this DB cannot store), or are
// fn's or the reader's.
func readStream(r io.Reader, shard uint64, maxValue int, stop <-chan struct{}, fn func(table byte, suffix, value []byte) error) error {
	sr := &streamReader{r: bufio.NewReaderSize(r, 64<<10), crc: crc32.New(castagnoli)}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: shard %d: %s", ErrBadStream, shard, fmt.Sprintf(format, a...))
	}
	short := func(what string, err error) error {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return bad("truncated in %s", what)
		}
		return fmt.Errorf("eventlog: shard %d: read stream: %w", shard, err)
	}
	hdr, err := sr.read(len(streamMagic) + 1 + 8)
	if err != nil {
		return short("the header", err)
	}
	switch {
	case string(hdr[:len(streamMagic)]) != streamMagic:
		return bad("not a shard snapshot (magic %q)", hdr[:len(streamMagic)])
	case hdr[len(streamMagic)] != streamVersion:
		return bad("unsupported format version %d", hdr[len(streamMagic)])
	}
	if id := binary.BigEndian.Uint64(hdr[len(streamMagic)+1:]); id != shard {
		return bad("stream of shard %d", id)
	}
	var count uint64
	var prev []byte // table byte and suffix of the previous record
	for {
		if stopped(stop) {
			return fmt.Errorf("eventlog: shard %d: restore: %w", shard, ErrStopped)
		}
		tag, err := sr.read(1)
		if err != nil {
			return short("a record tag", err)
		}
		if tag[0] == tagEnd {
			break
		}
		if tag[0] != tagRecord {
			return bad("record %d: unknown tag %d", count, tag[0])
		}
		h, err := sr.read(3)
		if err != nil {
			return short("a record header", err)
		}
		table, klen := h[0], int(binary.BigEndian.Uint16(h[1:]))
		if klen > maxSuffixBytes {
			return bad("record %d: key suffix of %d bytes", count, klen)
		}
		suffix, err := sr.read(klen)
		if err != nil {
			return short("a key", err)
		}
		key := append([]byte{table}, suffix...)
		if prev != nil && bytes.Compare(key, prev) <= 0 {
			return bad("record %d: key out of order", count)
		}
		prev = key
		vl, err := sr.read(4)
		if err != nil {
			return short("a value length", err)
		}
		vlen := binary.BigEndian.Uint32(vl)
		if vlen > maxStreamValue {
			return bad("record %d: value of %d bytes", count, vlen)
		}
		value, err := sr.read(int(vlen))
		if err != nil {
			return short("a value", err)
		}
		if err := checkShardRecord(shard, table, suffix, value); err != nil {
			return bad("record %d: %v", count, err)
		}
		if len(value) > maxValue {
			return fmt.Errorf("%w: shard %d: record %d has a %d-byte value, this DB stores at most %d",
				ErrTooLarge, shard, count, len(value), maxValue)
		}
		if err := fn(table, suffix, value); err != nil {
			return err
		}
		count++
	}
	n, err := sr.read(8)
	if err != nil {
		return short("the trailer", err)
	}
	if got := binary.BigEndian.Uint64(n); got != count {
		return bad("trailer counts %d records, stream has %d", got, count)
	}
	sum := sr.crc.Sum32()
	c, err := sr.read(4)
	if err != nil {
		return short("the checksum", err)
	}
	if got := binary.BigEndian.Uint32(c); got != sum {
		return bad("checksum %08x, computed %08x", got, sum)
	}
	if _, err := sr.r.ReadByte(); err != io.EOF {
		if err != nil {
			return fmt.Errorf("eventlog: shard %d: read stream: %w", shard, err)
		}
		return bad("data after the trailer")
	}
	return nil
}

// Restore replaces all of the shard's data (in every shard table, the
// applied index included) with the contents of a stream written by Save
// for the same shard id.
//
// It is all or nothing. The stream is first read, validated (framing,
// limits, shard id, key order, every record decoded as the reads decode
// it, record count and CRC-32C) and staged in the 'x' table, in batches of
// bounded memory, so a stream of any size works; the shard is untouched
// and readable meanwhile. On any error in this phase (ErrBadStream,
// ErrStopped, ErrTooLarge, a reader or I/O error) the staged copy is
// deleted and the shard is exactly as before. Only then is a 'p' record
// written (the commit point) and the live data replaced by the staged
// copy, under the shard's exclusive lock: reads and Updates of the shard
// wait for it, and never see a mix. A crash after the commit point is
// completed by the next Open; an I/O error after it leaves the shard
// refusing reads and writes (ErrShardPending) until a Restore or Drop of
// it succeeds or the DB is reopened. stop is not observed after the commit
// point. When Restore returns nil the restored data is synced.
//
// A stream is checked record by record, not as a whole: an entity whose
// head and journal disagree is restored, and reads of it report
// ErrCorrupt, as they would on the node that saved it (Save refuses
// records that do not decode, so streams of healthy shards are clean).
func (s *Shard) Restore(r io.Reader, stop <-chan struct{}) error {
	db := s.db
	if err := db.enter(); err != nil {
		return err
	}
	defer db.exit()
	s.st.maint.Lock()
	defer s.st.maint.Unlock()
	// An interrupted restore still needs its staged copy: finish it before
	// staging over it.
	if err := s.resolvePending(); err != nil {
		return err
	}
	if err := s.stage(r, stop); err != nil {
		if derr := db.deletePrefix(shardPrefix(tableStaging, s.id)); derr != nil {
			// Harmless but for space: the next Restore or Open deletes it.
			db.log.Warn("eventlog: delete a failed restore's staged copy", "shard", s.id, "err", derr)
		}
		return err
	}
	// The staged copy must be durable before the record that makes it the
	// shard's data: after a power loss the record must not survive
	// without it.
	if err := db.sync(); err != nil {
		return err
	}
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	s.st.clearCaches()
	s.st.mu.pending = true
	if err := db.setPending(s.id, opRestore); err != nil {
		return err
	}
	if err := db.finishPending(s.id, opRestore); err != nil {
		return err
	}
	s.st.mu.pending = false
	return nil
}

// stage reads the stream into the shard's staging area, emptied first.
func (s *Shard) stage(r io.Reader, stop <-chan struct{}) error {
	db := s.db
	if err := db.deletePrefix(shardPrefix(tableStaging, s.id)); err != nil {
		return err
	}
	w := db.newBatcher()
	w.maxBytes = restoreBatchBytes
	err := readStream(r, s.id, db.maxValue, stop, func(table byte, suffix, value []byte) error {
		return w.set(badger.NewEntry(stagingKey(s.id, table, suffix), value))
	})
	if err != nil {
		w.discard()
		return err
	}
	return w.commit()
}

// resolvePending finishes what a failed Restore or Drop of the shard left.
// The caller holds maint.
func (s *Shard) resolvePending() error {
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	s.st.clearCaches()
	if !s.st.mu.pending {
		return nil
	}
	op, found, err := s.db.getPending(s.id)
	if err != nil {
		return err
	}
	if found {
		if err := s.db.finishPending(s.id, op); err != nil {
			return err
		}
	}
	s.st.mu.pending = false
	return nil
}

// Drop deletes all of the shard's data, in every shard table (and a
// staged restore). Like Restore's replacement it takes several
// transactions under the shard's exclusive lock, behind a 'p' record, so a
// crash in the middle is completed by the next Open. The deletion is
// synced when Drop returns nil.
func (s *Shard) Drop() error {
	db := s.db
	if err := db.enter(); err != nil {
		return err
	}
	defer db.exit()
	s.st.maint.Lock()
	defer s.st.maint.Unlock()
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	s.st.clearCaches()
	// A drop supersedes whatever a failed Restore or Drop left.
	s.st.mu.pending = true
	if err := db.setPending(s.id, opDrop); err != nil {
		return err
	}
	if err := db.finishPending(s.id, opDrop); err != nil {
		return err
	}
	s.st.mu.pending = false
	return nil
}

func (db *DB) setPending(shard uint64, op byte) error {
	if err := db.bdb.Update(func(txn *badger.Txn) error {
		return txn.Set(pendingKey(shard), encodePending(op))
	}); err != nil {
		return fmt.Errorf("eventlog: shard %d: write pending operation: %w", shard, err)
	}
	return nil
}

func (db *DB) getPending(shard uint64) (op byte, found bool, err error) {
	key := pendingKey(shard)
	err = db.bdb.View(func(txn *badger.Txn) error {
		b, ok, err := getRecord(txn, key)
		if err != nil || !ok {
			return err
		}
		op, err = decodePending(key, b)
		found = err == nil
		return err
	})
	return op, found, err
}

// finishPending carries out a pending operation of shard from wherever it
// was interrupted. Every step is idempotent, and each step that must not
// be overtaken by a later one after a power loss is synced first.
//
//   - opRestore: delete the live data, copy the staged copy into it, sync,
//     then mark opRestoreCleanup (the staged copy is kept until the live
//     data is durable, so a repeated opRestore starts over from it).
//   - opRestoreCleanup: delete the staged copy, then the 'p' record.
//   - opDrop: delete the live data and any staged copy, sync, then the 'p'
//     record.
func (db *DB) finishPending(shard uint64, op byte) error {
	switch op {
	case opRestore:
		if err := db.deleteLive(shard); err != nil {
			return err
		}
		if err := db.copyStaging(shard); err != nil {
			return err
		}
		if err := db.sync(); err != nil {
			return err
		}
		if err := db.setPending(shard, opRestoreCleanup); err != nil {
			return err
		}
		fallthrough
	case opRestoreCleanup:
		if err := db.deletePrefix(shardPrefix(tableStaging, shard)); err != nil {
			return err
		}
	case opDrop:
		if err := db.deleteLive(shard); err != nil {
			return err
		}
		if err := db.deletePrefix(shardPrefix(tableStaging, shard)); err != nil {
			return err
		}
		if err := db.sync(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("eventlog: shard %d: unknown pending operation %d", shard, op)
	}
	if err := db.bdb.Update(func(txn *badger.Txn) error { return txn.Delete(pendingKey(shard)) }); err != nil {
		return fmt.Errorf("eventlog: shard %d: delete pending operation: %w", shard, err)
	}
	return nil
}

// deleteLive deletes the shard's keys in every shard table.
func (db *DB) deleteLive(shard uint64) error {
	for _, table := range shardTables {
		if err := db.deletePrefix(shardPrefix(table, shard)); err != nil {
			return err
		}
	}
	return nil
}

// deletePrefix deletes every key with prefix, in as many transactions as
// it takes. It does not use Badger's DropPrefix, which blocks the writes
// of the whole DB (every other shard's) and fails them with
// ErrBlockedWrites while it runs.
func (db *DB) deletePrefix(prefix []byte) error {
	w := db.newBatcher()
	w.maxBytes = restoreBatchBytes
	err := db.bdb.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.PrefetchValues = false
		o.Prefix = prefix
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := w.delete(it.Item().KeyCopy(nil)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		w.discard()
		return fmt.Errorf("eventlog: delete %s: %w", keyName(prefix), err)
	}
	return w.commit()
}

// copyStaging writes the shard's staged copy into its live tables,
// checking every record again (the staged copy may come from before a
// crash).
func (db *DB) copyStaging(shard uint64) error {
	w := db.newBatcher()
	w.maxBytes = restoreBatchBytes
	err := db.bdb.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.PrefetchValues = false
		o.Prefix = shardPrefix(tableStaging, shard)
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			key := item.KeyCopy(nil)
			rest := key[shardPrefixLen:]
			if len(rest) == 0 {
				return corrupt(key, "staged record", "no table byte")
			}
			value, err := item.ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("eventlog: read %s: %w", keyName(key), err)
			}
			if err := checkShardRecord(shard, rest[0], rest[1:], value); err != nil {
				return corrupt(key, "staged record", "%v", err)
			}
			live := append(shardPrefix(rest[0], shard), rest[1:]...)
			if err := w.set(badger.NewEntry(live, value)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		w.discard()
		return err
	}
	return w.commit()
}

// recoverShards runs at Open, before anyone can read a shard: it finishes
// every Restore or Drop a crash interrupted after its commit point, then
// deletes the staged copies of restores that never reached it.
func (db *DB) recoverShards() error {
	type pending struct {
		shard uint64
		op    byte
	}
	var ops []pending
	var staged []uint64
	err := db.bdb.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix = []byte{tablePending}
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			key := it.Item().KeyCopy(nil)
			if len(key) != shardPrefixLen {
				return corrupt(key, "pending", "malformed key")
			}
			b, err := it.Item().ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("eventlog: read %s: %w", keyName(key), err)
			}
			op, err := decodePending(key, b)
			if err != nil {
				return err
			}
			ops = append(ops, pending{binary.BigEndian.Uint64(key[1:]), op})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("eventlog: open: %w", err)
	}
	for _, p := range ops {
		db.log.Info("eventlog: finishing an interrupted shard operation", "shard", p.shard, "op", p.op)
		if err := db.finishPending(p.shard, p.op); err != nil {
			return fmt.Errorf("eventlog: open: finish shard %d: %w", p.shard, err)
		}
	}
	err = db.bdb.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.PrefetchValues = false
		o.Prefix = []byte{tableStaging}
		it := txn.NewIterator(o)
		defer it.Close()
		// One seek per shard, not one step per staged key.
		for it.Rewind(); it.Valid(); {
			key := it.Item().Key()
			if len(key) < shardPrefixLen {
				return corrupt(key, "staged record", "malformed key")
			}
			shard := binary.BigEndian.Uint64(key[1:])
			staged = append(staged, shard)
			if shard == math.MaxUint64 {
				break
			}
			it.Seek(shardPrefix(tableStaging, shard+1))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("eventlog: open: %w", err)
	}
	for _, shard := range staged {
		db.log.Info("eventlog: deleting the staged copy of an unfinished shard restore", "shard", shard)
		if err := db.deletePrefix(shardPrefix(tableStaging, shard)); err != nil {
			return fmt.Errorf("eventlog: open: %w", err)
		}
	}
	return nil
}
