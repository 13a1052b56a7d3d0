//go:build jepsen_broken_ack

package jepsen

import (
	"testing"

	"github.com/statemesh/statemesh/jepsen/check"
)

// TestBrokenAckIsCaught proves the durability checker can fail: built with
// -tags jepsen_broken_ack, sync durability acknowledges CRDT writes before
// they are on disk, and killing every node must lose some of them.
// make test runs it (go test -tags jepsen_broken_ack -run TestBroken).
func TestBrokenAckIsCaught(t *testing.T) {
	out := simRun(t, WorkloadDurability)
	if out.Valid != check.Invalid {
		t.Fatalf("a build that acknowledges before persisting passed the durability check: %s %+v", out.Valid, out.Results)
	}
	t.Logf("caught: %s", out.Results[0].Summary)
}
