package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/deltas"
	"github.com/statemesh/statemesh/eventlog"
	"github.com/statemesh/statemesh/internal/hlc"
	"github.com/statemesh/statemesh/protocol/peerpb"
)

// Errors of the mesh.
var (
	ErrClosed       = errors.New("mesh: node closed")
	ErrInvalidKey   = errors.New("mesh: invalid key")
	ErrTypeMismatch = deltas.ErrTypeMismatch
	// ErrDeleted: the key was deleted; it cannot be written again.
	ErrDeleted = deltas.ErrDeleted
	// ErrTimeout: a MAJORITY or ALL write or read did not collect its
	// acknowledgements in time. A timed-out write is applied locally and
	// may still reach every replica (it spreads by anti-entropy like any
	// other); it is not rolled back.
	ErrTimeout = errors.New("mesh: timed out waiting for replicas")
	// ErrOverloaded: a write waited for replication to catch up (see
	// Config.MaxLag) until its context ended; it was not applied.
	ErrOverloaded = errors.New("mesh: overloaded: replication is behind")
	// ErrUnavailable: fewer replicas are reachable than the consistency
	// level needs. The write was not applied anywhere.
	ErrUnavailable = errors.New("mesh: not enough reachable replicas")
)

// Node is one member of the mesh: it holds a replica of every CRDT key,
// gossips membership with memberlist, and runs the anti-entropy engine
// against its neighbours over the Peer gRPC service.
//
// One goroutine (loop) owns the engine, the member table and the watches;
// everything else reaches it through the ops channel.
type Node struct {
	cfg     Config
	log     *slog.Logger
	replica crdt.ReplicaID
	clock   *hlc.Clock
	ident   eventlog.Identity
	db      *eventlog.DB
	ownDB   bool
	met     *metrics
	reg     *prometheus.Registry // nil when Config.Registerer was given

	mb  *membership
	tr  *transport
	srv *grpc.Server
	lis net.Listener

	ops   chan *op
	recv  chan inbound
	stopc chan struct{} // closed to stop the loop
	loopDone,
	persistDone,
	reconnectDone,
	pruneDone chan struct{}
	flushNow chan struct{} // size 1: the persister should write now
	dur      durable
	closeMu  sync.Mutex
	closed   bool
	claimMu  sync.Mutex
	claimer  PruneClaimer // see SetPruneClaimer
	joined   atomic.Bool  // Start has joined the mesh: the member table is filling

	// Owned by the loop goroutine.
	eng        *deltas.Engine
	members    map[string]*Member // other nodes, by name (left ones removed)
	neighbours map[string]bool
	peers      map[string]bool // the engine's peers
	deadSince  map[string]time.Time
	removed    map[crdt.ReplicaID]bool // removed for good (the system key)
	watchers   map[string][]*watcher
	dirty      map[string]struct{} // keys changed since the last persist batch
	batch      uint64              // id of the batch dirty keys go into
	burst      []*op               // ops taken in one turn of the loop
	parked     []*op               // writes held back while replication lags
	push       *time.Timer         // eager push
	pushArmed  bool
	rng        *rand.Rand
}

// maxBurst bounds the ops, and the received messages, the loop takes in
// one turn before it drains the engine; it is also the ops queue length.
const maxBurst = 256

type op struct {
	fn    func()
	write bool         // a local write: held back while replication lags
	state atomic.Int32 // opPending, opRunning or opCanceled
	batch uint64       // set by the loop: the persist batch holding fn's changes
	done  chan struct{}
}

const (
	opPending int32 = iota
	opRunning
	opCanceled
)

type inbound struct {
	msg  deltas.Message
	size int
}

