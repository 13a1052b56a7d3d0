package eventlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// Limits of the shard tables, checked before anything is written and
// reported as ErrTooLarge.
const (
	// MaxEntityBytes bounds len(Type)+len(ID) of an Entity.
	MaxEntityBytes = 1024
	// MaxEventBytes bounds one event, one entity snapshot, one value
	// state and one request result. A DB may bound them lower: see
	// DB.MaxStateBytes.
	MaxEventBytes = 1 << 20
	// MaxEventsPerAppend bounds the events of one ShardTxn.Append. It
	// bounds the work of one call, not what fits one transaction: that
	// depends on the events' sizes and Options.MemTableSize (see
	// Shard.Update).
	MaxEventsPerAppend = 10000
	// MaxRequestIDBytes bounds a request id.
	MaxRequestIDBytes = 256
)

// Entity names one event-sourced or value entity of a shard. Type and ID
// are opaque bytes (not necessarily UTF-8).
type Entity struct{ Type, ID string }

// Validate reports whether e can be stored: Type and ID non-empty, and
// len(Type)+len(ID) at most MaxEntityBytes. The error wraps
// ErrInvalidEntity.
func (e Entity) Validate() error {
	switch {
	case e.Type == "":
		return fmt.Errorf("%w: empty type (id %q)", ErrInvalidEntity, truncate(e.ID))
	case e.ID == "":
		return fmt.Errorf("%w: empty id (type %q)", ErrInvalidEntity, truncate(e.Type))
	case len(e.Type)+len(e.ID) > MaxEntityBytes:
		return fmt.Errorf("%w: %q/%q has %d bytes (max %d)",
			ErrInvalidEntity, truncate(e.Type), truncate(e.ID), len(e.Type)+len(e.ID), MaxEntityBytes)
	}
	return nil
}

func (e Entity) String() string { return fmt.Sprintf("%q/%q", truncate(e.Type), truncate(e.ID)) }

// Event is one event of an entity's journal.
type Event struct {
	Seq  uint64 // 1, 2, 3, ... per entity
	Data []byte // never nil
}

// EntityState is what a command handler needs to rebuild an entity.
type EntityState struct {
	Seq         uint64  // sequence number of the last event (0: no events)
	SnapshotSeq uint64  // seq the snapshot covers (0: no snapshot)
	Snapshot    []byte  // nil when there is no snapshot, non-nil otherwise
	Events      []Event // events with seq > SnapshotSeq, in order (gapless)
}

// Value is the state of a value entity. Deleting it leaves a tombstone
// (Deleted, State nil) that keeps Version, so versions never go back and a
// deleted and re-created entity never reuses a version (no ABA).
type Value struct {
	Version uint64 // 1 for the first write, +1 for every write or delete
	State   []byte // nil when Deleted, non-nil otherwise
	Deleted bool
}

// MaxStateBytes is this DB's bound on one event, entity snapshot, value
// state or request result: MaxEventBytes, or less when the DB stores
// smaller values (Options.InMemory, or Options.ValueLogFileSize within a
// few bytes of MaxEventBytes). Replicas of one Raft shard must agree on it
// (see the package documentation).
func (db *DB) MaxStateBytes() int {
	return min(MaxEventBytes, db.maxValue-recordOverhead)
}

// Shard is one Raft shard's data in a DB: entity journals, entity
// snapshots, value entities, request results and the applied index. Make
// it with DB.Shard; its methods are safe for concurrent use, and shards
// are independent of each other.
type Shard struct {
	db *DB
	id uint64
	st *shardState
}

// shardState is shared by every Shard handle of one shard id.
type shardState struct {
	// maint serialises Restore and Drop of the shard.
	maint sync.Mutex
	// mu is held shared by reads and Update and exclusively while Restore
	// or Drop replaces the shard's live data, which takes several Badger
	// transactions that no reader must see half done.
	mu struct {
		sync.RWMutex
		// pending: a Restore or Drop failed after it began replacing the
		// live data; its 'p' record says how to finish.
		pending bool
	}
	// heads caches committed entity heads when CacheHeads enabled it, and
	// then the committed applied index too (applied, if appliedKnown);
	// cleared whenever Restore or Drop replaces the shard's data.
	heads struct {
		sync.Mutex
		max          int // 0: disabled
		m            map[string]uint64
		applied      uint64
		appliedKnown bool
	}
}

