package consensus

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/lni/dragonboat/v4"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/eventlog"
	"github.com/statemesh/statemesh/protocol/consensuspb"
)

// Limits on what an operation may carry; checked before anything is
// proposed.
const (
	// MaxCommandBytes bounds a command's payload.
	MaxCommandBytes = 1 << 20
	// MaxRequestIDBytes bounds a caller's request id.
	MaxRequestIDBytes = eventlog.MaxRequestIDBytes
	// maxConflictRetries bounds how often one command is re-run after its
	// expected sequence number was overtaken by another writer.
	maxConflictRetries = 8
)

// Command runs a command for an event-sourced entity and returns the
// handler's reply once the events it decided are applied by a majority of
// the shard's replicas. The command runs on the shard leader, here or on
// the node this one forwards it to.
//
// requestID identifies the command across retries: a command submitted
// again with the same id (by the caller, or by the Host itself after a
// timeout or a leader change) is applied at most once, and the retry gets
// the first reply. An empty id gets a random one.
//
// Errors: ErrConflict (the entity kept changing under the handler),
// ErrRejected (the handler refused), ErrNoHandler, ErrInvalid,
// ErrUnavailable and ErrNotLeader (not applied), ErrTimeout (unknown:
// retry with the same request id), ErrClosed.
func (h *Host) Command(ctx context.Context, e Entity, payload, requestID []byte) (Reply, error) {
	if err := checkRequest(e, len(payload), requestID); err != nil {
		return Reply{}, err
	}
	if len(requestID) == 0 {
		requestID = newRequestID()
	}
	req := &consensuspb.CommandRequest{Entity: entityPB(e), Command: payload, RequestId: requestID}
	resp, err := h.command(ctx, req, false)
	if err != nil {
		return Reply{}, err
	}
	return Reply{Seq: resp.Seq, Data: resp.Reply}, nil
}

// Load reads an event-sourced entity linearizably: its latest snapshot and
// every event after it, as of a moment between the call and its return.
func (h *Host) Load(ctx context.Context, e Entity) (EntityState, error) {
	if err := checkRequest(e, 0, nil); err != nil {
		return EntityState{}, err
	}
	resp, err := h.load(ctx, &consensuspb.LoadRequest{Entity: entityPB(e)}, false)
	if err != nil {
		return EntityState{}, err
	}
	st := EntityState{Seq: resp.Seq, SnapshotSeq: resp.SnapshotSeq, Snapshot: resp.Snapshot}
	first := resp.Seq - uint64(len(resp.Events)) + 1
	for i, ev := range resp.Events {
		st.Events = append(st.Events, eventlog.Event{Seq: first + uint64(i), Data: ev})
	}
	return st, nil
}

// GetValue reads a value entity linearizably. found is false if it was
// never written; a deleted value is found with Deleted set and its last
// version.
func (h *Host) GetValue(ctx context.Context, e Entity) (v Value, found bool, err error) {
	if err := checkRequest(e, 0, nil); err != nil {
		return Value{}, false, err
	}
	resp, err := h.value(ctx, &consensuspb.ValueRequest{Entity: entityPB(e), Op: consensuspb.ValueRequest_OP_GET}, false)
	if err != nil {
		return Value{}, false, err
	}
	return Value{Version: resp.Version, State: resp.State, Deleted: resp.Deleted}, resp.Found, nil
}

// PutValue replaces a value entity's state if its version is expected
// (0: it does not exist yet; AnyVersion: whatever it is) and returns the
// new version. A mismatch is ErrConflict. Timeouts are ambiguous as for
// Command; the Host's own retries are applied at most once.
func (h *Host) PutValue(ctx context.Context, e Entity, state []byte, expected uint64) (uint64, error) {
	return h.writeValue(ctx, e, consensuspb.ValueRequest_OP_PUT, state, expected)
}

// DeleteValue deletes a value entity's state if its version is expected
// (or AnyVersion) and returns the version of the deletion. The version is
// kept, so a later put continues from it.
func (h *Host) DeleteValue(ctx context.Context, e Entity, expected uint64) (uint64, error) {
	return h.writeValue(ctx, e, consensuspb.ValueRequest_OP_DELETE, nil, expected)
}

