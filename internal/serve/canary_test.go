package serve_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cutover/cutover/bench/loadclient"
	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/controlplane/history"
	"github.com/cutover/cutover/internal/demoapp"
	"github.com/cutover/cutover/internal/serve"
	"github.com/cutover/cutover/internal/testutil/servetest"
)

// demoPool serves one demo app on 127.0.0.1 named profile.
func demoPool(t *testing.T, profile string, failRate float64) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app := demoapp.New(demoapp.Options{Profile: profile, Version: profile, FailRate: failRate, Logger: slog.New(slog.DiscardHandler)})
	done := make(chan error, 1)
	go func() { done <- app.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		app.Shutdown(ctx)
		<-done
	})
	return ln.Addr().String()
}

// trialInstance runs cutover with pools blue and green of one demo app
// each (green failing failRate of GET /), blue active, 127.0.0.1 trusted
// to name clients in X-Forwarded-For.
func trialInstance(t *testing.T, greenFailRate float64) *serve.Instance {
	t.Helper()
	return trialInstanceWith(t, greenFailRate, nil)
}

func trialInstanceWith(t *testing.T, greenFailRate float64, edit func(*config.Service)) *serve.Instance {
	t.Helper()
	blue, green := demoPool(t, "blue", 0), demoPool(t, "green", greenFailRate)
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Listen.HTTP = "127.0.0.1:0"
	cfg.StateDir = dir
	cfg.Admin.Socket = filepath.Join(dir, config.AdminSocketName)
	cfg.Log.Access = config.AccessOff
	cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	svc := config.DefaultService("web")
	svc.Health.Interval = 50 * time.Millisecond
	svc.Health.Healthy = 1
	svc.DrainTimeout = 5 * time.Second
	svc.Pools = []config.Pool{{Name: "blue", Targets: []string{blue}}, {Name: "green", Targets: []string{green}}}
	svc.Active = "blue"
	if edit != nil {
		edit(&svc)
	}
	cfg.Services = []config.Service{svc}
	in, err := serve.Start(context.Background(), serve.Options{Config: cfg, Logger: slog.New(slog.DiscardHandler), Stdout: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		in.Shutdown(ctx)
	})
	return in
}

// load is a strict keep-alive load (no retries; every socket error and
// non-2xx counted) running until stop.
type load struct {
	cancel context.CancelFunc
	done   chan *loadclient.Result
}

func startLoad(t *testing.T, addr string, conns int) *load {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel, done: make(chan *loadclient.Result, 1)}
	go func() {
		res, err := loadclient.Run(ctx, loadclient.Options{Addr: addr, Connections: conns, Duration: time.Minute, Host: "web.test", BackendHeader: "X-Profile"})
		if err != nil {
			t.Error(err)
		}
		l.done <- res
	}()
	t.Cleanup(cancel)
	return l
}

func (l *load) stop() *loadclient.Result {
	l.cancel()
	return <-l.done
}

// checkNoneAfter fails when a request sent after at reached pool.
func checkNoneAfter(t *testing.T, res *loadclient.Result, pool string, at time.Time, what string) {
	t.Helper()
	n := 0
	for _, r := range res.Records {
		if r.Backend == pool && res.Start.Add(r.Sent).After(at) {
			n++
		}
	}
	if n > 0 {
		t.Errorf("%d requests sent after %s reached pool %s", n, what, pool)
	}
}

// clientLoad is a strict load from distinct clients (each its own address
// in X-Forwarded-For, as behind a trusted proxy), so a canary split sees
// many clients; each keeps its connections alive and nothing is retried.
type clientLoad struct {
	stopc chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	recs  []clientRecord
}

type clientRecord struct {
	sent   time.Time
	pool   string
	status int
	err    error
}

func (r clientRecord) failed() bool { return r.err != nil || r.status != 200 }

func startClientLoad(t *testing.T, addr string, clients int) *clientLoad {
	t.Helper()
	return startHostLoad(t, addr, "web.test", clients)
}

