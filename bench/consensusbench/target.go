// Package consensusbench is the load generator and the etcd baseline of
// `statemesh bench consensus`: replicated, acknowledged writes of small
// values to many keys on 3 nodes on loopback, with 1, 16 and 128
// concurrent clients, measured for statemesh and, in the same run and on
// the same machine, for a 3-member etcd cluster.
//
// The load generator (Run, RunPlan) only knows a Target: one write,
// acknowledged. etcd is driven as child processes through its gRPC API with
// hand-encoded requests (etcd.go), so none of etcd's Go modules become
// dependencies of ours. The report (report.go) quotes medians over rounds
// and the ratios statemesh / etcd.
package consensusbench

import "context"

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
