package eventlog

import (
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// putRaw writes a Badger key directly, bypassing every table's encoding.
func (db *DB) putRaw(key, value []byte) error {
	return db.bdb.Update(func(txn *badger.Txn) error { return txn.Set(key, value) })
}

// testOptions returns DefaultOptions in a fresh temporary directory, with
// smaller caches so that tests open quickly.
func testOptions(t testing.TB) Options {
	o := DefaultOptions(t.TempDir())
	o.BlockCacheSize = 1 << 20
	o.IndexCacheSize = 1 << 20
	return o
}

// mustOpen opens o and closes the DB when the test ends.
func mustOpen(t testing.TB, o Options) *DB {
	t.Helper()
	db, err := Open(o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// eventually retries cond until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
