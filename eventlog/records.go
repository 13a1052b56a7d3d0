package eventlog

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Keys of the shard tables (see the package documentation): the table
// byte, the 8-byte big-endian shard id, then the table's own suffix.
//
// An entity is encoded as a 2-byte big-endian length and the bytes of its
// Type, then the same for its ID. The encoding is prefix-free (no entity's
// encoding is a prefix of another's, because parsing reads the lengths
// first), so the journal prefix of one entity never matches another's
// keys: ("a", "bc") and ("ab", "c") are 00 01 'a' 00 02 'b' 'c' and 00 02
// 'a' 'b' 00 01 'c'. MaxEntityBytes keeps both lengths within 16 bits.

const shardPrefixLen = 1 + 8 // table byte, shard id

// shardPrefix returns the prefix of one shard in one table.
func shardPrefix(table byte, shard uint64) []byte {
	return binary.BigEndian.AppendUint64(append(make([]byte, 0, 64), table), shard)
}

func appendEntity(b []byte, e Entity) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(e.Type)))
	b = append(b, e.Type...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(e.ID)))
	return append(b, e.ID...)
}

// parseEntity reads one entity encoding from the front of b.
func parseEntity(b []byte) (e Entity, rest []byte, ok bool) {
	for _, f := range []*string{&e.Type, &e.ID} {
		if len(b) < 2 {
			return Entity{}, nil, false
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+n {
			return Entity{}, nil, false
		}
		*f, b = string(b[2:2+n]), b[2+n:]
	}
	return e, b, true
}

// entityKey is the key of e in a per-entity table ('h', 's', 'v'); the
// journal prefix of e is entityKey(tableJournal, ...).
func entityKey(table byte, shard uint64, e Entity) []byte {
	return appendEntity(shardPrefix(table, shard), e)
}

func journalKey(shard uint64, e Entity, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(entityKey(tableJournal, shard, e), seq)
}

func appliedKey(shard uint64) []byte { return shardPrefix(tableApplied, shard) }

func requestKey(shard uint64, id []byte) []byte {
	return append(shardPrefix(tableRequest, shard), id...)
}

// requestIndexKey is a 'q' key: ordered by index, so ForgetRequests is a
// range scan. With an id it is a legacy per-request entry (empty value);
// with a nil id, the key of a request batch record (see
// encodeRequestBatch).
func requestIndexKey(shard uint64, index uint64, id []byte) []byte {
	return append(binary.BigEndian.AppendUint64(shardPrefix(tableRequestIndex, shard), index), id...)
}

func pendingKey(shard uint64) []byte { return shardPrefix(tablePending, shard) }

// stagingKey is where Restore stages the shard key table+suffix.
func stagingKey(shard uint64, table byte, suffix []byte) []byte {
	return append(append(shardPrefix(tableStaging, shard), table), suffix...)
}

// checkShardKey validates the suffix of a key of one of shardTables (what
// follows the table byte and shard id).
func checkShardKey(table byte, suffix []byte) error {
	switch table {
	case tableApplied:
		if len(suffix) != 0 {
			return fmt.Errorf("applied key with a %d-byte suffix", len(suffix))
		}
	case tableHead, tableSnapshot, tableValue, tableJournal:
		e, rest, ok := parseEntity(suffix)
		if !ok {
			return fmt.Errorf("table %q: malformed entity", table)
		}
		if err := e.Validate(); err != nil {
			return fmt.Errorf("table %q: %v", table, err)
		}
		want := 0
		if table == tableJournal {
			want = 8
		}
		if len(rest) != want {
			return fmt.Errorf("table %q: %d bytes after the entity, want %d", table, len(rest), want)
		}
		if table == tableJournal && binary.BigEndian.Uint64(rest) == 0 {
			return fmt.Errorf("journal key with seq 0")
		}
	case tableRequest:
		if len(suffix) > MaxRequestIDBytes {
			return fmt.Errorf("request id of %d bytes (max %d)", len(suffix), MaxRequestIDBytes)
		}
	case tableRequestIndex:
		if len(suffix) < 8 || len(suffix)-8 > MaxRequestIDBytes {
			return fmt.Errorf("request index key of %d bytes", len(suffix))
		}
	default:
		return fmt.Errorf("table %q is not a shard table", table)
	}
	return nil
}

// keyName renders a key for an error message: the table, the shard and the
// parsed suffix (j/7/"cart"/"c1"/3), or the quoted raw key if it does not
// parse.
func keyName(key []byte) string {
	raw := strconv.Quote(truncate(string(key)))
	if len(key) < shardPrefixLen {
		return raw
	}
	table, rest := key[0], key[shardPrefixLen:]
	var b strings.Builder
	fmt.Fprintf(&b, "%c/%d", table, binary.BigEndian.Uint64(key[1:]))
	switch table {
	case tableApplied, tablePending:
		if len(rest) != 0 {
			return raw
		}
	case tableHead, tableSnapshot, tableValue, tableJournal:
		e, tail, ok := parseEntity(rest)
		if !ok {
			return raw
		}
		fmt.Fprintf(&b, "/%q/%q", truncate(e.Type), truncate(e.ID))
		switch {
		case table == tableJournal && len(tail) == 8:
			fmt.Fprintf(&b, "/%d", binary.BigEndian.Uint64(tail))
		case len(tail) != 0:
			return raw
		}
	case tableRequest:
		fmt.Fprintf(&b, "/%q", truncate(string(rest)))
	case tableRequestIndex:
		if len(rest) < 8 {
			return raw
		}
		fmt.Fprintf(&b, "/%d/%q", binary.BigEndian.Uint64(rest), truncate(string(rest[8:])))
	case tableStaging:
		if len(rest) == 0 {
			return raw
		}
		fmt.Fprintf(&b, "/%q", truncate(string(rest)))
	default:
		return raw
	}
	return b.String()
}

// Record encodings (Badger values). Every record but a journal event and a
// 'q' entry starts with recordVersion; numbers are big-endian.
//
//	'h' head      version, seq u64 (> 0)
//	's' snapshot  version, seq u64 (> 0), state
//	'v' value     version, flags (bit 0: deleted), version u64 (> 0), state (empty if deleted)
//	'r' request   version, index u64, result
//	'a' applied   version, index u64
//	'q' legacy    empty (the key, index and id, is the record)
//	'q' batch     version, then per request: uvarint(index - key's index),
//	              uvarint(len(id)), id (the key is the index alone)
//	'j' event     the event's bytes, as they are
//	'p' pending   version, op
const (
	recordVersion = 1

	// recordOverhead bounds the bytes a record adds to its state.
	recordOverhead = 1 + 1 + 8

	valueDeleted = 1 << 0
)

func corrupt(key []byte, what, format string, a ...any) error {
	return fmt.Errorf("%w: key %s: %s: %s", ErrCorrupt, keyName(key), what, fmt.Sprintf(format, a...))
}

// decodeU64Record decodes a record of the version byte and one uint64
// followed by rest (the state of a snapshot, the result of a request).
func decodeU64Record(key []byte, what string, b []byte, withRest bool) (uint64, []byte, error) {
	switch {
	case len(b) < 9:
		return 0, nil, corrupt(key, what, "%d-byte record", len(b))
	case b[0] != recordVersion:
		return 0, nil, corrupt(key, what, "unsupported version %d", b[0])
	case !withRest && len(b) != 9:
		return 0, nil, corrupt(key, what, "%d-byte record, want 9", len(b))
	case len(b)-9 > MaxEventBytes:
		return 0, nil, corrupt(key, what, "%d bytes of state (max %d)", len(b)-9, MaxEventBytes)
	}
	return binary.BigEndian.Uint64(b[1:]), b[9:], nil
}

func encodeU64Record(v uint64, rest []byte) []byte {
	b := make([]byte, 0, 9+len(rest))
	b = binary.BigEndian.AppendUint64(append(b, recordVersion), v)
	return append(b, rest...)
}

func encodeHead(seq uint64) []byte { return encodeU64Record(seq, nil) }

// decodeHead returns the seq of a head record; it is never 0 (a head is
// written with the first event).
func decodeHead(key, b []byte) (uint64, error) {
	seq, _, err := decodeU64Record(key, "head", b, false)
	if err == nil && seq == 0 {
		return 0, corrupt(key, "head", "seq 0")
	}
	return seq, err
}

func encodeSnapshot(seq uint64, state []byte) []byte { return encodeU64Record(seq, state) }

// decodeSnapshot returns the seq of a snapshot record and its state (a
// slice of b).
func decodeSnapshot(key, b []byte) (uint64, []byte, error) {
	seq, state, err := decodeU64Record(key, "snapshot", b, true)
	if err == nil && seq == 0 {
		return 0, nil, corrupt(key, "snapshot", "seq 0")
	}
	return seq, state, err
}

func encodeRequest(index uint64, result []byte) []byte { return encodeU64Record(index, result) }

// decodeRequest returns the index of a request record and its result (a
// slice of b).
func decodeRequest(key, b []byte) (uint64, []byte, error) {
	return decodeU64Record(key, "request", b, true)
}

func encodeApplied(index uint64) []byte { return encodeU64Record(index, nil) }

func decodeApplied(key, b []byte) (uint64, error) {
	index, _, err := decodeU64Record(key, "applied", b, false)
	return index, err
}

func encodeValue(v Value) []byte {
	b := make([]byte, 0, recordOverhead+len(v.State))
	var flags byte
	if v.Deleted {
		flags |= valueDeleted
	}
	b = binary.BigEndian.AppendUint64(append(b, recordVersion, flags), v.Version)
	return append(b, v.State...)
}

// decodeValue decodes a value record; State is a slice of b (nil for a
// tombstone).
func decodeValue(key, b []byte) (Value, error) {
	const what = "value"
	switch {
	case len(b) < recordOverhead:
		return Value{}, corrupt(key, what, "%d-byte record", len(b))
	case b[0] != recordVersion:
		return Value{}, corrupt(key, what, "unsupported version %d", b[0])
	case b[1]&^valueDeleted != 0:
		return Value{}, corrupt(key, what, "unknown flags %#x", b[1])
	case len(b)-recordOverhead > MaxEventBytes:
		return Value{}, corrupt(key, what, "%d bytes of state (max %d)", len(b)-recordOverhead, MaxEventBytes)
	}
	v := Value{Version: binary.BigEndian.Uint64(b[2:]), Deleted: b[1]&valueDeleted != 0}
	switch {
	case v.Version == 0:
		return Value{}, corrupt(key, what, "version 0")
	case v.Deleted && len(b) > recordOverhead:
		return Value{}, corrupt(key, what, "tombstone with %d bytes of state", len(b)-recordOverhead)
	case !v.Deleted:
		v.State = b[recordOverhead:]
	}
	return v, nil
}

// requestRef is one request of a request batch record: its id and the
// index it was recorded at.
type requestRef struct {
	index uint64
	id    []byte
}

// encodeRequestBatch encodes the requests of a batch record keyed by base
// (every ref's index is at least base).
func encodeRequestBatch(base uint64, refs []requestRef) []byte {
	n := 1
	for _, r := range refs {
		n += 2*binary.MaxVarintLen64 + len(r.id)
	}
	b := append(make([]byte, 0, n), recordVersion)
	for _, r := range refs {
		b = binary.AppendUvarint(b, r.index-base)
		b = binary.AppendUvarint(b, uint64(len(r.id)))
		b = append(b, r.id...)
	}
	return b
}

// decodeRequestBatch decodes a request batch record keyed by base; the ids
// are slices of b.
func decodeRequestBatch(key []byte, base uint64, b []byte) ([]requestRef, error) {
	const what = "request batch"
	switch {
	case len(b) < 2:
		return nil, corrupt(key, what, "%d-byte record", len(b))
	case b[0] != recordVersion:
		return nil, corrupt(key, what, "unsupported version %d", b[0])
	}
	var refs []requestRef
	for rest := b[1:]; len(rest) > 0; {
		delta, n := binary.Uvarint(rest)
		if n <= 0 || delta > math.MaxUint64-base {
			return nil, corrupt(key, what, "request %d: malformed index", len(refs))
		}
		rest = rest[n:]
		size, n := binary.Uvarint(rest)
		if n <= 0 || size > MaxRequestIDBytes || uint64(len(rest)-n) < size {
			return nil, corrupt(key, what, "request %d: malformed id", len(refs))
		}
		rest = rest[n:]
		refs = append(refs, requestRef{index: base + delta, id: rest[:size:size]})
		rest = rest[size:]
	}
	return refs, nil
}

// Pending shard operations (table 'p'; see shardsnap.go).
const (
	opRestore        byte = 1 // the staged copy is complete: replace the live data with it
	opRestoreCleanup byte = 2 // the live data is complete: delete the staged copy
	opDrop           byte = 3 // delete the live data and any staged copy
)

func encodePending(op byte) []byte { return []byte{recordVersion, op} }

func decodePending(key, b []byte) (byte, error) {
	switch {
	case len(b) != 2:
		return 0, corrupt(key, "pending", "%d-byte record, want 2", len(b))
	case b[0] != recordVersion:
		return 0, corrupt(key, "pending", "unsupported version %d", b[0])
	case b[1] < opRestore || b[1] > opDrop:
		return 0, corrupt(key, "pending", "unknown operation %d", b[1])
	}
	return b[1], nil
}

// checkShardRecord validates one record of a shard table as Restore
// receives it: the key suffix and the value must both decode.
func checkShardRecord(shard uint64, table byte, suffix, value []byte) error {
	if err := checkShardKey(table, suffix); err != nil {
		return err
	}
	key := append(shardPrefix(table, shard), suffix...)
	var err error
	switch table {
	case tableApplied:
		_, err = decodeApplied(key, value)
	case tableHead:
		_, err = decodeHead(key, value)
	case tableSnapshot:
		_, _, err = decodeSnapshot(key, value)
	case tableValue:
		_, err = decodeValue(key, value)
	case tableRequest:
		_, _, err = decodeRequest(key, value)
	case tableRequestIndex:
		switch {
		case len(value) == 0: // a legacy per-request entry
		case len(suffix) != 8:
			err = corrupt(key, "request index", "%d-byte value, want none", len(value))
		default:
			_, err = decodeRequestBatch(key, binary.BigEndian.Uint64(suffix), value)
		}
	case tableJournal:
		if len(value) > MaxEventBytes {
			err = corrupt(key, "event", "%d bytes (max %d)", len(value), MaxEventBytes)
		}
	}
	return err
}