// clearCaches forgets every cached head and the cached applied index. The
// caller holds mu exclusively.
func (st *shardState) clearCaches() {
	st.heads.Lock()
	defer st.heads.Unlock()
	if st.heads.m != nil {
		st.heads.m = map[string]uint64{}
	}
	st.heads.appliedKnown = false
}

// CacheHeads keeps up to max entity heads (last sequence numbers) of the
// shard in memory, so that an Update appending to an entity need not look
// its head up in Badger (with thousands of entities, mostly a table seek),
// and the applied index, so that SetApplied need not read it. Only for a
// shard with one writer at a time, such as a Raft state machine: the cache
// is filled by reads and updated after commits, so two concurrent Updates
// could each read a head (or applied index) the other is changing.
func (s *Shard) CacheHeads(max int) {
	s.st.heads.Lock()
	defer s.st.heads.Unlock()
	s.st.heads.max = max
	if max > 0 && s.st.heads.m == nil {
		s.st.heads.m = map[string]uint64{}
	}
	if max <= 0 {
		s.st.heads.appliedKnown = false
	}
}

// Shard returns the shard with the given id. It writes nothing: a shard
// that was never written is empty (Applied 0, no entities).
func (db *DB) Shard(id uint64) *Shard {
	db.shards.Lock()
	defer db.shards.Unlock()
	if db.shards.m == nil {
		db.shards.m = map[uint64]*shardState{}
	}
	st := db.shards.m[id]
	if st == nil {
		st = &shardState{}
		db.shards.m[id] = st
	}
	return &Shard{db: db, id: id, st: st}
}

// ID returns the shard id.
func (s *Shard) ID() uint64 { return s.id }

func (s *Shard) pendingErr() error {
	return fmt.Errorf("%w: shard %d (Restore or Drop it, or reopen the DB)", ErrShardPending, s.id)
}

// view runs fn in one read-only transaction of the shard.
func (s *Shard) view(fn func(txn *badger.Txn) error) error {
	db := s.db
	if err := db.enter(); err != nil {
		return err
	}
	defer db.exit()
	s.st.mu.RLock()
	defer s.st.mu.RUnlock()
	if s.st.mu.pending {
		return s.pendingErr()
	}
	return db.bdb.View(fn)
}

// Applied returns the applied index last set by ShardTxn.SetApplied (or
// restored by Restore), 0 if never.
func (s *Shard) Applied() (index uint64, err error) {
	err = s.view(func(txn *badger.Txn) error {
		index, err = getApplied(txn, s.id)
		return err
	})
	return index, err
}

// Load returns e's latest snapshot and the events after it, from one
// consistent read. An entity never written has the zero EntityState.
func (s *Shard) Load(e Entity) (st EntityState, err error) {
	if err := e.Validate(); err != nil {
		return EntityState{}, err
	}
	err = s.view(func(txn *badger.Txn) error {
		st, err = loadEntity(txn, s.id, e)
		return err
	})
	return st, err
}

// Events returns e's events with seq >= from, in order, at most limit of
// them (all if limit <= 0). Events before a snapshot are kept, so from 1
// returns the whole journal.
func (s *Shard) Events(e Entity, from uint64, limit int) (events []Event, err error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	err = s.view(func(txn *badger.Txn) error {
		head, err := getHead(txn, s.id, e)
		if err != nil {
			return err
		}
		events, err = readEvents(txn, s.id, e, from, limit, head)
		return err
	})
	return events, err
}

// Head returns the seq of e's last event, 0 if it has none.
func (s *Shard) Head(e Entity) (seq uint64, err error) {
	if err := e.Validate(); err != nil {
		return 0, err
	}
	err = s.view(func(txn *badger.Txn) error {
		seq, err = getHead(txn, s.id, e)
		return err
	})
	return seq, err
}

// Value returns the value entity e. found is false when e was never
// written; a deleted value is found, with Deleted set and State nil.
func (s *Shard) Value(e Entity) (v Value, found bool, err error) {
	if err := e.Validate(); err != nil {
		return Value{}, false, err
	}
	err = s.view(func(txn *badger.Txn) error {
		v, found, err = getValue(txn, s.id, e)
		return err
	})
	return v, found, err
}

// Request returns the result stored by ShardTxn.PutRequest for id, if it
// was not forgotten since.
func (s *Shard) Request(id []byte) (result []byte, found bool, err error) {
	if err := checkRequestID(id); err != nil {
		return nil, false, err
	}
	err = s.view(func(txn *badger.Txn) error {
		_, result, found, err = getRequest(txn, s.id, id)
		return err
	})
	return result, found, err
}

