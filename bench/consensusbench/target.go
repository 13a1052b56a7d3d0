// Package consensusbench is the load generator and the etcd baseline of
// `statemesh bench consensus`: replicated, acknowledged writes of small
// values to many keys on 3 nodes on loopback, with 1, 16 and 128
// concurrent clients, measured for statemesh and, in the same run and on
// the same machine, for a 3-member etcd cluster.
//
// The load generator (Run, RunPlan) only knows a Target: one write,
// acknowledged; with Plan.PauseIdle, RunPlan also stops the targets that
// run as processes (Pausable) while another one is measured. etcd is
// driven as child processes through its gRPC API with hand-encoded
// requests (etcd.go), so none of etcd's Go modules become dependencies
// of ours. The report (report.go) quotes medians over rounds and the
// ratios statemesh / etcd.
package consensusbench

import (
	"context"
	"errors"
	"fmt"
	"syscall"
)

// Target is one system under test.
type Target interface {
	Name() string
	// Write performs one write of value to key, as client number `client` (0..clients-1); it returns when the write is acknowledged (durable and replicated per the system's contract).
	//
	// Write is called concurrently for different clients, never
	// concurrently for the same client. It must not keep value after it
	// returns: the load generator reuses the buffer.
	Write(ctx context.Context, client int, key string, value []byte) error
	Close() error
}

// System names the report compares.
const (
	SystemStatemesh = "statemesh"
	SystemEtcd      = "etcd"
)

// Pausable is a Target that runs as processes of its own, which RunPlan
// (with Plan.PauseIdle) stops while another target is measured and
// continues before its own runs: an idle cluster still ticks, heartbeats
// and compacts, and on a small machine that CPU would be taken from the
// measured one.
type Pausable interface {
	Target
	// Pause stops the target's processes (SIGSTOP to their groups).
	Pause() error
	// Resume continues them (SIGCONT).
	Resume() error
}

var (
	_ Pausable = (*StatemeshCluster)(nil)
	_ Pausable = (*EtcdCluster)(nil)
)

func (c *StatemeshCluster) Pause() error  { return signalGroups(c.pids(), syscall.SIGSTOP) }
func (c *StatemeshCluster) Resume() error { return signalGroups(c.pids(), syscall.SIGCONT) }
func (c *EtcdCluster) Pause() error       { return signalGroups(c.pids(), syscall.SIGSTOP) }
func (c *EtcdCluster) Resume() error      { return signalGroups(c.pids(), syscall.SIGCONT) }

// signalGroups sends sig to the process group each pid leads (every
// member runs in a group of its own: sysProcAttr). A group that has
// exited is skipped.
func signalGroups(pids []int, sig syscall.Signal) error {
	var errs []error
	for _, pid := range pids {
		if err := killGroup(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("consensusbench: signal %v to process group %d: %w", sig, pid, err))
		}
	}
	return errors.Join(errs...)
}
