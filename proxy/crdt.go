package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/crdt"
	"github.com/statemesh/statemesh/internal/hlc"
	"github.com/statemesh/statemesh/mesh"
	"github.com/statemesh/statemesh/protocol/functionpb"
)

// streamedBuffer bounds the messages of one streamed command waiting for
// its client: a client this far behind is dropped (ResourceExhausted)
// rather than holding up the entity's other commands and streams.
const streamedBuffer = 64

// crdtStream is an open Crdt.Handle stream of one entity. Everything is
// sent under the slot's lock (commands, changes, cancellations); one
// goroutine (read) receives and hands each message to whoever waits for
// its command id.
type crdtStream struct {
	stream grpc.BidiStreamingClient[functionpb.CrdtStreamIn, functionpb.CrdtStreamOut]
	cancel context.CancelFunc
	key    mesh.Key
	// Guarded by the slot's lock: view is the state the function's copy
	// holds, as the protocol shows it (nil: no state); watching is true
	// once a goroutine pushes the key's changes to the function.
	view     *functionpb.CrdtState
	nextID   int64
	watching bool

	done chan struct{} // closed when read returns
	mu   struct {
		sync.Mutex
		err     error                                    // why read returned
		pending map[int64]chan *functionpb.CrdtStreamOut // replies awaited, by command id
		streams map[int64]*streamedCall                  // open streamed commands
	}
}

// streamedCall is one open streamed command: read queues its messages.
type streamedCall struct {
	id int64
	// ch is closed when the client falls behind (streamedBuffer).
	ch chan *functionpb.CrdtStreamedMessage
}

func (s *crdtStream) close() { s.cancel() }

// busy: a stream with open streamed commands is not passivated.
func (s *crdtStream) busy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.mu.streams) > 0
}

// read receives the function's messages until the stream ends.
func (s *crdtStream) read() {
	defer close(s.done)
	for {
		out, err := s.stream.Recv()
		if err != nil {
			s.fail(fmt.Errorf("entity stream: %v", err))
			return
		}
		var id int64
		switch o := out.GetMessage().(type) {
		case *functionpb.CrdtStreamOut_Reply:
			id = o.Reply.GetCommandId()
		case *functionpb.CrdtStreamOut_Failure:
			id = o.Failure.GetCommandId()
		case *functionpb.CrdtStreamOut_StreamCancelledResponse:
			id = o.StreamCancelledResponse.GetCommandId()
		case *functionpb.CrdtStreamOut_StreamedMessage:
			s.streamed(o.StreamedMessage)
			continue
		default:
			s.fail(fmt.Errorf("unexpected %T on the entity stream", o))
			return
		}
		s.mu.Lock()
		ch := s.mu.pending[id]
		delete(s.mu.pending, id)
		s.mu.Unlock()
		if ch == nil {
			// A failure of no command (id 0) is the function giving up on
			// the stream; a reply nobody waits for is a protocol error.
			s.fail(fmt.Errorf("%T for command %d, which awaits nothing", out.GetMessage(), id))
			return
		}
		ch <- out // buffered, one message per waiter
	}
}

// streamed queues a message of a streamed command for its client.
func (s *crdtStream) streamed(sm *functionpb.CrdtStreamedMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.mu.streams[sm.GetCommandId()]
	if c == nil {
		return // the client has gone; the StreamCancelled is on its way
	}
	select {
	case c.ch <- sm:
		if sm.GetEndStream() {
			delete(s.mu.streams, c.id)
		}
	default:
		close(c.ch)
		delete(s.mu.streams, c.id)
	}
}

// fail ends the stream: every waiter sees done.
func (s *crdtStream) fail(err error) {
	s.mu.Lock()
	if s.mu.err == nil {
		s.mu.err = err
	}
	s.mu.Unlock()
	s.cancel()
}

func (s *crdtStream) dead() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func (s *crdtStream) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if errors.Is(s.mu.err, errDeleted) {
		return errDeleted
	}
	if s.mu.err == nil {
		return functionFailure("entity stream closed")
	}
	return functionFailure("%v", s.mu.err)
}

