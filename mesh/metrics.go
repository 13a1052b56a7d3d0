package mesh

import "github.com/prometheus/client_golang/prometheus"

// metrics are the node's Prometheus series. Per-peer series are labelled
// by node name: meshes have tens of nodes, not thousands.
type metrics struct {
	members        *prometheus.GaugeVec   // state=alive|dead
	msgsSent       *prometheus.CounterVec // peer
	bytesSent      *prometheus.CounterVec // peer
	msgsReceived   *prometheus.CounterVec // peer
	bytesReceived  *prometheus.CounterVec // peer
	dropped        *prometheus.CounterVec // reason
	refused        *prometheus.CounterVec // reason
	transfers      prometheus.Counter
	pruned         prometheus.Counter
	pruneFailures  prometheus.Counter
	bufferEntries  prometheus.Gauge
	keys           prometheus.Gauge
	pendingPersist prometheus.Gauge
	writes         *prometheus.CounterVec      // consistency, result
	writesOK       [All + 1]prometheus.Counter // writes{consistency, "ok"}, looked up once
	lagSeq         prometheus.Gauge
	parked         prometheus.Gauge
}

func newMetrics(r prometheus.Registerer) *metrics {
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	m := &metrics{
		members: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "statemesh_mesh_members",
			Help: "Members of the mesh this node knows, by failure-detector state (itself included)."}, []string{"state"}),
		msgsSent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "statemesh_mesh_messages_sent_total",
			Help: "Anti-entropy messages written to a peer's stream."}, []string{"peer"}),
		bytesSent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "statemesh_mesh_bytes_sent_total",
			Help: "Bytes of anti-entropy messages written to a peer's stream."}, []string{"peer"}),
		msgsReceived: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "statemesh_mesh_messages_received_total",
			Help: "Anti-entropy messages received from a peer."}, []string{"peer"}),
		bytesReceived: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "statemesh_mesh_bytes_received_total",
			Help: "Bytes of anti-entropy messages received from a peer."}, []string{"peer"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "statemesh_mesh_messages_dropped_total",
			Help: "Outgoing messages dropped (queue full, peer unreachable or unknown, fault seam); the engine retransmits."}, []string{"reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "statemesh_mesh_messages_refused_total",
			Help: "Incoming messages or calls refused as malformed, oversized or conflicting."}, []string{"reason"}),
		transfers: prometheus.NewCounter(prometheus.CounterOpts{Name: "statemesh_mesh_full_state_transfers_total",
			Help: "Digest-driven full-state transfers this node started."}),
		pruned: prometheus.NewCounter(prometheus.CounterOpts{Name: "statemesh_mesh_pruned_replicas_total",
			Help: "Removed replicas this node pruned as their owner."}),
		pruneFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "statemesh_mesh_prune_failures_total",
			Help: "Pruning passes that failed (a member unreachable, a write failed); the next pass retries."}),
		bufferEntries: prometheus.NewGauge(prometheus.GaugeOpts{Name: "statemesh_mesh_delta_buffer_entries",
			Help: "Deltas buffered for peers that have not acknowledged them."}),
		keys: prometheus.NewGauge(prometheus.GaugeOpts{Name: "statemesh_mesh_keys",
			Help: "CRDT keys held by this replica."}),
		pendingPersist: prometheus.NewGauge(prometheus.GaugeOpts{Name: "statemesh_mesh_persist_pending_keys",
			Help: "Changed keys not yet written to the store."}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "statemesh_mesh_writes_total",
			Help: "Local writes by consistency and result (ok, timeout, unavailable, error)."}, []string{"consistency", "result"}),
		parked: prometheus.NewGauge(prometheus.GaugeOpts{Name: "statemesh_mesh_writes_parked",
			Help: "Local writes held back because replication lags (Config.MaxLag)."}),
		lagSeq: prometheus.NewGauge(prometheus.GaugeOpts{Name: "statemesh_mesh_replication_lag_deltas",
			Help: "Deltas the furthest-behind live neighbour has not acknowledged."}),
	}
	for _, c := range []prometheus.Collector{m.members, m.msgsSent, m.bytesSent, m.msgsReceived, m.bytesReceived,
		m.dropped, m.refused, m.transfers, m.pruned, m.pruneFailures, m.bufferEntries, m.keys, m.pendingPersist, m.writes, m.lagSeq, m.parked} {
		f(c)
	}
	for c := Local; c <= All; c++ {
		m.writesOK[c] = m.writes.WithLabelValues(c.String(), "ok")
	}
	return m
}

// wrote counts a local write: a successful one, the usual case, without
// looking its labels up again.
func (m *metrics) wrote(c Consistency, err error) {
	if err == nil && int(c) < len(m.writesOK) {
		m.writesOK[c].Inc()
		return
	}
	m.writes.WithLabelValues(c.String(), resultLabel(err)).Inc()
}

func (m *metrics) sent(peer string, n int) {
	m.msgsSent.WithLabelValues(peer).Inc()
	m.bytesSent.WithLabelValues(peer).Add(float64(n))
}

func (m *metrics) received(peer string, n int) {
	m.msgsReceived.WithLabelValues(peer).Inc()
	m.bytesReceived.WithLabelValues(peer).Add(float64(n))
}
