package consensus

import (
	"fmt"
	"testing"
)

// TestEntityCacheBound: the cache stays within its byte bound by evicting
// the oldest entries, skips states over its per-entry bound, and advance
// builds the next state without touching the one the handler saw.
func TestEntityCacheBound(t *testing.T) {
	c := newEntityCache(64 * 200) // maxEntry 200 bytes
	for i := range 100 {
		c.advance(Entity{Type: "t", ID: fmt.Sprint(i)}, EntityState{}, [][]byte{make([]byte, 40)}, false, nil)
		if c.bytes > c.maxBytes {
			t.Fatalf("after %d entries: %d bytes cached, bound %d", i+1, c.bytes, c.maxBytes)
		}
	}
	if _, ok := c.get(Entity{Type: "t", ID: "0"}); ok {
		t.Fatal("the oldest entry survived eviction")
	}
	last := Entity{Type: "t", ID: "99"}
	st, ok := c.get(last)
	if !ok || st.Seq != 1 || len(st.Events) != 1 {
		t.Fatalf("newest entry: %+v %v", st, ok)
	}
	c.advance(last, st, [][]byte{[]byte("b")}, false, nil)
	if next, _ := c.get(last); next.Seq != 2 || len(next.Events) != 2 || len(st.Events) != 1 {
		t.Fatalf("advance: next %+v, seen %+v", next, st)
	}
	c.advance(last, st, [][]byte{make([]byte, 300)}, false, nil)
	if _, ok := c.get(last); ok {
		t.Fatal("a state over the per-entry bound was cached")
	}
	n := 0
	for e := c.order.Front(); e != nil; e = e.Next() {
		n++
	}
	if n != len(c.m) {
		t.Fatalf("order list has %d entries, map %d", n, len(c.m))
	}
}
