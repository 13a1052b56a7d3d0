package meshbench

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// Env describes a run for the reports.
type Env struct {
	Command string  // the command line
	Machine string  // CPU model, cores, Go version
	Date    string  // UTC date of the run
	WallS   float64 // wall time of the whole run
	// Load is the machine's load average (/proc/loadavg) before the run:
	// other processes compete with the nodes for the CPU.
	Load string
	// Profile, if set, is where a CPU profile of the run was written.
	Profile string
}

func (env Env) header(w io.Writer) {
	fmt.Fprintf(w, "- Command: `%s`\n- Machine: %s\n- Load average before the run: %s\n- Date: %s\n", env.Command, env.Machine, cmpOr(env.Load, "unknown"), env.Date)
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func metText(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}

// WriteConvergenceTable writes the convergence results as an aligned
// text table.
func WriteConvergenceTable(w io.Writer, rs []ConvergenceResult) {
	fmt.Fprintf(w, "%5s %6s %8s %8s %8s %8s %10s %4s %10s %4s %10s %9s %5s %7s %7s\n",
		"nodes", "writes", "p50_ms", "p90_ms", "p99_ms", "max_ms", "p99_target", "met", "p50_target", "met", "B/upd/node", "msg/upd/n", "peers", "dropped", "setup_s")
	for _, r := range rs {
		fmt.Fprintf(w, "%5d %6d %8.1f %8.1f %8.1f %8.1f %10.0f %4s %10.0f %4s %10.1f %9.2f %5.1f %7.0f %7.1f\n",
			r.Nodes, r.Writes, r.P50Ms, r.P90Ms, r.P99Ms, r.MaxMs, r.TargetP99Ms, yesNo(r.P99Met), r.TargetP50Ms, yesNo(r.P50Met),
			r.BytesPerUpdatePerNode, r.MessagesPerUpdatePerNode, r.Peers, r.Dropped, r.SetupS)
	}
}

// WriteConvergenceMarkdown writes the report kept in
// bench/results/convergence.md.
func WriteConvergenceMarkdown(w io.Writer, rs []ConvergenceResult, o ConvergenceOptions, env Env) {
	fmt.Fprintf(w, "# Convergence benchmark: time for a write to reach every node\n\n")
	fmt.Fprintf(w, "N real `mesh.Node`s in one process on loopback (memberlist gossip and the Peer gRPC service on 127.0.0.1, each node with its own in-memory store: %d KiB memtables, %d of them, block cache %d, index cache %d KiB). ",
		o.DB.MemTableSize>>10, o.DB.NumMemtables, o.DB.BlockCacheSize, o.DB.IndexCacheSize>>10)
	fmt.Fprintf(w, "Timing: preset `%s` (gossip and failure detection) with an anti-entropy interval (`TickInterval`) of %s, eager push after `PushDelay` (default 2 ms), 3 neighbours per node, sync mode delta+bp+rr. ", PresetName(o.Preset), o.Tick)
	fmt.Fprintf(w, "Once every node sees every other alive, every node writes %d time(s) unmeasured (a warm-up; it also makes each node known to its neighbours), then come %d measured writes, one at a time: a node (the next in a shuffled order of all nodes) increments one GCounter with a LOCAL `Update`; the latency runs from just before the call until the last node's `Watch` on the key delivers a state holding the write (a write that has not reached every node after %s counts as %s). A random pause of up to half an interval separates writes. ", o.WarmupRounds, o.Writes, o.Timeout, o.Timeout)
	fmt.Fprintf(w, "Bytes and messages are the nodes' `statemesh_mesh_bytes_sent_total` and `statemesh_mesh_messages_sent_total` (summed over peers) from the first measured write until two intervals after the last, divided by the writes and by N: deltas, forwards and acknowledgements; memberlist gossip is not included.\n\n")
	env.header(w)
	fmt.Fprintf(w, "- Wall time: %.1f s (cluster start-up and shutdown included)\n", env.WallS)
	fmt.Fprintf(w, "- Targets: p99 within (⌈log2 N⌉ + 2) anti-entropy intervals; p50 well under one interval (checked as below half an interval, %s)\n", o.Tick/2)
	var bad []string
	for _, r := range rs {
		if !r.P99Met {
			bad = append(bad, fmt.Sprintf("N=%d: p99 %.1f ms, target %.0f ms (%d timeouts)", r.Nodes, r.P99Ms, r.TargetP99Ms, r.Timeouts))
		}
		if !r.P50Met {
			bad = append(bad, fmt.Sprintf("N=%d: p50 %.1f ms, target below %.0f ms", r.Nodes, r.P50Ms, r.TargetP50Ms))
		}
	}
	var warm []string
	for _, r := range rs {
		if r.WarmupTimeouts > 0 {
			warm = append(warm, fmt.Sprintf("N=%d: %d", r.Nodes, r.WarmupTimeouts))
		}
	}
	result := "every target met on the measured writes"
	if len(bad) > 0 {
		result = "NOT met: " + strings.Join(bad, "; ")
	}
	if len(warm) > 0 {
		result += fmt.Sprintf("; but warm-up writes did not all reach every node within %s (%s; see the notes)", o.Timeout, strings.Join(warm, ", "))
	}
	fmt.Fprintf(w, "- Result: %s\n\n", result)
	fmt.Fprintf(w, "| nodes | writes | mean ms | p50 ms | p90 ms | p99 ms | max ms | p99 target ms | p99 met | p50 / interval | bytes / update / node | messages / update / node | peers / node | dropped | full-state transfers | CPU cores | set-up s | heap MiB |\n")
	fmt.Fprintf(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		fmt.Fprintf(w, "| %d | %d | %.1f | %.1f | %.1f | %.1f | %.1f | %.0f | %s | %.2f | %.1f | %.2f | %.1f | %.0f | %.0f | %.2f | %.1f | %.0f |\n",
			r.Nodes, r.Writes, r.MeanMs, r.P50Ms, r.P90Ms, r.P99Ms, r.MaxMs, r.TargetP99Ms, yesNo(r.P99Met), r.P50Ms/r.TickMs,
			r.BytesPerUpdatePerNode, r.MessagesPerUpdatePerNode, r.Peers, r.Dropped, r.FullStateTransfers, r.CPUCores, r.SetupS, r.HeapMiB)
	}
	fmt.Fprintf(w, "\n`p50 / interval`: the median in anti-entropy intervals. `peers / node`: how many peers a node exchanged anti-entropy messages with (its 3 chosen neighbours and the nodes that chose it). `dropped`: messages the nodes did not send during the measured writes (by reason in `--json`). CPU cores: process CPU time / wall time during the measured writes (all N nodes). Heap: the Go heap in use with the whole cluster up.\n")
	var notes []string
	for _, r := range rs {
		if r.WarmupTimeouts > 0 {
			var miss []string
			for _, name := range slices.Sorted(maps.Keys(r.WarmupMissed)) {
				miss = append(miss, fmt.Sprintf("%s missed %d", name, r.WarmupMissed[name]))
			}
			notes = append(notes, fmt.Sprintf("N=%d: %d warm-up writes did not reach every node within %s: %s. A node that misses write after write until its own turn to write was taken as a peer by none of its neighbours: its introduction was lost (a neighbour that does not know the new member yet refuses its Sync stream as not-member, and the engine does not introduce itself again), so it hears nothing until it sends deltas of its own.",
				r.Nodes, r.WarmupTimeouts, o.Timeout, strings.Join(miss, ", ")))
		}
		if r.Timeouts > 0 {
			var miss []string
			for _, name := range slices.Sorted(maps.Keys(r.Missed)) {
				miss = append(miss, fmt.Sprintf("%s missed %d", name, r.Missed[name]))
			}
			notes = append(notes, fmt.Sprintf("N=%d: %d measured writes did not reach every node within %s (counted at %s in the percentiles): %s.",
				r.Nodes, r.Timeouts, o.Timeout, o.Timeout, strings.Join(miss, ", ")))
		}
		if len(r.DroppedBy) > 0 {
			notes = append(notes, fmt.Sprintf("N=%d: messages dropped during the measured writes, by reason: %s.", r.Nodes, formatCounts(r.DroppedBy)))
		}
		if len(r.RefusedBy) > 0 {
			notes = append(notes, fmt.Sprintf("N=%d: peer messages or calls refused since the nodes started, by reason: %s.", r.Nodes, formatCounts(r.RefusedBy)))
		}
	}
	if len(notes) > 0 {
		fmt.Fprintf(w, "\n## Notes\n\n- %s\n", strings.Join(notes, "\n- "))
	}
	if env.Profile != "" {
		fmt.Fprintf(w, "\nCPU profile: `%s` (`go tool pprof -top %s`).\n", env.Profile, env.Profile)
	}
	fmt.Fprintf(w, "\n![latency CDF per cluster size](convergence.svg)\n")
}

// WriteThroughputTable writes throughput runs as an aligned text table,
// one row per offered rate.
func WriteThroughputTable(w io.Writer, rs []ThroughputResult) {
	fmt.Fprintf(w, "%9s %9s %9s %9s %10s %8s %8s %5s %10s %5s\n", "offered/n", "mean/node", "min/node", "total/s", "lag_max", "lag_ms", "agree_ms", "keeps", "B/upd/node", "cpu")
	for _, r := range rs {
		fmt.Fprintf(w, "%9s %9.0f %9.0f %9.0f %10.0f %8.0f %8.0f %5s %10.2f %5.2f\n", offered(r.Rate), r.UpdatesPerSPerNode, r.MinUpdatesPerS, r.TotalUpdatesPerS,
			r.LagMax, r.LagMaxMs, r.AgreeMs, yesNo(r.KeepsUp), r.BytesPerUpdatePerNode, r.CPUCores)
	}
}

func offered(rate float64) string {
	if rate == 0 {
		return "max"
	}
	return fmt.Sprintf("%.0f", rate)
}

// sustained returns the fastest run (by the slowest node) whose
// replication kept up, if any.
func sustained(rs []ThroughputResult) (ThroughputResult, bool) {
	var best ThroughputResult
	ok := false
	for _, r := range rs {
		if r.KeepsUp && (!ok || r.MinUpdatesPerS > best.MinUpdatesPerS) {
			best, ok = r, true
		}
	}
	return best, ok
}

// WriteThroughputMarkdown writes the report kept in bench/results/mesh.md.
func WriteThroughputMarkdown(w io.Writer, rs []ThroughputResult, o ThroughputOptions, env Env) {
	fmt.Fprintf(w, "# Mesh throughput benchmark: LOCAL writes per node\n\n")
	fmt.Fprintf(w, "%d real `mesh.Node`s in one process on loopback (memberlist and the Peer gRPC service on 127.0.0.1; each node's store in memory, %d MiB memtables; write-behind durability), preset `%s` with an anti-entropy interval of %s, sync mode delta+bp+rr. ", o.Nodes, o.DB.MemTableSize>>20, PresetName(o.Preset), o.Tick)
	fmt.Fprintf(w, "Each run starts a fresh cluster and creates %d GCounter keys (replicated: a warm-up). Then %d goroutines per node call `Update` (LOCAL, `DiscardState`: the new state is not copied back, as the proxy does not read it) in a loop, each incrementing a random key, for %s, either as fast as they can (`max`) or paced to an offered rate per node; every node replicates to the others as it goes. ", o.Keys, o.Writers, o.Duration)
	fmt.Fprintf(w, "Lag is each node's `statemesh_mesh_replication_lag_deltas` gauge (deltas its furthest-behind neighbour has not acknowledged; the node sets it every interval), sampled every interval; `lag ms` converts the largest sample to time (a node buffers about one delta per update made anywhere, so deltas / the cluster's update rate). After the writers stop, every node is polled (LOCAL `Get` of every key) until its counters add up to every increment made; `agree ms` is when the last node does. ")
	fmt.Fprintf(w, "Replication keeps up when both stay within %d intervals (%s).\n\n", o.KeepUpTicks, time.Duration(o.KeepUpTicks)*o.Tick)
	env.header(w)
	fmt.Fprintf(w, "- Wall time: %.1f s (start-up, key creation and agreement waits included)\n", env.WallS)
	met := false
	for _, r := range rs {
		met = met || r.TargetMet
	}
	line := fmt.Sprintf("- Target: at least %.0f updates/s per node while replication keeps up: **%s**", float64(TargetUpdatesPerSecond), metText(met))
	if best, ok := sustained(rs); ok {
		line += fmt.Sprintf("; fastest run that kept up: %.0f/s per node (slowest node), offered %s", best.MinUpdatesPerS, offered(best.Rate))
	} else {
		line += "; no run kept up"
	}
	for _, r := range rs {
		if r.Rate == 0 {
			line += fmt.Sprintf("; unthrottled: %.0f/s per node (slowest %.0f), replication %s", r.UpdatesPerSPerNode, r.MinUpdatesPerS, map[bool]string{true: "keeping up", false: "falling behind"}[r.KeepsUp])
			break
		}
	}
	fmt.Fprintf(w, "%s\n", line)
	if !met {
		fmt.Fprintf(w, "- Where the time goes: `mesh-profile.md` (written by hand from CPU profiles of this benchmark)\n")
	}
	fmt.Fprintf(w, "\n| offered / node | updates/s / node (mean) | slowest node | all nodes / s | lag max (deltas) | lag max ms | agree ms | keeps up | bytes sent / update / node | dropped | full-state transfers | CPU cores | GC %% |\n")
	fmt.Fprintf(w, "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		fmt.Fprintf(w, "| %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %s | %.2f | %.0f | %.0f | %.2f | %.1f |\n", offered(r.Rate), r.UpdatesPerSPerNode, r.MinUpdatesPerS, r.TotalUpdatesPerS,
			r.LagMax, r.LagMaxMs, r.AgreeMs, yesNo(r.KeepsUp), r.BytesPerUpdatePerNode, r.Dropped, r.FullStateTransfers, r.CPUCores, 100*r.GCShare)
	}
	fmt.Fprintf(w, "\nCPU cores: process CPU time / wall time during the writes (writers, nodes, gRPC and Badger share the machine's %s). GC %%: the share of that CPU time spent collecting garbage (`/cpu/classes/gc/total:cpu-seconds`).\n", strings.TrimSpace(coresOf(env.Machine)))
	fmt.Fprintf(w, "\n## Lag over time\n\nLargest lag gauge of the %d nodes (deltas) at each second of writing.\n\n", o.Nodes)
	cols := 0
	for _, r := range rs {
		cols = max(cols, len(r.Timeline))
	}
	fmt.Fprintf(w, "| offered / node |")
	for i := range cols {
		fmt.Fprintf(w, " %d s |", i+1)
	}
	fmt.Fprintf(w, "\n|---|%s\n", strings.Repeat("---:|", cols))
	for _, r := range rs {
		fmt.Fprintf(w, "| %s |", offered(r.Rate))
		for i := range cols {
			if i >= len(r.Timeline) {
				fmt.Fprintf(w, " |")
				continue
			}
			var m float64
			for _, l := range r.Timeline[i].Lag {
				m = max(m, l)
			}
			fmt.Fprintf(w, " %.0f |", m)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "\n## Per node\n\n| offered / node | node | updates | updates/s | bytes sent / update | lag max (deltas) | lag mean | lag at stop | holds every write after (ms) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		for _, n := range r.PerNode {
			fmt.Fprintf(w, "| %s | %s | %d | %.0f | %.2f | %.0f | %.0f | %.0f | %.0f |\n", offered(r.Rate), n.Node, n.Updates, n.UpdatesPerS, n.BytesPerUpdate, n.LagMax, n.LagMean, n.LagAtStop, n.AgreeMs)
		}
	}
	if env.Profile != "" {
		fmt.Fprintf(w, "\nCPU profile of the run: `%s` (`go tool pprof -top %s`).\n", env.Profile, env.Profile)
	}
}

// coresOf picks "N cores" out of a machine description.
func coresOf(machine string) string {
	for _, part := range strings.Split(machine, ",") {
		if strings.Contains(part, "cores") {
			if i := strings.Index(part, "("); i > 0 {
				return part[:i]
			}
			return part
		}
	}
	return "cores"
}

func formatCounts(m map[string]float64) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, fmt.Sprintf("%s %.0f", k, m[k]))
	}
	return strings.Join(out, ", ")
}
