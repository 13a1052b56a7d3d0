package consensus

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestClaimFirstWriterWins: claims from every node at once agree on one
// winner, which is one of the claimants, and later claims return it.
func TestClaimFirstWriterWins(t *testing.T) {
	c := newCluster(t, 3, 2, nil)
	ctx := ctxT(t, 20*time.Second)
	e := Entity{Type: "claim", ID: "x"}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins = map[string]int{}
	)
	for i, n := range c.nodes {
		for j := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got, err := n.h.Claim(ctx, e, fmt.Appendf(nil, "node%d.%d", i, j), nil)
				if err != nil {
					t.Errorf("claim: %v", err)
					return
				}
				mu.Lock()
				wins[string(got)]++
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	if len(wins) != 1 {
		t.Fatalf("claims disagree: %v", wins)
	}
	var winner string
	for w := range wins {
		winner = w
	}
	if got, err := c.nodes[1].h.Claim(ctx, e, []byte("late"), nil); err != nil || string(got) != winner {
		t.Fatalf("a later claim: %q, %v; want %q", got, err, winner)
	}
	// Taking over from someone else than the holder changes nothing;
	// taking over from the holder does.
	if got, err := c.nodes[1].h.Claim(ctx, e, []byte("late"), []byte("nobody")); err != nil || string(got) != winner {
		t.Fatalf("a takeover from a non-holder: %q, %v; want %q", got, err, winner)
	}
	if got, err := c.nodes[1].h.Claim(ctx, e, []byte("heir"), []byte(winner)); err != nil || string(got) != "heir" {
		t.Fatalf("a takeover from the holder: %q, %v", got, err)
	}
	// A deleted claim is free again.
	v, _, err := c.nodes[0].h.GetValue(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.nodes[0].h.DeleteValue(ctx, e, v.Version); err != nil {
		t.Fatal(err)
	}
	if got, err := c.nodes[2].h.Claim(ctx, e, []byte("again"), nil); err != nil || string(got) != "again" {
		t.Fatalf("claim after delete: %q, %v", got, err)
	}
}