// call sends in (under the slot's lock) and waits for the answer to
// command id. A call that gives up leaves the stream unusable: the caller
// drops it.
func (s *crdtStream) call(ctx context.Context, id int64, in *functionpb.CrdtStreamIn) (*functionpb.CrdtStreamOut, error) {
	ch := make(chan *functionpb.CrdtStreamOut, 1)
	s.mu.Lock()
	s.mu.pending[id] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.mu.pending, id)
		s.mu.Unlock()
	}()
	if err := s.stream.Send(in); err != nil {
		if s.dead() {
			return nil, s.err()
		}
		return nil, streamError(ctx, err)
	}
	select {
	case out := <-ch:
		return out, nil
	case <-s.done:
		select {
		case out := <-ch:
			return out, nil
		default:
			return nil, s.err()
		}
	case <-ctx.Done():
		return nil, streamError(ctx, ctx.Err())
	}
}

// subscribe registers streamed command id before it is sent.
func (s *crdtStream) subscribe(id int64) *streamedCall {
	c := &streamedCall{id: id, ch: make(chan *functionpb.CrdtStreamedMessage, streamedBuffer)}
	s.mu.Lock()
	s.mu.streams[id] = c
	s.mu.Unlock()
	return c
}

// unsubscribe forgets streamed command id.
func (s *crdtStream) unsubscribe(id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.mu.streams, id)
}

// runCRDT runs a CRDT entity's unary command on this node's replica: read
// the local state, bring the function's copy to it (a `changed` delta, or
// a new stream with the state when no delta can say it), run the command,
// and apply the reply's delta through the mesh with its write
// consistency.
func (p *Proxy) runCRDT(ctx context.Context, store CRDTStore, m *method, id string, env *functionpb.ActionCommand) (*functionpb.ClientAction, []*functionpb.SideEffect, error) {
	r, _, err := p.crdtCommand(ctx, store, m, id, env, false)
	if err != nil {
		return nil, nil, err
	}
	return r.GetClientAction(), r.GetSideEffects(), nil
}

// crdtCommand runs one command. With streamed, the Command asks for a
// stream, and when the function keeps it open the returned sub receives
// its further messages; cancel it with cancelStreamed unless the function
// ends it.
func (p *Proxy) crdtCommand(ctx context.Context, store CRDTStore, m *method, id string, env *functionpb.ActionCommand, streamed bool) (*functionpb.CrdtReply, *crdtSub, error) {
	s := m.svc
	key := mesh.Key{Service: s.persistenceID, ID: id}
	sk := slotKey(s, id)
	sl, err := p.crdts.acquire(sk, s.passivation)
	if err != nil {
		return nil, nil, err
	}
	defer p.crdts.release(sl)
	st, cur, err := p.prepareCRDT(ctx, store, sl, s, id, key, true)
	if err != nil {
		return nil, nil, err
	}
	st.nextID++
	cid := st.nextID
	var c *streamedCall
	if streamed {
		// Before the command: the function may stream right after its reply.
		c = st.subscribe(cid)
	}
	cmd := &functionpb.Command{EntityId: id, Id: cid, Name: env.GetName(), Payload: env.GetPayload(), Metadata: env.GetMetadata(), Streamed: streamed}
	out, err := st.call(ctx, cid, &functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Command{Command: cmd}})
	if err != nil {
		sl.drop()
		return nil, nil, err
	}
	var r *functionpb.CrdtReply
	switch o := out.GetMessage().(type) {
	case *functionpb.CrdtStreamOut_Failure:
		st.unsubscribe(cid)
		return nil, nil, &failureError{code: failureCode(o.Failure.GetGrpcStatusCode()), desc: o.Failure.GetDescription()}
	case *functionpb.CrdtStreamOut_Reply:
		r = o.Reply
	default:
		sl.drop()
		return nil, nil, functionFailure("unexpected %T answering command %d", o, cid)
	}
	if err := p.applyCRDTAction(ctx, store, sl, st, key, cur, r.GetStateAction()); err != nil {
		st.unsubscribe(cid)
		return nil, nil, err
	}
	if !streamed || !r.GetStreamed() || !sl.ok || sl.s != st {
		st.unsubscribe(cid)
		return r, nil, nil
	}
	if !st.watching {
		p.watchCRDT(store, sl, st)
	}
	return r, &crdtSub{slot: sk, m: m, entityID: id, st: st, c: c}, nil
}

