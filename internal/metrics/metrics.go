// Package metrics exposes cutover's numbers in the Prometheus text format:
// what the data plane served (from package stats, read at scrape time),
// the routing table's state (in-flight requests, target health, the active
// pool), the listeners, and what the control plane did (switches, drains,
// reloads, health probes). The Prometheus Go client does the registry and
// the exposition; see package stats for why the request path keeps
// counters of its own.
package metrics

import (
	"net/http"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cutover/cutover/internal/dataplane/listen"
	"github.com/cutover/cutover/internal/dataplane/route"
	"github.com/cutover/cutover/internal/dataplane/stats"
	"github.com/cutover/cutover/internal/dataplane/upstream"
)

// Namespace prefixes every family.
const Namespace = "cutover"

// Kinds of switches and operations.
const (
	KindDeploy   = "deploy"
	KindRollback = "rollback"
)

// Options say where the numbers come from. Nil sources are left out.
type Options struct {
	Stats  *stats.Stats
	Router *route.Router
	// Listeners returns the public listeners' counts (nil: none yet).
	Listeners func() listen.Counts
	// Version is the build's version for cutover_build_info (default:
	// the module version and VCS revision the binary was built from).
	Version string
}

// Metrics is the registry and the control plane's counters. A nil
// *Metrics records nothing, so callers need no checks.
type Metrics struct {
	reg *prometheus.Registry

	switches      *prometheus.CounterVec
	opDuration    *prometheus.HistogramVec
	drainDuration *prometheus.HistogramVec
	drained       *prometheus.CounterVec
	reloads       *prometheus.CounterVec
	probes        *prometheus.CounterVec

	dp *dataPlane
}

// SetSources names the routing table and the listeners once they exist
// (they are made after the control plane, which records into m). Call it
// before serving scrapes.
func (m *Metrics) SetSources(r *route.Router, listeners func() listen.Counts) {
	m.dp.o.Router, m.dp.o.Listeners = r, listeners
}

// New returns the registry with every family registered.
func New(o Options) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	if o.Version == "" {
		o.Version = buildVersion()
	}
	opBuckets := []float64{.1, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
	m.switches = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "switches_total",
		Help: "Switches of a service's live pool, by kind (deploy, rollback)."}, []string{"service", "kind"})
	m.opDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "operation_duration_seconds",
		Help: "Time from the start of a deploy or rollback to its switch, health gate included.", Buckets: opBuckets}, []string{"service", "kind"})
	m.drainDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "drain_duration_seconds",
		Help: "Time a pool that lost traffic took to finish its requests.", Buckets: opBuckets}, []string{"service"})
	m.drained = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "requests_drained_total",
		Help: "Requests that were running on a pool when it lost traffic and finished there."}, []string{"service"})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "config_reloads_total",
		Help: "Configuration reloads, by result (ok, failed)."}, []string{"result"})
	m.probes = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "health_probes_total",
		Help: "Active health probes, by result (ok, failed); apart from cutover_requests_total."}, []string{"service", "pool", "target", "result"})
	m.dp = &dataPlane{o: o}
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: "build_info",
		Help: "1, labelled with the running build."}, []string{"version", "go_version"})
	build.WithLabelValues(o.Version, runtime.Version()).Set(1)
	m.reg.MustRegister(m.switches, m.opDuration, m.drainDuration, m.drained, m.reloads, m.probes, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.dp)
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Registry is the registry, for other parts to add their own families.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Switched records a switch of service's live pool; took is the time from
// the operation's start to the switch.
func (m *Metrics) Switched(service, kind string, took time.Duration) {
	if m == nil {
		return
	}
	m.switches.WithLabelValues(service, kind).Inc()
	m.opDuration.WithLabelValues(service, kind).Observe(took.Seconds())
}

// Drained records a finished drain: how long it took and how many
// requests finished on the old pool.
func (m *Metrics) Drained(service string, took time.Duration, requests int64) {
	if m == nil {
		return
	}
	m.drainDuration.WithLabelValues(service).Observe(took.Seconds())
	m.drained.WithLabelValues(service).Add(float64(max(requests, 0)))
}

// Reloaded records a configuration reload and whether it was applied.
func (m *Metrics) Reloaded(err error) {
	if m == nil {
		return
	}
	m.reloads.WithLabelValues(result(err)).Inc()
}

// Probed records one active health probe of a target.
func (m *Metrics) Probed(service, pool, target string, err error) {
	if m == nil {
		return
	}
	m.probes.WithLabelValues(service, pool, target, result(err)).Inc()
}

// buildVersion names the build: the main module's version, and the VCS
// revision when the binary was built from a checkout.
func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += "+" + s.Value[:12]
		}
	}
	return v
}

func result(err error) string {
	if err != nil {
		return "failed"
	}
	return "ok"
}

// dataPlane turns the data plane's own counters into metrics at scrape
// time.
type dataPlane struct{ o Options }