func (h *Host) writeValue(ctx context.Context, e Entity, op consensuspb.ValueRequest_Op, state []byte, expected uint64) (uint64, error) {
	if err := checkRequest(e, len(state), nil); err != nil {
		return 0, err
	}
	req := &consensuspb.ValueRequest{Entity: entityPB(e), Op: op, State: state, RequestId: newRequestID(),
		CheckVersion: expected != AnyVersion, ExpectedVersion: expected}
	if expected == AnyVersion {
		req.ExpectedVersion = 0
	}
	resp, err := h.value(ctx, req, false)
	if err != nil {
		return 0, err
	}
	return resp.Version, nil
}

func checkRequest(e Entity, payload int, requestID []byte) error {
	if err := e.Validate(); err != nil {
		return wrapf(ErrInvalid, "%v", err)
	}
	if payload > MaxCommandBytes {
		return wrapf(ErrInvalid, "payload of %d bytes exceeds %d", payload, MaxCommandBytes)
	}
	if len(requestID) > MaxRequestIDBytes {
		return wrapf(ErrInvalid, "request id of %d bytes exceeds %d", len(requestID), MaxRequestIDBytes)
	}
	return nil
}

func newRequestID() []byte {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return b
}

// The three operations share one routing shape: run locally when this
// node holds the shard's leader (or the shard with no leader known yet),
// else forward to the node that does. The caller's node retries until its
// deadline; a forwarded request gets one attempt on each node it passes,
// so retries do not multiply along the way.

func (h *Host) command(ctx context.Context, req *consensuspb.CommandRequest, forwarded bool) (*consensuspb.CommandResponse, error) {
	shard := h.ShardOf(entityOf(req.Entity))
	var out *consensuspb.CommandResponse
	err := h.route(ctx, shard, forwarded, int(req.Hops),
		func(ctx context.Context) error {
			var err error
			out, err = h.localCommand(ctx, shard, req)
			return err
		},
		func(ctx context.Context, c consensuspb.ConsensusClient) error {
			fwd := proto.Clone(req).(*consensuspb.CommandRequest)
			fwd.Hops++
			resp, err := c.Command(ctx, fwd)
			if err != nil {
				return transportError(err)
			}
			out = resp
			if resp.Code == consensuspb.Code_CODE_REJECTED {
				return &Rejection{Code: codes.Code(resp.RejectedCode), Message: resp.RejectedMessage}
			}
			return errorOf(resp.Code, resp.Message)
		})
	return out, err
}

func (h *Host) load(ctx context.Context, req *consensuspb.LoadRequest, forwarded bool) (*consensuspb.LoadResponse, error) {
	e := entityOf(req.Entity)
	shard := h.ShardOf(e)
	var out *consensuspb.LoadResponse
	err := h.route(ctx, shard, forwarded, int(req.Hops),
		func(ctx context.Context) error {
			r, err := h.read(ctx, shard, loadQuery{entity: e})
			if err != nil {
				return err
			}
			st := r.(loadResult).state
			out = &consensuspb.LoadResponse{Seq: st.Seq, SnapshotSeq: st.SnapshotSeq, Snapshot: st.Snapshot}
			for _, ev := range st.Events {
				out.Events = append(out.Events, ev.Data)
			}
			return nil
		},
		func(ctx context.Context, c consensuspb.ConsensusClient) error {
			fwd := proto.Clone(req).(*consensuspb.LoadRequest)
			fwd.Hops++
			resp, err := c.Load(ctx, fwd)
			if err != nil {
				return transportError(err)
			}
			out = resp
			return errorOf(resp.Code, resp.Message)
		})
	return out, err
}

func (h *Host) value(ctx context.Context, req *consensuspb.ValueRequest, forwarded bool) (*consensuspb.ValueResponse, error) {
	e := entityOf(req.Entity)
	shard := h.ShardOf(e)
	var out *consensuspb.ValueResponse
	err := h.route(ctx, shard, forwarded, int(req.Hops),
		func(ctx context.Context) error {
			var err error
			out, err = h.localValue(ctx, shard, e, req)
			return err
		},
		func(ctx context.Context, c consensuspb.ConsensusClient) error {
			fwd := proto.Clone(req).(*consensuspb.ValueRequest)
			fwd.Hops++
			resp, err := c.Value(ctx, fwd)
			if err != nil {
				return transportError(err)
			}
			out = resp
			return errorOf(resp.Code, resp.Message)
		})
	return out, err
}