// Update runs fn in one Badger read-write transaction of the shard and
// commits it: everything fn writes, the applied index included, is one
// atomic commit, and fn reads its own writes. If fn returns an error,
// nothing is written and Update returns that error as is.
//
// A Badger transaction holds about 15% of Options.MemTableSize (2.4 MiB
// with the defaults) of keys and inline values, and a bounded number of
// entries (26214 with the defaults; an Append of n events is n+1); values
// of at least the value threshold (614 KiB with the defaults) go to the
// value log and count only their key and ~24 bytes. When fn's writes
// outgrow it, the write that did not fit and Update both return an error
// wrapping ErrBatchTooLarge, and nothing is written (even if fn ignores
// the error and returns nil): split the batch and retry. Whether a batch
// fits depends on the DB's options, so a replicated state machine must
// only split on it, never refuse a command because of it.
//
// fn must use tx, not the methods of this or another handle of the same
// shard: Restore or Drop waiting for the shard would deadlock with it.
//
// A failed write (ErrBatchTooLarge, an I/O error) poisons tx: later writes
// fail and Update does not commit. A refused write (ErrTooLarge,
// ErrInvalidEntity, ErrOutOfOrder) writes nothing and leaves tx usable, so
// fn may reject one command and go on with the next.
//
// tx must not be used outside fn or by several goroutines at once. Update
// fails with badger.ErrConflict (wrapped) if a concurrent Update of the
// same shard wrote a key this one read; Raft applies one batch at a time,
// so that does not happen there.
func (s *Shard) Update(fn func(tx *ShardTxn) error) error {
	db := s.db
	if err := db.enter(); err != nil {
		return err
	}
	defer db.exit()
	s.st.mu.RLock()
	defer s.st.mu.RUnlock()
	if s.st.mu.pending {
		return s.pendingErr()
	}
	txn := db.bdb.NewTransaction(true)
	tx := &ShardTxn{s: s, txn: txn}
	defer func() {
		tx.done = true
		txn.Discard()
	}()
	if err := fn(tx); err != nil {
		return err
	}
	if tx.err == nil {
		if err := tx.flushRequests(); err != nil {
			return err
		}
	}
	if tx.err != nil {
		return tx.err
	}
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("eventlog: shard %d: commit: %w", s.id, err)
	}
	if len(tx.heads) > 0 || tx.appliedSet {
		h := &s.st.heads
		h.Lock()
		if h.max > 0 {
			if len(h.m)+len(tx.heads) > h.max {
				h.m = map[string]uint64{}
			}
			for k, v := range tx.heads {
				h.m[k] = v
			}
			if tx.appliedSet {
				h.applied, h.appliedKnown = tx.applied, true
			}
		}
		h.Unlock()
	}
	return nil
}

// ShardTxn is one Update's transaction. Its reads see its own writes.
type ShardTxn struct {
	s    *Shard
	txn  *badger.Txn
	done bool  // Update returned
	err  error // the first failed write: Update must not commit
	// heads written by this transaction (entity head key -> seq), for the
	// shard's head cache once it commits.
	heads map[string]uint64
	// applied: the applied index this transaction set, if appliedSet.
	applied    uint64
	appliedSet bool
	// absent: request ids this transaction found unrecorded (and has not
	// recorded since), so that PutRequest need not look them up again.
	absent map[string]struct{}
	// requests recorded by this transaction and not yet listed in a
	// request batch record (flushRequests).
	requests []requestRef
}

// appliedIndex returns the applied index as of this transaction: its own
// SetApplied, else the shard's cached one (when CacheHeads enabled it),
// else Badger's.
func (tx *ShardTxn) appliedIndex() (uint64, error) {
	if tx.appliedSet {
		return tx.applied, nil
	}
	h := &tx.s.st.heads
	h.Lock()
	v, ok := h.applied, h.appliedKnown && h.max > 0
	h.Unlock()
	if ok {
		return v, nil
	}
	return getApplied(tx.txn, tx.s.id)
}

