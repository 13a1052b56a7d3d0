package consensus

import (
	"errors"
	"fmt"
	"io"

	sm "github.com/lni/dragonboat/v4/statemachine"
	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/eventlog"
	"github.com/statemesh/statemesh/protocol/consensuspb"
)

// MaxEntryBytes bounds one encoded Raft entry (an operation with all its
// events). It is checked when proposing and again, deterministically, when
// applying. It stays well below what one Badger transaction can hold with
// eventlog's default options, so that an entry never fails to apply on one
// replica and succeed on another.
const MaxEntryBytes = 1 << 20

// MaxBatchEntries bounds the operations of one batch entry.
const MaxBatchEntries = 256

// forgetPerUpdate bounds the request records one Update forgets.
const forgetPerUpdate = 1024

// stateMachine is one shard's Dragonboat on-disk state machine over the
// node's eventlog. Update is deterministic: it reads nothing but the
// entries and the shard's stored data (no clock, no randomness, no
// configuration that may differ between replicas beyond DedupWindow, which
// every node of a cluster must share).
type stateMachine struct {
	shard       *eventlog.Shard
	db          *eventlog.DB
	dedupWindow uint64
	applied     uint64 // last applied index; Update's goroutine only
}

var _ sm.IOnDiskStateMachine = (*stateMachine)(nil)

// headsPerShard bounds the entity heads a shard's state machine keeps in
// memory (eventlog.Shard.CacheHeads; a state machine is its shard's only
// writer). About 100 bytes each.
const headsPerShard = 1 << 15

func newStateMachine(db *eventlog.DB, shard, dedupWindow uint64) *stateMachine {
	s := db.Shard(shard)
	s.CacheHeads(headsPerShard)
	return &stateMachine{shard: s, db: db, dedupWindow: dedupWindow}
}

// Open returns the applied index stored with the shard's data; Dragonboat
// replays the log from there.
func (m *stateMachine) Open(<-chan struct{}) (uint64, error) {
	a, err := m.shard.Applied()
	if err != nil {
		return 0, err
	}
	m.applied = a
	return a, nil
}

// Update applies entries in as few eventlog transactions as fit, each
// one committing its entries' effects with the index of its last entry.
// Entries at or below the stored applied index are skipped, so that
// applying is idempotent whatever Dragonboat replays after a restart or a
// snapshot recovery.
func (m *stateMachine) Update(entries []sm.Entry) ([]sm.Entry, error) {
	for len(entries) > 0 && entries[0].Index <= m.applied {
		entries[0].Result = sm.Result{Value: uint64(consensuspb.Code_CODE_OK)}
		entries = entries[1:]
	}
	all := entries
	for len(entries) > 0 {
		n := len(entries)
		for {
			err := m.shard.Update(func(tx *eventlog.ShardTxn) error {
				for i := range entries[:n] {
					r, err := m.apply(tx, &entries[i])
					if err != nil {
						return err
					}
					entries[i].Result = r
				}
				last := entries[n-1].Index
				if last > m.dedupWindow {
					// At most forgetPerUpdate records per transaction, so
					// forgetting never makes one too large; the rest goes
					// with the next updates. Replicas batch entries
					// differently and so delete different records at
					// different times; applyEntry judges a found record by
					// its index (inWindow), so that does not matter.
					if _, err := tx.ForgetRequestsN(last-m.dedupWindow, forgetPerUpdate); err != nil {
						return err
					}
				}
				return tx.SetApplied(last)
			})
			if errors.Is(err, eventlog.ErrBatchTooLarge) && n > 1 {
				n /= 2
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("consensus: apply entries %d..%d: %w", entries[0].Index, entries[n-1].Index, err)
			}
			break
		}
		m.applied = entries[n-1].Index
		entries = entries[n:]
	}
	return all, nil
}