// Start opens (or creates) the node's store, starts gossip and the peer
// service, and joins the mesh.
func Start(cfg Config) (*Node, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger.With("node", cfg.Name),
		ops: make(chan *op, maxBurst), recv: make(chan inbound, 64), stopc: make(chan struct{}),
		loopDone: make(chan struct{}), persistDone: make(chan struct{}), reconnectDone: make(chan struct{}), pruneDone: make(chan struct{}), flushNow: make(chan struct{}, 1),
		members: map[string]*Member{}, neighbours: map[string]bool{}, peers: map[string]bool{},
		deadSince: map[string]time.Time{}, removed: map[crdt.ReplicaID]bool{},
		watchers: map[string][]*watcher{}, dirty: map[string]struct{}{}, batch: 1}
	n.dur.init()
	n.clock = hlc.New(cfg.PhysicalClock)
	n.push = time.NewTimer(time.Hour)
	n.push.Stop()
	r := cfg.Registerer
	if r == nil {
		n.reg = prometheus.NewRegistry()
		r = n.reg
	}
	n.met = newMetrics(r)
	ok := false
	defer func() {
		if !ok {
			n.abort()
		}
	}()
	if err := n.openStore(); err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", cfg.PeerAddr)
	if err != nil {
		return nil, fmt.Errorf("mesh: peer listener on %s: %w", cfg.PeerAddr, err)
	}
	n.lis = lis
	maxMsg := cfg.Limits.MaxBytes + 64<<10
	creds := newCreds(cfg.TLS, n.log)
	sopts := []grpc.ServerOption{grpc.MaxRecvMsgSize(maxMsg), grpc.MaxSendMsgSize(maxMsg)}
	if creds != nil {
		sopts = append(sopts, grpc.Creds(creds))
	}
	n.srv = grpc.NewServer(sopts...)
	peerpb.RegisterPeerServer(n.srv, &peerServer{n: n})
	if cfg.Services != nil {
		cfg.Services(n.srv)
	}
	go func() { _ = n.srv.Serve(lis) }()
	n.tr = newTransport(cfg.Name, cfg.MaxFrameBytes, maxMsg, creds, cfg.Faults, n.log, n.met)

	meta, err := encodeMeta(cfg, n.ident.Incarnation, lis.Addr().String(), false)
	if err != nil {
		return nil, err
	}
	n.rng = rand.New(rand.NewPCG(n.ident.Incarnation, n.ident.Boots))
	if n.mb, err = startMembership(cfg, meta, n.log); err != nil {
		return nil, err
	}
	go n.loop()
	go n.persister()
	go n.every(n.cfg.ReconnectInterval, n.reconnectDone, n.reconnect)
	go n.every(n.cfg.PruneInterval, n.pruneDone, n.prunePass)
	if err := n.mb.join(cfg.Join, cfg.JoinTimeout); err != nil {
		return nil, err
	}
	n.joined.Store(true)
	ok = true
	n.log.Info("mesh node started", "replica", n.replica.String(), "gossip", n.GossipAddr(), "peer", n.PeerAddr(),
		"region", cfg.Region, "boots", n.ident.Boots, "durability", cfg.Durability.String())
	return n, nil
}

// openStore opens the database, takes the node's identity and loads its
// CRDT state into a new engine.
func (n *Node) openStore() error {
	n.db = n.cfg.DB
	if n.db == nil {
		o := eventlog.DefaultOptions(n.cfg.DataDir)
		o.InMemory = n.cfg.DataDir == ""
		o.SyncWrites = n.cfg.Durability == Sync
		o.Logger = n.log
		db, err := eventlog.Open(o)
		if err != nil {
			return err
		}
		n.db, n.ownDB = db, true
	}
	id, fresh, err := n.db.Boot(n.cfg.Name)
	if err != nil {
		return err
	}
	n.ident = id
	n.replica = crdt.ReplicaID{Node: n.cfg.Name, Incarnation: id.Incarnation}
	if fresh && id.Boots > 1 {
		n.log.Warn("previous run did not stop cleanly: new replica incarnation", "incarnation", id.Incarnation)
	}
	ecfg := n.cfg.Engine
	// The session must grow with every start, also across a lost data
	// dir: the wall clock at start does, unless it steps back further
	// than the time between two starts.
	ecfg.ID, ecfg.Session = deltas.PeerID(n.cfg.Name), uint64(time.Now().UnixNano())
	if n.eng, err = deltas.New(ecfg); err != nil {
		return err
	}
	err = n.db.CRDT().Load(func(key string, b []byte) error {
		if string(b) == tombstone {
			n.eng.RestoreDeleted(key)
			return nil
		}
		v, err := crdt.Decode(b, n.cfg.Limits.CRDT)
		if err != nil {
			return fmt.Errorf("%w: key %q: %w", eventlog.ErrCorrupt, key, err)
		}
		n.eng.Restore(key, v)
		return nil
	})
	if err != nil {
		return err
	}
	if v := n.eng.Get(removedEngineKey); v != nil {
		n.applyRemoved(v)
	}
	if id.Previous != 0 {
		// The incarnation this one replaced never writes again: it is
		// removed for good like a removed node, so that its entries and
		// dots get pruned instead of piling up with every crash.
		n.log.Info("removing this node's previous incarnation for good", "incarnation", id.Previous)
		if err := n.markRemoved(crdt.ReplicaID{Node: n.cfg.Name, Incarnation: id.Previous}); err != nil {
			return err
		}
	}
	n.met.keys.Set(float64(n.eng.Len()))
	return nil
}