// prepareCRDT reads the entity's local state and brings the slot's stream
// to it: a `changed` delta when the function's copy is behind, else (or
// when the stream is gone) a new stream with the state, if open.
func (p *Proxy) prepareCRDT(ctx context.Context, store CRDTStore, sl *slot[*crdtStream], s *service, id string, key mesh.Key, open bool) (*crdtStream, crdt.Value, error) {
	cur, err := store.Get(ctx, key, mesh.Options{Consistency: mesh.Local})
	if err != nil {
		return nil, nil, err
	}
	view, err := crdtView(cur, store.Replica())
	if err != nil {
		return nil, nil, err
	}
	if sl.ok && sl.s.dead() {
		sl.drop()
	}
	if sl.ok {
		if err := sl.s.sync(view); err != nil {
			sl.s.fail(err) // its streamed commands end with err
			sl.drop()
		}
	}
	if !sl.ok {
		if !open {
			return nil, nil, nil
		}
		st, err := p.openCRDT(s, id, key, view)
		if err != nil {
			return nil, nil, err
		}
		sl.set(st)
	}
	return sl.s, cur, nil
}

// applyCRDTAction applies a reply's state action to the store; cur is the
// state the function's copy held before the command (whose view is
// st.view). The slot's lock is held.
func (p *Proxy) applyCRDTAction(ctx context.Context, store CRDTStore, sl *slot[*crdtStream], st *crdtStream, key mesh.Key, cur crdt.Value, sa *functionpb.CrdtStateAction) error {
	opts := mesh.Options{Consistency: consistencyOf(sa.GetWriteConsistency()), DiscardState: true}
	switch a := sa.GetAction().(type) {
	case nil:
	case *functionpb.CrdtStateAction_Delete:
		st.fail(errDeleted)
		sl.drop() // a deleted entity's stream ends
		return store.Delete(ctx, key, opts)
	case *functionpb.CrdtStateAction_Update:
		t, err := deltaType(a.Update)
		if err != nil {
			sl.drop()
			return err
		}
		var (
			delta    crdt.Value
			repruned bool
		)
		replica, clock := store.Replica(), store.Clock() // the mutator must not call the store
		_, err = store.Update(ctx, key, t, func(v crdt.Value) (crdt.Value, error) {
			d, err := applyDelta(v, a.Update, replica, clock)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", ErrFunction, err)
			}
			delta = d
			repruned = !maps.Equal(crdt.Pruned(v), crdt.Pruned(cur)) // Pruned(nil) is nil
			return d, nil
		}, opts)
		if err != nil {
			sl.drop()
			return err
		}
		if repruned {
			// The replica pruned (or forgot) a replica since cur was
			// read: the delta was made on a state with other markers,
			// and joined to cur it would not give the function's copy
			// (a counter's own entry now holds the folded counts, which
			// cur still holds apart). The next command starts the
			// entity's stream afresh, with the state.
			sl.drop()
			return nil
		}
		// The function's copy is the state it was given plus its own
		// delta: that, not the replica, is what later changes are
		// relative to (so its own delta is never sent back to it).
		base := cur
		if base == nil {
			if base, err = crdt.New(t); err != nil {
				sl.drop()
				return err
			}
		} else {
			base = base.Clone()
		}
		if _, err := crdt.Join(base, delta); err != nil {
			sl.drop()
		} else if st.view, err = crdtView(base, replica); err != nil {
			sl.drop()
		}
	}
	return nil
}