// head returns e's head as this transaction sees it: its own writes, then
// the shard's head cache (if enabled), then Badger.
func (tx *ShardTxn) head(e Entity) (uint64, error) {
	key := entityKey(tableHead, tx.s.id, e)
	if v, ok := tx.heads[string(key)]; ok {
		return v, nil
	}
	h := &tx.s.st.heads
	h.Lock()
	v, ok := h.m[string(key)]
	on := h.max > 0
	h.Unlock()
	if ok {
		return v, nil
	}
	v, err := getHead(tx.txn, tx.s.id, e)
	if err == nil && on {
		// Committed data (single writer: nobody else changes it).
		h.Lock()
		if h.max > 0 && len(h.m) < h.max {
			h.m[string(key)] = v
		}
		h.Unlock()
	}
	return v, err
}

var errTxnDone = errors.New("eventlog: ShardTxn used after its Update returned")

// readable reports whether tx may still be used.
func (tx *ShardTxn) readable() error {
	if tx.done {
		return errTxnDone
	}
	return nil
}

// writable reports whether tx may still be written.
func (tx *ShardTxn) writable() error {
	if tx.done {
		return errTxnDone
	}
	return tx.err
}

func (tx *ShardTxn) set(key, value []byte) error {
	if err := tx.txn.Set(key, value); err != nil {
		return tx.fail(key, err)
	}
	return nil
}

func (tx *ShardTxn) delete(key []byte) error {
	if err := tx.txn.Delete(key); err != nil {
		return tx.fail(key, err)
	}
	return nil
}

// fail poisons tx with a write error: a transaction with a failed write
// may hold part of an operation, so it must not commit.
func (tx *ShardTxn) fail(key []byte, err error) error {
	if errors.Is(err, badger.ErrTxnTooBig) {
		err = fmt.Errorf("%w: shard %d, at key %s (%w)", ErrBatchTooLarge, tx.s.id, keyName(key), err)
	} else {
		err = fmt.Errorf("eventlog: write %s: %w", keyName(key), err)
	}
	tx.err = err
	return err
}

// checkState checks the size of an event, a snapshot, a value state or a
// request result.
func (tx *ShardTxn) checkState(what string, b []byte, e Entity) error {
	if limit := tx.s.db.MaxStateBytes(); len(b) > limit {
		return fmt.Errorf("%w: %s of %d bytes for %v in shard %d (max %d)", ErrTooLarge, what, len(b), e, tx.s.id, limit)
	}
	return nil
}

// Applied returns the applied index as of this transaction.
func (tx *ShardTxn) Applied() (uint64, error) {
	if err := tx.readable(); err != nil {
		return 0, err
	}
	return getApplied(tx.txn, tx.s.id)
}

// SetApplied sets the shard's applied index, committed with the rest of
// the transaction. It must not go backwards (ErrOutOfOrder); setting the
// same index again is allowed.
func (tx *ShardTxn) SetApplied(index uint64) error {
	if err := tx.writable(); err != nil {
		return err
	}
	cur, err := tx.appliedIndex()
	if err != nil {
		return err
	}
	if index < cur {
		return fmt.Errorf("%w: shard %d: applied index %d after %d", ErrOutOfOrder, tx.s.id, index, cur)
	}
	if err := tx.set(appliedKey(tx.s.id), encodeApplied(index)); err != nil {
		return err
	}
	tx.applied, tx.appliedSet = index, true
	return nil
}

// ResetApplied sets the applied index back to 0, keeping the data: for a
// shard whose data is about to be taken over by a new Raft log (a cluster
// bootstrapped over restored data), whose entries count from 1 again.
func (tx *ShardTxn) ResetApplied() error {
	if err := tx.writable(); err != nil {
		return err
	}
	if err := tx.set(appliedKey(tx.s.id), encodeApplied(0)); err != nil {
		return err
	}
	tx.applied, tx.appliedSet = 0, true
	return nil
}

// Head returns the seq of e's last event, 0 if none.
func (tx *ShardTxn) Head(e Entity) (uint64, error) {
	if err := tx.readable(); err != nil {
		return 0, err
	}
	if err := e.Validate(); err != nil {
		return 0, err
	}
	return tx.head(e)
}

// Load is Shard.Load within the transaction.
func (tx *ShardTxn) Load(e Entity) (EntityState, error) {
	if err := tx.readable(); err != nil {
		return EntityState{}, err
	}
	if err := e.Validate(); err != nil {
		return EntityState{}, err
	}
	return loadEntity(tx.txn, tx.s.id, e)
}