// abort releases what a failed Start acquired.
func (n *Node) abort() {
	if n.mb != nil {
		_ = n.mb.stop()
	}
	n.stopLoops()
	if n.srv != nil {
		n.srv.Stop()
	}
	if n.tr != nil {
		n.tr.close()
	}
	if n.lis != nil {
		_ = n.lis.Close()
	}
	if n.ownDB && n.db != nil {
		_ = n.db.Close()
	}
}

// Replica is the id this node's writes are tagged with.
func (n *Node) Replica() crdt.ReplicaID { return n.replica }

// Clock is the node's hybrid logical clock, for LWW register writes.
func (n *Node) Clock() *hlc.Clock { return n.clock }

// Region is the node's region.
func (n *Node) Region() string { return n.cfg.Region }

// Name is the node's name.
func (n *Node) Name() string { return n.cfg.Name }

// GossipAddr is where the node's memberlist listens.
func (n *Node) GossipAddr() string { return n.mb.ml.LocalNode().Address() }

// PeerAddr is where the node serves the Peer service.
func (n *Node) PeerAddr() string { return n.lis.Addr().String() }

// Registry is the node's metrics registry (nil if Config.Registerer was
// set).
func (n *Node) Registry() *prometheus.Registry { return n.reg }

// Close leaves the mesh gracefully, writes every change to disk and
// records a clean stop, so the next start keeps the replica incarnation.
func (n *Node) Close() error { return n.shutdown(true) }

// Crash stops the node as a crash would: no leave, nothing more written,
// no clean-stop record. Tests use it; the next start takes a new
// incarnation.
func (n *Node) Crash() error { return n.shutdown(false) }

func (n *Node) shutdown(clean bool) error {
	n.closeMu.Lock()
	if n.closed {
		n.closeMu.Unlock()
		return nil
	}
	n.closed = true
	n.closeMu.Unlock()
	var errs []error
	if clean {
		leaving, err := encodeMeta(n.cfg, n.ident.Incarnation, n.PeerAddr(), true)
		errs = append(errs, err, n.mb.leave(leaving, time.Second))
	} else {
		errs = append(errs, n.mb.stop())
	}
	n.srv.Stop()
	n.tr.close()
	n.stopLoops()
	if clean {
		// The loop has stopped: write what is still dirty from here.
		errs = append(errs, n.persistBatch(n.cutBatch(), true), n.db.MarkClean())
	}
	if n.ownDB {
		errs = append(errs, n.db.Close())
	}
	n.log.Info("mesh node stopped", "clean", clean)
	return errors.Join(errs...)
}

func (n *Node) stopLoops() {
	select {
	case <-n.stopc:
		return
	default:
	}
	close(n.stopc)
	if n.mb != nil { // the loops were started
		<-n.loopDone
		<-n.persistDone
		<-n.reconnectDone
		<-n.pruneDone
	}
}

// do runs fn on the loop goroutine and waits for it; it returns the
// persist batch holding fn's changes. If ctx ends before fn has started,
// fn never runs.
func (n *Node) do(ctx context.Context, fn func()) (uint64, error) {
	return n.run(ctx, &op{fn: fn, done: make(chan struct{})})
}

