package consensus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// TestProposerTakeBounds: a batch takes operations in arrival order, at
// most MaxBatchEntries of them and no more bytes than batchBytes, but
// always at least one.
func TestProposerTakeBounds(t *testing.T) {
	q := newProposer(nil, 1)
	add := func(n, size int) {
		for range n {
			q.queue = append(q.queue, &proposal{data: make([]byte, size), done: make(chan struct{})})
		}
	}
	add(MaxBatchEntries+5, 10)
	first := q.queue[0]
	if b := q.takeLocked(); len(b) != MaxBatchEntries || b[0] != first || !b[0].taken {
		t.Fatalf("took %d (first in order: %v), want %d", len(b), b[0] == first, MaxBatchEntries)
	}
	if b := q.takeLocked(); len(b) != 5 || len(q.queue) != 0 {
		t.Fatalf("took %d leaving %d, want 5 leaving 0", len(b), len(q.queue))
	}
	add(3, MaxEntryBytes/3)
	if b := q.takeLocked(); len(b) != 2 {
		t.Fatalf("took %d operations of a third of MaxEntryBytes each, want 2", len(b))
	}
	q.queue = nil
	add(2, batchBytes) // each one alone fills a batch
	if b := q.takeLocked(); len(b) != 1 {
		t.Fatalf("took %d full-size operations, want 1", len(b))
	}
}

// TestProposerCancelledOperation: an operation whose caller gives up
// while it waits in the queue leaves the queue and was not applied
// (ErrUnavailable); one already taken into a proposal has an unknown
// outcome (ErrTimeout).
func TestProposerCancelledOperation(t *testing.T) {
	q := newProposer(nil, 1)
	q.inFlight = maxProposalsInFlight // every slot busy: operations queue

	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	cancel()
	if _, err := q.submit(ctx, []byte("x")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("cancelled while queued: %v, want ErrUnavailable", err)
	}
	if len(q.queue) != 0 {
		t.Fatalf("%d operations left in the queue", len(q.queue))
	}

	ctx, cancel = context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := q.submit(ctx, []byte("y"))
		errc <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		q.mu.Lock()
		if len(q.queue) == 1 {
			q.takeLocked() // as a proposal starting now would
			q.mu.Unlock()
			break
		}
		q.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("the operation never queued")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-errc; !errors.Is(err, ErrTimeout) {
		t.Fatalf("cancelled while proposed: %v, want ErrTimeout", err)
	}
}

// TestConcurrentCommandsBatched runs many concurrent commands on one
// shard's leader: operations that queue behind proposals in flight are
// proposed together, and every command is still applied exactly once,
// in its entity's order, on every replica.
func TestConcurrentCommandsBatched(t *testing.T) {
	c := newCluster(t, 3, 1, map[string]Handler{"log": appendHandler})
	ctx := ctxT(t, 60*time.Second)
	const entities, perEntity = 48, 8
	leader := c.leaderOf(Entity{Type: "log", ID: "e0"})
	var wg sync.WaitGroup
	errs := make(chan error, entities)
	for i := range entities {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := Entity{Type: "log", ID: fmt.Sprintf("e%d", i)}
			for j := range perEntity {
				r, err := leader.h.Command(ctx, e, fmt.Appendf(nil, "%d-%d", i, j), nil)
				if err != nil {
					errs <- fmt.Errorf("%s command %d: %w", e.ID, j, err)
					return
				}
				if r.Seq != uint64(j+1) {
					errs <- fmt.Errorf("%s command %d: seq %d", e.ID, j, r.Seq)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var m dto.Metric
	if err := leader.h.met.proposalOps.Write(&m); err != nil {
		t.Fatal(err)
	}
	proposals, ops := m.Histogram.GetSampleCount(), m.Histogram.GetSampleSum()
	if ops != entities*perEntity || proposals >= uint64(ops) {
		t.Fatalf("%d operations in %d proposals: want %d operations, batched", uint64(ops), proposals, entities*perEntity)
	}
	t.Logf("%d operations in %d proposals", uint64(ops), proposals)
	for i := range entities {
		var want [][]byte
		for j := range perEntity {
			want = append(want, fmt.Appendf(nil, "%d-%d", i, j))
		}
		c.checkReplicasAgree(Entity{Type: "log", ID: fmt.Sprintf("e%d", i)}, want)
	}
}
