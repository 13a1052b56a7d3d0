package jepsen

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/statemesh/statemesh/mesh"
)

// NodeInfo is how the harness reaches one node.
type NodeInfo struct {
	Name   string `json:"name"`
	Region string `json:"region"`
	// HTTP is the base URL of the node's HTTP/JSON API (the example
	// contract), e.g. "http://127.0.0.1:7951".
	HTTP string `json:"http"`
}

// Caps are the faults a backend can inject.
type Caps struct {
	Partition  bool // cut links between nodes
	Kill       bool // kill -9 and restart
	Pause      bool // SIGSTOP / SIGCONT
	ClockSkew  bool // offset a node's physical clock
	LinkFaults bool // message delay and loss
	Loss       bool // message loss only (LinkFaults implies it)
}

// Cluster is a running statemesh cluster under test: the nodes, each
// fronting the example functions, and the faults the harness can inject.
// Methods are safe to call from the nemesis and the final phase; the
// clients only use Nodes and HTTPClient.
type Cluster interface {
	Backend() string
	Nodes() []NodeInfo
	Caps() Caps
	// HTTPClient reaches the nodes' HTTP API (through the test's network
	// namespace on the netns backend). Per-request timeouts come from the
	// caller's context.
	HTTPClient() *http.Client
	// Cut cuts the links between each pair, both ways; Heal restores every
	// link (and clears link faults).
	Cut(pairs [][2]string) error
	Heal() error
	// Kill stops a node as kill -9 does; Restart starts it again on the same
	// data directory and waits until it serves.
	Kill(ctx context.Context, name string) error
	Restart(ctx context.Context, name string) error
	Pause(name string) error
	Resume(name string) error
	// SetClockOffset shifts a node's physical clock (0 restores it).
	SetClockOffset(ctx context.Context, name string, d time.Duration) error
	// SetLinkFaults delays every message by [0, delay] and drops a fraction
	// loss of them, on every link.
	SetLinkFaults(delay time.Duration, loss float64) error
	// Close stops every node and removes what the cluster created (except
	// the logs in the run directory).
	Close() error
}

// ErrUnsupported is returned for a fault the backend cannot inject.
var ErrUnsupported = errors.New("jepsen: not supported by this backend")

func unsupported(backend, what, hint string) error {
	return fmt.Errorf("%w: the %s backend cannot %s (%s)", ErrUnsupported, backend, what, hint)
}

// ClusterConfig is what every backend needs.
type ClusterConfig struct {
	// Nodes is the number of nodes (3 or 5 is usual). Regions are
	// assigned round-robin from Regions.
	Nodes   int
	Regions []string
	// Dir is the run directory: node data in Dir/data, logs in Dir/logs.
	Dir string
	// Sync makes CRDT writes acknowledged only after fsync (the
	// durability workload).
	Sync bool
	// Binary is the statemesh executable for process backends.
	Binary string
	// Progress receives one line per start-up step.
	Progress func(format string, a ...any)
}

func (c ClusterConfig) region(i int) string {
	if len(c.Regions) == 0 {
		return "default"
	}
	return c.Regions[i%len(c.Regions)]
}

// durability is the nodes' durability: sync (ClusterConfig.Sync) or
// write-behind.
func durability(sync bool) mesh.Durability {
	if sync {
		return mesh.Sync
	}
	return mesh.WriteBehind
}

func nodeName(i int) string { return fmt.Sprintf("n%d", i+1) }

// waitHTTP polls a node's HTTP API until it answers (any status: the
// proxy is serving), or ctx ends.
func waitHTTP(ctx context.Context, c *http.Client, base string) error {
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, base+"/counters/jepsen-probe", nil)
		resp, err := c.Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 500 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("status %s", resp.Status)
			}
			return fmt.Errorf("jepsen: %s not serving: %w", base, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// BackendCaps are the faults a backend can inject, without starting it.
func BackendCaps(backend string) (Caps, error) {
	switch backend {
	case "sim":
		return (&simCluster{}).Caps(), nil
	case "local":
		return localEnv{}.caps(), nil
	case "netns":
		return (&netnsEnv{}).caps(), nil
	}
	return Caps{}, fmt.Errorf("jepsen: unknown backend %q (sim, local or netns)", backend)
}