// startHostLoad is startClientLoad for requests to host.
func startHostLoad(t *testing.T, addr, host string, clients int) *clientLoad {
	t.Helper()
	l := &clientLoad{stopc: make(chan struct{})}
	for i := 0; i < clients; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			tr := &http.Transport{MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			c := &http.Client{Timeout: 10 * time.Second, Transport: noRetry{tr}}
			for {
				select {
				case <-l.stopc:
					return
				default:
				}
				req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
				req.Host = host
				req.Header.Set("X-Forwarded-For", fmt.Sprintf("10.2.%d.%d", i>>8, i&255))
				rec := clientRecord{sent: time.Now()}
				resp, err := c.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					rec.status, rec.pool = resp.StatusCode, resp.Header.Get("X-Profile")
				}
				rec.err = err
				l.mu.Lock()
				l.recs = append(l.recs, rec)
				l.mu.Unlock()
			}
		}()
	}
	t.Cleanup(l.halt)
	return l
}

func (l *clientLoad) halt() {
	select {
	case <-l.stopc:
	default:
		close(l.stopc)
	}
	l.wg.Wait()
}

// stop ends the load and returns its records.
func (l *clientLoad) stop() []clientRecord {
	l.halt()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.recs
}

// noRetry makes every request non-replayable, so net/http never retries
// one on a new connection by itself: every failure is counted.
type noRetry struct{ tr *http.Transport }

func (n noRetry) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Body = io.NopCloser(strings.NewReader(""))
	r.ContentLength = 0
	r.GetBody = nil
	return n.tr.RoundTrip(r)
}

// tally counts records: failed ones, and successes by pool; sentAfter
// counts those to pool sent after at.
func tally(recs []clientRecord, pool string, at time.Time) (failed int, byPool map[string]int, sentAfter int) {
	byPool = map[string]int{}
	for _, r := range recs {
		if r.failed() {
			failed++
			continue
		}
		byPool[r.pool]++
		if r.pool == pool && r.sent.After(at) {
			sentAfter++
		}
	}
	return failed, byPool, sentAfter
}

func deploy(t *testing.T, in *serve.Instance, req admin.DeployRequest) (*admin.DeployResult, error) {
	t.Helper()
	req.Service = "web"
	return in.Manager().Deploy(context.Background(), req, nil)
}

// TestCanaryStepsUnderLoad: 0 → 10% → 50% → 100% under strict keep-alive
// load fails no request; browser-like clients with a cookie jar never flip
// back to the old version; after the full switch no request reaches blue.
func TestCanaryStepsUnderLoad(t *testing.T) {
	in := trialInstance(t, 0)
	addr := in.HTTPAddr().String()
	l := startLoad(t, addr, 6)
	cl := startClientLoad(t, addr, 24)

	// Clients that keep cookies, as browsers do.
	type seen struct{ pools []string }
	var mu sync.Mutex
	browsers := make([]*seen, 6)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var browserFailures int
	for i := range browsers {
		browsers[i] = &seen{}
		jar, _ := cookiejar.New(nil)
		c := &http.Client{Jar: jar, Timeout: 10 * time.Second, Transport: &http.Transport{}}
		wg.Add(1)
		go func(b *seen) {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
				req.Host = "web.test"
				req.Header.Set("X-Forwarded-For", fmt.Sprintf("10.1.0.%d", i+1))
				resp, err := c.Do(req)
				if err != nil {
					mu.Lock()
					browserFailures++
					mu.Unlock()
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				if resp.StatusCode != 200 {
					browserFailures++
				}
				b.pools = append(b.pools, resp.Header.Get("X-Profile"))
				mu.Unlock()
				time.Sleep(5 * time.Millisecond) // a person clicking, not a loop
			}
		}(browsers[i])
	}

	res, err := deploy(t, in, admin.DeployRequest{Pool: "green", Canary: []float64{10, 50}, Step: admin.Duration(700 * time.Millisecond)})
	if err != nil {
		t.Fatalf("canary deploy: %v", err)
	}
	switched := time.Now()
	time.Sleep(300 * time.Millisecond) // traffic after the switch, to check
	close(stop)
	wg.Wait()
	lr := l.stop()
	crecs := cl.stop()
	sum := lr.Summarize()
	cfailed, cby, cafter := tally(crecs, "blue", switched)
	if sum.Failed > 0 || browserFailures > 0 || cfailed > 0 {
		t.Fatalf("failed: %d of %d keep-alive load requests (%v), %d of %d client requests, %d browser requests", sum.Failed, sum.Requests, sum.ErrorKinds, cfailed, len(crecs), browserFailures)
	}
	if res.Pool != "green" || res.From != "blue" {
		t.Fatalf("result %+v", res)
	}
	checkNoneAfter(t, lr, "blue", switched, "the full switch")
	if cafter > 0 {
		t.Fatalf("%d client requests sent after the full switch reached blue", cafter)
	}
	if cby["green"] == 0 || cby["blue"] == 0 {
		t.Fatalf("clients saw %v; want both versions during the canary", cby)
	}
	for i, b := range browsers {
		// Sticky: a browser sees blue, then green, never blue again.
		onGreen := false
		for _, p := range b.pools {
			if p == "green" {
				onGreen = true
			} else if onGreen {
				t.Fatalf("browser %d flipped back to %s: %v", i, p, b.pools)
			}
		}
	}
	t.Logf("load: %d keep-alive + %d client requests, 0 failed; clients by pool %v", sum.Requests, len(crecs), cby)
}