// doWrite is do for a local write: while replication lags behind
// (Config.MaxLag) the loop holds it back, and if ctx ends first the
// write is not applied and fails with ErrOverloaded.
func (n *Node) doWrite(ctx context.Context, fn func()) (uint64, error) {
	b, err := n.run(ctx, &op{fn: fn, write: true, done: make(chan struct{})})
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		err = fmt.Errorf("%w: %w", ErrOverloaded, err)
	}
	return b, err
}

func (n *Node) run(ctx context.Context, o *op) (uint64, error) {
	select {
	case n.ops <- o: // the usual case, without a blocking select's cost
	default:
		select {
		case n.ops <- o:
		case <-n.stopc:
			return 0, ErrClosed
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	select {
	case <-o.done:
		return o.batch, nil
	case <-ctx.Done():
		if o.state.CompareAndSwap(opPending, opCanceled) {
			return 0, ctx.Err()
		}
		<-o.done // it is running: it will be done at once
		return o.batch, nil
	case <-n.stopc:
		// As for ctx: a pending o is cancelled, so the loop never runs fn
		// after the caller has returned (and read what fn writes); one the
		// loop took runs and is done within that loop step.
		if o.state.CompareAndSwap(opPending, opCanceled) {
			return 0, ErrClosed
		}
		<-o.done
		return o.batch, nil
	}
}

// take runs o as part of the current burst, or parks it when it is a
// write and replication lags (or writes are parked already: they keep
// their order). Canceled ops are dropped.
func (n *Node) take(o *op) {
	if o.write && (len(n.parked) > 0 || n.lagging()) {
		n.parked = append(n.parked, o)
		n.met.parked.Set(float64(len(n.parked)))
		return
	}
	if !o.state.CompareAndSwap(opPending, opRunning) {
		return // its caller gave up
	}
	o.fn()
	n.burst = append(n.burst, o)
}

// lagging reports whether the furthest-behind live neighbour has more
// unacknowledged deltas than Config.MaxLag.
func (n *Node) lagging() bool { return n.cfg.MaxLag > 0 && n.eng.Lag() > uint64(n.cfg.MaxLag) }

// release runs the parked writes once the lag is down to half the bound.
func (n *Node) release() {
	if len(n.parked) == 0 || (n.cfg.MaxLag > 0 && n.eng.Lag() > uint64(n.cfg.MaxLag/2)) {
		return
	}
	parked := n.parked
	n.parked = nil
	for _, o := range parked {
		if o.state.CompareAndSwap(opPending, opRunning) {
			o.fn()
			n.burst = append(n.burst, o)
		}
	}
	n.met.parked.Set(0)
	n.finishBurst()
}

// finishBurst drains the engine and completes the ops of the burst.
func (n *Node) finishBurst() {
	n.drain()
	// Whatever the ops saw is on disk once the open batch is (if it holds
	// anything), else once the last batch cut is.
	b := n.batch
	if len(n.dirty) == 0 {
		b--
	}
	for _, o := range n.burst {
		o.batch = b
		close(o.done)
	}
	clear(n.burst)
	n.burst = n.burst[:0]
}

// turn takes whatever else is queued, writes and received messages alike
// (up to maxBurst of each), before draining the engine once: under load,
// one Ready and one encoding per peer for a whole burst, not per write or
// per message, and one wake-up of the loop for both queues. stepped says
// whether a received message was taken already.
func (n *Node) turn(stepped bool) {
	msgs := 0
	for more := true; more; {
		more = false
		if len(n.burst) < maxBurst {
			select {
			case o := <-n.ops:
				n.take(o)
				more = true
			default:
			}
		}
		if msgs < maxBurst {
			select {
			case in := <-n.recv:
				n.step(in)
				msgs++
				stepped, more = true, true
			default:
			}
		}
	}
	n.finishBurst()
	if stepped {
		n.release() // acknowledgements may have brought the lag down
	}
}

// turnsPerWake bounds the turns the loop takes per wake-up, so that its
// timers and membership changes are not starved.
const turnsPerWake = 8

// turns runs turn, then yields and runs it again while work is queued:
// the writers whose ops just completed are runnable, and yielding lets
// them queue their next ops before the loop parks in its select, which
// is costly with six channels, two of them timers.
func (n *Node) turns(stepped bool) {
	n.turn(stepped)
	for i := 1; i < turnsPerWake; i++ {
		runtime.Gosched()
		if len(n.ops) == 0 && len(n.recv) == 0 {
			return
		}
		n.turn(false)
	}
}

// loop owns the engine.
func (n *Node) loop() {
	defer close(n.loopDone)
	defer func() {
		for _, ws := range n.watchers {
			for _, w := range ws {
				close(w.ch)
			}
		}
		clear(n.watchers)
	}()
	tick := time.NewTicker(n.cfg.TickInterval)
	defer tick.Stop()
	defer n.push.Stop()
	for {
		select {
		case <-n.stopc:
			return
		case o := <-n.ops:
			n.take(o)
			n.turns(false)
		case in := <-n.recv:
			n.step(in)
			n.turns(true)
		case <-n.mb.signal:
			n.membershipChanged()
			n.drain()
		case <-tick.C:
			n.removeLongDead(time.Now())
			n.eng.Tick()
			n.drain()
			n.release()
			n.met.bufferEntries.Set(float64(n.eng.Buffered()))
			n.met.lagSeq.Set(float64(n.eng.Lag()))
			n.met.keys.Set(float64(n.eng.Len()))
			n.met.pendingPersist.Set(float64(len(n.dirty)))
		case <-n.push.C:
			n.pushArmed = false
			n.eng.Flush()
			n.drain()
		}
	}
}

func (n *Node) step(in inbound) {
	from := string(in.msg.From)
	n.met.received(from, in.size)
	m, member := n.members[from]
	if !member {
		// It left or was removed after its stream was accepted.
		n.met.refused.WithLabelValues("not-member").Inc()
		return
	}
	if err := n.eng.Step(in.msg); err != nil {
		n.met.refused.WithLabelValues("step").Inc()
		n.log.Warn("refused a peer message", "peer", from, "err", err)
		return
	}
	if !n.peers[from] {
		// The engine took the sender as a peer: it chose us as its
		// neighbour.
		n.peers[from] = true
		if !m.Alive {
			n.eng.PeerDown(in.msg.From)
		}
		n.updateRelayHold()
	}
}

// drain hands the engine's output to the transport, marks changed keys
// for the persister, notifies watchers and schedules an eager push.
func (n *Node) drain() {
	before := n.eng.Transfers()
	rd := n.eng.Ready()
	for _, m := range rd.Messages {
		mem, ok := n.members[string(m.To)]
		if !ok || !mem.Alive {
			n.met.dropped.WithLabelValues("unknown-peer").Inc()
			continue
		}
		if !n.tr.send(mem.Name, mem.PeerAddr, deltas.EncodeMessage(m)) {
			n.met.dropped.WithLabelValues("queue-full").Inc()
		}
	}
	if d := n.eng.Transfers() - before; d > 0 {
		n.met.transfers.Add(float64(d))
	}
	if len(rd.Persist) == 0 {
		return
	}
	for _, ks := range rd.Persist {
		n.dirty[ks.Key] = struct{}{}
		if ks.Key == removedEngineKey && !ks.Deleted {
			n.applyRemoved(ks.State)
		}
		if ws := n.watchers[ks.Key]; len(ws) > 0 {
			for _, w := range ws {
				if ks.Deleted {
					w.offer(nil)
				} else {
					w.offer(ks.State.Clone())
				}
			}
		}
	}
	if !n.pushArmed {
		n.push.Reset(n.cfg.PushDelay)
		n.pushArmed = true
	}
	if n.cfg.Durability == Sync && !brokenAckBeforePersist {
		select {
		case n.flushNow <- struct{}{}:
		default:
		}
	}
}

// membershipChanged applies memberlist's events to the member table, the
// engine's peers and the neighbour set.
func (n *Node) membershipChanged() {
	for _, ev := range n.mb.take() {
		m := ev.m
		if m.Name == n.cfg.Name {
			continue
		}
		id := deltas.PeerID(m.Name)
		switch {
		case n.removed[crdt.ReplicaID{Node: m.Name, Incarnation: m.Incarnation}]:
			if m.Alive {
				n.log.Warn("a member removed for good is alive; it is ignored (wipe its data dir to rejoin as a new replica)",
					"member", m.Name, "incarnation", m.Incarnation)
			}
			n.forget(m.Name)
		case ev.left:
			n.log.Info("member left", "member", m.Name)
			n.forget(m.Name)
		default:
			old, known := n.members[m.Name]
			if !known || old.Alive != m.Alive {
				n.log.Info("member state", "member", m.Name, "alive", m.Alive, "region", m.Region, "peer", m.PeerAddr)
			}
			mm := m
			n.members[m.Name] = &mm
			if m.Alive {
				delete(n.deadSince, m.Name)
			} else if _, ok := n.deadSince[m.Name]; !ok {
				n.deadSince[m.Name] = time.Now()
			}
			if n.peers[m.Name] {
				if m.Alive {
					n.eng.PeerUp(id)
				} else {
					n.eng.PeerDown(id)
				}
			}
			if !m.Alive {
				delete(n.neighbours, m.Name)
			}
		}
	}
	n.topUp()
	n.updateRelayHold()
}

// updateRelayHold lets the engine hold back relays (and send the marks
// that let its peers do so) only while every live member is its peer:
// then every origin pushes to every node itself and relays are
// redundant, while in a sparse mesh the marks would cost bytes in every
// message for holds that seldom happen.
func (n *Node) updateRelayHold() {
	full := true
	for name, m := range n.members {
		if m.Alive && !n.peers[name] {
			full = false
			break
		}
	}
	n.eng.HoldRelays(full)
}

// forget drops a member that left or was removed: it no longer counts
// for MAJORITY and ALL and is no peer.
func (n *Node) forget(name string) {
	delete(n.members, name)
	delete(n.neighbours, name)
	delete(n.deadSince, name)
	if n.peers[name] {
		delete(n.peers, name)
		n.eng.RemovePeer(deltas.PeerID(name))
	}
	n.tr.forget(name)
}

// topUp completes the neighbour set and updates the member gauges.
func (n *Node) topUp() {
	self := Member{Name: n.cfg.Name, Region: n.cfg.Region}
	for _, name := range chooseNeighbours(self, n.members, n.neighbours, n.cfg.Neighbours, n.cfg.CrossRegion, n.rng) {
		n.neighbours[name] = true
		n.peers[name] = true
		n.eng.PeerUp(deltas.PeerID(name))
	}
	alive, dead := 1, 0
	for _, m := range n.members {
		if m.Alive {
			alive++
		} else {
			dead++
		}
	}
	n.met.members.WithLabelValues("alive").Set(float64(alive))
	n.met.members.WithLabelValues("dead").Set(float64(dead))
}

// chooseNeighbours tops up the neighbour set: up to k live members of
// self's region and up to cross in other regions, chosen at random.
// Existing neighbours stay (a changing overlay would cost full-state
// transfers). Random k-out graphs with k >= 2 are connected with high
// probability (Fenner and Frieze, 1982), and links are symmetric (a chosen
// node takes the chooser as a peer when it first hears from it), so
// deltas reach every node.
func chooseNeighbours(self Member, members map[string]*Member, current map[string]bool, k, cross int, rng *rand.Rand) []string {
	var haveIn, haveOut int
	var candIn, candOut []string
	for _, name := range slices.Sorted(maps.Keys(members)) {
		m := members[name]
		in := m.Region == self.Region
		switch {
		case current[name] && in:
			haveIn++
		case current[name]:
			haveOut++
		case !m.Alive:
		case in:
			candIn = append(candIn, name)
		default:
			candOut = append(candOut, name)
		}
	}
	pick := func(cands []string, want int) []string {
		rng.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
		return cands[:max(0, min(want, len(cands)))]
	}
	out := pick(candIn, k-haveIn)
	return append(out, pick(candOut, cross-haveOut)...)
}

// every runs fn every d until the node stops, then closes done.
func (n *Node) every(d time.Duration, done chan struct{}, fn func()) {
	defer close(done)
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-n.stopc:
			return
		case <-t.C:
			fn()
		}
	}
}