// errDeleted ends an entity's stream when the entity is deleted (here or
// on another node); its streamed commands end normally.
var errDeleted = errors.New("proxy: the entity was deleted")

// errResync: the function's copy cannot be brought to the replica's state
// with a delta (deleted, or a different type); the stream is reopened.
var errResync = fmt.Errorf("%w: the entity's state cannot be sent as a change", ErrFunction)

// sync sends the function the change from its copy to view, if any; it
// fails with errDeleted when the entity is gone (view nil). The slot's
// lock is held.
func (s *crdtStream) sync(view *functionpb.CrdtState) error {
	if proto.Equal(s.view, view) {
		return nil
	}
	if view == nil {
		return errDeleted
	}
	d, ok := viewDelta(s.view, view)
	if !ok {
		return errResync
	}
	if d != nil {
		if err := s.stream.Send(&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Changed{Changed: d}}); err != nil {
			return fmt.Errorf("%w: sending a change: %v", ErrFunction, err)
		}
	}
	s.view = view
	return nil
}

// viewDelta is the delta that takes a function's copy from old to cur
// (nil when there is nothing to send), or false when no delta can.
func viewDelta(old, cur *functionpb.CrdtState) (*functionpb.CrdtDelta, bool) {
	if cur == nil || (old != nil && reflect.TypeOf(old.GetState()) != reflect.TypeOf(cur.GetState())) {
		return nil, false
	}
	switch c := cur.GetState().(type) {
	case *functionpb.CrdtState_Gcounter:
		o, n := old.GetGcounter().GetValue(), c.Gcounter.GetValue()
		if n < o {
			return nil, false
		}
		if n == o {
			return nil, true
		}
		return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Gcounter{Gcounter: &functionpb.GCounterDelta{Increment: n - o}}}, true
	case *functionpb.CrdtState_Pncounter:
		change := c.Pncounter.GetValue() - old.GetPncounter().GetValue()
		if change == 0 {
			return nil, true
		}
		return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Pncounter{Pncounter: &functionpb.PNCounterDelta{Change: change}}}, true
	case *functionpb.CrdtState_Gset:
		removed, added := diff(old.GetGset().GetItems(), c.Gset.GetItems())
		if len(removed) > 0 {
			return nil, false
		}
		if len(added) == 0 {
			return nil, true
		}
		return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Gset{Gset: &functionpb.GSetDelta{Added: added}}}, true
	case *functionpb.CrdtState_Orset:
		removed, added := diff(old.GetOrset().GetItems(), c.Orset.GetItems())
		if len(removed) == 0 && len(added) == 0 {
			return nil, true
		}
		return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Orset{Orset: &functionpb.ORSetDelta{Removed: removed, Added: added}}}, true
	case *functionpb.CrdtState_Lwwregister:
		if old != nil && bytes.Equal(old.GetLwwregister().GetValue(), c.Lwwregister.GetValue()) {
			return nil, true
		}
		return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Lwwregister{Lwwregister: &functionpb.LWWRegisterDelta{Value: c.Lwwregister.GetValue()}}}, true
	case *functionpb.CrdtState_Flag:
		if old != nil && old.GetFlag().GetValue() == c.Flag.GetValue() {
			return nil, true
		}
		return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Flag{Flag: &functionpb.FlagDelta{Value: c.Flag.GetValue()}}}, true
	case *functionpb.CrdtState_Ormap:
		return ormapViewDelta(old.GetOrmap(), c.Ormap)
	case *functionpb.CrdtState_Vote:
		if old != nil && proto.Equal(old.GetVote(), c.Vote) {
			return nil, true
		}
		return &functionpb.CrdtDelta{Delta: &functionpb.CrdtDelta_Vote{Vote: &functionpb.VoteDelta{
			SelfVote: c.Vote.GetSelfVote(), VotesFor: c.Vote.GetVotesFor(), TotalVoters: c.Vote.GetTotalVoters()}}}, true
	}
	return nil, false
}

