package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cutover/cutover/internal/dataplane/listen"
)

var descCertExpiry = prometheus.NewDesc(Namespace+"_certificate_expiry_days",
	"Days until the HTTPS certificate served for a host expires (negative once expired; 0 for an ACME host "+
		"without a certificate from the CA yet), by host and source (acme, file, self-signed).",
	[]string{"host", "source"}, nil)

// certCollector reads the certificates' state at scrape time.
type certCollector struct {
	status func() []listen.CertStatus
}

func (c certCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descCertExpiry }

func (c certCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	seen := make(map[[2]string]bool)
	for _, s := range c.status() {
		// Two file pairs may name the same first host; a label set is
		// reported once (the pair that serves it, the earlier one).
		k := [2]string{s.Host, s.Source}
		if seen[k] {
			continue
		}
		seen[k] = true
		ch <- prometheus.MustNewConstMetric(descCertExpiry, prometheus.GaugeValue, s.DaysLeft(now), s.Host, s.Source)
	}
}

// SetCertificates adds the per-host certificate expiry gauge, read from
// status (listen.CertSource.Status) at each scrape. Call it once, before
// serving scrapes.
func (m *Metrics) SetCertificates(status func() []listen.CertStatus) {
	if m == nil || status == nil {
		return
	}
	m.reg.MustRegister(certCollector{status: status})
}