// reconnect rejoins members held dead (every Config.ReconnectInterval).
func (n *Node) reconnect() {
	var addrs []string
	if _, err := n.do(context.Background(), func() {
		for _, m := range n.members {
			if !m.Alive {
				addrs = append(addrs, m.GossipAddr)
			}
		}
	}); err != nil || len(addrs) == 0 {
		return
	}
	if k, err := n.mb.ml.Join(addrs); k > 0 {
		n.log.Debug("rejoined members held dead", "contacted", k, "of", len(addrs))
	} else {
		n.log.Debug("members held dead unreachable", "addrs", addrs, "err", err)
	}
}

// persister writes dirty keys to the store: every FlushInterval in
// write-behind mode; as soon as asked, with fsync, in sync mode (writes
// that arrive while one batch is on its way to disk form the next batch:
// group commit).
func (n *Node) persister() {
	defer close(n.persistDone)
	var tick <-chan time.Time
	if n.cfg.Durability == WriteBehind {
		t := time.NewTicker(n.cfg.FlushInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-n.stopc:
			return
		case <-tick:
		case <-n.flushNow:
		}
		b, err := n.takeDirty()
		if err != nil {
			return // closed
		}
		if err := n.persistBatch(b, n.cfg.Durability == Sync); err != nil {
			n.log.Error("persisting CRDT state failed; will retry", "keys", len(b.puts), "err", err)
		}
	}
}