// diff returns the items of old not in cur, and of cur not in old.
func diff(old, cur [][]byte) (removed, added [][]byte) {
	o, c := make(map[string]bool, len(old)), make(map[string]bool, len(cur))
	for _, x := range old {
		o[string(x)] = true
	}
	for _, x := range cur {
		c[string(x)] = true
	}
	for _, x := range old {
		if !c[string(x)] {
			removed = append(removed, x)
		}
	}
	for _, x := range cur {
		if !o[string(x)] {
			added = append(added, x)
		}
	}
	return removed, added
}

// watchCRDT pushes the key's changes (other nodes' writes merged here,
// other commands) to the function while st is the slot's stream: each
// new local state goes out as a `changed` delta on the function's copy,
// so that its streamed commands (OnChange) see it. The slot's lock is
// held; the goroutine ends with the stream.
func (p *Proxy) watchCRDT(store CRDTStore, sl *slot[*crdtStream], st *crdtStream) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.closed {
		return
	}
	ch, stop, err := store.Watch(p.ctx, st.key)
	if err != nil {
		p.cfg.Logger.Warn("proxy: watching a CRDT entity", "key", st.key, "err", err)
		return
	}
	st.watching = true
	p.wg.Go(func() {
		defer stop()
		for {
			select {
			case _, ok := <-ch:
				if !ok {
					return
				}
			case <-st.done:
				return
			}
			if !p.pushCRDT(store, sl, st) {
				return
			}
		}
	})
}

// pushCRDT brings st to the key's local state; false when st is no longer
// the slot's stream.
func (p *Proxy) pushCRDT(store CRDTStore, sl *slot[*crdtStream], st *crdtStream) bool {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.dead || !sl.ok || sl.s != st {
		return false
	}
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.CommandTimeout)
	defer cancel()
	cur, err := store.Get(ctx, st.key, mesh.Options{Consistency: mesh.Local})
	var view *functionpb.CrdtState
	if err == nil {
		view, err = crdtView(cur, store.Replica())
	}
	if err == nil {
		err = st.sync(view)
	}
	if err != nil {
		// Its streamed commands end; the next command reopens the stream.
		st.fail(err)
		p.cfg.Logger.Info("proxy: closing a CRDT entity stream", "key", st.key, "err", err)
		sl.drop()
		return false
	}
	return true
}

// crdtSub is a streamed command the function keeps open.
type crdtSub struct {
	slot     string
	m        *method
	entityID string
	st       *crdtStream
	c        *streamedCall
}

