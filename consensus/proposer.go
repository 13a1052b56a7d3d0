package consensus

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/statemesh/statemesh/protocol/consensuspb"
)

// maxProposalsInFlight bounds the Raft proposals one shard's proposer has
// outstanding. Operations that arrive while that many are in flight queue
// up and go into the next proposal together, as one batch entry: under
// load the Raft round, the log write, the replication messages and the
// apply transaction are shared by many operations; without load an
// operation is proposed at once, on its own, as before.
const maxProposalsInFlight = 2

// batchBytes bounds the encoded operations of one batch, leaving room
// for the batch's own framing within MaxEntryBytes.
const batchBytes = MaxEntryBytes - 1024

// proposer is one shard's proposal queue on this node: group commit over
// Raft. An operation that finds a free slot starts a proposal of
// everything queued so far; a proposal that completes with more queued
// starts the next one. Each caller waits for its own result or its own
// deadline, whichever comes first.
type proposer struct {
	h     *Host
	shard uint64

	mu       sync.Mutex
	queue    []*proposal
	inFlight int
}

// proposal is one operation waiting for its result.
type proposal struct {
	data     []byte    // the encoded Entry
	deadline time.Time // the caller's
	taken    bool      // in a proposal already (guarded by proposer.mu)
	done     chan struct{}
	res      *consensuspb.Result
	err      error
}

func newProposer(h *Host, shard uint64) *proposer {
	return &proposer{h: h, shard: shard}
}

// submit proposes an encoded Entry (at most MaxEntryBytes) and returns
// the state machine's result for it. Errors are classified as for a
// single proposal: ErrUnavailable (not applied), ErrTimeout (unknown),
// ErrClosed. ctx must have a deadline (Host.opContext gives one); the
// caller must hold Host.enter (the proposal it may start is counted in
// the Host's wait group).
func (q *proposer) submit(ctx context.Context, data []byte) (*consensuspb.Result, error) {
	deadline, _ := ctx.Deadline()
	p := &proposal{data: data, deadline: deadline, done: make(chan struct{})}
	q.mu.Lock()
	q.queue = append(q.queue, p)
	if q.inFlight < maxProposalsInFlight {
		q.inFlight++
		q.start(q.takeLocked())
	}
	q.mu.Unlock()
	select {
	case <-p.done:
		return p.res, p.err
	case <-ctx.Done():
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if !p.taken {
		for i, o := range q.queue {
			if o == p {
				q.queue = append(q.queue[:i], q.queue[i+1:]...)
				break
			}
		}
		return nil, wrapf(ErrUnavailable, "shard %d: %v before it was proposed", q.shard, ctx.Err())
	}
	return nil, wrapf(ErrTimeout, "shard %d propose: %v", q.shard, ctx.Err())
}

// size is what the operation adds to a batch's encoding.
func (p *proposal) size() int {
	return protowire.SizeTag(1) + protowire.SizeBytes(len(p.data))
}

// takeLocked removes from the queue the operations of the next
// proposal: as many as fit one batch, in arrival order.
func (q *proposer) takeLocked() []*proposal {
	n, bytes := 0, 0
	for n < len(q.queue) && n < MaxBatchEntries {
		s := q.queue[n].size()
		if n > 0 && bytes+s > batchBytes {
			break
		}
		bytes += s
		q.queue[n].taken = true
		n++
	}
	batch := append([]*proposal(nil), q.queue[:n]...)
	q.queue = append(q.queue[:0], q.queue[n:]...)
	return batch
}

// start runs a proposal of batch in the background: it hands each
// operation its result, then starts the next proposal if operations
// queued meanwhile, else frees the slot. It is called with q.mu held by a
// caller that holds Host.enter, or by a proposal that is itself counted,
// so the wait group's Add cannot race Close's Wait.
func (q *proposer) start(batch []*proposal) {
	q.h.wg.Add(1)
	go func() {
		defer q.h.wg.Done()
		q.propose(batch)
		q.mu.Lock()
		defer q.mu.Unlock()
		if len(q.queue) == 0 {
			q.inFlight--
			return
		}
		q.start(q.takeLocked())
	}()
}

// propose proposes one entry for the batch (the operation's own entry
// when it is alone) and delivers the results.
func (q *proposer) propose(batch []*proposal) {
	deliver := func(i int, res *consensuspb.Result, err error) {
		batch[i].res, batch[i].err = res, err
		close(batch[i].done)
	}
	fail := func(err error) {
		for i := range batch {
			deliver(i, nil, err)
		}
	}
	data := batch[0].data
	if len(batch) > 1 {
		b := &consensuspb.Batch{Entries: make([][]byte, len(batch))}
		for i, p := range batch {
			b.Entries[i] = p.data
		}
		var err error
		if data, err = proto.Marshal(&consensuspb.Entry{Op: &consensuspb.Entry_Batch{Batch: b}}); err != nil {
			fail(wrapf(ErrInvalid, "%v", err))
			return
		}
	}
	// Within the latest of the callers' deadlines: a caller that gives up
	// earlier stops waiting on its own.
	deadline := batch[0].deadline
	for _, p := range batch[1:] {
		if p.deadline.After(deadline) {
			deadline = p.deadline
		}
	}
	h := q.h
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	r, err := h.nh.SyncPropose(ctx, h.nh.GetNoOPSession(q.shard), data)
	h.met.proposeSeconds.Observe(time.Since(start).Seconds())
	h.met.proposalOps.Observe(float64(len(batch)))
	if err != nil {
		fail(wrapf(classify(err), "shard %d propose: %v", q.shard, err))
		return
	}
	if len(r.Data) == 0 {
		// Applied before this replica recovered from a snapshot that held
		// it: the result is not known here, but a retry with the same
		// request id will return it.
		fail(wrapf(ErrTimeout, "shard %d: result of an entry applied through a snapshot", q.shard))
		return
	}
	res, err := decodeProposalResult(r.Data)
	if err != nil {
		fail(err)
		return
	}
	if len(batch) == 1 {
		deliver(0, res, nil)
		return
	}
	if res.Code != consensuspb.Code_CODE_OK || len(res.Results) != len(batch) {
		fail(fmt.Errorf("consensus: batch of %d applied as code %v with %d results: %s",
			len(batch), res.Code, len(res.Results), res.Message))
		return
	}
	for i, b := range res.Results {
		sub, err := decodeProposalResult(b)
		deliver(i, sub, err)
	}
}

func decodeProposalResult(b []byte) (*consensuspb.Result, error) {
	var res consensuspb.Result
	if err := proto.Unmarshal(b, &res); err != nil {
		return nil, fmt.Errorf("consensus: result does not decode: %w", err)
	}
	return &res, nil
}
