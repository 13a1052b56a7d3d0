package deltas

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/statemesh/statemesh/crdt"
)

// Mode selects the synchronisation algorithm. The zero value is the
// default, delta-based sync with both of Enes et al.'s optimisations.
type Mode uint8

const (
	// ModeDeltaBPRR is delta-based sync with BP and RR (the default).
	ModeDeltaBPRR Mode = iota
	// ModeDeltaRR is delta-based sync with RR only.
	ModeDeltaRR
	// ModeDeltaBP is delta-based sync with BP only.
	ModeDeltaBP
	// ModeDelta is classic delta-based sync (Almeida et al., Algorithm 2).
	ModeDelta
	// ModeState is state-based sync: every tick, the full state to every
	// peer. For comparison only.
	ModeState
)

// Modes lists every mode, state-based first.
var Modes = []Mode{ModeState, ModeDelta, ModeDeltaBP, ModeDeltaRR, ModeDeltaBPRR}

var modeNames = map[Mode]string{
	ModeState: "state", ModeDelta: "delta", ModeDeltaBP: "delta+bp",
	ModeDeltaRR: "delta+rr", ModeDeltaBPRR: "delta+bp+rr",
}

func (m Mode) String() string {
	if n, ok := modeNames[m]; ok {
		return n
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// ParseMode parses a mode name as printed by Mode.String.
func ParseMode(s string) (Mode, error) {
	for m, n := range modeNames {
		if n == s {
			return m, nil
		}
	}
	return 0, fmt.Errorf("deltas: unknown sync mode %q", s)
}

// BP reports whether the mode avoids sending a delta back to its origin.
func (m Mode) BP() bool { return m == ModeDeltaBP || m == ModeDeltaBPRR }

// RR reports whether the mode keeps only the inflating part of what it
// receives.
func (m Mode) RR() bool { return m == ModeDeltaRR || m == ModeDeltaBPRR }

// Config configures an Engine.
type Config struct {
	// ID names this engine among its peers.
	ID PeerID
	// Session must be non-zero and grow with every start of the engine
	// under the same ID (the mesh uses the start time in nanoseconds: a
	// node that lost its data dir has no counter to go on). Peers
	// use it to tell a restarted engine, whose delta buffer is gone, from
	// the one before.
	Session uint64
	// Mode is the sync algorithm; the zero value is ModeDeltaBPRR.
	Mode Mode
	// RetransmitTicks: deltas sent but not acknowledged for this many ticks
	// are sent again; every further retransmission without progress waits
	// twice as long as the one before, up to EvictTicks/2. Default 3.
	RetransmitTicks int
	// EvictTicks: a peer that has not acknowledged anything for this many
	// ticks while deltas wait for it leaves the buffer's horizon; the
	// buffer is collected without it, and when it is heard from again it
	// gets a digest-driven full-state transfer. Default 20.
	EvictTicks int
	// SyncTimeoutTicks: a full-state transfer that makes no progress for
	// this many ticks is started again. Default 10.
	SyncTimeoutTicks int
	// RelayHoldTicks, when positive, holds back the relay of deltas
	// received in delta sync while every other peer due them gets them
	// from their origin directly: such a delta is dropped, never relayed,
	// once every one of those peers says it holds it (Message.Marks), and
	// relayed as before (buffered) after this many ticks otherwise. In a
	// mesh where each origin pushes to every peer (three nodes, say), BP+RR
	// relays every delta to peers that already have it; the receiver finds
	// it redundant only after decoding it. 0 (the default): relay at once,
	// as in Enes et al.
	RelayHoldTicks int
}

func (c Config) withDefaults() Config {
	if c.RetransmitTicks <= 0 {
		c.RetransmitTicks = 3
	}
	if c.EvictTicks <= 0 {
		c.EvictTicks = 20
	}
	if c.SyncTimeoutTicks <= 0 {
		c.SyncTimeoutTicks = 10
	}
	return c
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.ID == "" {
		return errors.New("deltas: Config.ID is empty")
	}
	if c.Session == 0 {
		return errors.New("deltas: Config.Session is 0")
	}
	if _, ok := modeNames[c.Mode]; !ok {
		return fmt.Errorf("deltas: unknown mode %d", c.Mode)
	}
	return nil
}

// Errors of the engine.
var (
	ErrTypeMismatch = errors.New("deltas: key holds another CRDT type")
	ErrBadMessage   = errors.New("deltas: invalid message")
	// ErrDeleted: the key was deleted and cannot be written again.
	ErrDeleted = errors.New("deltas: key deleted")
)

type phase uint8

const (
	phaseDelta    phase = iota // normal delta-interval sync
	phaseEvicted               // out of the horizon; wait to hear from it
	phaseDigest                // digest sent, waiting for the reply
	phaseTransfer              // states sent, waiting for their ack
)

// peer is what an engine knows about one peer.
type peer struct {
	up    bool
	phase phase
	// Outgoing: the peer holds all our deltas below acked; we have sent
	// those below sent.
	acked, sent  uint64
	lastProgress uint64 // tick of the last ack progress (or phase start)
	// Retransmission backoff: the next retransmission happens when
	// ticks since lastProgress reach rtoNext (0: RetransmitTicks); each
	// one without progress doubles the wait (rto), up to EvictTicks/2, so
	// that a peer which is slow rather than lossy is not buried under
	// resends of what it is still processing (congestion collapse).
	rto, rtoNext int
	syncBase     uint64 // our seq when the current full-state transfer began
	heard        bool   // heard from since eviction
	// Incoming: the peer's session and the deltas of it we hold.
	theirSession uint64
	received     uint64
	ackOwed      bool
	// introduce: nothing has been heard from the peer since it became our
	// peer. A peer that knew an earlier run of this engine learns of the
	// restart only from a message, and a peer that does not know us at
	// all takes us as a peer only when a message of ours reaches it; so
	// until the peer answers, a bare message is sent every
	// RetransmitTicks even when there is nothing else to say (the first
	// one may be lost, or refused by a peer that does not know us yet).
	introduce  bool
	introduced uint64 // tick of the last introduction sent
	// marks: what the peer said it holds of third peers' deltas (their
	// latest session's); marksSent: what we last told it of ours.
	marks, marksSent map[PeerID]mark
}

// mark is a Mark without its peer: every delta below seq of session.
type mark struct{ session, seq uint64 }

// holds reports whether the mark covers the deltas below seq of session.
func (mk mark) holds(session, seq uint64) bool { return mk.session == session && mk.seq >= seq }

// receivedMark is our mark for the peer: what we hold of its deltas;
// false before we hold any.
func (pr *peer) receivedMark() (mark, bool) {
	return mark{session: pr.theirSession, seq: pr.received}, pr.theirSession != 0 && pr.received != 0
}

// dueRelay reports whether peer id (pr) is due the relay of deltas from
// origin: every peer but the origin, unless evicted (an evicted peer
// gets a full-state transfer).
func dueRelay(id PeerID, pr *peer, origin PeerID) bool {
	return id != origin && pr.phase != phaseEvicted
}

// heldGroup is the inflation one Deltas message brought, held back from
// the buffer (Config.RelayHoldTicks): a peer holds all of it once it
// holds origin's deltas below seq of session.
type heldGroup struct {
	origin       PeerID
	session, seq uint64
	tick         uint64 // when it arrived
	entries      []entry
}

type entry struct {
	key    string
	delta  crdt.Value
	origin PeerID // "" for local updates
}

// Engine is the causal delta-interval anti-entropy engine (Almeida et al.,
// Algorithm 2) over many keys, with BP and RR (Enes et al.), pipelined
// sends with retransmission, eviction of silent peers and digest-driven
// full-state transfer. It is a pure state machine: Update, Step, Tick,
// PeerUp and PeerDown are its inputs; Ready returns what to send and what
// to persist. It is not safe for concurrent use; one goroutine owns it.
type Engine struct {
	cfg   Config
	state map[string]crdt.Value
	// forgotten: replicas whose contributions and markers are dropped
	// from everything (Forget).
	forgotten map[crdt.ReplicaID]bool
	// tomb holds the deleted keys. A deletion is a key-level top element:
	// it absorbs every state of the key (as Akka Distributed Data's
	// DeletedData). Tombstones are kept for good.
	tomb map[string]struct{}
	// Caches of each key's wire form and digest, dropped when the key
	// changes. State-based sync and full-state transfers send one state to
	// several peers; digests hash the encoding.
	enc  map[string][]byte
	hash map[string]uint64

	seq      uint64  // sequence number of the next buffered delta
	bufStart uint64  // sequence number of buf[0]
	buf      []entry // buf[i] has sequence number bufStart+i
	// covers reports whether the buffer, from sequence 0, holds every
	// change this engine's state ever saw, so a new peer can be brought up
	// to date from the buffer alone.
	covers bool

	peers map[PeerID]*peer
	tick  uint64
	out   []Message
	// dirty holds the keys changed since Ready, in order of first
	// change (dirtyOrder), so that Ready's output is deterministic
	// without a sort.
	dirty      map[string]struct{}
	dirtyOrder []string
	transfers  uint64 // full-state transfers started
	// held: per origin, in order of arrival, received inflations not
	// buffered yet (Config.RelayHoldTicks); nHeld counts their entries.
	held   map[PeerID][]*heldGroup
	nHeld  int
	holdOn bool // see HoldRelays
}

// New returns an engine with no state.
func New(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Engine{
		cfg:    cfg.withDefaults(),
		state:  map[string]crdt.Value{},
		tomb:   map[string]struct{}{},
		enc:    map[string][]byte{},
		hash:   map[string]uint64{},
		covers: true,
		peers:  map[PeerID]*peer{},
		dirty:  map[string]struct{}{},
		holdOn: cfg.RelayHoldTicks > 0,
	}, nil
}

// HoldRelays turns the relay hold (Config.RelayHoldTicks, which must be
// positive for it) on or off; it starts on. Off, the engine neither holds
// back new relays nor sends marks; what it holds already is still
// dropped or relayed as before. Marks cost bytes in every message and
// pay off only where every origin reaches every peer directly: the mesh
// turns the hold on while every live member is the node's peer.
func (e *Engine) HoldRelays(on bool) { e.holdOn = on && e.cfg.RelayHoldTicks > 0 }

// ID returns the engine's peer id.
func (e *Engine) ID() PeerID { return e.cfg.ID }

// Restore installs persisted state for key, normally before the engine
// runs. No buffered delta covers it, so every peer, known or new, gets a
// digest-driven full-state transfer.
func (e *Engine) Restore(key string, v crdt.Value) {
	delete(e.tomb, key)
	v = v.Clone()
	crdt.Forget(v, e.forgotten)
	e.state[key] = v
	e.restored(key)
}

// Forgot reports whether Forget was called for r.
func (e *Engine) Forgot(r crdt.ReplicaID) bool { return e.forgotten[r] }

// Forget makes the engine drop every contribution of, and pruning marker
// for, the replicas in rs: from its state now (the keys it changes are
// persisted, not sent: every replica forgets on its own) and from every
// value it receives or restores from then on. The set only grows. The
// mesh calls it for a pruned replica once no member holds anything of it
// but markers (see crdt.Forget).
func (e *Engine) Forget(rs []crdt.ReplicaID) {
	if e.forgotten == nil {
		e.forgotten = map[crdt.ReplicaID]bool{}
	}
	for _, r := range rs {
		e.forgotten[r] = true
	}
	for k, v := range e.state {
		if crdt.Forget(v, e.forgotten) {
			e.changed(k)
		}
	}
}

// RestoreDeleted installs a persisted deletion of key, as Restore does
// for a state.
func (e *Engine) RestoreDeleted(key string) {
	delete(e.state, key)
	e.tomb[key] = struct{}{}
	e.restored(key)
}

func (e *Engine) restored(key string) {
	delete(e.hash, key)
	delete(e.enc, key)
	e.covers = false
	if e.seq == 0 {
		// Sequence number 0 stands for the restored state: a full-state
		// transfer then has a non-zero Seq, which the peer acknowledges
		// (an acknowledgement of 0 proves nothing).
		e.seq, e.bufStart = 1, 1
	}
	// The restored key is in no buffered delta: peers known already get it
	// by a full-state transfer, like new ones (PeerUp).
	for _, pr := range e.peers {
		pr.phase, pr.heard = phaseEvicted, true
	}
}

// Delete deletes key: its state is dropped, the deletion spreads to every
// peer and wins there over any state of the key, and the key can never be
// written again (Update fails with ErrDeleted). It reports whether the key
// was not deleted before. Deleting a key that never existed works too.
func (e *Engine) Delete(key string) bool {
	return e.receiveKS("", KeyState{Key: key, Deleted: true}, true, nil)
}

// Deleted reports whether key was deleted.
func (e *Engine) Deleted(key string) bool { _, ok := e.tomb[key]; return ok }

// Get returns a copy of key's state, or nil.
func (e *Engine) Get(key string) crdt.Value {
	if v, ok := e.state[key]; ok {
		return v.Clone()
	}
	return nil
}

// Select returns, in order, the keys whose state satisfies keep. keep
// reads the engine's own state: it must not modify or keep it.
func (e *Engine) Select(keep func(key string, v crdt.Value) bool) []string {
	var out []string
	for k, v := range e.state {
		if keep(k, v) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// Keys returns the keys in order (deleted keys excluded).
func (e *Engine) Keys() []string { return slices.Sorted(maps.Keys(e.state)) }

// allKeys returns the keys and the deleted keys, in order: what digests
// and state-based sync cover.
func (e *Engine) allKeys() []string {
	if len(e.tomb) == 0 {
		return e.Keys()
	}
	return slices.Sorted(func(yield func(string) bool) {
		for k := range e.state {
			if !yield(k) {
				return
			}
		}
		for k := range e.tomb {
			if !yield(k) {
				return
			}
		}
	})
}

// Update applies a local mutation to key, creating it as bottom of type t
// if absent. fn receives the live value (which it must not keep), calls
// its mutators and returns their delta; if it fails, it must fail before
// mutating. The delta is buffered for the peers and returned.
func (e *Engine) Update(key string, t crdt.Type, fn func(v crdt.Value) (crdt.Value, error)) (crdt.Value, error) {
	if e.Deleted(key) {
		return nil, fmt.Errorf("%w: %q", ErrDeleted, key)
	}
	v, ok := e.state[key]
	if !ok {
		nv, err := crdt.New(t)
		if err != nil {
			return nil, err
		}
		v = nv
	} else if v.Type() != t {
		return nil, fmt.Errorf("%w: %q is a %s, not a %s", ErrTypeMismatch, key, v.Type(), t)
	}
	d, err := fn(v)
	if err != nil {
		// fn must not have mutated v (the crdt mutators that fail check
		// before they change anything); a new key is not created.
		return nil, err
	}
	if d == nil || d.Type() != t {
		return nil, fmt.Errorf("%w: update of %q returned a %v delta", ErrTypeMismatch, key, d)
	}
	if !d.IsBottom() {
		if !ok { // else fn mutated v in place
			e.state[key] = v
		}
		e.changed(key)
		e.buffer(key, d.Clone(), "")
	}
	return d, nil
}

func (e *Engine) changed(key string) {
	if len(e.hash) > 0 { // the caches are often empty: no hashing then
		delete(e.hash, key)
	}
	if len(e.enc) > 0 {
		delete(e.enc, key)
	}
	if _, ok := e.dirty[key]; !ok {
		e.dirty[key] = struct{}{}
		e.dirtyOrder = append(e.dirtyOrder, key)
	}
}

func (e *Engine) buffer(key string, d crdt.Value, origin PeerID) {
	if e.cfg.Mode == ModeState {
		return
	}
	e.buf = append(e.buf, entry{key: key, delta: d, origin: origin})
	e.seq++
}

// PeerUp tells the engine that p is reachable (again).
func (e *Engine) PeerUp(p PeerID) {
	if p == e.cfg.ID {
		return
	}
	pr, ok := e.peers[p]
	if !ok {
		pr = &peer{lastProgress: e.tick, introduce: true}
		e.peers[p] = pr
		if !e.covers || e.bufStart > 0 {
			pr.phase = phaseEvicted
			pr.heard = true
		}
	}
	if pr.phase == phaseEvicted {
		pr.heard = true
	}
	pr.up = true
}

// PeerDown tells the engine that p is unreachable. It stays in the
// buffer's horizon until evicted (Config.EvictTicks).
func (e *Engine) PeerDown(p PeerID) {
	if pr, ok := e.peers[p]; ok {
		pr.up = false
	}
}

// RemovePeer forgets p for good (it left the mesh).
func (e *Engine) RemovePeer(p PeerID) { delete(e.peers, p) }

// receiveKS joins a state, delta or deletion from peer p into key's state,
// buffering what inflated it (or adding it to g, when the message's
// relay is held back), and reports whether the state grew. Without RR the
// whole of ks.State is buffered: shared if immutable (a message value,
// see Message), else copied.
func (e *Engine) receiveKS(p PeerID, ks KeyState, immutable bool, g *heldGroup) bool {
	key := ks.Key
	if e.Deleted(key) {
		return false // the deletion absorbs everything
	}
	if ks.Deleted {
		delete(e.state, key)
		e.tomb[key] = struct{}{}
		e.changed(key)
		e.bufferOrHold(key, nil, p, g)
		return true
	}
	d := ks.State
	if crdt.Mentions(d, e.forgotten) {
		d = d.Clone()
		crdt.Forget(d, e.forgotten)
		immutable = true // a copy of our own
	}
	x, known := e.state[key]
	if !known {
		x, _ = crdt.New(d.Type()) // d.Type() is valid: it was decoded or built by crdt
	}
	var inflation crdt.Value
	if e.cfg.Mode.RR() {
		ex, _ := crdt.Extract(x, d) // types were checked by Step
		if ex.IsBottom() {
			return false
		}
		_, _ = crdt.Join(x, ex)
		inflation = ex
	} else {
		grew, _ := crdt.Join(x, d)
		if !grew {
			return false
		}
		if e.cfg.Mode != ModeState {
			inflation = d
			if !immutable {
				inflation = d.Clone()
			}
		}
	}
	if !known { // else x was joined into in place
		e.state[key] = x
	}
	e.changed(key)
	e.bufferOrHold(key, inflation, p, g)
	return true
}

func (e *Engine) bufferOrHold(key string, d crdt.Value, origin PeerID, g *heldGroup) {
	if g == nil {
		e.buffer(key, d, origin)
		return
	}
	g.entries = append(g.entries, entry{key: key, delta: d, origin: origin})
	e.nHeld++
}

// checkTypes verifies that every state in ks matches the local type of its
// key, so that a message is applied whole or not at all.
func (e *Engine) checkTypes(ks []KeyState) error {
	var fresh map[string]crdt.Type // types of keys new to the engine
	for _, k := range ks {
		if k.Deleted || e.Deleted(k.Key) {
			continue // a deletion fits any key, and absorbs any state
		}
		if k.State == nil {
			return fmt.Errorf("%w: key %q without a state", ErrBadMessage, k.Key)
		}
		if x, ok := e.state[k.Key]; ok {
			if x.Type() != k.State.Type() {
				return fmt.Errorf("%w: %q is a %s, peer sent a %s", ErrTypeMismatch, k.Key, x.Type(), k.State.Type())
			}
			continue
		}
		// A key new here must have one type throughout the message.
		if t, dup := fresh[k.Key]; dup && t != k.State.Type() {
			return fmt.Errorf("%w: peer sent %q as a %s and a %s", ErrTypeMismatch, k.Key, t, k.State.Type())
		}
		if fresh == nil {
			fresh = map[string]crdt.Type{}
		}
		fresh[k.Key] = k.State.Type()
	}
	return nil
}

// Step processes a message from a peer. A message that does not fit (a
// type mismatch, an acknowledgement of deltas never sent) is refused whole
// with an error and changes nothing.
func (e *Engine) Step(m Message) error {
	if m.From == "" || m.From == e.cfg.ID || m.Session == 0 {
		return fmt.Errorf("%w: from %q session %d", ErrBadMessage, m.From, m.Session)
	}
	if m.AckSession == e.cfg.Session && m.Ack > e.seq {
		return fmt.Errorf("%w: %s acknowledges %d, only %d sent", ErrBadMessage, m.From, m.Ack, e.seq)
	}
	switch b := m.Body.(type) {
	case *Deltas:
		if b.FromSeq > b.ToSeq {
			return fmt.Errorf("%w: interval [%d, %d)", ErrBadMessage, b.FromSeq, b.ToSeq)
		}
		if err := e.checkTypes(b.Deltas); err != nil {
			return err
		}
	case *States:
		if err := e.checkTypes(b.States); err != nil {
			return err
		}
	case *DigestReply:
		if err := e.checkTypes(b.States); err != nil {
			return err
		}
	}
	pr, ok := e.peers[m.From]
	if !ok {
		e.PeerUp(m.From)
		pr = e.peers[m.From]
	}
	switch {
	case m.Session < pr.theirSession:
		return nil // from an earlier run of the peer, overtaken by its restart
	case m.Session > pr.theirSession:
		if pr.theirSession != 0 && pr.phase != phaseEvicted {
			// The peer restarted: its buffer is gone, and it may have lost
			// what it had not persisted. Bring it up to date from scratch.
			pr.phase = phaseEvicted
		}
		pr.theirSession = m.Session
		pr.received = 0
		pr.marks, pr.marksSent = nil, nil // it knows nothing of its own past
	}
	if pr.phase == phaseEvicted {
		pr.heard = true
	}
	pr.introduce = false
	if m.AckSession == e.cfg.Session {
		e.ack(pr, m.Ack)
	}
	e.takeMarks(pr, m)
	switch b := m.Body.(type) {
	case *Deltas:
		g := e.holdGroup(m.From, pr, b)
		for _, k := range b.Deltas {
			e.receiveKS(m.From, k, true, g)
		}
		if g != nil && len(g.entries) > 0 {
			if e.held == nil {
				e.held = map[PeerID][]*heldGroup{}
			}
			e.held[m.From] = append(e.held[m.From], g)
		}
		if b.FromSeq <= pr.received && b.ToSeq > pr.received {
			pr.received = b.ToSeq
		}
		pr.ackOwed = true
	case *States:
		for _, k := range b.States {
			e.receiveKS(m.From, k, true, nil)
		}
		if b.Seq > 0 {
			pr.received = max(pr.received, b.Seq)
			pr.ackOwed = true
		}
	case *Digest:
		e.answerDigest(pr, m.From, b)
	case *DigestReply:
		for _, k := range b.States {
			e.receiveKS(m.From, k, true, nil)
		}
		// A reply to an earlier digest (one that timed out) does not say
		// what the peer lacks relative to the current one.
		if pr.phase == phaseDigest && b.Seq == pr.syncBase {
			e.sendTransfer(pr, m.From, b.Want)
		}
	}
	return nil
}

// takeMarks records what the sender of m says it holds of third peers.
func (e *Engine) takeMarks(pr *peer, m Message) {
	for _, mk := range m.Marks {
		if mk.Peer == e.cfg.ID || mk.Peer == m.From {
			continue
		}
		old, ok := pr.marks[mk.Peer]
		if ok && (mk.Session < old.session || (mk.Session == old.session && mk.Seq <= old.seq)) {
			continue
		}
		if pr.marks == nil {
			pr.marks = map[PeerID]mark{}
		}
		pr.marks[mk.Peer] = mark{session: mk.Session, seq: mk.Seq}
	}
}

// holdGroup returns the group that holds back the relay of what the
// Deltas message b from origin brings, or nil to buffer it at once: it
// is held only when every peer due it has told us it gets origin's
// deltas of this session directly, so that only their acknowledgements
// to origin are awaited.
func (e *Engine) holdGroup(origin PeerID, from *peer, b *Deltas) *heldGroup {
	if !e.holdOn || e.cfg.Mode == ModeState || len(b.Deltas) == 0 {
		return nil
	}
	others := 0
	for id, pr := range e.peers {
		if !dueRelay(id, pr, origin) {
			continue
		}
		if pr.marks[origin].session != from.theirSession {
			return nil
		}
		others++
	}
	if others == 0 {
		return nil
	}
	return &heldGroup{origin: origin, session: from.theirSession, seq: b.ToSeq, tick: e.tick}
}

// relayHeld drops each held group every peer due it holds, and buffers
// those held for RelayHoldTicks (in order of arrival per origin).
func (e *Engine) relayHeld() {
	if len(e.held) == 0 {
		return
	}
	origins := slices.Collect(maps.Keys(e.held))
	if len(origins) > 1 {
		slices.Sort(origins) // the buffer's order does not depend on the map's
	}
	for _, origin := range origins {
		gs := e.held[origin]
		i := 0
		for ; i < len(gs); i++ {
			g := gs[i]
			if e.heldByAll(g) {
				e.covers = false // no longer every change is in the buffer
			} else if e.tick >= g.tick+uint64(e.cfg.RelayHoldTicks) {
				e.buf = append(e.buf, g.entries...)
				e.seq += uint64(len(g.entries))
			} else {
				break
			}
			e.nHeld -= len(g.entries)
			gs[i] = nil
		}
		if i == len(gs) {
			delete(e.held, origin)
		} else {
			e.held[origin] = gs[i:]
		}
	}
}

// heldByAll reports whether every peer due g holds it.
func (e *Engine) heldByAll(g *heldGroup) bool {
	for id, pr := range e.peers {
		if dueRelay(id, pr, g.origin) && !pr.marks[g.origin].holds(g.session, g.seq) {
			return false
		}
	}
	return true
}

func (e *Engine) ack(pr *peer, n uint64) {
	if n > pr.acked {
		pr.acked = n
		pr.lastProgress = e.tick
		pr.rto, pr.rtoNext = 0, 0
	}
	pr.sent = max(pr.sent, pr.acked)
	// Only an acknowledgement of the transfer itself ends it: acked was
	// already raised to syncBase when the transfer began.
	if pr.phase == phaseTransfer && n >= pr.syncBase {
		pr.phase = phaseDelta
		pr.lastProgress = e.tick
	}
}

// Digest returns a hash of key's encoded state (0 if absent).
func (e *Engine) Digest(key string) uint64 {
	if e.Deleted(key) {
		return tombHash
	}
	if h, ok := e.hash[key]; ok {
		return h
	}
	b := e.encoding(key)
	if b == nil {
		return 0
	}
	sum := sha256.Sum256(b)
	h := binary.BigEndian.Uint64(sum[:8])
	e.hash[key] = h
	return h
}

// tombHash is the digest of a deleted key (the first 8 bytes of
// SHA-256("statemesh deleted key")).
const tombHash = 0x5f1a64a6b0ed1a0b

// Encoding returns key's current state as crdt.Encode writes it, or nil if
// the key is absent. The bytes are cached and shared: read-only.
func (e *Engine) Encoding(key string) []byte { return e.encoding(key) }

// AppendEncoding appends key's current state as crdt.Encode writes it to
// b, and reports whether the key is present. Unlike Encoding it caches
// nothing: for a caller that encodes each change once (persistence),
// caching would only cost a map insertion now and a deletion at the next
// change.
func (e *Engine) AppendEncoding(b []byte, key string) ([]byte, bool) {
	if enc, ok := e.enc[key]; ok {
		return append(b, enc...), true
	}
	v, ok := e.state[key]
	if !ok {
		return b, false
	}
	return crdt.AppendEncode(b, v), true
}

// encoding returns key's wire form (nil if absent), cached.
func (e *Engine) encoding(key string) []byte {
	if b, ok := e.enc[key]; ok {
		return b
	}
	v, ok := e.state[key]
	if !ok {
		return nil
	}
	b := crdt.Encode(v)
	e.enc[key] = b
	return b
}

func (e *Engine) states(keys []string) []KeyState {
	out := make([]KeyState, 0, len(keys))
	for _, k := range keys {
		if v, ok := e.state[k]; ok {
			// The cached encoding if there is one, else encoded when a
			// message carrying it is: in state-based sync every peer
			// gets this copy, and a measuring caller (the simulator)
			// needs only the length.
			out = append(out, KeyState{Key: k, State: v.Clone(), shared: newShared(e.enc[k])})
		} else if e.Deleted(k) {
			out = append(out, KeyState{Key: k, Deleted: true})
		}
	}
	return out
}

func (e *Engine) answerDigest(pr *peer, from PeerID, d *Digest) {
	theirs := make(map[string]uint64, len(d.Digests))
	var want []string
	for _, kd := range d.Digests {
		theirs[kd.Key] = kd.Hash
		if e.Digest(kd.Key) != kd.Hash {
			want = append(want, kd.Key)
		}
	}
	var give []string
	for _, k := range e.allKeys() {
		if h, ok := theirs[k]; !ok || h != e.Digest(k) {
			give = append(give, k)
		}
	}
	e.send(pr, from, &DigestReply{Seq: d.Seq, Want: want, States: e.states(give)})
}

func (e *Engine) startDigest(pr *peer, to PeerID) {
	e.transfers++
	pr.phase = phaseDigest
	pr.syncBase = e.seq
	pr.acked, pr.sent = e.seq, e.seq
	pr.lastProgress = e.tick
	pr.heard = false
	d := &Digest{Seq: pr.syncBase}
	for _, k := range e.allKeys() {
		d.Digests = append(d.Digests, KeyDigest{Key: k, Hash: e.Digest(k)})
	}
	e.send(pr, to, d)
}

func (e *Engine) sendTransfer(pr *peer, to PeerID, want []string) {
	pr.phase = phaseTransfer
	pr.lastProgress = e.tick
	e.send(pr, to, &States{Seq: pr.syncBase, States: e.states(want)})
}

// send queues a message to a peer, piggybacking the acknowledgement owed.
func (e *Engine) send(pr *peer, to PeerID, b Body) {
	pr.introduced = e.tick
	m := Message{From: e.cfg.ID, To: to, Session: e.cfg.Session, Body: b}
	if pr.theirSession != 0 {
		m.AckSession, m.Ack = pr.theirSession, pr.received
		pr.ackOwed = false
	}
	if e.holdOn {
		m.Marks = e.marksFor(to, pr)
	}
	e.out = append(e.out, m)
}

// marksOwed reports whether we hold more of an origin that peer to
// hears directly (it told us its own mark for it) than we have told to:
// to may be holding back that origin's deltas from us, and waits for our
// mark to drop them instead of relaying them (Config.RelayHoldTicks).
func (e *Engine) marksOwed(to PeerID, pr *peer) bool {
	if !e.holdOn || len(pr.marks) == 0 {
		return false
	}
	for id, q := range e.peers {
		if _, hears := pr.marks[id]; !hears || id == to {
			continue
		}
		if mk, ok := q.receivedMark(); ok && pr.marksSent[id] != mk {
			return true
		}
	}
	return false
}

// marksFor returns what we hold of the peers other than to that we have
// not told to yet, in order of peer id.
func (e *Engine) marksFor(to PeerID, pr *peer) []Mark {
	var ms []Mark
	for id, q := range e.peers {
		mk, ok := q.receivedMark()
		if id == to || !ok || pr.marksSent[id] == mk {
			continue
		}
		if pr.marksSent == nil {
			pr.marksSent = map[PeerID]mark{}
		}
		pr.marksSent[id] = mk
		ms = append(ms, Mark{Peer: id, Session: mk.session, Seq: mk.seq})
	}
	if len(ms) > 1 {
		slices.SortFunc(ms, func(a, b Mark) int { return strings.Compare(string(a.Peer), string(b.Peer)) })
	}
	return ms
}

// keyJoin is, per key, the join of some buffered deltas, or the key's
// deletion (which absorbs its deltas). A key with a single delta shares the
// buffered value (message values are read-only); only keys with several
// are copied and joined.
type keyJoin struct {
	idx map[string]int // key -> its index in ks
	ks  []joined       // in order of first delta
}

type joined struct {
	key   string
	v     crdt.Value // nil for a deleted key
	owned bool       // v is a copy of ours, joined into in place
}

func newKeyJoin() *keyJoin { return &keyJoin{idx: map[string]int{}} }

// add joins d, a delta of key or its deletion (nil), in.
func (j *keyJoin) add(key string, d crdt.Value) {
	i, ok := j.idx[key]
	if !ok {
		j.idx[key] = len(j.ks)
		j.ks = append(j.ks, joined{key: key, v: d})
		return
	}
	x := &j.ks[i]
	switch {
	case x.v == nil: // deleted
	case d == nil:
		x.v, x.owned = nil, false
	default:
		if !x.owned {
			// Join the smaller value into a copy of the larger (joins
			// commute): copying a map costs much less than inserting its
			// entries one by one.
			v := x.v
			if d.Size() > v.Size() {
				v, d = d, v
			}
			x.v, x.owned = v.Clone(), true
		}
		_, _ = crdt.Join(x.v, d) // one key, one type
	}
}

// union returns the join of j and o, sharing their values.
func (j *keyJoin) union(o *keyJoin) *keyJoin {
	out := &keyJoin{idx: make(map[string]int, len(j.ks)+len(o.ks)), ks: make([]joined, len(j.ks), len(j.ks)+len(o.ks))}
	for i, x := range j.ks {
		out.idx[x.key] = i
		out.ks[i] = joined{key: x.key, v: x.v}
	}
	for _, x := range o.ks {
		out.add(x.key, x.v)
	}
	return out
}

// keyStates returns the joins in order of first delta: deterministic,
// given the buffer, without a sort.
func (j *keyJoin) keyStates() []KeyState {
	out := make([]KeyState, 0, len(j.ks))
	for _, x := range j.ks {
		if x.v == nil {
			out = append(out, KeyState{Key: x.key, Deleted: true})
		} else {
			out = append(out, KeyState{Key: x.key, State: x.v})
		}
	}
	return out
}

// intervals builds the delta-intervals of one round (Tick or Flush). The
// buffer does not change during a round, so peers share the work.
//
// Without BP, peers acknowledged up to the same point get the same
// interval: it is built and encoded once. With BP, the interval of peer p
// from sequence number s is the join of the deltas in [s, e.seq) of every
// origin but p. For the origins o1..om of those deltas (each one's deltas
// joined once), peer oi gets (o1 ⊔ … ⊔ oi-1) ⊔ (oi+1 ⊔ … ⊔ om): the
// prefix and suffix joins are shared, so the round costs about 3m joins
// rather than m² (each peer joining the others' deltas on its own). Joins
// are associative and commutative, so the messages are the same.
type intervals struct {
	e      *Engine
	shared map[uint64][]KeyState // without BP, by start
	bp     map[uint64]*bpIntervals
}

// bpIntervals holds the joins of the deltas in [from, e.seq) by origin.
type bpIntervals struct {
	origins        []PeerID   // in order of first delta; local updates are ""
	groups         []*keyJoin // groups[i]: the deltas of origins[i]
	prefix, suffix []*keyJoin // groups[0..i] and groups[i..], built on demand
}

func (e *Engine) newIntervals() *intervals {
	return &intervals{e: e, shared: map[uint64][]KeyState{}, bp: map[uint64]*bpIntervals{}}
}

// interval returns the deltas peer p is due from sequence number from.
func (iv *intervals) interval(p PeerID, from uint64) []KeyState {
	e := iv.e
	if !e.cfg.Mode.BP() {
		ds, ok := iv.shared[from]
		if !ok {
			j := newKeyJoin()
			for s := from; s < e.seq; s++ {
				en := e.buf[s-e.bufStart]
				j.add(en.key, en.delta)
			}
			ds = j.keyStates()
			for i := range ds {
				if !ds[i].Deleted {
					ds[i].shared = newShared(nil)
				}
			}
			iv.shared[from] = ds
		}
		return ds
	}
	b, ok := iv.bp[from]
	if !ok {
		b = &bpIntervals{}
		at := map[PeerID]int{}
		for s := from; s < e.seq; s++ {
			en := e.buf[s-e.bufStart]
			i, ok := at[en.origin]
			if !ok {
				i = len(b.origins)
				at[en.origin] = i
				b.origins = append(b.origins, en.origin)
				b.groups = append(b.groups, newKeyJoin())
			}
			b.groups[i].add(en.key, en.delta)
		}
		m := len(b.groups)
		b.prefix, b.suffix = make([]*keyJoin, m), make([]*keyJoin, m)
		iv.bp[from] = b
	}
	m := len(b.origins)
	i := slices.Index(b.origins, p)
	switch {
	case m == 0 || (m == 1 && i == 0):
		return nil
	case i < 0:
		return b.prefixJoin(m - 1).keyStates()
	case i == 0:
		return b.suffixJoin(1).keyStates()
	case i == m-1:
		return b.prefixJoin(m - 2).keyStates()
	}
	return b.prefixJoin(i - 1).union(b.suffixJoin(i + 1)).keyStates()
}

// prefixJoin returns the join of groups[0..i].
func (b *bpIntervals) prefixJoin(i int) *keyJoin {
	if b.prefix[i] == nil {
		if i == 0 {
			b.prefix[i] = b.groups[0]
		} else {
			b.prefix[i] = b.prefixJoin(i - 1).union(b.groups[i])
		}
	}
	return b.prefix[i]
}

// suffixJoin returns the join of groups[i..].
func (b *bpIntervals) suffixJoin(i int) *keyJoin {
	if b.suffix[i] == nil {
		if i == len(b.groups)-1 {
			b.suffix[i] = b.groups[i]
		} else {
			b.suffix[i] = b.groups[i].union(b.suffixJoin(i + 1))
		}
	}
	return b.suffix[i]
}

// Tick advances the engine by one sync round: it sends what each peer is
// due, retransmits, evicts silent peers and collects the buffer.
func (e *Engine) Tick() {
	e.tick++
	ids := slices.Sorted(maps.Keys(e.peers))
	if e.cfg.Mode == ModeState {
		// One copy of the state serves every peer: message values are
		// read-only.
		var all []KeyState
		for _, id := range ids {
			if pr := e.peers[id]; pr.up && len(e.state)+len(e.tomb) > 0 {
				if all == nil {
					all = e.states(e.allKeys())
				}
				e.send(pr, id, &States{States: all})
			}
		}
		return
	}
	e.relayHeld()
	iv := e.newIntervals()
	for _, id := range ids {
		e.tickPeer(id, e.peers[id], iv)
	}
	e.collect()
}

func (e *Engine) tickPeer(id PeerID, pr *peer, iv *intervals) {
	since := int(e.tick - pr.lastProgress)
	switch pr.phase {
	case phaseEvicted:
		switch {
		case !pr.up:
		case pr.heard:
			e.startDigest(pr, id)
		case since%e.cfg.RetransmitTicks == 0:
			// A bare message, so that a peer which evicted us too hears
			// from us: otherwise both could wait for the other forever.
			e.send(pr, id, nil)
		}
		return
	case phaseDigest, phaseTransfer:
		if since >= e.cfg.SyncTimeoutTicks {
			pr.phase = phaseEvicted
			pr.heard = pr.up
			if pr.up {
				e.startDigest(pr, id)
			}
		} else if pr.ackOwed && pr.up {
			e.send(pr, id, nil)
		}
		return
	}
	if pr.acked >= e.seq {
		// Nothing waits for the peer: it is not late, however long
		// nothing happens.
		pr.lastProgress = e.tick
	}
	if pr.acked < e.seq && since >= e.cfg.EvictTicks {
		pr.phase = phaseEvicted
		pr.heard = false
		pr.lastProgress = e.tick
		return
	}
	if !pr.up {
		return
	}
	if pr.sent > pr.acked {
		rto := max(pr.rto, e.cfg.RetransmitTicks)
		next := pr.rtoNext
		if next == 0 {
			next = rto
		}
		if since >= next {
			pr.sent = pr.acked
			pr.marksSent = nil // the marks may have been lost too
			pr.rto = min(2*rto, max(e.cfg.RetransmitTicks, e.cfg.EvictTicks/2))
			pr.rtoNext = since + pr.rto
		}
	}
	introduce := pr.introduce && (pr.introduced == 0 || e.tick-pr.introduced >= uint64(e.cfg.RetransmitTicks))
	if !e.sendDue(id, pr, iv) && (pr.ackOwed || introduce || e.marksOwed(id, pr)) {
		e.send(pr, id, nil)
	}
}

// sendDue sends peer id the deltas it has not been sent yet, if any, and
// reports whether it sent a message.
func (e *Engine) sendDue(id PeerID, pr *peer, iv *intervals) bool {
	if pr.sent < e.seq {
		ds := iv.interval(id, pr.sent)
		switch {
		case len(ds) > 0 || pr.ackOwed:
			e.send(pr, id, &Deltas{FromSeq: pr.sent, ToSeq: e.seq, Deltas: ds})
			pr.sent = e.seq
			return true
		case pr.sent == pr.acked:
			// Everything pending came from this peer (BP): it needs none
			// of it.
			pr.acked, pr.sent = e.seq, e.seq
			pr.lastProgress = e.tick
		}
	}
	return false
}

// Flush sends every reachable peer in delta sync the deltas it has not
// been sent yet, without starting a new round: the mesh calls it shortly
// after local updates or received inflations (eager push), so that a
// write spreads at network speed rather than one hop per tick. Tick still
// acknowledges, retransmits and evicts. State-based sync has nothing to
// flush.
func (e *Engine) Flush() {
	if e.cfg.Mode == ModeState {
		return
	}
	e.relayHeld()
	iv := e.newIntervals()
	for _, id := range slices.Sorted(maps.Keys(e.peers)) {
		if pr := e.peers[id]; pr.up && pr.phase == phaseDelta {
			e.sendDue(id, pr, iv)
		}
	}
}

// Merge joins a state (or delta) of key obtained outside the anti-entropy
// protocol (a replicated write, a remote read) into the local state, and
// buffers what inflated it for every peer. It reports whether the state
// grew; a type mismatch changes nothing.
func (e *Engine) Merge(key string, v crdt.Value) (bool, error) {
	if e.Deleted(key) {
		return false, fmt.Errorf("%w: %q", ErrDeleted, key)
	}
	ks := []KeyState{{Key: key, State: v}}
	if err := e.checkTypes(ks); err != nil {
		return false, err
	}
	return e.receiveKS("", ks[0], false, nil), nil
}

// collect drops buffered deltas every peer in the horizon has acknowledged.
func (e *Engine) collect() {
	horizon := e.seq
	for _, pr := range e.peers {
		if pr.phase != phaseEvicted {
			horizon = min(horizon, pr.acked)
		}
	}
	if horizon <= e.bufStart {
		return
	}
	n := int(horizon - e.bufStart)
	clear(e.buf[:n])
	e.buf = e.buf[n:]
	if cap(e.buf) > 64 && len(e.buf) < cap(e.buf)/4 {
		e.buf = slices.Clone(e.buf)
	}
	e.bufStart = horizon
}

// Ready is what the engine produced since the last call to Ready.
type Ready struct {
	// Messages to send, in order.
	Messages []Message
	// Persist holds every key whose state changed, with its current state
	// (or Deleted), in order of first change.
	// The values are the engine's own: encode or copy them before calling
	// the engine again.
	Persist []KeyState
}

// Ready returns and clears what the engine produced.
func (e *Engine) Ready() Ready {
	rd := Ready{Messages: e.out}
	e.out = nil
	if len(e.dirtyOrder) > 0 {
		rd.Persist = make([]KeyState, 0, len(e.dirtyOrder))
		for _, k := range e.dirtyOrder {
			if e.Deleted(k) {
				rd.Persist = append(rd.Persist, KeyState{Key: k, Deleted: true})
			} else {
				rd.Persist = append(rd.Persist, KeyState{Key: k, State: e.state[k]})
			}
			delete(e.dirty, k) // not clear: that costs the map's capacity, not its size
		}
		clear(e.dirtyOrder)
		e.dirtyOrder = e.dirtyOrder[:0]
	}
	return rd
}

// Stats describes the engine's memory.
type Stats struct {
	BufferEntries  int // buffered deltas, held ones (Config.RelayHoldTicks) included
	BufferElements int // their elements (crdt.Value.Size)
	StateElements  int // elements of the whole state
	Keys           int
	// Lag is the number of deltas the furthest-behind reachable peer in
	// delta sync has not acknowledged.
	Lag uint64
}

// Stats returns the engine's current sizes.
func (e *Engine) Stats() Stats {
	s := Stats{BufferEntries: e.Buffered(), Keys: len(e.state)}
	e.eachBuffered(func(en entry) bool {
		if en.delta != nil {
			s.BufferElements += en.delta.Size()
		}
		return false
	})
	for _, v := range e.state {
		s.StateElements += v.Size()
	}
	s.Lag = e.Lag()
	return s
}

// Lag returns the number of deltas the furthest-behind reachable peer in
// delta sync has not acknowledged. Unlike Stats it costs O(peers).
func (e *Engine) Lag() uint64 {
	var lag uint64
	for _, pr := range e.peers {
		if pr.up && pr.phase == phaseDelta && e.seq > pr.acked {
			lag = max(lag, e.seq-pr.acked)
		}
	}
	return lag
}

// Buffered returns the number of buffered deltas, held ones included.
func (e *Engine) Buffered() int { return len(e.buf) + e.nHeld }

// eachBuffered calls fn for every buffered or held delta until it
// returns true, and reports whether it did.
func (e *Engine) eachBuffered(fn func(entry) bool) bool {
	for _, en := range e.buf {
		if fn(en) {
			return true
		}
	}
	for _, gs := range e.held {
		for _, g := range gs {
			for _, en := range g.entries {
				if fn(en) {
					return true
				}
			}
		}
	}
	return false
}

// BufferHolds reports whether a delta the engine still buffers (one not
// yet acknowledged by every peer it is due to) or holds back
// (Config.RelayHoldTicks) satisfies pred. The mesh
// forgets a pruned replica only once no buffered delta mentions it: a
// delta from before the pruning, delivered after, must still be
// translated by the pruning's marker.
func (e *Engine) BufferHolds(pred func(crdt.Value) bool) bool {
	return e.eachBuffered(func(en entry) bool { return en.delta != nil && pred(en.delta) })
}

// Len returns the number of keys.
func (e *Engine) Len() int { return len(e.state) }

// Transfers returns how many full-state transfers the engine has started.
func (e *Engine) Transfers() uint64 { return e.transfers }