// streamCRDT serves a server-streaming method of a CRDT entity: the
// command's reply is the first message (if it has one), then every
// CrdtStreamedMessage for it, until the function ends the stream, the
// entity's stream ends, or ctx ends (the client went away: the function
// gets a StreamCancelled).
func (p *Proxy) streamCRDT(ctx context.Context, store CRDTStore, m *method, in proto.Message, meta map[string]string, send func(proto.Message) error) error {
	id, err := entityID(m.key, in.ProtoReflect())
	if err != nil {
		return err
	}
	env, err := actionCommand(m, in, meta)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, p.cfg.CommandTimeout)
	r, sub, err := p.crdtCommand(cctx, store, m, id, env, true)
	cancel()
	if err != nil {
		return err
	}
	ended := sub == nil
	defer func() {
		if !ended {
			p.cancelStreamed(store, sub, meta)
		}
	}()
	if err := p.emit(ctx, m, r.GetClientAction(), r.GetSideEffects(), meta, send); err != nil {
		return err
	}
	if sub == nil {
		return nil
	}
	next := func(sm *functionpb.CrdtStreamedMessage) error {
		ended = sm.GetEndStream()
		return p.emit(ctx, m, sm.GetClientAction(), sm.GetSideEffects(), meta, send)
	}
	for {
		select {
		case sm, ok := <-sub.c.ch:
			if !ok {
				return status.Error(codes.ResourceExhausted, "the client fell behind the stream")
			}
			if err := next(sm); err != nil || ended {
				return err
			}
		case <-sub.st.done:
			ended = true
			if p.ctx.Err() != nil {
				return ErrClosed
			}
			// Deliver what the function sent before the stream ended.
			for len(sub.c.ch) > 0 {
				sm, ok := <-sub.c.ch
				if !ok {
					break
				}
				if err := next(sm); err != nil || sm.GetEndStream() {
					return err
				}
			}
			err := sub.st.err()
			if errors.Is(err, errDeleted) {
				return nil // nothing more to watch
			}
			// The stream closed under the command (the function failed, or
			// a command on the entity gave up): the client may call again.
			return &failureError{code: codes.Unavailable, desc: "the entity's stream ended: " + toStatus(err).Message()}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// emit sends one message of a streamed command: its reply (forwards
// followed) after its side effects. A message with neither sends nothing.
func (p *Proxy) emit(ctx context.Context, m *method, ca *functionpb.ClientAction, effects []*functionpb.SideEffect, meta map[string]string, send func(proto.Message) error) error {
	if ca.GetAction() == nil && len(effects) == 0 {
		return nil
	}
	out, err := p.finish(ctx, m, ca, effects, meta, 0)
	if err != nil || ca.GetAction() == nil {
		return err
	}
	return send(out)
}

// cancelStreamed tells the function that a streamed command's client went
// away (StreamCancelled), waits for its answer and applies the answer's
// state action and side effects.
func (p *Proxy) cancelStreamed(store CRDTStore, sub *crdtSub, meta map[string]string) {
	sub.st.unsubscribe(sub.c.id)
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.CommandTimeout)
	defer cancel()
	effects, err := p.cancelLocked(ctx, store, sub)
	if err != nil {
		p.cfg.Logger.Warn("proxy: cancelling a streamed command", "method", sub.m.fullMethod(), "entity", sub.entityID, "err", err)
		return
	}
	if len(effects) > 0 {
		if _, err := p.finish(ctx, sub.m, nil, effects, meta, 0); err != nil {
			p.cfg.Logger.Warn("proxy: side effect of a cancelled stream failed", "method", sub.m.fullMethod(), "err", err)
		}
	}
}

func (p *Proxy) cancelLocked(ctx context.Context, store CRDTStore, sub *crdtSub) ([]*functionpb.SideEffect, error) {
	s := sub.m.svc
	sl, err := p.crdts.acquire(sub.slot, s.passivation)
	if err != nil {
		return nil, err
	}
	defer p.crdts.release(sl)
	if !sl.ok || sl.s != sub.st {
		return nil, nil // that stream has ended, and the command with it
	}
	key := sub.st.key
	st, cur, err := p.prepareCRDT(ctx, store, sl, s, sub.entityID, key, false)
	if err != nil || st != sub.st {
		return nil, err
	}
	out, err := st.call(ctx, sub.c.id, &functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_StreamCancelled{
		StreamCancelled: &functionpb.StreamCancelled{EntityId: sub.entityID, Id: sub.c.id}}})
	if err != nil {
		sl.drop()
		return nil, err
	}
	resp := out.GetStreamCancelledResponse()
	if resp == nil {
		return nil, nil // a Failure: nothing to apply
	}
	if err := p.applyCRDTAction(ctx, store, sl, st, key, cur, resp.GetStateAction()); err != nil {
		return nil, err
	}
	return resp.GetSideEffects(), nil
}

