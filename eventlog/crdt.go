package eventlog

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// CRDTStore is the durable CRDT state of a node: CRDT key (arbitrary bytes,
// at most MaxKeyBytes) -> encoded CRDT state (opaque, at most MaxValueBytes).
// Keys are independent of each other. It is safe for concurrent use.
type CRDTStore struct{ db *DB }

// CRDT returns the node's CRDT state table.
func (db *DB) CRDT() *CRDTStore { return &CRDTStore{db: db} }

// Put writes Value under Key.
type Put struct {
	Key   string
	Value []byte
}

// Apply writes puts, then deletes (so a key in both ends up deleted; of two
// puts of one key the later wins). Limits are checked first: on ErrTooLarge
// nothing is written.
//
// Apply is not atomic. Badger bounds a transaction to ~15% of the memtable,
// so Apply commits as many transactions as the batch needs, in order. An
// error or a crash in the middle may leave a prefix of the batch applied;
// that is fine for CRDT state, where every key is independent and a later
// write or anti-entropy repairs the rest.
//
// With sync, Apply syncs once at the end, so everything written so far (by
// this and earlier calls) is on disk when it returns: callers group commit
// by batching many writes into one Apply.
func (s *CRDTStore) Apply(puts []Put, deletes []string, sync bool) error {
	db := s.db
	for _, p := range puts {
		if err := checkKey(p.Key); err != nil {
			return err
		}
		if len(p.Value) > db.maxValue {
			return fmt.Errorf("%w: value of %d bytes under key %q (max %d)",
				ErrTooLarge, len(p.Value), truncate(p.Key), db.maxValue)
		}
	}
	for _, k := range deletes {
		if err := checkKey(k); err != nil {
			return err
		}
	}
	if err := db.enter(); err != nil {
		return err
	}
	defer db.exit()
	if len(puts)+len(deletes) > 0 && db.markedClean.Load() {
		if err := db.unmarkClean(); err != nil {
			return err
		}
	}
	w := db.newBatcher()
	for _, p := range puts {
		if err := w.set(badger.NewEntry(tableKey(tableCRDT, p.Key), p.Value)); err != nil {
			w.discard()
			return err
		}
	}
	for _, k := range deletes {
		if err := w.delete(tableKey(tableCRDT, k)); err != nil {
			w.discard()
			return err
		}
	}
	if err := w.commit(); err != nil {
		return err
	}
	if sync {
		return db.sync()
	}
	return nil
}

// batcher writes entries in as many transactions as Badger needs.
type batcher struct {
	db  *DB
	txn *badger.Txn
	n   int // entries in txn

	// maxBytes, if positive, bounds the keys and values held by txn:
	// Badger counts a value-log value as a ~12-byte pointer against its
	// transaction limit but keeps the value in memory until commit, so a
	// batcher fed from a stream (Shard.Restore) would otherwise hold
	// thousands of large values at once.
	maxBytes int
	bytes    int // keys and values in txn
}

func (db *DB) newBatcher() *batcher {
	return &batcher{db: db, txn: db.bdb.NewTransaction(true)}
}

func (w *batcher) set(e *badger.Entry) error {
	return w.write(len(e.Key)+len(e.Value), func(txn *badger.Txn) error { return txn.SetEntry(e) })
}

func (w *batcher) delete(key []byte) error {
	return w.write(len(key), func(txn *badger.Txn) error { return txn.Delete(key) })
}

// write adds one entry of size bytes; when the transaction is full
// (ErrTxnTooBig, which leaves it unchanged, or maxBytes) it commits it and
// retries in a new one.
func (w *batcher) write(size int, op func(*badger.Txn) error) error {
	var err error
	if w.maxBytes > 0 && w.n > 0 && w.bytes+size > w.maxBytes {
		err = badger.ErrTxnTooBig
	} else {
		err = op(w.txn)
	}
	if errors.Is(err, badger.ErrTxnTooBig) && w.n > 0 {
		if err = w.commit(); err != nil {
			return err
		}
		w.txn = w.db.bdb.NewTransaction(true)
		err = op(w.txn)
	}
	if err != nil {
		return fmt.Errorf("eventlog: write: %w", err)
	}
	w.n++
	w.bytes += size
	return nil
}

// commit commits the current transaction (a no-op when it is empty).
func (w *batcher) commit() error {
	txn, n := w.txn, w.n
	w.txn, w.n, w.bytes = nil, 0, 0
	if n == 0 {
		txn.Discard()
		return nil
	}
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("eventlog: commit: %w", err)
	}
	return nil
}

func (w *batcher) discard() {
	if w.txn != nil {
		w.txn.Discard()
	}
}

// Get returns a copy of the state stored under key, and whether there is
// one.
func (s *CRDTStore) Get(key string) ([]byte, bool, error) {
	if err := checkKey(key); err != nil {
		return nil, false, err
	}
	db := s.db
	if err := db.enter(); err != nil {
		return nil, false, err
	}
	defer db.exit()
	var v []byte
	err := db.bdb.View(func(txn *badger.Txn) error {
		item, err := txn.Get(tableKey(tableCRDT, key))
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("eventlog: get %q: %w", truncate(key), err)
	}
	if v == nil {
		v = []byte{}
	}
	return v, true, nil
}

// Load calls fn for every stored key in key order (bytewise), with a copy
// of its state, from one consistent snapshot. An error from fn stops the
// iteration and is returned as is. fn must not call Close.
func (s *CRDTStore) Load(fn func(key string, value []byte) error) error {
	return s.scan(func(item *badger.Item) error {
		v, err := item.ValueCopy(nil)
		if err != nil {
			return fmt.Errorf("eventlog: load %q: %w", truncate(string(item.Key()[1:])), err)
		}
		if v == nil {
			v = []byte{}
		}
		return fn(string(item.Key()[1:]), v)
	})
}

// Len returns the number of stored keys.
func (s *CRDTStore) Len() (int, error) {
	n := 0
	err := s.scan(func(*badger.Item) error { n++; return nil })
	return n, err
}

// scan iterates the CRDT table. Values are not prefetched: a state may be
// up to MaxValueBytes, and Badger's prefetch would hold 100 of them.
func (s *CRDTStore) scan(fn func(*badger.Item) error) error {
	db := s.db
	if err := db.enter(); err != nil {
		return err
	}
	defer db.exit()
	return db.bdb.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.PrefetchValues = false
		o.Prefix = []byte{tableCRDT}
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := fn(it.Item()); err != nil {
				return err
			}
		}
		return nil
	})
}

// truncate shortens a key for an error message.
func truncate(key string) string {
	const max = 64
	if len(key) <= max {
		return key
	}
	return key[:max] + "..."
}