// tombstone is what the store holds for a deleted key. No CRDT encoding
// starts with a zero byte (protobuf field number 0 is invalid).
const tombstone = "\x00deleted"

// persistBatch is a set of keys' encoded states, tagged with its id.
type persistBatch struct {
	id   uint64
	puts []eventlog.Put
}

// takeDirty asks the loop for the dirty keys' current encodings and
// starts a new batch.
func (n *Node) takeDirty() (persistBatch, error) {
	var b persistBatch
	_, err := n.do(context.Background(), func() { b = n.cutBatch() })
	return b, err
}

func (n *Node) cutBatch() persistBatch {
	b := persistBatch{id: n.batch}
	// The encodings share one buffer: one allocation (and its growth)
	// per batch, not one per key. A value keeps the array it was written
	// in when the buffer grows.
	var buf []byte
	for _, k := range slices.Sorted(maps.Keys(n.dirty)) {
		if n.eng.Deleted(k) {
			b.puts = append(b.puts, eventlog.Put{Key: k, Value: []byte(tombstone)})
			continue
		}
		at := len(buf)
		var ok bool
		if buf, ok = n.eng.AppendEncoding(buf, k); ok {
			b.puts = append(b.puts, eventlog.Put{Key: k, Value: buf[at:len(buf):len(buf)]})
		}
	}
	clear(n.dirty)
	n.batch++
	return b
}