// retryable reports whether an attempt's error may succeed on another
// attempt: the leader moved, the shard was not ready, or the outcome was
// unknown (a retry with the same request id is applied at most once).
func retryable(err error) bool {
	return errors.Is(err, ErrNotLeader) || errors.Is(err, ErrUnavailable) || errors.Is(err, ErrTimeout)
}

// route runs local or remote attempts until one succeeds, fails for good,
// or ctx ends. A forwarded request gets a single attempt.
func (h *Host) route(ctx context.Context, shard uint64, forwarded bool, hops int,
	local func(context.Context) error,
	remote func(context.Context, consensuspb.ConsensusClient) error) error {
	if err := h.enter(); err != nil {
		return err
	}
	defer h.exit()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.cfg.OpTimeout)
		defer cancel()
	}
	ambiguous := false
	backoff := h.cfg.RTT
	for attempt := 0; ; attempt++ {
		err := h.attempt(ctx, shard, attempt, forwarded, hops, local, remote)
		if err == nil || !retryable(err) || forwarded {
			return err
		}
		if errors.Is(err, ErrTimeout) {
			ambiguous = true
		}
		h.met.retries.Inc()
		select {
		case <-ctx.Done():
			if ambiguous {
				return wrapf(ErrTimeout, "shard %d: %v", shard, err)
			}
			return fmt.Errorf("%w (deadline passed after %d attempts)", err, attempt+1)
		case <-h.stop:
			return ErrClosed
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 20*h.cfg.RTT)
	}
}

func (h *Host) attempt(ctx context.Context, shard uint64, attempt int, forwarded bool, hops int,
	local func(context.Context) error,
	remote func(context.Context, consensuspb.ConsensusClient) error) error {
	self, peer := h.pick(shard, attempt, forwarded)
	if self {
		return local(ctx)
	}
	if peer == "" {
		return wrapf(ErrNotLeader, "shard %d: no node known to hold it", shard)
	}
	if hops >= h.cfg.MaxForwardHops {
		return wrapf(ErrNotLeader, "shard %d: forwarded %d times", shard, hops)
	}
	c, err := h.client(peer)
	if err != nil {
		return wrapf(ErrNotLeader, "dial %s: %v", peer, err)
	}
	h.met.forwards.Inc()
	err = remote(ctx, c)
	if err == nil {
		h.setRoute(shard, peer)
	} else if errors.Is(err, ErrNotLeader) {
		h.setRoute(shard, "")
	}
	return err
}

// pick decides where an attempt runs. With a local replica: here if it
// leads or no leader is known (Dragonboat then reports the shard not
// ready, and the attempt is retried), else at the leader's node. Without
// one: the node that served the shard last, else the other nodes in turn.
func (h *Host) pick(shard uint64, attempt int, forwarded bool) (self bool, peer string) {
	leader, _, valid, err := h.nh.GetLeaderID(shard)
	if err == nil {
		if !valid || leader == h.replicaID {
			return true, ""
		}
		for _, m := range h.cfg.Directory.Members() {
			if m.ReplicaID == leader && m.Name != h.cfg.NodeName {
				return false, m.PeerAddress
			}
		}
		return true, "" // leader not in the directory yet: Raft forwards proposals itself
	}
	if forwarded {
		// A node without a replica does not guess further: the node that
		// forwarded here tries another one.
		return false, ""
	}
	if p := h.getRoute(shard); p != "" && attempt%2 == 0 {
		return false, p
	}
	var peers []string
	for _, m := range h.cfg.Directory.Members() {
		if m.Name != h.cfg.NodeName && m.Alive && m.ReplicaID != 0 && m.PeerAddress != "" {
			peers = append(peers, m.PeerAddress)
		}
	}
	if len(peers) == 0 {
		return false, ""
	}
	return false, peers[(int(shard)+attempt)%len(peers)]
}

func (h *Host) getRoute(shard uint64) string {
	h.routes.Lock()
	defer h.routes.Unlock()
	return h.routes.m[shard]
}

func (h *Host) setRoute(shard uint64, peer string) {
	h.routes.Lock()
	defer h.routes.Unlock()
	if peer == "" {
		delete(h.routes.m, shard)
	} else {
		h.routes.m[shard] = peer
	}
}