func (p *Proxy) openCRDT(s *service, id string, key mesh.Key, view *functionpb.CrdtState) (*crdtStream, error) {
	ctx, cancel := context.WithCancel(p.ctx)
	stream, err := p.crdtFn.Handle(ctx)
	if err == nil {
		err = stream.Send(&functionpb.CrdtStreamIn{Message: &functionpb.CrdtStreamIn_Init{Init: &functionpb.CrdtInit{
			ServiceName: string(s.desc.FullName()), EntityId: id, State: view}}})
	}
	if err != nil {
		cancel()
		return nil, &failureError{code: codes.Unavailable, desc: fmt.Sprintf("opening the entity stream: %v", err)}
	}
	st := &crdtStream{stream: stream, cancel: cancel, key: key, view: view, done: make(chan struct{})}
	st.mu.pending = map[int64]chan *functionpb.CrdtStreamOut{}
	st.mu.streams = map[int64]*streamedCall{}
	// Close waits for read, which ends with the stream (close). This runs
	// under a slot's lock, so before Close's closeAll returns.
	p.wg.Go(st.read)
	return st, nil
}

func consistencyOf(c functionpb.WriteConsistency) mesh.Consistency {
	switch c {
	case functionpb.WriteConsistency_WRITE_CONSISTENCY_MAJORITY:
		return mesh.Majority
	case functionpb.WriteConsistency_WRITE_CONSISTENCY_ALL:
		return mesh.All
	}
	return mesh.Local
}

// errCRDTType: a CRDT type the proxy does not route (yet): the crdt
// types no function delta makes (MVRegister, Flag), and in an ORMap the
// values the mesh's map cannot hold (counters, GSet, LWWRegister, Vote).
var errCRDTType = fmt.Errorf("%w: CRDT type", ErrNotSupported)

// deltaType is the CRDT type a function's delta changes.
func deltaType(d *functionpb.CrdtDelta) (crdt.Type, error) {
	switch d.GetDelta().(type) {
	case *functionpb.CrdtDelta_Gcounter:
		return crdt.TypeGCounter, nil
	case *functionpb.CrdtDelta_Pncounter:
		return crdt.TypePNCounter, nil
	case *functionpb.CrdtDelta_Gset:
		return crdt.TypeGSet, nil
	case *functionpb.CrdtDelta_Orset:
		return crdt.TypeORSet, nil
	case *functionpb.CrdtDelta_Lwwregister:
		return crdt.TypeLWWRegister, nil
	case *functionpb.CrdtDelta_Flag:
		return crdt.TypeEWFlag, nil
	case *functionpb.CrdtDelta_Ormap:
		// Checked whole here: a mutator must fail before it mutates.
		return crdt.TypeORMap, checkMapDelta(d, 0)
	case *functionpb.CrdtDelta_Vote:
		if d.GetVote().GetVotesFor() != 0 || d.GetVote().GetTotalVoters() != 0 {
			return 0, functionFailure("a vote delta with tallies (the proxy's to set)")
		}
		return crdt.TypeVote, nil
	case nil:
		return 0, functionFailure("an empty CRDT delta")
	}
	return 0, fmt.Errorf("%w %T", errCRDTType, d.GetDelta())
}

