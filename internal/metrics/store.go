package metrics

import "github.com/prometheus/client_golang/prometheus"

// StoreSource is a shared desired-state store as metrics see it.
type StoreSource interface {
	// Problem says why the store cannot be reached ("" when it can).
	Problem() string
	// AppliedRevision is the store revision this instance applied.
	AppliedRevision() int64
}

// AddStore adds cutover_store_stale and cutover_store_revision, read from
// src at each scrape.
func (m *Metrics) AddStore(src StoreSource) {
	if m == nil {
		return
	}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "store_stale",
			Help: "1 while the shared store (etcd) cannot be reached: this instance serves the last state it applied and refuses changes."},
			func() float64 {
				if src.Problem() != "" {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: "store_revision",
			Help: "The shared store's revision of the newest desired state this instance applied."},
			func() float64 { return float64(src.AppliedRevision()) }),
	)
}
