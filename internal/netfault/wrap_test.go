package netfault

import (
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/memberlist"
)

// fakeTransport records what the wrapper passes through.
type fakeTransport struct {
	mu        sync.Mutex
	sent      []sentPacket
	dials     []string
	shutdowns int
}

type sentPacket struct {
	at   time.Time
	addr string
	data string
}

func (t *fakeTransport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	return net.IPv4(127, 0, 0, 1), 1, nil
}
func (t *fakeTransport) PacketCh() <-chan *memberlist.Packet { return nil }
func (t *fakeTransport) StreamCh() <-chan net.Conn           { return nil }

func (t *fakeTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	t.sent = append(t.sent, sentPacket{now, addr, string(b)})
	return now, nil
}

func (t *fakeTransport) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, addr.Addr)
}

func (t *fakeTransport) DialTimeout(addr string, _ time.Duration) (net.Conn, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dials = append(t.dials, addr)
	c1, c2 := net.Pipe()
	c2.Close()
	return c1, nil
}

func (t *fakeTransport) DialAddressTimeout(addr memberlist.Address, d time.Duration) (net.Conn, error) {
	return t.DialTimeout(addr.Addr, d)
}

func (t *fakeTransport) Shutdown() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.shutdowns++
	return nil
}

func (t *fakeTransport) packets() []sentPacket {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]sentPacket(nil), t.sent...)
}

func (t *fakeTransport) dialed() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.dials...)
}

const (
	addrA = "127.0.0.1:1001"
	addrB = "127.0.0.1:1002"
	addrC = "127.0.0.1:1003"
	addrX = "127.0.0.1:1999" // not in the book
)

// newWrapped returns node a's wrapped fake transport, with a, b and c in the
// address book.
func newWrapped(f *Faults) (memberlist.NodeAwareTransport, *fakeTransport) {
	var book AddrBook
	book.Set(addrA, "a")
	book.Set(addrB, "b")
	book.Set(addrC, "c")
	inner := &fakeTransport{}
	return WrapMemberlist(inner, "a", f, book.Lookup), inner
}

func TestWrapDropsOnCut(t *testing.T) {
	f := New(testSeed)
	w, inner := newWrapped(f)
	f.Cut("a", "b")
	f.Cut("a", "x")
	if _, err := w.WriteToAddress([]byte("1"), memberlist.Address{Addr: addrB, Name: "b"}); err != nil {
		t.Fatalf("dropped write returned %v, want nil as UDP would", err)
	}
	if _, err := w.WriteTo([]byte("2"), addrB); err != nil {
		t.Fatal(err)
	}
	w.WriteTo([]byte("3"), addrC) // not cut
	w.WriteTo([]byte("4"), addrX) // unknown address: never faulted
	got := inner.packets()
	if len(got) != 2 || got[0].data != "3" || got[1].data != "4" {
		t.Errorf("sent %+v, want only 3 (to c) and 4 (to unknown)", got)
	}
	if d, _, _ := f.Counters(); d != 2 {
		t.Errorf("dropped = %d, want 2", d)
	}
}

func TestWrapDialBlocked(t *testing.T) {
	f := New(testSeed)
	w, inner := newWrapped(f)
	f.CutOneWay("a", "b")
	f.SetLoss(1) // loss does not apply to streams

	_, err := w.DialAddressTimeout(memberlist.Address{Addr: addrB, Name: "b"}, time.Second)
	if !errors.Is(err, ErrCut) {
		t.Fatalf("dial over a cut link: err = %v, want ErrCut", err)
	}
	for _, s := range []string{"netfault", "a -> b", addrB} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
	if _, err := w.DialTimeout(addrB, time.Second); !errors.Is(err, ErrCut) {
		t.Errorf("DialTimeout over a cut link: err = %v", err)
	}
	for _, addr := range []string{addrC, addrX} {
		c, err := w.DialTimeout(addr, time.Second)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		c.Close()
	}
	if got := inner.dialed(); len(got) != 2 || got[0] != addrC || got[1] != addrX {
		t.Errorf("dialed %v, want [%s %s]", got, addrC, addrX)
	}
}

func TestWrapDuplicates(t *testing.T) {
	f := New(testSeed)
	w, inner := newWrapped(f)
	f.SetDuplicate(1)
	w.WriteTo([]byte("m"), addrB)
	if got := inner.packets(); len(got) != 2 || got[0].data != "m" || got[1].data != "m" {
		t.Errorf("sent %+v, want m twice", got)
	}
}

func TestWrapDelays(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := New(testSeed)
		w, inner := newWrapped(f)
		f.SetDelay(10*time.Millisecond, 10*time.Millisecond)
		f.SetDuplicate(1)

		start := time.Now()
		buf := []byte("hello")
		if _, err := w.WriteToAddress(buf, memberlist.Address{Addr: addrB}); err != nil {
			t.Fatal(err)
		}
		copy(buf, "XXXXX") // memberlist may reuse its buffer once we return
		if time.Since(start) != 0 {
			t.Errorf("WriteToAddress blocked for %v", time.Since(start))
		}
		synctest.Wait()
		if got := inner.packets(); len(got) != 0 {
			t.Fatalf("sent %+v before the delay", got)
		}

		time.Sleep(10 * time.Millisecond)
		synctest.Wait()
		got := inner.packets()
		if len(got) != 2 {
			t.Fatalf("sent %d packets after the delay, want 2 (duplicated)", len(got))
		}
		for _, p := range got {
			if p.data != "hello" || p.at.Sub(start) != 10*time.Millisecond {
				t.Errorf("sent %q after %v, want %q after 10ms", p.data, p.at.Sub(start), "hello")
			}
		}
		if err := w.Shutdown(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestWrapShutdownStopsDelayed: no delayed send survives Shutdown, even two
// fake hours later, and no timer of the wrapper is left behind (and
// synctest.Test reports a deadlock if a goroutine of the bubble never exits).
func TestWrapShutdownStopsDelayed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := New(testSeed)
		w, inner := newWrapped(f)
		f.SetDelay(time.Minute, time.Hour)
		for range 100 {
			w.WriteTo([]byte("late"), addrB)
		}
		time.Sleep(30 * time.Second)
		if err := w.Shutdown(); err != nil {
			t.Fatal(err)
		}
		w.WriteTo([]byte("after"), addrC) // delayed after Shutdown: dropped
		time.Sleep(2 * time.Hour)
		synctest.Wait()
		if got := inner.packets(); len(got) != 0 {
			t.Errorf("%d delayed packets sent after Shutdown", len(got))
		}
		if inner.shutdowns != 1 {
			t.Errorf("inner Shutdown called %d times, want 1", inner.shutdowns)
		}
		if n := w.(*mlTransport).pending(); n != 0 {
			t.Errorf("%d timers still tracked after Shutdown", n)
		}
	})
}

func TestAddrBook(t *testing.T) {
	var b AddrBook
	if _, ok := b.Lookup(addrA); ok {
		t.Error("empty book knows an address")
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			b.Set(addrA, "a")
			b.Lookup(addrB)
			if i == 0 {
				b.Set(addrB, "b")
			}
		})
	}
	wg.Wait()
	if n, ok := b.Lookup(addrA); !ok || n != "a" {
		t.Errorf("Lookup(%s) = %q, %v", addrA, n, ok)
	}
	b.Set(addrA, "a2")
	if n, _ := b.Lookup(addrA); n != "a2" {
		t.Errorf("Set did not replace: %q", n)
	}
}