// apply applies one Raft entry inside tx and returns its result: one
// operation's, or a batch's (every operation's result in order). Invalid
// entries and failed expectations are results, not errors; an error means
// the store failed and the shard must stop.
func (m *stateMachine) apply(tx *eventlog.ShardTxn, e *sm.Entry) (sm.Result, error) {
	if len(e.Cmd) > MaxEntryBytes {
		return refused(invalidResult("entry of %d bytes exceeds %d", len(e.Cmd), MaxEntryBytes), e.Index)
	}
	var ent consensuspb.Entry
	if err := proto.Unmarshal(e.Cmd, &ent); err != nil {
		return refused(invalidResult("entry does not decode: %v", err), e.Index)
	}
	if b, ok := ent.Op.(*consensuspb.Entry_Batch); ok {
		return m.applyBatch(tx, e.Index, b.Batch)
	}
	data, code, err := m.applyOne(tx, e.Index, &ent)
	if err != nil {
		return sm.Result{}, err
	}
	return sm.Result{Value: uint64(code), Data: data}, nil
}

// applyBatch applies a batch's entries in order, each as an entry of its
// own at index, and returns their encoded results in one Result. An empty
// or too long batch is refused as a whole. Within a batch, an entry that
// does not decode or is itself a batch gets an invalid result and the
// others are applied, so that one bad operation does not fail the
// commands batched with it.
func (m *stateMachine) applyBatch(tx *eventlog.ShardTxn, index uint64, b *consensuspb.Batch) (sm.Result, error) {
	if len(b.Entries) == 0 || len(b.Entries) > MaxBatchEntries {
		return refused(invalidResult("batch of %d entries (1 to %d)", len(b.Entries), MaxBatchEntries), index)
	}
	out := &consensuspb.Result{Code: consensuspb.Code_CODE_OK, Index: index, Results: make([][]byte, len(b.Entries))}
	for i, raw := range b.Entries {
		var ent consensuspb.Entry
		var data []byte
		var err error
		if uerr := proto.Unmarshal(raw, &ent); uerr != nil {
			data, err = encodeResult(invalidResult("batch entry %d does not decode: %v", i, uerr), index)
		} else if _, nested := ent.Op.(*consensuspb.Entry_Batch); nested {
			data, err = encodeResult(invalidResult("batch entry %d is a batch", i), index)
		} else {
			data, _, err = m.applyOne(tx, index, &ent)
		}
		if err != nil {
			return sm.Result{}, err
		}
		out.Results[i] = data
	}
	data, err := proto.Marshal(out)
	if err != nil {
		return sm.Result{}, err
	}
	return sm.Result{Value: uint64(consensuspb.Code_CODE_OK), Data: data}, nil
}

// refused encodes the result of an entry refused as a whole: it records
// nothing.
func refused(r *consensuspb.Result, index uint64) (sm.Result, error) {
	data, err := encodeResult(r, index)
	if err != nil {
		return sm.Result{}, err
	}
	return sm.Result{Value: uint64(r.Code), Data: data}, nil
}

// encodeResult stamps a result with the index it was applied at (a
// duplicate keeps the first one's) and encodes it.
func encodeResult(r *consensuspb.Result, index uint64) ([]byte, error) {
	if !r.Duplicate {
		r.Index = index
	}
	return proto.Marshal(r)
}

func invalidResult(format string, args ...any) *consensuspb.Result {
	return &consensuspb.Result{Code: consensuspb.Code_CODE_INVALID, Message: fmt.Sprintf(format, args...)}
}

// applyOne applies one operation at index inside tx and returns its
// encoded result, recorded under the entry's request id when it applied.
func (m *stateMachine) applyOne(tx *eventlog.ShardTxn, index uint64, ent *consensuspb.Entry) ([]byte, consensuspb.Code, error) {
	res, requestID, err := m.applyEntry(tx, index, ent)
	if err != nil {
		return nil, 0, err
	}
	data, err := encodeResult(res, index)
	if err != nil {
		return nil, 0, err
	}
	// The recorded result of a request is the one returned now: marshalled
	// once, on the apply path.
	if res.Code == consensuspb.Code_CODE_OK && !res.Duplicate && len(requestID) > 0 {
		if err := tx.PutRequest(requestID, index, data); err != nil {
			return nil, 0, err
		}
	}
	return data, res.Code, nil
}