// localCommand runs the command path on this node's replica: read the
// entity linearizably, run the handler, propose its events with the
// expected sequence number, and re-run on a conflict.
func (h *Host) localCommand(ctx context.Context, shard uint64, req *consensuspb.CommandRequest) (*consensuspb.CommandResponse, error) {
	e := entityOf(req.Entity)
	handler, ok := h.cfg.Handlers[e.Type]
	if !ok {
		return nil, wrapf(ErrNoHandler, "%q", e.Type)
	}
	mu := &h.locks[lockIndex(e)]
	mu.Lock()
	defer mu.Unlock()
	// The first attempt runs on state that may be stale: the state this
	// node kept from the entity's last command, else the local replica's
	// applied state (no Raft round). On the leader both are nearly always
	// current, and the proposal's expected sequence number catches the
	// rare stale one. Later attempts, and replies without events, use a
	// linearizable read.
	fresh := false
	for range maxConflictRetries {
		state, cached := h.cache.get(e)
		if fresh || !cached {
			q := loadQuery{entity: e, requestID: req.RequestId}
			var r any
			var err error
			if fresh {
				r, err = h.read(ctx, shard, q)
			} else {
				r, err = h.staleRead(shard, q)
			}
			if err != nil {
				return nil, err
			}
			lr := r.(loadResult)
			if lr.prior != nil {
				// Applied before: its recorded result is final.
				h.met.duplicates.Inc()
				return &consensuspb.CommandResponse{Seq: lr.prior.Seq, Reply: lr.prior.Reply}, nil
			}
			state = lr.state
		}
		unverified := !fresh // state not known to be current
		fresh = true         // any further attempt reads linearizably
		eff, err := handler.Handle(ctx, Command{Entity: e, State: state, Payload: req.Command})
		if err != nil {
			if unverified {
				// The handler may have refused stale state: decide on
				// fresh state before failing the command.
				h.cache.drop(e)
				continue
			}
			return nil, NewRejection(err)
		}
		if len(eff.Events) == 0 && !eff.HasSnapshot {
			if unverified {
				// A reply without events is only as fresh as the state it
				// read, which may be stale: read linearizably.
				h.cache.drop(e)
				continue
			}
			// Nothing to persist: the reply reflects a linearizable read,
			// so it needs no Raft round of its own.
			return &consensuspb.CommandResponse{Seq: state.Seq, Reply: eff.Reply}, nil
		}
		entry := &consensuspb.Entry{RequestId: req.RequestId, Entity: req.Entity,
			Op: &consensuspb.Entry_Append{Append: &consensuspb.Append{ExpectedSeq: state.Seq,
				Events: eff.Events, HasSnapshot: eff.HasSnapshot, Snapshot: eff.Snapshot, Reply: eff.Reply}}}
		res, err := h.propose(ctx, shard, entry)
		if err != nil {
			h.cache.drop(e)
			return nil, err
		}
		switch res.Code {
		case consensuspb.Code_CODE_OK:
			if res.Duplicate {
				h.met.duplicates.Inc()
				h.cache.drop(e)
			} else {
				h.cache.advance(e, state, eff.Events, eff.HasSnapshot, eff.Snapshot)
			}
			return &consensuspb.CommandResponse{Seq: res.Seq, Reply: res.Reply}, nil
		case consensuspb.Code_CODE_CONFLICT:
			h.met.conflicts.Inc()
			h.cache.drop(e)
			continue
		default:
			h.cache.drop(e)
			return nil, errorOf(res.Code, res.Message)
		}
	}
	return nil, wrapf(ErrConflict, "entity %s/%s changed under %d attempts", e.Type, e.ID, maxConflictRetries)
}

