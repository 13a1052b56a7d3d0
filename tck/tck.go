// Package tck is the statemesh Technology Compatibility Kit: a conformance
// suite for SDKs of the function protocol (protocol/function/v1).
//
// The suite plays the proxy. It dials a user function that implements the
// TCK model services (protocol/tck/v1/tck.proto), discovers it, opens
// entity streams and calls actions exactly as a statemesh proxy would, and
// checks every message the function sends back: discovery, each CRDT
// type's deltas and the changes it receives from other replicas, delete,
// streamed commands and their cancellation, event-sourced replay and
// snapshots, failures that persist nothing, forwards, side effects, write
// consistency, value entities and actions.
//
// Run runs the suite as subtests of a Go test; Results runs it and returns
// one Result per check, for tools (and for the suite's own tests, which run
// it against deliberately broken models). See README.md for how another
// language's SDK runs it.
package tck

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/statemesh/statemesh/protocol/functionpb"
)

// CheckTimeout bounds each check: a function that never answers fails the
// check instead of hanging the suite.
const CheckTimeout = 10 * time.Second

// Status is the outcome of one check.
type Status int

const (
	Pass Status = iota
	Fail
	// Skip: the check needs an optional model service (ORMapTck, VoteTck,
	// StreamedActionTck, StreamedInActionTck, BidiActionTck) that the
	// function does not declare.
	Skip
)

func (s Status) String() string {
	switch s {
	case Pass:
		return "PASS"
	case Fail:
		return "FAIL"
	case Skip:
		return "SKIP"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Result is the outcome of one named check.
type Result struct {
	Name   string
	Status Status
	// Messages: what went wrong (Fail) or why it was skipped (Skip).
	Messages []string
}

// check is one conformance check.
type check struct {
	name string
	run  func(c *checker)
}

// Checks returns the names of the suite's checks, in the order they run.
func Checks() []string {
	all := allChecks()
	names := make([]string, 0, len(all))
	for _, ch := range all {
		names = append(names, ch.name)
	}
	return names
}

func allChecks() []check {
	var all []check
	all = append(all, discoveryChecks()...)
	all = append(all, crdtChecks()...)
	all = append(all, eventSourcedChecks()...)
	all = append(all, valueChecks()...)
	all = append(all, actionChecks()...)
	return all
}

// Results runs every check against the function at functionAddr
// (host:port, plaintext gRPC) and returns their results in order.
func Results(ctx context.Context, functionAddr string) ([]Result, error) {
	s, err := newSuite(functionAddr)
	if err != nil {
		return nil, err
	}
	defer s.close()
	var out []Result
	for _, ch := range allChecks() {
		out = append(out, s.run(ctx, ch))
	}
	return out, nil
}

// Run runs every check against the function at functionAddr as a subtest
// of t, named after the check: a failed check fails its subtest, a
// skipped one skips it.
func Run(t *testing.T, functionAddr string) {
	t.Helper()
	s, err := newSuite(functionAddr)
	if err != nil {
		t.Fatalf("tck: %v", err)
	}
	t.Cleanup(s.close)
	for _, ch := range allChecks() {
		t.Run(ch.name, func(t *testing.T) {
			r := s.run(t.Context(), ch)
			switch r.Status {
			case Fail:
				for _, m := range r.Messages {
					t.Error(m)
				}
			case Skip:
				t.Skip(strings.Join(r.Messages, "; "))
			}
		})
	}
}

// suite is one run: a connection to the function and what discovery found.
type suite struct {
	conn         *grpc.ClientConn
	discovery    functionpb.DiscoveryClient
	crdt         functionpb.CrdtClient
	eventSourced functionpb.EventSourcedClient
	value        functionpb.ValueEntityClient
	action       functionpb.ActionProtocolClient

	ids atomic.Int64 // entity ids, unique within the run

	discoverOnce sync.Once
	spec         *discovered
	specErr      error
}

func newSuite(addr string) (*suite, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("tck: dialling the function at %s: %w", addr, err)
	}
	return &suite{
		conn:         conn,
		discovery:    functionpb.NewDiscoveryClient(conn),
		crdt:         functionpb.NewCrdtClient(conn),
		eventSourced: functionpb.NewEventSourcedClient(conn),
		value:        functionpb.NewValueEntityClient(conn),
		action:       functionpb.NewActionProtocolClient(conn),
	}, nil
}

func (s *suite) close() { s.conn.Close() }

// stopCheck unwinds a check after fatalf or skipf.
type stopCheck struct{}

func (s *suite) run(ctx context.Context, ch check) (r Result) {
	r.Name = ch.name
	ctx, cancel := context.WithTimeout(ctx, CheckTimeout)
	defer cancel() // also ends the check's streams
	c := &checker{ctx: ctx, s: s}
	defer func() {
		if p := recover(); p != nil {
			if _, ok := p.(stopCheck); !ok {
				c.errs = append(c.errs, fmt.Sprintf("tck: check panicked: %v", p))
			}
		}
		switch {
		case len(c.errs) > 0:
			r.Status, r.Messages = Fail, c.errs
		case c.skip != "":
			r.Status, r.Messages = Skip, []string{c.skip}
		default:
			r.Status = Pass
		}
	}()
	ch.run(c)
	return r
}

// checker is what a check gets: the suite, a context, and assertions.
type checker struct {
	ctx  context.Context
	s    *suite
	errs []string
	skip string
}

func (c *checker) errorf(format string, args ...any) {
	c.errs = append(c.errs, fmt.Sprintf(format, args...))
}

func (c *checker) fatalf(format string, args ...any) {
	c.errorf(format, args...)
	panic(stopCheck{})
}

func (c *checker) skipf(format string, args ...any) {
	c.skip = fmt.Sprintf(format, args...)
	panic(stopCheck{})
}

// entityID returns a fresh entity id.
func (c *checker) entityID() string {
	return fmt.Sprintf("tck-%d", c.s.ids.Add(1))
}