func (n *Node) persistBatch(b persistBatch, sync bool) error {
	if len(b.puts) > 0 {
		if err := n.db.CRDT().Apply(b.puts, nil, sync); err != nil {
			n.dur.fail(b.id, err)
			// Mark the keys dirty again so that a later batch retries.
			_, _ = n.do(context.Background(), func() {
				for _, p := range b.puts {
					n.dirty[p.Key] = struct{}{}
				}
			})
			return err
		}
	}
	n.dur.advance(b.id)
	return nil
}

// durable tracks which persist batches are on disk.
type durable struct {
	mu      sync.Mutex
	done    uint64
	lastErr error
	failed  uint64
	changed chan struct{} // closed and replaced on every change
}

func (d *durable) init() { d.changed = make(chan struct{}) }

func (d *durable) advance(id uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.done = max(d.done, id)
	d.notify()
}

func (d *durable) fail(id uint64, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.failed, d.lastErr = id, err
	d.notify()
}

// notify wakes the waiters; d.mu is held.
func (d *durable) notify() {
	close(d.changed)
	d.changed = make(chan struct{})
}

// wait blocks until batch id is on disk.
func (d *durable) wait(ctx context.Context, id uint64, stop <-chan struct{}) error {
	for {
		d.mu.Lock()
		done, failed, err, ch := d.done, d.failed, d.lastErr, d.changed
		d.mu.Unlock()
		switch {
		case done >= id:
			return nil
		case failed >= id:
			return fmt.Errorf("mesh: write not persisted: %w", err)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-stop:
			return ErrClosed
		}
	}
}