// applyDelta applies a function's delta to v through v's delta mutators
// and returns the resulting CRDT delta. It checks everything before it
// mutates (a mesh.Mutator must fail before mutating).
func applyDelta(v crdt.Value, d *functionpb.CrdtDelta, r crdt.ReplicaID, clock *hlc.Clock) (crdt.Value, error) {
	mismatch := func() error {
		return fmt.Errorf("%w: a %T delta for a %v", crdt.ErrTypeMismatch, d.GetDelta(), v.Type())
	}
	switch x := d.GetDelta().(type) {
	case *functionpb.CrdtDelta_Gcounter:
		c, ok := v.(*crdt.GCounter)
		if !ok {
			return nil, mismatch()
		}
		return c.Increment(r, x.Gcounter.GetIncrement())
	case *functionpb.CrdtDelta_Pncounter:
		c, ok := v.(*crdt.PNCounter)
		if !ok {
			return nil, mismatch()
		}
		return c.Increment(r, x.Pncounter.GetChange())
	case *functionpb.CrdtDelta_Gset:
		s, ok := v.(*crdt.GSet)
		if !ok {
			return nil, mismatch()
		}
		acc := crdt.NewGSet()
		for _, e := range x.Gset.GetAdded() {
			if _, err := crdt.Join(acc, s.Add(e)); err != nil {
				return nil, err
			}
		}
		return acc, nil
	case *functionpb.CrdtDelta_Orset:
		s, ok := v.(*crdt.ORSet)
		if !ok {
			return nil, mismatch()
		}
		acc := crdt.NewORSet()
		if x.Orset.GetCleared() {
			if _, err := crdt.Join(acc, s.Clear()); err != nil {
				return nil, err
			}
		}
		for _, e := range x.Orset.GetRemoved() {
			if _, err := crdt.Join(acc, s.Remove(e)); err != nil {
				return nil, err
			}
		}
		for _, e := range x.Orset.GetAdded() {
			if _, err := crdt.Join(acc, s.Add(r, e)); err != nil {
				return nil, err
			}
		}
		return acc, nil
	case *functionpb.CrdtDelta_Lwwregister:
		reg, ok := v.(*crdt.LWWRegister)
		if !ok {
			return nil, mismatch()
		}
		delta := reg.Set(r, clock.Now(), x.Lwwregister.GetValue())
		ts, _ := delta.Timestamp()
		clock.Update(ts)
		return delta, nil
	case *functionpb.CrdtDelta_Flag:
		f, ok := v.(*crdt.EWFlag)
		if !ok {
			return nil, mismatch()
		}
		if x.Flag.GetValue() {
			return f.Enable(r), nil
		}
		return f.Disable(), nil
	case *functionpb.CrdtDelta_Ormap:
		m, ok := v.(*crdt.ORMap)
		if !ok {
			return nil, mismatch()
		}
		return applyMapDelta(m, x.Ormap, r, clock)
	case *functionpb.CrdtDelta_Vote:
		vt, ok := v.(*crdt.Vote)
		if !ok {
			return nil, mismatch()
		}
		return vt.Set(r, x.Vote.GetSelfVote())
	}
	return nil, fmt.Errorf("%w %T", errCRDTType, d.GetDelta())
}

// crdtView is a CRDT's state as the function sees it (nil for none); self
// is this node's replica (a Vote shows its vote).
func crdtView(v crdt.Value, self crdt.ReplicaID) (*functionpb.CrdtState, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case *crdt.GCounter:
		return &functionpb.CrdtState{State: &functionpb.CrdtState_Gcounter{Gcounter: &functionpb.GCounterState{Value: x.Value()}}}, nil
	case *crdt.PNCounter:
		return &functionpb.CrdtState{State: &functionpb.CrdtState_Pncounter{Pncounter: &functionpb.PNCounterState{Value: x.Value()}}}, nil
	case *crdt.GSet:
		return &functionpb.CrdtState{State: &functionpb.CrdtState_Gset{Gset: &functionpb.GSetState{Items: x.Elements()}}}, nil
	case *crdt.ORSet:
		return &functionpb.CrdtState{State: &functionpb.CrdtState_Orset{Orset: &functionpb.ORSetState{Items: x.Elements()}}}, nil
	case *crdt.LWWRegister:
		b, _ := x.Get()
		return &functionpb.CrdtState{State: &functionpb.CrdtState_Lwwregister{Lwwregister: &functionpb.LWWRegisterState{Value: b}}}, nil
	case *crdt.EWFlag:
		return &functionpb.CrdtState{State: &functionpb.CrdtState_Flag{Flag: &functionpb.FlagState{Value: x.Enabled()}}}, nil
	case *crdt.Flag:
		return &functionpb.CrdtState{State: &functionpb.CrdtState_Flag{Flag: &functionpb.FlagState{Value: x.Enabled()}}}, nil
	case *crdt.ORMap:
		return ormapView(x, self)
	case *crdt.Vote:
		return voteView(x, self), nil
	}
	return nil, fmt.Errorf("%w %v", errCRDTType, v.Type())
}