// Append appends events to e's journal with seqs head+1, ..., head+n and
// returns head+1 (with no events it writes nothing and returns head+1).
// Limits (MaxEventsPerAppend, DB.MaxStateBytes per event) are checked
// before anything is written. The events are copied.
func (tx *ShardTxn) Append(e Entity, events [][]byte) (first uint64, err error) {
	if err := tx.writable(); err != nil {
		return 0, err
	}
	if err := e.Validate(); err != nil {
		return 0, err
	}
	if len(events) > MaxEventsPerAppend {
		return 0, fmt.Errorf("%w: %d events for %v in one Append (max %d)", ErrTooLarge, len(events), e, MaxEventsPerAppend)
	}
	for _, ev := range events {
		if err := tx.checkState("event", ev, e); err != nil {
			return 0, err
		}
	}
	head, err := tx.head(e)
	if err != nil {
		return 0, err
	}
	if head > math.MaxUint64-uint64(len(events)) {
		return 0, fmt.Errorf("%w: seq of %v overflows", ErrTooLarge, e)
	}
	if len(events) == 0 {
		return head + 1, nil
	}
	for i, ev := range events {
		// Badger keeps the slice until commit; the caller may reuse its own.
		if err := tx.set(journalKey(tx.s.id, e, head+1+uint64(i)), append([]byte{}, ev...)); err != nil {
			return 0, err
		}
	}
	hk := entityKey(tableHead, tx.s.id, e)
	if err := tx.set(hk, encodeHead(head+uint64(len(events)))); err != nil {
		return 0, err
	}
	if tx.heads == nil {
		tx.heads = map[string]uint64{}
	}
	tx.heads[string(hk)] = head + uint64(len(events))
	return head + 1, nil
}

// PutSnapshot stores state as e's snapshot at seq, replacing the stored
// one. seq must be in 1..Head(e), and not below the stored snapshot's seq
// (ErrOutOfOrder); the events are kept.
func (tx *ShardTxn) PutSnapshot(e Entity, seq uint64, state []byte) error {
	if err := tx.writable(); err != nil {
		return err
	}
	if err := e.Validate(); err != nil {
		return err
	}
	if err := tx.checkState("snapshot", state, e); err != nil {
		return err
	}
	head, err := tx.head(e)
	if err != nil {
		return err
	}
	if seq == 0 || seq > head {
		return fmt.Errorf("%w: snapshot of %v at seq %d, head %d", ErrOutOfOrder, e, seq, head)
	}
	old, _, found, err := getSnapshot(tx.txn, tx.s.id, e)
	if err != nil {
		return err
	}
	if found && seq < old {
		return fmt.Errorf("%w: snapshot of %v at seq %d, stored one at %d", ErrOutOfOrder, e, seq, old)
	}
	return tx.set(entityKey(tableSnapshot, tx.s.id, e), encodeSnapshot(seq, state))
}

// Value is Shard.Value within the transaction.
func (tx *ShardTxn) Value(e Entity) (Value, bool, error) {
	if err := tx.readable(); err != nil {
		return Value{}, false, err
	}
	if err := e.Validate(); err != nil {
		return Value{}, false, err
	}
	return getValue(tx.txn, tx.s.id, e)
}

// PutValue stores state as the value of e and returns its new version:
// the previous version (a tombstone's included) + 1, or 1.
func (tx *ShardTxn) PutValue(e Entity, state []byte) (version uint64, err error) {
	return tx.putValue(e, state, false)
}

// DeleteValue writes a tombstone for e with the previous version + 1 (1 if
// e was never written) and returns that version.
func (tx *ShardTxn) DeleteValue(e Entity) (version uint64, err error) {
	return tx.putValue(e, nil, true)
}

func (tx *ShardTxn) putValue(e Entity, state []byte, deleted bool) (uint64, error) {
	if err := tx.writable(); err != nil {
		return 0, err
	}
	if err := e.Validate(); err != nil {
		return 0, err
	}
	if err := tx.checkState("value", state, e); err != nil {
		return 0, err
	}
	old, _, err := getValue(tx.txn, tx.s.id, e)
	if err != nil {
		return 0, err
	}
	if old.Version == math.MaxUint64 {
		return 0, fmt.Errorf("%w: version of %v overflows", ErrTooLarge, e)
	}
	v := Value{Version: old.Version + 1, State: state, Deleted: deleted}
	if err := tx.set(entityKey(tableValue, tx.s.id, e), encodeValue(v)); err != nil {
		return 0, err
	}
	return v.Version, nil
}

// Request is Shard.Request within the transaction.
func (tx *ShardTxn) Request(id []byte) (result []byte, found bool, err error) {
	_, result, found, err = tx.RequestRecord(id)
	return result, found, err
}