var (
	descRequests = prometheus.NewDesc(Namespace+"_requests_total",
		"Requests, by the class of the status sent (class) and, for the proxy's own answers (502, 503, 504, 408, 431, 499 ...), the exact code (code; empty for a target's response).",
		[]string{"service", "pool", "class", "code"}, nil)
	descDuration = prometheus.NewDesc(Namespace+"_request_duration_seconds",
		"Time from a request's head to the end of its response (requests whose client left are not timed).",
		[]string{"service", "pool"}, nil)
	descRetries = prometheus.NewDesc(Namespace+"_retries_total",
		"Requests sent again to another target after a try failed.", []string{"service", "pool"}, nil)
	descFailures = prometheus.NewDesc(Namespace+"_request_failures_total",
		"Requests that failed, by where (connect, upstream, timeout, upstream_body, no_target, no_pool, client_gone, client_body).",
		[]string{"service", "pool", "reason"}, nil)
	descAttempts = prometheus.NewDesc(Namespace+"_upstream_attempt_failures_total",
		"Failed tries of a request on a target, by reason.", []string{"service", "pool", "target", "reason"}, nil)
	descInFlight = prometheus.NewDesc(Namespace+"_in_flight",
		"Requests dispatched to a pool and not yet finished.", []string{"service", "pool"}, nil)
	descTargetUp = prometheus.NewDesc(Namespace+"_target_up",
		"1 when the target takes traffic (healthy), 0 when it is down or not yet checked.", []string{"service", "pool", "target"}, nil)
	descActive = prometheus.NewDesc(Namespace+"_active_pool",
		"1 for the pool that takes a service's traffic, 0 for its other pools.", []string{"service", "pool"}, nil)
	descPreview = prometheus.NewDesc(Namespace+"_preview_pool",
		"1 for the pool a service's preview_hosts go to (absent when they go to the active pool).", []string{"service", "pool"}, nil)
	descCanary = prometheus.NewDesc(Namespace+"_canary_percent",
		"The share of a service's clients its canary pool takes, in percent (absent without a canary).", []string{"service", "pool"}, nil)
	descConns = prometheus.NewDesc(Namespace+"_client_connections",
		"Open client connections, by listener (http, https) and protocol (http/1.1, h2).", []string{"listener", "protocol"}, nil)
	descHandshakes = prometheus.NewDesc(Namespace+"_tls_handshakes_total",
		"TLS handshakes on the HTTPS listener, by result (ok, failed).", []string{"result"}, nil)
)

func (d *dataPlane) Describe(ch chan<- *prometheus.Desc) {
	for _, desc := range []*prometheus.Desc{descRequests, descDuration, descRetries, descFailures, descAttempts,
		descInFlight, descTargetUp, descActive, descPreview, descCanary, descConns, descHandshakes} {
		ch <- desc
	}
}

func (d *dataPlane) Collect(ch chan<- prometheus.Metric) {
	if s := d.o.Stats; s != nil {
		s.Each(func(ser *stats.Series) { collectPool(ch, ser) }, func(ser *stats.Series) {
			for reason, n := range ser.Counts().AttemptFailures {
				ch <- prometheus.MustNewConstMetric(descAttempts, prometheus.CounterValue, float64(n), ser.Service, ser.Pool, ser.Target, reason)
			}
		})
	}
	if r := d.o.Router; r != nil {
		for _, svc := range r.Table().Services() {
			active := svc.Active()
			if rt := svc.Routes(); rt != nil {
				if rt.Preview != nil {
					ch <- prometheus.MustNewConstMetric(descPreview, prometheus.GaugeValue, 1, svc.Name(), rt.Preview.Name())
				}
				if rt.Canary != nil {
					ch <- prometheus.MustNewConstMetric(descCanary, prometheus.GaugeValue, float64(rt.Weight)*100/route.WeightScale, svc.Name(), rt.Canary.Name())
				}
			}
			for _, p := range svc.Pools() {
				ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(p.InFlight()), svc.Name(), p.Name())
				ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, boolValue(p == active), svc.Name(), p.Name())
				for _, t := range p.Targets() {
					ch <- prometheus.MustNewConstMetric(descTargetUp, prometheus.GaugeValue, boolValue(t.State() == upstream.Up), svc.Name(), p.Name(), t.Addr())
				}
			}
		}
	}
	if f := d.o.Listeners; f != nil {
		c := f()
		for k, n := range c.Conns {
			ch <- prometheus.MustNewConstMetric(descConns, prometheus.GaugeValue, float64(n), k.Listener, k.Protocol)
		}
		ch <- prometheus.MustNewConstMetric(descHandshakes, prometheus.CounterValue, float64(c.Handshakes), "ok")
		ch <- prometheus.MustNewConstMetric(descHandshakes, prometheus.CounterValue, float64(c.HandshakeFailures), "failed")
	}
}

func collectPool(ch chan<- prometheus.Metric, ser *stats.Series) {
	c := ser.Counts()
	for _, cc := range c.ByCode {
		ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(cc.N), ser.Service, ser.Pool, cc.Class, cc.Code)
	}
	buckets := make(map[float64]uint64, len(stats.Buckets))
	var cum, count uint64
	for i, n := range c.Buckets {
		cum += n
		if i < len(stats.Buckets) {
			buckets[stats.Buckets[i]] = cum
		}
	}
	count = cum
	ch <- prometheus.MustNewConstHistogram(descDuration, count, c.Sum.Seconds(), buckets, ser.Service, ser.Pool)
	ch <- prometheus.MustNewConstMetric(descRetries, prometheus.CounterValue, float64(c.Retries), ser.Service, ser.Pool)
	for reason, n := range c.Failures {
		ch <- prometheus.MustNewConstMetric(descFailures, prometheus.CounterValue, float64(n), ser.Service, ser.Pool, reason)
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
