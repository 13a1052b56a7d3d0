package tck

import (
	"context"
	"flag"
	"net"
	"slices"
	"testing"

	"github.com/statemesh/statemesh/tck/gomodel"
)

var functionAddr = flag.String("tck.function", "",
	"host:port of a function implementing protocol/tck/v1/tck.proto to run the TCK against (default: start the Go SDK's model)")

// startGoModel serves the Go SDK's model on a loopback port until the test
// ends.
func startGoModel(t *testing.T, opts ...gomodel.Option) string {
	t.Helper()
	svc, err := gomodel.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Serve(lis) }()
	t.Cleanup(func() {
		svc.Stop()
		if err := <-done; err != nil {
			t.Errorf("gomodel: Serve: %v", err)
		}
	})
	return lis.Addr().String()
}

// TestTCK runs the suite against -tck.function, or against the Go SDK.
func TestTCK(t *testing.T) {
	addr := *functionAddr
	if addr == "" {
		addr = startGoModel(t)
	}
	Run(t, addr)
}

// expectedSkips are the checks the Go SDK skips: none, it declares every
// optional model service (ORMapTck, VoteTck, StreamedActionTck,
// StreamedInActionTck, BidiActionTck).
var expectedSkips []string

// results runs the suite and returns the check names by status; it logs
// the failures when the test fails.
func results(t *testing.T, addr string) map[Status][]string {
	t.Helper()
	rs, err := Results(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != len(Checks()) {
		t.Fatalf("%d results for %d checks", len(rs), len(Checks()))
	}
	by := make(map[Status][]string)
	for _, r := range rs {
		by[r.Status] = append(by[r.Status], r.Name)
		if r.Status == Fail {
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("%s: %s: %v", r.Status, r.Name, r.Messages)
				}
			})
		}
	}
	return by
}

// TestGoSDKSkipsOnlyWhatItLacks pins the Go SDK's skips: a check that
// starts skipping (or a missing entity that stops being reported as one)
// shows up here.
func TestGoSDKSkipsOnlyWhatItLacks(t *testing.T) {
	if *functionAddr != "" {
		t.Skip("-tck.function set")
	}
	by := results(t, startGoModel(t))
	if len(by[Fail]) > 0 {
		t.Errorf("failed: %v", by[Fail])
	}
	if !slices.Equal(by[Skip], expectedSkips) {
		t.Errorf("skipped %v, want %v", by[Skip], expectedSkips)
	}
}

// TestChecksCatchFaults runs the suite against deliberately broken models:
// exactly the checks that cover each fault must fail.
func TestChecksCatchFaults(t *testing.T) {
	if *functionAddr != "" {
		t.Skip("-tck.function set")
	}
	for _, tc := range []struct {
		fault gomodel.Fault
		fail  []string
	}{
		{gomodel.FaultDoubleIncrement, []string{
			"crdt/pncounter/operations-produce-deltas",
			"crdt/write-consistency",
			"crdt/forward",
			"crdt/side-effects",
			"crdt/bad-command-fails-only-that-command",
			"crdt/streamed/own-commands-changes",
		}},
		{gomodel.FaultStreamNeverEnds, []string{"crdt/streamed/changes-from-other-replicas"}},
		{gomodel.FaultConsistencyAll, []string{"crdt/write-consistency"}},
		{gomodel.FaultNoSnapshot, []string{"eventsourced/snapshot"}},
		{gomodel.FaultSinkReplyWrongID, []string{"action/sink"}},
		{gomodel.FaultStreamedOutShort, []string{"action/streamed-out"}},
		{gomodel.FaultStreamedInDropFirst, []string{"action/streamed-in"}},
		{gomodel.FaultStreamedWrongEcho, []string{"action/streamed", "action/streamed-failure"}},
		{gomodel.FaultNoFlag, []string{
			"discovery/entities",
			"crdt/flag/init-state", "crdt/flag/operations-produce-deltas", "crdt/flag/delta-from-other-replica", "crdt/flag/delete",
		}},
	} {
		t.Run(string(tc.fault), func(t *testing.T) {
			by := results(t, startGoModel(t, gomodel.WithFault(tc.fault)))
			if !slices.Equal(by[Fail], tc.fail) {
				t.Errorf("failed checks %v, want exactly %v", by[Fail], tc.fail)
			}
		})
	}
}

// TestUnreachableFunctionFailsEveryCheck: a suite pointed at nothing fails
// (or skips nothing silently): every check reports a failure.
func TestUnreachableFunctionFailsEveryCheck(t *testing.T) {
	if *functionAddr != "" {
		t.Skip("-tck.function set")
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	by := results(t, addr)
	if len(by[Pass])+len(by[Skip]) > 0 {
		t.Errorf("against no function: passed %v, skipped %v", by[Pass], by[Skip])
	}
}
