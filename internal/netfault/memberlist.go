package netfault

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// WrapMemberlist wraps t (normally a *memberlist.NetTransport the caller
// created) for node self, applying f to everything self sends:
//
//   - packets (WriteTo, WriteToAddress) are dropped (reported as sent, as UDP
//     would), duplicated or delayed per f.Decide(self, peer). Delayed copies
//     are sent from timers owned by the wrapper; the caller never waits.
//   - dials (DialTimeout, DialAddressTimeout) to a peer f.Blocked fail at
//     once with an error wrapping ErrCut. Loss, duplication and delay do not
//     apply to streams, and a stream already open when a cut is made stays
//     open (memberlist's streams are short-lived: one push-pull or fallback
//     ping each).
//
// Incoming packets and streams pass through untouched: the peer's own
// wrapper already applied its faults. resolve maps a memberlist address
// ("host:port") to a node name (AddrBook.Lookup fits); traffic to an address
// it does not know is never faulted.
//
// Shutdown stops every pending delayed send, waits for any that is running,
// then shuts t down.
func WrapMemberlist(t memberlist.NodeAwareTransport, self string, f *Faults, resolve func(addr string) (string, bool)) memberlist.NodeAwareTransport {
	w := &mlTransport{inner: t, self: self, f: f, resolve: resolve}
	w.mu.timers = make(map[*time.Timer]struct{})
	return w
}

var _ memberlist.NodeAwareTransport = (*mlTransport)(nil)

type mlTransport struct {
	inner   memberlist.NodeAwareTransport
	self    string
	f       *Faults
	resolve func(addr string) (string, bool)

	mu struct {
		sync.Mutex
		closed bool
		timers map[*time.Timer]struct{} // pending delayed sends
	}
	// running counts delayed sends whose timer has fired and that are not
	// finished yet; Shutdown waits for them before shutting inner down.
	running sync.WaitGroup
}

// FinalAdvertiseAddr delegates.
func (w *mlTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return w.inner.FinalAdvertiseAddr(ip, port)
}

// PacketCh delegates: faults are applied by the sender.
func (w *mlTransport) PacketCh() <-chan *memberlist.Packet { return w.inner.PacketCh() }

// StreamCh delegates: faults are applied by the sender.
func (w *mlTransport) StreamCh() <-chan net.Conn { return w.inner.StreamCh() }

// WriteTo sends b to addr subject to the faults on self -> addr.
func (w *mlTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return w.send(b, addr, func(b []byte) (time.Time, error) { return w.inner.WriteTo(b, addr) })
}

// WriteToAddress sends b to addr subject to the faults on self -> addr.Addr.
func (w *mlTransport) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	return w.send(b, addr.Addr, func(b []byte) (time.Time, error) { return w.inner.WriteToAddress(b, addr) })
}

func (w *mlTransport) send(b []byte, addr string, write func([]byte) (time.Time, error)) (time.Time, error) {
	peer, ok := w.resolve(addr)
	if !ok {
		return write(b)
	}
	v := w.f.Decide(w.self, peer)
	switch {
	case v.Drop:
		return time.Now(), nil
	case v.Delay > 0:
		// memberlist owns b after we return: keep a copy.
		buf := append([]byte(nil), b...)
		w.later(v.Delay, func() {
			_, _ = write(buf)
			if v.Duplicate {
				_, _ = write(buf)
			}
		})
		return time.Now(), nil
	default:
		ts, err := write(b)
		if err == nil && v.Duplicate {
			_, _ = write(b)
		}
		return ts, err
	}
}

// later runs fn after d unless Shutdown comes first. Errors of a delayed
// send are lost, as they would be for a packet delayed in the network.
func (w *mlTransport) later(d time.Duration, fn func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.mu.closed {
		return
	}
	var t *time.Timer
	// The callback takes w.mu, which we hold until t is assigned.
	t = time.AfterFunc(d, func() {
		w.mu.Lock()
		if _, pending := w.mu.timers[t]; !pending { // stopped by Shutdown
			w.mu.Unlock()
			return
		}
		delete(w.mu.timers, t)
		w.running.Add(1)
		w.mu.Unlock()
		defer w.running.Done()
		fn()
	})
	w.mu.timers[t] = struct{}{}
}

// pending returns how many delayed sends are waiting for their timer.
func (w *mlTransport) pending() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.mu.timers)
}

// DialTimeout dials addr unless self -> addr is cut.
func (w *mlTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if err := w.checkDial(addr); err != nil {
		return nil, err
	}
	return w.inner.DialTimeout(addr, timeout)
}

// DialAddressTimeout dials addr unless self -> addr.Addr is cut.
func (w *mlTransport) DialAddressTimeout(addr memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if err := w.checkDial(addr.Addr); err != nil {
		return nil, err
	}
	return w.inner.DialAddressTimeout(addr, timeout)
}

func (w *mlTransport) checkDial(addr string) error {
	if peer, ok := w.resolve(addr); ok && w.f.Blocked(w.self, peer) {
		return fmt.Errorf("dial %s -> %s (%s): %w", w.self, peer, addr, ErrCut)
	}
	return nil
}

// Shutdown drops every pending delayed send, waits for those already
// running, then shuts the wrapped transport down. A message delayed after
// Shutdown is dropped.
func (w *mlTransport) Shutdown() error {
	w.mu.Lock()
	w.mu.closed = true
	for t := range w.mu.timers {
		t.Stop()
	}
	clear(w.mu.timers)
	w.mu.Unlock()
	w.running.Wait()
	return w.inner.Shutdown()
}

// AddrBook maps memberlist addresses ("host:port") to node names. Register
// each node's address once its transport has bound, and pass Lookup as the
// resolver of WrapMemberlist. The zero value is ready to use; it is safe for
// concurrent use.
type AddrBook struct {
	mu struct {
		sync.RWMutex
		names map[string]string
	}
}

// Set records that addr belongs to node, replacing any earlier entry.
func (b *AddrBook) Set(addr, node string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.mu.names == nil {
		b.mu.names = make(map[string]string)
	}
	b.mu.names[addr] = node
}

// Lookup returns the node at addr, if known.
func (b *AddrBook) Lookup(addr string) (string, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	node, ok := b.mu.names[addr]
	return node, ok
}
