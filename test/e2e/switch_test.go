package e2e

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/cutover/cutover/bench/loadclient"
	"github.com/cutover/cutover/internal/admin"
)

// switchRecord is one deploy or rollback done during the load.
type switchRecord struct {
	began, returned time.Time
	res             *admin.DeployResult
}

// slowResult is a long request started on the old pool before a switch.
type slowResult struct {
	status  int
	backend string
	err     error
}

// TestSwitchesUnderLoad is the product's main promise: under 32
// concurrent keep-alive clients, at least 50 switches (deploy and rollback
// alternating) lose no request; after each switch returns every new
// response comes from the new pool; long requests started on the old pool
// just before a switch complete there.
func TestSwitchesUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test: skipped with -short")
	}
	const (
		clients      = 32
		minLoad      = 10 * time.Second // load runs at least this long...
		minSwitches  = 50               // ...and until this many switches are done,
		maxLoad      = 90 * time.Second // but never longer than this
		maxSwitches  = 400
		pace         = 120 * time.Millisecond
		slowEvery    = 20 // every slowEvery-th switch has long requests on the old pool
		slowRequests = 4
		slowMS       = "1000"
	)
	slowArrived := make(chan string, 64)
	st := startStack(t, stackOptions{drainTimeout: 5 * time.Second, slowArrived: slowArrived})

	ctx := context.Background()
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	loadDone := make(chan *loadclient.Result, 1)
	go func() {
		res, err := loadclient.Run(loadCtx, loadclient.Options{
			Addr: st.proxyAddr, Connections: clients, Duration: maxLoad,
			Host: "app.example", BackendHeader: "X-Backend",
			Timeout: requestTimeout,
		})
		if err != nil {
			t.Error(err)
		}
		loadDone <- res
	}()

	slowClient := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	defer slowClient.CloseIdleConnections()
	var switches []switchRecord
	type slowBatch struct {
		switchIndex int
		from        string
		results     []slowResult
	}
	var slowBatches []slowBatch
	start := time.Now()
	tick := time.NewTicker(pace)
	defer tick.Stop()
	for i := 0; i < maxSwitches && time.Since(start) < maxLoad-5*time.Second; i++ {
		if i >= minSwitches && time.Since(start) >= minLoad {
			break
		}
		<-tick.C
		before, _ := st.m.Status("web")
		from := before[0].Active

		// Long requests on the live pool, arrived at their backends
		// before the switch.
		var slowWG sync.WaitGroup
		var batch []slowResult
		if i%slowEvery == slowEvery-1 {
			batch = make([]slowResult, slowRequests)
			for j := range batch {
				slowWG.Add(1)
				go func() {
					defer slowWG.Done()
					resp, err := slowClient.Get("http://" + st.proxyAddr + "/slow?ms=" + slowMS)
					if err != nil {
						batch[j].err = err
						return
					}
					body, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					batch[j] = slowResult{status: resp.StatusCode, backend: string(body), err: err}
				}()
			}
			for range batch {
				select {
				case <-slowArrived:
				case <-time.After(10 * time.Second):
					t.Fatal("long requests did not reach the backends")
				}
			}
		}

		rec := switchRecord{began: time.Now()}
		var err error
		if i%2 == 0 {
			to := "green"
			if from == "green" {
				to = "blue"
			}
			rec.res, err = st.client.Deploy(ctx, admin.DeployRequest{Pool: to, Timeout: admin.Duration(10 * time.Second)}, nil)
		} else {
			rec.res, err = st.client.Rollback(ctx, admin.RollbackRequest{Timeout: admin.Duration(10 * time.Second)}, nil)
		}
		rec.returned = time.Now()
		if err != nil {
			t.Fatalf("switch %d: %v", i, err)
		}
		if rec.res.From != from || rec.res.Pool == from {
			t.Fatalf("switch %d went %s → %s, want away from %s", i, rec.res.From, rec.res.Pool, from)
		}
		switches = append(switches, rec)
		if batch != nil {
			slowWG.Wait()
			slowBatches = append(slowBatches, slowBatch{switchIndex: i, from: from, results: batch})
			if rec.res.InFlightAtSwitch < slowRequests || rec.res.ClosedAtTimeout != 0 {
				t.Errorf("switch %d with %d long requests on %s: %+v", i, slowRequests, from, rec.res)
			}
		}
	}
	// The last switch's new pool serves a while before the load stops.
	<-tick.C
	stopLoad()
	load := <-loadDone
	if load == nil {
		t.FailNow()
	}
	if load.Elapsed < minLoad {
		t.Errorf("load ran %s, want at least %s", load.Elapsed, minLoad)
	}

	// Every request succeeded.
	sum := load.Summarize()
	if sum.Failed != 0 {
		t.Errorf("%d of %d requests failed (%d non-2xx, socket errors %v)", sum.Failed, sum.Requests, sum.Non2xx, sum.ErrorKinds)
	}
	if len(switches) < minSwitches {
		t.Errorf("%d switches in %s, want at least %d", len(switches), load.Elapsed, minSwitches)
	}
	// Long requests finished on the pool they started on.
	for _, b := range slowBatches {
		for _, r := range b.results {
			if r.err != nil || r.status != http.StatusOK || st.poolOf(r.backend) != b.from {
				t.Errorf("long request across switch %d: status %d from %q, err %v; want 200 from %s", b.switchIndex, r.status, r.backend, r.err, b.from)
			}
		}
	}
	// After each switch returned, until the next one switched, no request
	// reached a backend of the old pool. This is checked where requests
	// arrive: the switch returns only once the old pool has no request in
	// flight, so an arrival at an old-pool backend after the return is a
	// request dispatched to the old pool after the switch. (A client-side
	// check cannot tell a request sent just before the next switch from
	// one dispatched after it.)
	late := 0
	for i, sw := range switches {
		end := time.Now().Add(time.Hour)
		if i+1 < len(switches) {
			end = switches[i+1].res.SwitchedAt
		}
		for _, b := range st.backends[sw.res.From] {
			if at, ok := b.lastArrivalIn(sw.returned, end); ok {
				late++
				t.Errorf("switch %d (%s → %s): a request reached %s %s after the switch returned", i, sw.res.From, sw.res.Pool, b.name, at.Sub(sw.returned))
			}
		}
	}
	// And from the client's side: requests sent after a switch returned
	// and answered before the next switch began came from the new pool.
	wrong, checked := 0, 0
	for i, sw := range switches {
		end := time.Now().Add(time.Hour)
		if i+1 < len(switches) {
			end = switches[i+1].began
		}
		for _, r := range load.Records {
			sent, done := load.Start.Add(r.Sent), load.Start.Add(r.Done)
			if sent.After(sw.returned) && done.Before(end) && !r.Failed() {
				checked++
				if st.poolOf(r.Backend) != sw.res.Pool {
					wrong++
				}
			}
		}
	}
	if wrong > 0 {
		t.Errorf("%d of %d responses sent after a switch returned came from the old pool", wrong, checked)
	}
	// Cut-over latency: from the switch to the last request dispatched to
	// the old pool, bounded from above by its arrival at an old-pool
	// backend (the proxy's own latency is included, so it grows when the
	// machine is busy).
	var worst, total time.Duration
	for i, sw := range switches {
		end := time.Now().Add(time.Hour)
		if i+1 < len(switches) {
			end = switches[i+1].began
		}
		var last time.Duration
		for _, b := range st.backends[sw.res.From] {
			if at, ok := b.lastArrivalIn(sw.res.SwitchedAt, end); ok && at.Sub(sw.res.SwitchedAt) > last {
				last = at.Sub(sw.res.SwitchedAt)
			}
		}
		total += last
		worst = max(worst, last)
	}
	t.Logf("load %s: requests sent %d, failed %d, switches %d (%d deploys, %d rollbacks), responses checked after switches %d, late arrivals at the old pool %d; cut-over latency (switch → last request dispatched to the old pool): worst %s, mean %s; per backend %v",
		load.Elapsed.Round(time.Millisecond), sum.Requests, sum.Failed, len(switches), (len(switches)+1)/2, len(switches)/2, checked, late, worst, total/time.Duration(max(len(switches), 1)), sum.ByBackend)
}

