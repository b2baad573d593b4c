package serve_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/serve"
)

// scrape reads the metrics endpoint into families by name.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing the exposition: %v", err)
	}
	return fams
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// sum adds the values of a family's series whose labels include want.
func sum(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	var total float64
	f := fams[name]
	if f == nil {
		return 0
	}
next:
	for _, m := range f.GetMetric() {
		for k, v := range want {
			if label(m, k) != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			total += m.GetCounter().GetValue()
		case m.Gauge != nil:
			total += m.GetGauge().GetValue()
		case m.Histogram != nil:
			total += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return total
}

// TestMetricsCountEveryRequestExactly: after a known load through a real
// instance (both engines), the requests family sums to exactly the number
// of requests sent, split by service, pool and status as they were served;
// health probes are counted apart; the routing gauges and a deploy's
// switch show; /healthz answers.
func TestMetricsCountEveryRequestExactly(t *testing.T) {
	for _, engine := range []string{config.EngineLoops, config.EngineGoroutines} {
		t.Run(engine, func(t *testing.T) { checkMetrics(t, engine) })
	}
}

func checkMetrics(t *testing.T, engine string) {
	backend := func(name string, fail bool) *httptest.Server {
		b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			if fail && r.URL.Path == "/boom" {
				w.WriteHeader(500)
			}
			io.WriteString(w, name)
		}))
		t.Cleanup(b.Close)
		return b
	}
	blue, green := backend("blue", true), backend("green", false)
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Listen.HTTP = "127.0.0.1:0"
	cfg.Listen.Engine = engine
	cfg.Metrics.Listen = "127.0.0.1:0"
	cfg.StateDir = dir
	cfg.Admin.Socket = filepath.Join(dir, config.AdminSocketName)
	cfg.Log.Access = config.AccessOff
	svc := config.DefaultService("web")
	svc.Hosts = []string{"web.test"}
	svc.Health.Interval = 50 * time.Millisecond
	svc.Pools = []config.Pool{
		{Name: "blue", Targets: []string{strings.TrimPrefix(blue.URL, "http://")}},
		{Name: "green", Targets: []string{strings.TrimPrefix(green.URL, "http://")}},
	}
	svc.Active = "blue"
	cfg.Services = []config.Service{svc}
	in, err := serve.Start(context.Background(), serve.Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Stdout: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		in.Shutdown(ctx)
	})
	metricsAddr := in.MetricsAddr().String()
	resp, err := http.Get("http://" + metricsAddr + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /healthz on the metrics listener: %v %v", resp, err)
	}
	resp.Body.Close()

	// A known load from 8 concurrent keep-alive clients: GETs and POSTs
	// to blue, some answered 500 by it, and requests for a host no service
	// has (404 from the proxy).
	const clients, perClient = 8, 50
	var mu sync.Mutex
	sent := map[string]int{}
	var wg sync.WaitGroup
	base := "http://" + in.HTTPAddr().String()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
			for i := 0; i < perClient; i++ {
				host, path, method := "web.test", "/", "GET"
				switch i % 5 {
				case 1:
					method = "POST"
				case 2:
					path = "/boom"
				case 3:
					host = "nobody.test"
				}
				var body io.Reader
				if method == "POST" {
					body = strings.NewReader("payload")
				}
				req, _ := http.NewRequest(method, base+path, body)
				req.Host = host
				resp, err := hc.Do(req)
				if err != nil {
					t.Errorf("request: %v", err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				sent[fmt.Sprint(resp.StatusCode)]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	const total = clients * perClient

	// A request is counted when it ends, just after its response went out:
	// the last few may end a moment after their client read them. And the
	// load is over in a fraction of a second, which may be before the idle
	// pool's target has passed its health checks.
	var fams map[string]*dto.MetricFamily
	deadline := time.Now().Add(5 * time.Second)
	for {
		fams = scrape(t, metricsAddr)
		got := sum(fams, "cutover_requests_total", nil)
		if got == total && sum(fams, "cutover_target_up", map[string]string{"service": "web"}) == 2 {
			break
		}
		if got > total || time.Now().After(deadline) {
			t.Fatalf("cutover_requests_total sums to %v after %d requests (sent: %v), cutover_target_up to %v (want 2)", got, total, sent, sum(fams, "cutover_target_up", map[string]string{"service": "web"}))
		}
		time.Sleep(10 * time.Millisecond)
	}
	checks := []struct {
		labels map[string]string
		want   int
	}{
		{map[string]string{"service": "web", "pool": "blue", "class": "2xx", "code": ""}, sent["200"]},
		{map[string]string{"service": "web", "pool": "blue", "class": "5xx", "code": ""}, sent["500"]},
		{map[string]string{"service": "", "pool": "", "class": "4xx", "code": "404"}, sent["404"]},
	}
	for _, c := range checks {
		if got := sum(fams, "cutover_requests_total", c.labels); got != float64(c.want) || c.want == 0 {
			t.Errorf("cutover_requests_total%v = %v, want %d (non-zero)", c.labels, got, c.want)
		}
	}
	if got := sum(fams, "cutover_request_duration_seconds", map[string]string{"service": "web", "pool": "blue"}); got != float64(sent["200"]+sent["500"]) {
		t.Errorf("duration histogram of web/blue counts %v, want %d", got, sent["200"]+sent["500"])
	}
	if got := sum(fams, "cutover_health_probes_total", map[string]string{"service": "web", "result": "ok"}); got < 2 {
		t.Errorf("health probes counted %v, want them counted apart (at least one per target)", got)
	}
	if got := sum(fams, "cutover_active_pool", map[string]string{"service": "web", "pool": "blue"}); got != 1 {
		t.Errorf("cutover_active_pool{blue} = %v, want 1", got)
	}
	if got := sum(fams, "cutover_active_pool", map[string]string{"service": "web", "pool": "green"}); got != 0 {
		t.Errorf("cutover_active_pool{green} = %v, want 0", got)
	}
	if got := sum(fams, "cutover_in_flight", nil); got != 0 {
		t.Errorf("cutover_in_flight = %v with no request running", got)
	}
	if got := sum(fams, "cutover_build_info", nil); got != 1 {
		t.Errorf("cutover_build_info = %v", got)
	}

	// Status reports the same traffic per pool, over its recent window.
	sts, err := in.Manager().Status("web")
	if err != nil {
		t.Fatal(err)
	}
	for _, ps := range sts[0].Pools {
		if ps.Name != "blue" {
			continue
		}
		rs := ps.RequestStats
		wantErr := float64(sent["500"]) / float64(sent["200"]+sent["500"])
		if rs == nil || rs.RPS <= 0 || rs.P50MS <= 0 || rs.ErrorRate < wantErr*0.99 || rs.ErrorRate > wantErr*1.01 {
			t.Errorf("status of pool blue: %+v; want rps and p50 above 0 and error rate %.3f", rs, wantErr)
		}
	}

	if _, err := in.Manager().Deploy(context.Background(), admin.DeployRequest{Service: "web", Pool: "green"}, func(admin.Event) {}); err != nil {
		t.Fatalf("deploy green: %v", err)
	}
	fams = scrape(t, metricsAddr)
	if got := sum(fams, "cutover_switches_total", map[string]string{"service": "web", "kind": "deploy"}); got != 1 {
		t.Errorf("cutover_switches_total{deploy} = %v after one deploy, want 1", got)
	}
	if got := sum(fams, "cutover_active_pool", map[string]string{"service": "web", "pool": "green"}); got != 1 {
		t.Errorf("cutover_active_pool{green} = %v after the deploy, want 1", got)
	}
	if got := sum(fams, "cutover_drain_duration_seconds", map[string]string{"service": "web"}); got != 1 {
		t.Errorf("drain histogram counts %v drains, want 1", got)
	}
}