// RequestRecord is Request, also returning the index the result was
// recorded at.
func (tx *ShardTxn) RequestRecord(id []byte) (index uint64, result []byte, found bool, err error) {
	if err := tx.readable(); err != nil {
		return 0, nil, false, err
	}
	if err := checkRequestID(id); err != nil {
		return 0, nil, false, err
	}
	index, result, found, err = getRequest(tx.txn, tx.s.id, id)
	if err == nil && !found {
		if tx.absent == nil {
			tx.absent = map[string]struct{}{}
		}
		tx.absent[string(id)] = struct{}{}
	}
	return index, result, found, err
}

// PutRequest records the result of request id, applied at Raft index
// index, replacing an earlier record of id. ForgetRequests forgets it once
// index falls out of the dedup window. id is at most MaxRequestIDBytes
// (it may be empty), result at most DB.MaxStateBytes.
//
// The requests a transaction records are listed, for ForgetRequests, in
// one request batch record keyed by their lowest index, written when
// Update commits (or ForgetRequests runs): one 'q' write per transaction,
// not per request.
func (tx *ShardTxn) PutRequest(id []byte, index uint64, result []byte) error {
	if err := tx.writable(); err != nil {
		return err
	}
	if err := checkRequestID(id); err != nil {
		return err
	}
	if limit := tx.s.db.MaxStateBytes(); len(result) > limit {
		return fmt.Errorf("%w: request result of %d bytes in shard %d (max %d)", ErrTooLarge, len(result), tx.s.id, limit)
	}
	if _, absent := tx.absent[string(id)]; !absent {
		old, _, found, err := getRequest(tx.txn, tx.s.id, id)
		if err != nil {
			return err
		}
		if found && old != index {
			// A legacy per-request index entry of the old record, if it
			// has one (batch records just go stale: ForgetRequests checks
			// every listed request's index).
			if err := tx.delete(requestIndexKey(tx.s.id, old, id)); err != nil {
				return err
			}
		}
	}
	if err := tx.set(requestKey(tx.s.id, id), encodeRequest(index, result)); err != nil {
		return err
	}
	delete(tx.absent, string(id))
	tx.requests = append(tx.requests, requestRef{index: index, id: append([]byte{}, id...)})
	return nil
}

// flushRequests lists the requests this transaction recorded since the
// last flush in a request batch record keyed by their lowest index,
// merged with a record already under that key.
func (tx *ShardTxn) flushRequests() error {
	if len(tx.requests) == 0 {
		return nil
	}
	base := tx.requests[0].index
	for _, r := range tx.requests[1:] {
		base = min(base, r.index)
	}
	refs := tx.requests
	tx.requests = nil
	return tx.putRequestBatch(base, refs)
}

// putRequestBatch writes refs (every index at least base) as the request
// batch record keyed by base, after the requests a record already there
// lists.
func (tx *ShardTxn) putRequestBatch(base uint64, refs []requestRef) error {
	key := requestIndexKey(tx.s.id, base, nil)
	old, found, err := getRecord(tx.txn, key)
	if err != nil {
		return err
	}
	if found {
		var prior []requestRef
		if len(old) == 0 {
			// A legacy entry of the empty request id at index base.
			prior = []requestRef{{index: base, id: []byte{}}}
		} else if prior, err = decodeRequestBatch(key, base, old); err != nil {
			return err
		}
		refs = append(prior, refs...)
	}
	return tx.set(key, encodeRequestBatch(base, refs))
}

// ForgetRequests deletes every request record whose index is below
// before. It scans the 'q' index from its start, so its cost is about the
// number of records it deletes (plus the requests listed with them in
// the same batch records); each deletion is one entry of the transaction
// (two for a legacy record), so call it in every Update (it then deletes
// about as many records as an earlier batch put) or bound it with
// ForgetRequestsN.
func (tx *ShardTxn) ForgetRequests(before uint64) error {
	_, err := tx.ForgetRequestsN(before, 0)
	return err
}

