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
// Raft. The goroutine whose operation finds a free slot proposes
// everything queued so far and waits for it; a proposal that completes
// with more queued starts the next one.
type proposer struct {
	h     *Host
	shard uint64

	mu       sync.Mutex
	queue    []*proposal
	inFlight int
}

// proposal is one operation waiting for its result.
type proposal struct {
	data  []byte // the encoded Entry
	taken bool   // in a proposal already (guarded by proposer.mu)
	done  chan struct{}
	res   *consensuspb.Result
	err   error
}

func newProposer(h *Host, shard uint64) *proposer {
	return &proposer{h: h, shard: shard}
}

// submit proposes an encoded Entry (at most MaxEntryBytes) and returns
// the state machine's result for it. Errors are classified as for a
// single proposal: ErrUnavailable (not applied), ErrTimeout (unknown),
// ErrClosed. The caller must hold Host.enter.
func (q *proposer) submit(ctx context.Context, data []byte) (*consensuspb.Result, error) {
	p := &proposal{data: data, done: make(chan struct{})}
	q.mu.Lock()
	q.queue = append(q.queue, p)
	var batch []*proposal
	if q.inFlight < maxProposalsInFlight {
		q.inFlight++
		batch = q.takeLocked()
	}
	q.mu.Unlock()
	if batch != nil {
		q.run(batch)
	}
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

// run proposes a batch and hands each operation its result, then starts
// the next proposal if operations queued meanwhile, else frees the slot.
func (q *proposer) run(batch []*proposal) {
	q.propose(batch)
	q.mu.Lock()
	if len(q.queue) == 0 {
		q.inFlight--
		q.mu.Unlock()
		return
	}
	next := q.takeLocked()
	q.mu.Unlock()
	// The Host's wait group still counts this goroutine's operation (or
	// the goroutine that started it), so Add cannot race Close's Wait.
	q.h.wg.Add(1)
	go func() {
		defer q.h.wg.Done()
		q.run(next)
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
	h := q.h
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.OpTimeout)
	defer cancel()
	start := time.Now()
	r, err := h.nh.SyncPropose(ctx, h.nh.GetNoOPSession(q.shard), data)
	h.met.proposeSeconds.Observe(time.Since(start).Seconds())
	h.met.batchEntries.Observe(float64(len(batch)))
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