// applyEntry applies one operation inside tx and returns its result and
// the entry's request id; applyOne records the result under that id.
func (m *stateMachine) applyEntry(tx *eventlog.ShardTxn, index uint64, ent *consensuspb.Entry) (*consensuspb.Result, []byte, error) {
	invalid := func(format string, args ...any) (*consensuspb.Result, []byte, error) {
		return invalidResult(format, args...), nil, nil
	}
	if len(ent.RequestId) > eventlog.MaxRequestIDBytes {
		return invalid("request id of %d bytes", len(ent.RequestId))
	}
	entity := entityOf(ent.Entity)
	if err := entity.Validate(); err != nil {
		return invalid("%v", err)
	}
	if len(ent.RequestId) > 0 {
		recorded, prior, found, err := tx.RequestRecord(ent.RequestId)
		if err != nil {
			return nil, nil, err
		}
		if found && m.inWindow(recorded, index) {
			r, err := decodeResult(prior)
			if err != nil {
				return nil, nil, err
			}
			r.Duplicate = true
			return r, nil, nil
		}
	}
	var res *consensuspb.Result
	var err error
	switch op := ent.Op.(type) {
	case *consensuspb.Entry_Append:
		res, err = m.applyAppend(tx, entity, op.Append)
	case *consensuspb.Entry_PutValue:
		res, err = m.applyValue(tx, entity, op.PutValue.CheckVersion, op.PutValue.ExpectedVersion, op.PutValue.State, false)
	case *consensuspb.Entry_DeleteValue:
		res, err = m.applyValue(tx, entity, op.DeleteValue.CheckVersion, op.DeleteValue.ExpectedVersion, nil, true)
	default:
		return invalid("entry has no operation")
	}
	if err != nil {
		if isInputError(err) {
			return invalid("%v", err)
		}
		return nil, nil, err
	}
	return res, ent.RequestId, nil
}

// inWindow reports whether a request recorded at index is still within
// the dedup window at entry index at. Records out of the window are
// deleted a bounded number per Update, so which ones are still stored
// depends on how Dragonboat batched the entries on this replica; this
// check makes the outcome depend on the indexes only. A record at or past
// at (data kept over a Raft log restarted by ResetApplied) counts as in
// the window.
func (m *stateMachine) inWindow(index, at uint64) bool {
	return index >= at || at-index <= m.dedupWindow
}

// isInputError reports whether a store error was caused by the entry's
// contents (limits, entity names): deterministic, so the entry is refused
// the same way on every replica.
func isInputError(err error) bool {
	return errors.Is(err, eventlog.ErrTooLarge) || errors.Is(err, eventlog.ErrInvalidEntity)
}

func (m *stateMachine) applyAppend(tx *eventlog.ShardTxn, e Entity, a *consensuspb.Append) (*consensuspb.Result, error) {
	head, err := tx.Head(e)
	if err != nil {
		return nil, err
	}
	if head != a.ExpectedSeq {
		return &consensuspb.Result{Code: consensuspb.Code_CODE_CONFLICT, Seq: head,
			Message: fmt.Sprintf("entity %s/%s is at sequence %d, not %d", e.Type, e.ID, head, a.ExpectedSeq)}, nil
	}
	if len(a.Events) > eventlog.MaxEventsPerAppend {
		return &consensuspb.Result{Code: consensuspb.Code_CODE_INVALID,
			Message: fmt.Sprintf("%d events exceed %d", len(a.Events), eventlog.MaxEventsPerAppend)}, nil
	}
	seq := head
	if len(a.Events) > 0 {
		first, err := tx.Append(e, a.Events)
		if err != nil {
			return nil, err
		}
		seq = first + uint64(len(a.Events)) - 1
	}
	if a.HasSnapshot && seq > 0 {
		if err := tx.PutSnapshot(e, seq, a.Snapshot); err != nil {
			return nil, err
		}
	}
	return &consensuspb.Result{Code: consensuspb.Code_CODE_OK, Seq: seq, Reply: a.Reply}, nil
}

