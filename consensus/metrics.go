package consensus

import "github.com/prometheus/client_golang/prometheus"

// metrics are the Host's Prometheus metrics, registered on
// Config.Registerer when it is set.
type metrics struct {
	retries        prometheus.Counter
	forwards       prometheus.Counter
	duplicates     prometheus.Counter
	conflicts      prometheus.Counter
	placement      *prometheus.CounterVec
	readSeconds    prometheus.Histogram
	proposeSeconds prometheus.Histogram
	proposalOps    prometheus.Histogram
}

func newMetrics(r prometheus.Registerer) *metrics {
	buckets := prometheus.ExponentialBuckets(0.0005, 2, 14) // 0.5ms .. 4s
	m := &metrics{
		retries: prometheus.NewCounter(prometheus.CounterOpts{Name: "statemesh_consensus_retries_total",
			Help: "Attempts of an operation retried after a leader change, an unready shard or an unknown outcome."}),
		forwards: prometheus.NewCounter(prometheus.CounterOpts{Name: "statemesh_consensus_forwards_total",
			Help: "Operations forwarded to another node."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "statemesh_consensus_duplicate_commands_total",
			Help: "Commands answered from the result recorded under their request id."}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{Name: "statemesh_consensus_conflicts_total",
			Help: "Commands re-run because their entity changed under them."}),
		placement: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "statemesh_consensus_placement_changes_total",
			Help: "Shard membership changes made by placement, by kind."}, []string{"kind"}),
		readSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "statemesh_consensus_read_seconds",
			Help: "Linearizable reads on local replicas.", Buckets: buckets}),
		proposeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "statemesh_consensus_propose_seconds",
			Help: "Proposals on local replicas, until applied.", Buckets: buckets}),
		proposalOps: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "statemesh_consensus_proposal_operations",
			Help:    "Operations per proposal (more than one: a batch of operations that queued while earlier proposals were in flight).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 9)}), // 1 .. 256
	}
	if r != nil {
		r.MustRegister(m.retries, m.forwards, m.duplicates, m.conflicts, m.placement, m.readSeconds, m.proposeSeconds, m.proposalOps)
	}
	return m
}