// ForgetRequestsN is ForgetRequests deleting at most limit records (all
// if limit <= 0), in 'q' order: by the lowest index of the transaction
// that recorded them, then in the order they were recorded. It returns
// how many it deleted.
//
// Which records a bounded call deletes depends on how the requests were
// grouped into transactions: a replicated state machine whose replicas
// may group entries differently must not let a lookup depend on it (the
// consensus state machine checks every found record's index against its
// window).
func (tx *ShardTxn) ForgetRequestsN(before uint64, limit int) (int, error) {
	if err := tx.writable(); err != nil {
		return 0, err
	}
	if err := tx.flushRequests(); err != nil {
		return 0, err
	}
	// Collect first, then delete: the iterator must be closed before the
	// writes (which may poison tx), and a forgotten batch is small.
	type rec struct {
		key    []byte
		index  uint64
		legacy []byte       // the id of a legacy per-request entry
		refs   []requestRef // the requests of a batch record
	}
	var recs []rec
	candidates := 0 // requests below before in recs
	err := func() error {
		o := badger.DefaultIteratorOptions
		o.PrefetchValues = false
		o.Prefix = shardPrefix(tableRequestIndex, tx.s.id)
		it := tx.txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid() && (limit <= 0 || candidates < limit); it.Next() {
			item := it.Item()
			key := item.KeyCopy(nil)
			suffix := key[shardPrefixLen:]
			if err := checkShardKey(tableRequestIndex, suffix); err != nil {
				return corrupt(key, "request index", "%v", err)
			}
			index := binary.BigEndian.Uint64(suffix)
			if index >= before {
				break
			}
			value, err := item.ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("eventlog: read %s: %w", keyName(key), err)
			}
			if len(value) == 0 {
				recs = append(recs, rec{key: key, index: index, legacy: suffix[8:]})
				candidates++
				continue
			}
			if len(suffix) != 8 {
				return corrupt(key, "request index", "%d-byte value, want none", len(value))
			}
			refs, err := decodeRequestBatch(key, index, value)
			if err != nil {
				return err
			}
			recs = append(recs, rec{key: key, index: index, refs: refs})
			for _, r := range refs {
				if r.index < before {
					candidates++
				}
			}
		}
		return nil
	}()
	if err != nil {
		return 0, err
	}
	deleted, seen := 0, 0
	for _, r := range recs {
		if r.refs == nil {
			if limit > 0 && seen >= limit {
				break
			}
			seen++
			index, _, found, err := getRequest(tx.txn, tx.s.id, r.legacy)
			switch {
			case err != nil:
				return 0, err
			case !found || index != r.index:
				// PutRequest keeps legacy 'q' entries and 'r' one to one.
				return 0, corrupt(r.key, "request index", "request record found %v, index %d", found, index)
			}
			if err := tx.delete(requestKey(tx.s.id, r.legacy)); err != nil {
				return 0, err
			}
			if err := tx.delete(r.key); err != nil {
				return 0, err
			}
			deleted++
			continue
		}
		var keep []requestRef
		for _, ref := range r.refs {
			if ref.index >= before || (limit > 0 && seen >= limit) {
				keep = append(keep, ref)
				continue
			}
			seen++
			index, _, found, err := getRequest(tx.txn, tx.s.id, ref.id)
			if err != nil {
				return 0, err
			}
			if !found || index != ref.index {
				continue // recorded again since, or forgotten through another record
			}
			if err := tx.delete(requestKey(tx.s.id, ref.id)); err != nil {
				return 0, err
			}
			deleted++
		}
		if len(keep) == len(r.refs) {
			continue
		}
		if err := tx.delete(r.key); err != nil {
			return 0, err
		}
		if len(keep) == 0 {
			continue
		}
		base := keep[0].index
		for _, ref := range keep[1:] {
			base = min(base, ref.index)
		}
		if base < before {
			// Stopped by the limit: the record stays where it is, with
			// what is left of it.
			base = r.index
		}
		// A base at or above before is past every collected record, so
		// the record merged with there (if any) is not one of recs.
		if err := tx.putRequestBatch(base, keep); err != nil {
			return 0, err
		}
	}
	return deleted, nil
}

func checkRequestID(id []byte) error {
	if len(id) > MaxRequestIDBytes {
		return fmt.Errorf("%w: request id of %d bytes (max %d)", ErrTooLarge, len(id), MaxRequestIDBytes)
	}
	return nil
}

// getRecord returns a copy of key's value, or found false.
func getRecord(txn *badger.Txn, key []byte) (value []byte, found bool, err error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err == nil {
		value, err = item.ValueCopy(nil)
	}
	if err != nil {
		return nil, false, fmt.Errorf("eventlog: read %s: %w", keyName(key), err)
	}
	return value, true, nil
}

func getApplied(txn *badger.Txn, shard uint64) (uint64, error) {
	key := appliedKey(shard)
	b, found, err := getRecord(txn, key)
	if err != nil || !found {
		return 0, err
	}
	return decodeApplied(key, b)
}