func (m *stateMachine) applyValue(tx *eventlog.ShardTxn, e Entity, check bool, expected uint64, state []byte, del bool) (*consensuspb.Result, error) {
	v, found, err := tx.Value(e)
	if err != nil {
		return nil, err
	}
	var current uint64
	if found {
		current = v.Version
	}
	if check && current != expected {
		return &consensuspb.Result{Code: consensuspb.Code_CODE_CONFLICT, Seq: current,
			Message: fmt.Sprintf("value %s/%s is at version %d, not %d", e.Type, e.ID, current, expected)}, nil
	}
	var version uint64
	switch {
	case del && (!found || v.Deleted):
		version = current // nothing to delete
	case del:
		version, err = tx.DeleteValue(e)
	default:
		version, err = tx.PutValue(e, state)
	}
	if err != nil {
		return nil, err
	}
	return &consensuspb.Result{Code: consensuspb.Code_CODE_OK, Seq: version}, nil
}

// Queries Lookup answers. They read committed data only; a linearizable
// read (SyncRead) runs Lookup after the ReadIndex round.
type (
	loadQuery struct {
		entity    Entity
		requestID []byte
	}
	loadResult struct {
		state EntityState
		prior *consensuspb.Result // the result recorded for requestID, if any
	}
	valueQuery  struct{ entity Entity }
	valueResult struct {
		value Value
		found bool
	}
)

// Lookup answers a query from the stored data. Dragonboat may call it
// concurrently with Update; every read is one consistent eventlog view.
func (m *stateMachine) Lookup(q any) (any, error) {
	switch q := q.(type) {
	case loadQuery:
		var r loadResult
		if len(q.requestID) > 0 {
			prior, found, err := m.shard.Request(q.requestID)
			if err != nil {
				return nil, err
			}
			if found {
				if r.prior, err = decodeResult(prior); err != nil {
					return nil, err
				}
				return r, nil
			}
		}
		st, err := m.shard.Load(q.entity)
		if err != nil {
			return nil, err
		}
		r.state = st
		return r, nil
	case valueQuery:
		v, found, err := m.shard.Value(q.entity)
		if err != nil {
			return nil, err
		}
		return valueResult{value: v, found: found}, nil
	default:
		return nil, fmt.Errorf("consensus: unknown query %T", q)
	}
}

// Sync makes everything applied so far durable; Dragonboat calls it before
// it compacts the Raft log past the applied index.
func (m *stateMachine) Sync() error { return m.db.Sync() }

// PrepareSnapshot captures a consistent eventlog view of the shard as of
// the last applied entry (Dragonboat calls it between Updates); SaveSnapshot
// then streams exactly that view while Updates go on, so the same snapshot
// index always yields the same bytes.
func (m *stateMachine) PrepareSnapshot() (any, error) {
	return m.shard.PrepareSave()
}

// SaveSnapshot streams the prepared view to w.
func (m *stateMachine) SaveSnapshot(ctx any, w io.Writer, stop <-chan struct{}) error {
	p, ok := ctx.(*eventlog.SavePoint)
	if !ok {
		return fmt.Errorf("consensus: snapshot context is a %T", ctx)
	}
	if err := p.Save(w, stop); err != nil {
		if errors.Is(err, eventlog.ErrStopped) {
			return sm.ErrSnapshotStopped
		}
		return err
	}
	return nil
}

// RecoverFromSnapshot replaces the shard's data with a snapshot's.
func (m *stateMachine) RecoverFromSnapshot(r io.Reader, stop <-chan struct{}) error {
	if err := m.shard.Restore(r, stop); err != nil {
		if errors.Is(err, eventlog.ErrStopped) {
			return sm.ErrSnapshotStopped
		}
		return err
	}
	a, err := m.shard.Applied()
	if err != nil {
		return err
	}
	m.applied = a
	return nil
}

// Close releases nothing: the DB belongs to the Host's owner.
func (m *stateMachine) Close() error { return nil }

// decodeResult decodes a stored request result.
func decodeResult(b []byte) (*consensuspb.Result, error) {
	var r consensuspb.Result
	if err := proto.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%w: request result: %v", eventlog.ErrCorrupt, err)
	}
	return &r, nil
}

func entityOf(e *consensuspb.Entity) Entity {
	if e == nil {
		return Entity{}
	}
	return Entity{Type: e.Type, ID: e.Id}
}

func entityPB(e Entity) *consensuspb.Entity { return &consensuspb.Entity{Type: e.Type, Id: e.ID} }