func (h *Host) localValue(ctx context.Context, shard uint64, e Entity, req *consensuspb.ValueRequest) (*consensuspb.ValueResponse, error) {
	if req.Op == consensuspb.ValueRequest_OP_GET {
		r, err := h.read(ctx, shard, valueQuery{entity: e})
		if err != nil {
			return nil, err
		}
		vr := r.(valueResult)
		return &consensuspb.ValueResponse{Found: vr.found, Deleted: vr.value.Deleted,
			Version: vr.value.Version, State: vr.value.State}, nil
	}
	entry := &consensuspb.Entry{RequestId: req.RequestId, Entity: req.Entity}
	switch req.Op {
	case consensuspb.ValueRequest_OP_PUT:
		entry.Op = &consensuspb.Entry_PutValue{PutValue: &consensuspb.PutValue{
			CheckVersion: req.CheckVersion, ExpectedVersion: req.ExpectedVersion, State: req.State}}
	case consensuspb.ValueRequest_OP_DELETE:
		entry.Op = &consensuspb.Entry_DeleteValue{DeleteValue: &consensuspb.DeleteValue{
			CheckVersion: req.CheckVersion, ExpectedVersion: req.ExpectedVersion}}
	default:
		return nil, wrapf(ErrInvalid, "unknown value operation %d", req.Op)
	}
	res, err := h.propose(ctx, shard, entry)
	if err != nil {
		return nil, err
	}
	if res.Code != consensuspb.Code_CODE_OK {
		return &consensuspb.ValueResponse{Version: res.Seq}, errorOf(res.Code, res.Message)
	}
	return &consensuspb.ValueResponse{Found: true, Version: res.Seq, Deleted: req.Op == consensuspb.ValueRequest_OP_DELETE}, nil
}

// opContext bounds one Raft round by OpTimeout within the caller's
// deadline.
func (h *Host) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, h.cfg.OpTimeout)
}

// read runs a linearizable read (ReadIndex, then Lookup) on the local
// replica. A read changes nothing, so every failure is "not applied".
func (h *Host) read(ctx context.Context, shard uint64, q any) (any, error) {
	rctx, cancel := h.opContext(ctx)
	defer cancel()
	start := time.Now()
	r, err := h.nh.SyncRead(rctx, shard, q)
	h.met.readSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		if errors.Is(err, eventlog.ErrCorrupt) {
			return nil, err
		}
		c := classify(err)
		if c == ErrTimeout {
			c = ErrUnavailable // a read changes nothing: its outcome is never unknown
		}
		return nil, wrapf(c, "shard %d read: %v", shard, err)
	}
	return r, nil
}

// staleRead looks a query up on the local replica's applied state, with
// no Raft round: the result may lag the leader.
func (h *Host) staleRead(shard uint64, q any) (any, error) {
	r, err := h.nh.StaleRead(shard, q)
	if err != nil {
		if errors.Is(err, eventlog.ErrCorrupt) {
			return nil, err
		}
		return nil, wrapf(ErrUnavailable, "shard %d local read: %v", shard, err)
	}
	return r, nil
}

// propose proposes an entry on the local replica, batched with the
// shard's other operations under load (proposer), and returns the state
// machine's result.
func (h *Host) propose(ctx context.Context, shard uint64, entry *consensuspb.Entry) (*consensuspb.Result, error) {
	b, err := proto.Marshal(entry)
	if err != nil {
		return nil, wrapf(ErrInvalid, "%v", err)
	}
	if len(b) > MaxEntryBytes {
		return nil, wrapf(ErrInvalid, "entry of %d bytes exceeds %d", len(b), MaxEntryBytes)
	}
	pctx, cancel := h.opContext(ctx)
	defer cancel()
	return h.proposers[shard-1].submit(pctx, b)
}

// classify maps a Dragonboat error to a sentinel: ErrUnavailable for
// errors raised before the request entered the Raft log (it was not
// applied), ErrClosed when the node host is closing, and ErrTimeout for
// everything else (the entry may be in the log and applied later).
func classify(err error) error {
	switch {
	case errors.Is(err, dragonboat.ErrShardNotReady),
		errors.Is(err, dragonboat.ErrSystemBusy),
		errors.Is(err, dragonboat.ErrShardNotFound),
		errors.Is(err, dragonboat.ErrShardNotInitialized),
		errors.Is(err, dragonboat.ErrPayloadTooBig),
		errors.Is(err, dragonboat.ErrTimeoutTooSmall),
		errors.Is(err, dragonboat.ErrInvalidDeadline),
		errors.Is(err, dragonboat.ErrDeadlineNotSet):
		return ErrUnavailable
	case errors.Is(err, dragonboat.ErrClosed):
		return ErrClosed
	default:
		return ErrTimeout
	}
}

// lockStripes is the number of entity lock stripes per Host.
const lockStripes = 4096

func lockIndex(e Entity) int {
	h := fnv.New32a()
	h.Write([]byte(e.Type))
	h.Write([]byte{0})
	h.Write([]byte(e.ID))
	return int(h.Sum32() % lockStripes)
}