// TestCanaryWeightIsExactAndAbortDrains: holding at 10%, 10,000
// cookie-less distinct clients land on the canary 10% ± 1.5% of the time
// and are told their pool by a cookie; abort under load then sends every
// client back at once, failing none, and no request reaches the canary
// after it.
func TestCanaryWeightIsExactAndAbortDrains(t *testing.T) {
	in := trialInstance(t, 0)
	addr := in.HTTPAddr().String()
	res, err := deploy(t, in, admin.DeployRequest{Pool: "green", Canary: []float64{10}})
	if err != nil {
		t.Fatalf("canary deploy: %v", err)
	}
	if res.Canary != 10 || !strings.Contains(res.Message, "holds") {
		t.Fatalf("a canary without --step should hold at 10%%: %+v", res)
	}
	st, _ := in.Manager().Status("web")
	if st[0].Canary != "green" || st[0].CanaryPercent != 10 {
		t.Fatalf("status: canary %q %v%%", st[0].Canary, st[0].CanaryPercent)
	}

	const clients = 10000
	var mu sync.Mutex
	green, withCookie := 0, 0
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			for i := range work {
				req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
				req.Host = "web.test"
				req.Header.Set("X-Forwarded-For", fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255))
				resp, err := c.Do(req)
				if err != nil {
					t.Error(err)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				if resp.Header.Get("X-Profile") == "green" {
					green++
				}
				if strings.HasPrefix(resp.Header.Get("Set-Cookie"), "cutover_web=") {
					withCookie++
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < clients; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	share := 100 * float64(green) / clients
	t.Logf("%d of %d distinct clients (%.2f%%) got the canary at 10%%", green, clients, share)
	if share < 8.5 || share > 11.5 {
		t.Fatalf("canary share %.2f%%, want 10%% ± 1.5", share)
	}
	if withCookie != clients {
		t.Fatalf("%d of %d responses set the sticky cookie", withCookie, clients)
	}

	cl := startClientLoad(t, addr, 40)
	time.Sleep(500 * time.Millisecond)
	ab, err := in.Manager().Abort(context.Background(), admin.TrialRequest{Service: "web"}, nil)
	if err != nil {
		t.Fatalf("abort: %v", err)
	}
	aborted := time.Now()
	time.Sleep(300 * time.Millisecond)
	recs := cl.stop()
	failed, by, after := tally(recs, "green", aborted)
	if failed > 0 {
		t.Fatalf("%d of %d requests failed across the abort", failed, len(recs))
	}
	if by["green"] == 0 {
		t.Fatalf("no client reached the canary before the abort: %v", by)
	}
	if after > 0 {
		t.Fatalf("%d requests sent after the abort reached green", after)
	}
	sum := loadclient.Summary{Requests: len(recs), ByBackend: by}
	if st, _ := in.Manager().Status("web"); st[0].Canary != "" || st[0].Active != "blue" {
		t.Fatalf("after abort: active %s canary %q", st[0].Active, st[0].Canary)
	}
	t.Logf("abort: %s; load %d requests, 0 failed, by pool %v", ab.Message, sum.Requests, sum.ByBackend)
}

// TestGuardRollsBackABrokenVersion: a green whose GET / fails 5% of the
// time is rolled back by the guard within its window, with the numbers;
// the only failed requests are green's own 500s. A healthy green is kept.
func TestGuardRollsBackABrokenVersion(t *testing.T) {
	in := trialInstance(t, 0.05)
	addr := in.HTTPAddr().String()
	l := startLoad(t, addr, 8)
	time.Sleep(time.Second) // blue's own numbers, the guard's baseline
	start := time.Now()
	_, err := deploy(t, in, admin.DeployRequest{Pool: "green", Guard: &admin.GuardSettings{Window: admin.Duration(20 * time.Second)}})
	rolledBack := time.Now()
	var ce *admin.Error
	if !errors.As(err, &ce) || ce.Kind != admin.KindGuard || ce.Guard == nil {
		t.Fatalf("deploy of a broken green with a guard: %v; want a guard rollback", err)
	}
	time.Sleep(300 * time.Millisecond)
	lr := l.stop()
	g := ce.Guard
	if g.ErrorRate < 0.02 || g.Breach == "" || g.Pool != "green" || g.Baseline != "blue" {
		t.Fatalf("guard report %+v", g)
	}
	if st, _ := in.Manager().Status("web"); st[0].Active != "blue" {
		t.Fatalf("after the guard: active %s, want blue", st[0].Active)
	}
	other := 0
	for _, r := range lr.Records {
		if r.Failed() && !(r.Status == 500 && r.Backend == "green") {
			other++
		}
	}
	if other > 0 {
		t.Fatalf("%d requests failed other than green's own 500s", other)
	}
	checkNoneAfter(t, lr, "green", rolledBack, "the guard's rollback")
	t.Logf("guard rolled back %s after the deploy began: %s (green %d requests at %.2f%%, blue %.2f%% before)",
		rolledBack.Sub(start).Round(time.Millisecond), g.Breach, g.Requests, 100*g.ErrorRate, 100*g.BaselineErrorRate)

	// The same with a healthy green: kept, with the guard's numbers.
	hin := trialInstance(t, 0)
	hl := startLoad(t, hin.HTTPAddr().String(), 8)
	time.Sleep(500 * time.Millisecond)
	// Latency on this shared test machine is noise: the latency limit is
	// set wide so that the test judges the error rate.
	res, err := deploy(t, hin, admin.DeployRequest{Pool: "green", Guard: &admin.GuardSettings{Window: admin.Duration(1500 * time.Millisecond), MaxLatencyRatio: 50}})
	hr := hl.stop()
	if err != nil {
		t.Fatalf("a healthy green with a guard: %v", err)
	}
	if res.Guard == nil || !res.Guard.Done || res.Guard.Breach != "" || res.Guard.Requests == 0 {
		t.Fatalf("guard report of a healthy green: %+v", res.Guard)
	}
	if s := hr.Summarize(); s.Failed > 0 {
		t.Fatalf("%d of %d requests failed with a healthy green", s.Failed, s.Requests)
	}
	if st, _ := hin.Manager().Status("web"); st[0].Active != "green" {
		t.Fatalf("healthy green not kept: active %s", st[0].Active)
	}
}

// TestGuardDuringACanaryDropsIt: a canary that holds, with a guard, is
// dropped by the guard when the canary does worse; the deploy returned at
// the hold, so the history records the trial's end.
func TestGuardDuringACanaryDropsIt(t *testing.T) {
	in := trialInstance(t, 0.05)
	addr := in.HTTPAddr().String()
	cl := startClientLoad(t, addr, 24)
	time.Sleep(time.Second)
	res, err := deploy(t, in, admin.DeployRequest{Pool: "green", Canary: []float64{50},
		Guard: &admin.GuardSettings{Window: admin.Duration(20 * time.Second), MinRequests: 100}})
	if err != nil {
		t.Fatalf("canary with a guard: %v", err)
	}
	if res.Canary != 50 {
		t.Fatalf("result %+v", res)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, _ := in.Manager().Status("web")
		if st[0].Canary == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the guard did not drop the failing canary: %+v", st[0].Guard)
		}
		time.Sleep(50 * time.Millisecond)
	}
	dropped := time.Now()
	time.Sleep(300 * time.Millisecond)
	recs := cl.stop()
	if _, _, after := tally(recs, "green", dropped); after > 0 {
		t.Fatalf("%d requests sent after the guard dropped the canary reached green", after)
	}
	other := 0
	for _, r := range recs {
		if r.failed() && !(r.status == 500 && r.pool == "green") {
			other++
		}
	}
	if other > 0 {
		t.Fatalf("%d requests failed other than green's own 500s", other)
	}
	found := false
	for i := 0; i < 100 && !found; i++ {
		for _, e := range in.Manager().History("web") {
			if e.Kind == "trial" && e.Result == "failed" && strings.Contains(e.Reason, "guard") {
				found = true
			}
		}
		if !found {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if !found {
		t.Fatalf("history has no failed trial entry: %+v", in.Manager().History("web"))
	}
}

// TestPreviewThenPromoteAndAbort: deploy --preview sends only the preview
// hosts to the new pool (live traffic stays), promote makes it live, and a
// later preview is dropped by abort; under strict load on both hosts, no
// request fails and none reaches a pool after it stopped serving its host.
func TestPreviewThenPromoteAndAbort(t *testing.T) {
	in := trialInstanceWith(t, 0, func(s *config.Service) {
		s.Hosts = []string{"web.test"}
		s.PreviewHosts = []string{"preview.web.test"}
	})
	addr := in.HTTPAddr().String()
	live := startHostLoad(t, addr, "web.test", 12)
	pre := startHostLoad(t, addr, "preview.web.test", 6)
	time.Sleep(200 * time.Millisecond)
	res, err := deploy(t, in, admin.DeployRequest{Pool: "green", Preview: true})
	if err != nil {
		t.Fatalf("preview: %v", err)
	}
	previewed := time.Now()
	if res.Preview != "green" || res.Pool != "blue" {
		t.Fatalf("preview result %+v", res)
	}
	time.Sleep(400 * time.Millisecond)
	pr, err := in.Manager().Promote(context.Background(), admin.TrialRequest{Service: "web"}, nil)
	if err != nil {
		t.Fatalf("promote: %v", err)
	}
	promoted := time.Now()
	time.Sleep(300 * time.Millisecond)
	// A preview of blue, then abort: the preview host goes back to green.
	if _, err := deploy(t, in, admin.DeployRequest{Pool: "blue", Preview: true}); err != nil {
		t.Fatalf("second preview: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	if _, err := in.Manager().Abort(context.Background(), admin.TrialRequest{Service: "web"}, nil); err != nil {
		t.Fatalf("abort of the preview: %v", err)
	}
	aborted := time.Now()
	time.Sleep(300 * time.Millisecond)
	lrecs, precs := live.stop(), pre.stop()

	lf, lby, _ := tally(lrecs, "", time.Time{})
	pf, pby, _ := tally(precs, "", time.Time{})
	if lf > 0 || pf > 0 {
		t.Fatalf("failed: %d of %d live, %d of %d preview requests", lf, len(lrecs), pf, len(precs))
	}
	// Live traffic saw green only after the promotion's switch (a request
	// sent a moment before it may be dispatched after it), blue only
	// before the promotion returned.
	for _, r := range lrecs {
		if r.pool == "green" && r.sent.Before(pr.SwitchedAt.Add(-50*time.Millisecond)) || r.pool == "blue" && r.sent.After(promoted) {
			t.Fatalf("live request sent at %s reached %s (preview %s, promote %s)", r.sent.Format("15:04:05.000"), r.pool, previewed.Format("15:04:05.000"), promoted.Format("15:04:05.000"))
		}
	}
	if _, _, after := tally(precs, "blue", aborted); after > 0 {
		t.Fatalf("%d preview requests sent after the abort reached blue", after)
	}
	if lby["green"] == 0 || pby["green"] == 0 || pby["blue"] == 0 {
		t.Fatalf("live by pool %v, preview by pool %v", lby, pby)
	}
	st, _ := in.Manager().Status("web")
	if st[0].Active != "green" || st[0].Preview != "" {
		t.Fatalf("status after promote and abort: active %s preview %q", st[0].Active, st[0].Preview)
	}
	t.Logf("preview/promote/abort: %d live + %d preview requests, 0 failed; %s", len(lrecs), len(precs), pr.Message)
}

// TestCanaryHeldThenPromoted: a canary that holds at 30% is promoted to
// the full switch under strict load from many clients; no request fails
// and none reaches blue after the promotion's switch.
func TestCanaryHeldThenPromoted(t *testing.T) {
	in := trialInstance(t, 0)
	cl := startClientLoad(t, in.HTTPAddr().String(), 32)
	if _, err := deploy(t, in, admin.DeployRequest{Pool: "green", Canary: []float64{30}}); err != nil {
		t.Fatalf("canary: %v", err)
	}
	time.Sleep(400 * time.Millisecond)
	// The held canary refuses another deploy and a rollback, naming it.
	if _, err := deploy(t, in, admin.DeployRequest{Pool: "blue"}); err == nil || !strings.Contains(err.Error(), "canary") {
		t.Fatalf("deploy during a held canary: %v; want a refusal naming the canary", err)
	}
	if _, err := in.Manager().Rollback(context.Background(), admin.RollbackRequest{Service: "web"}, nil); err == nil || !strings.Contains(err.Error(), "canary") {
		t.Fatalf("rollback during a held canary: %v; want a refusal naming the canary", err)
	}
	res, err := in.Manager().Promote(context.Background(), admin.TrialRequest{Service: "web"}, nil)
	if err != nil {
		t.Fatalf("promote: %v", err)
	}
	promoted := time.Now()
	time.Sleep(300 * time.Millisecond)
	recs := cl.stop()
	failed, by, after := tally(recs, "blue", promoted)
	if failed > 0 {
		t.Fatalf("%d of %d requests failed across the canary and its promotion", failed, len(recs))
	}
	if after > 0 {
		t.Fatalf("%d requests sent after the promotion reached blue", after)
	}
	if by["green"] == 0 || by["blue"] == 0 {
		t.Fatalf("by pool %v; want both during the canary", by)
	}
	st, _ := in.Manager().Status("web")
	if st[0].Active != "green" || st[0].Previous != "blue" || st[0].Canary != "" {
		t.Fatalf("after promote: active %s previous %s canary %q", st[0].Active, st[0].Previous, st[0].Canary)
	}
	t.Logf("held canary promoted: %d requests, 0 failed, by pool %v; %s", len(recs), by, res.Message)
}

// TestShutdownStopsARunningGuard: a detached deploy whose guard watches
// for an hour; a graceful shutdown stops the guard where it is (green
// keeps serving, nothing rolls back) and records the trial's end, with the
// numbers judged until then, in the history.
func TestShutdownStopsARunningGuard(t *testing.T) {
	in := trialInstance(t, 0)
	l := startLoad(t, in.HTTPAddr().String(), 4)
	res, err := deploy(t, in, admin.DeployRequest{Pool: "green", Detach: true,
		Guard: &admin.GuardSettings{Window: admin.Duration(time.Hour), MaxLatencyRatio: 50}})
	if err != nil {
		t.Fatalf("detached deploy with a guard: %v", err)
	}
	t.Logf("deploy: %s", res.Message)
	// Requests on green for the guard to judge, then the load stops before
	// the shutdown refuses new connections.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _ := in.Manager().Status("web")
		if g := st[0].Guard; g != nil && g.Requests >= 50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the guard judged fewer than 50 requests on green within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s := l.stop().Summarize(); s.Failed > 0 || s.Requests == 0 {
		t.Fatalf("%d of %d requests failed across the switch to green", s.Failed, s.Requests)
	}
	servetest.ShutdownWithin(t, in, 10*time.Second)
	trial := servetest.LastEntry(t, in.Manager().Config().StateDir, "web", history.KindTrial)
	if trial == nil || trial.Ended == nil || trial.Result != history.ResultSucceeded || !strings.Contains(trial.Reason, "the guard stopped unfinished") ||
		!strings.Contains(trial.Reason, "because cutover serve shut down") {
		t.Fatalf("the history does not record the guard stopped by the shutdown: %+v", trial)
	}
	t.Logf("history: %s", trial.Reason)
	if st, _ := in.Manager().Status("web"); st[0].Active != "green" {
		t.Fatalf("after the shutdown stopped the guard the desired state has %s active, want green (no rollback)", st[0].Active)
	}
}