// TestWebSocketKeepsWorkingUntilDrainTimeout opens a WebSocket on blue,
// switches to green, and checks the WebSocket still talks to blue after the
// switch until the end of the drain, where it is closed with a close frame
// (1001, going away) rather than cut (reported by the deploy).
func TestWebSocketKeepsWorkingUntilDrainTimeout(t *testing.T) {
	const drain, spread = 1500 * time.Millisecond, 300 * time.Millisecond
	st := startStack(t, stackOptions{drainTimeout: drain, closeSpread: spread})
	ctx := context.Background()
	ws, _, err := websocket.Dial(ctx, "ws://"+st.proxyAddr+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	echo := func(msg string) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := ws.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			return "", err
		}
		_, b, err := ws.Read(ctx)
		return string(b), err
	}
	if got, err := echo("hello"); err != nil || !strings.HasPrefix(got, "blue-") {
		t.Fatalf("echo before the switch: %q, %v", got, err)
	}

	switched := make(chan struct{})
	var once sync.Once
	type outcome struct {
		res *admin.DeployResult
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := st.client.Deploy(ctx, admin.DeployRequest{Pool: "green"}, func(ev admin.Event) {
			if ev.Phase == admin.PhaseSwitch {
				once.Do(func() { close(switched) })
			}
		})
		done <- outcome{res, err}
	}()
	<-switched
	switchedAt := time.Now()

	// New requests go to green while the WebSocket still talks to blue.
	resp, err := http.Get("http://" + st.proxyAddr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(body), "green-") {
		t.Fatalf("request after the switch answered by %q, want green", body)
	}
	var lastOK time.Time
	var closeErr error
	n := 0
	for ; n < 1000; n++ {
		got, err := echo("ping")
		if err != nil {
			closeErr = err
			break
		}
		if !strings.HasPrefix(got, "blue-") {
			t.Fatalf("WebSocket echo after the switch from %q, want blue", got)
		}
		lastOK = time.Now()
		// Paced so the check spans the drain without a busy loop.
		time.Sleep(50 * time.Millisecond)
	}
	o := <-done
	if o.err != nil {
		t.Fatal(o.err)
	}
	if kept := lastOK.Sub(switchedAt); kept < drain-spread-300*time.Millisecond {
		t.Fatalf("WebSocket worked for %s after the switch, want about the %s drain timeout less the %s close spread", kept, drain, spread)
	}
	if code := websocket.CloseStatus(closeErr); code != websocket.StatusGoingAway {
		t.Fatalf("WebSocket ended with %v (close status %d), want a close frame %d", closeErr, code, websocket.StatusGoingAway)
	}
	if o.res.InFlightAtSwitch != 1 || o.res.Goodbyes != 1 || o.res.ClosedAtTimeout != 0 {
		t.Fatalf("deploy result %+v: want the WebSocket in flight at the switch and closed cleanly before the drain timeout", o.res)
	}
	if _, err := echo("after"); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WebSocket after the drain: %v, want it closed", err)
	}
	t.Logf("WebSocket kept working %s after the switch (%d echoes from blue); closed with 1001 near the end of the %s drain", lastOK.Sub(switchedAt), n, drain)
}