func getHead(txn *badger.Txn, shard uint64, e Entity) (uint64, error) {
	key := entityKey(tableHead, shard, e)
	b, found, err := getRecord(txn, key)
	if err != nil || !found {
		return 0, err
	}
	return decodeHead(key, b)
}

func getSnapshot(txn *badger.Txn, shard uint64, e Entity) (seq uint64, state []byte, found bool, err error) {
	key := entityKey(tableSnapshot, shard, e)
	b, found, err := getRecord(txn, key)
	if err != nil || !found {
		return 0, nil, false, err
	}
	seq, state, err = decodeSnapshot(key, b)
	if err != nil {
		return 0, nil, false, err
	}
	return seq, state, true, nil
}

func getValue(txn *badger.Txn, shard uint64, e Entity) (Value, bool, error) {
	key := entityKey(tableValue, shard, e)
	b, found, err := getRecord(txn, key)
	if err != nil || !found {
		return Value{}, false, err
	}
	v, err := decodeValue(key, b)
	if err != nil {
		return Value{}, false, err
	}
	if !v.Deleted && v.State == nil {
		v.State = []byte{}
	}
	return v, true, nil
}

func getRequest(txn *badger.Txn, shard uint64, id []byte) (index uint64, result []byte, found bool, err error) {
	key := requestKey(shard, id)
	b, found, err := getRecord(txn, key)
	if err != nil || !found {
		return 0, nil, false, err
	}
	index, result, err = decodeRequest(key, b)
	if err != nil {
		return 0, nil, false, err
	}
	if result == nil {
		result = []byte{}
	}
	return index, result, true, nil
}

// loadEntity reads e's head, snapshot and the events after the snapshot,
// checking that they agree: a snapshot beyond the head, an event beyond
// it, or a gap is ErrCorrupt.
func loadEntity(txn *badger.Txn, shard uint64, e Entity) (EntityState, error) {
	head, err := getHead(txn, shard, e)
	if err != nil {
		return EntityState{}, err
	}
	snapSeq, snap, found, err := getSnapshot(txn, shard, e)
	if err != nil {
		return EntityState{}, err
	}
	if found && snapSeq > head {
		return EntityState{}, corrupt(entityKey(tableSnapshot, shard, e), "snapshot", "seq %d beyond the head %d", snapSeq, head)
	}
	if found && snap == nil {
		snap = []byte{}
	}
	events, err := readEvents(txn, shard, e, snapSeq+1, 0, head)
	if err != nil {
		return EntityState{}, err
	}
	return EntityState{Seq: head, SnapshotSeq: snapSeq, Snapshot: snap, Events: events}, nil
}

// readEvents returns e's events with seq >= from (at least 1), at most
// limit (all if limit <= 0), checking them against head: they must be
// exactly from, from+1, ... up to head (or the limit).
func readEvents(txn *badger.Txn, shard uint64, e Entity, from uint64, limit int, head uint64) ([]Event, error) {
	from = max(from, 1)
	var events []Event
	o := badger.DefaultIteratorOptions
	o.PrefetchValues = false // an event may be up to MaxEventBytes
	o.Prefix = entityKey(tableJournal, shard, e)
	it := txn.NewIterator(o)
	defer it.Close()
	next := from
	for it.Seek(journalKey(shard, e, from)); it.Valid(); it.Next() {
		if limit > 0 && len(events) == limit {
			return events, nil
		}
		item := it.Item()
		key := item.KeyCopy(nil)
		if len(key) != len(o.Prefix)+8 {
			return nil, corrupt(key, "event", "malformed key")
		}
		seq := binary.BigEndian.Uint64(key[len(o.Prefix):])
		switch {
		case seq > head:
			return nil, corrupt(key, "event", "beyond the head %d", head)
		case seq != next:
			return nil, corrupt(key, "event", "gap: expected seq %d", next)
		}
		data, err := item.ValueCopy(nil)
		if err != nil {
			return nil, fmt.Errorf("eventlog: read %s: %w", keyName(key), err)
		}
		if data == nil {
			data = []byte{}
		}
		events = append(events, Event{Seq: seq, Data: data})
		next++
	}
	if next <= head && (limit <= 0 || len(events) < limit) {
		return nil, corrupt(journalKey(shard, e, next), "event", "missing (head %d)", head)
	}
	return events, nil
}
