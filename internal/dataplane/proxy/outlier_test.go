package proxy_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/cutover/cutover/bench/loadclient"
	"github.com/cutover/cutover/internal/dataplane/proxy"
	"github.com/cutover/cutover/internal/dataplane/route"
	"github.com/cutover/cutover/internal/dataplane/upstream"
)

// hungTarget accepts connections and reads what is sent, never answering.
func hungTarget(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); io.Copy(io.Discard, c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// poolOf is a service "web" with one active pool of the given addresses
// (labels are the addresses), and that pool's targets in the same order.
func poolOf(b upstream.Balance, addrs ...string) (*route.Service, []*upstream.Target) {
	svc := route.NewService("web")
	p := upstream.NewPool("blue", b)
	var specs []upstream.TargetSpec
	for _, a := range addrs {
		specs = append(specs, upstream.TargetSpec{Addr: a})
	}
	p.SetTargets(specs, func(s upstream.TargetSpec) *upstream.Target {
		return upstream.NewTarget(upstream.TargetOptions{Addr: s.Addr, Initial: upstream.Up})
	})
	svc.Apply(&route.Routes{Stable: p})
	return svc, p.Targets()
}

func load(t *testing.T, ctx context.Context, addr string, conns int, d time.Duration) *loadclient.Result {
	t.Helper()
	res, err := loadclient.Run(ctx, loadclient.Options{Addr: addr, Connections: conns, Duration: d, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func median(res *loadclient.Result) time.Duration {
	var lat []time.Duration
	for _, r := range res.Records {
		if !r.Failed() {
			lat = append(lat, r.Done-r.Sent)
		}
	}
	if len(lat) == 0 {
		return 0
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat[len(lat)/2]
}

// With try_timeout, a hung target costs no request: those sent to it move
// to the good target after the try timeout, and the hung one is ejected
// after a few. Round robin is the hardest case: it sends every other
// request to the hung target until it is ejected.
func TestHungTargetWithTryTimeoutFailsNoRequest(t *testing.T) {
	for _, b := range []upstream.Balance{upstream.RoundRobin, upstream.PeakEWMA} {
		t.Run(b.String(), func(t *testing.T) {
			good := newBackend(t, "good", nil)
			svc, ts := poolOf(b, good.addr(), hungTarget(t))
			const try = 200 * time.Millisecond
			ps := startProxy(t, proxy.Options{Router: tableWith(svc), TryTimeout: try}, proxy.ConnInfo{})
			res := load(t, context.Background(), ps.addr, 16, 1500*time.Millisecond)
			s := res.Summarize()
			if s.Failed != 0 {
				t.Fatalf("%d of %d requests failed (%v, %d non-2xx) with a hung target and try_timeout on; good %+v; hung %+v", s.Failed, s.Requests, s.ErrorKinds, s.Non2xx, ts[0].Status(), ts[1].Status())
			}
			if s.ByBackend["good"] < 50 {
				t.Fatalf("only %d requests served in 1.5s", s.ByBackend["good"])
			}
			// Low latency: most requests never wait on the hung target.
			if m := median(res); m >= try {
				t.Errorf("median latency %v, want well under the try timeout %v", m, try)
			}
			if b == upstream.RoundRobin && ts[1].Ejections() == 0 {
				t.Error("the hung target was not ejected")
			}
		})
	}
}

// Without try_timeout, requests on the hung target wait the response
// timeout and fail with 504; the first such timeout ejects the target, and
// the service is back: many more requests succeed after it than failed.
func TestEjectionBringsServiceBackWithoutTryTimeout(t *testing.T) {
	good := newBackend(t, "good", nil)
	svc, ts := poolOf(upstream.RoundRobin, good.addr(), hungTarget(t))
	const conns = 16
	ps := startProxy(t, proxy.Options{Router: tableWith(svc), ResponseTimeout: time.Second}, proxy.ConnInfo{})
	res := load(t, context.Background(), ps.addr, conns, 3*time.Second)
	s := res.Summarize()
	if ts[1].Ejections() == 0 {
		t.Fatal("a response timeout did not eject the hung target")
	}
	if s.Failed == 0 || s.Failed > conns || s.Non2xx != s.Failed {
		for _, r := range res.Records {
			if r.Failed() {
				t.Logf("failed: sent %v done %v status %d err %q", r.Sent, r.Done, r.Status, r.Err)
			}
		}
		t.Fatalf("%d failed (%d non-2xx, %v); want 504s, at most one per client (%d)", s.Failed, s.Non2xx, s.ErrorKinds, conns)
	}
	var firstFail time.Duration = -1
	for _, r := range res.Records {
		if r.Failed() && (firstFail < 0 || r.Done < firstFail) {
			firstFail = r.Done
		}
	}
	after := 0
	for _, r := range res.Records {
		if !r.Failed() && r.Sent > firstFail {
			after++
		}
	}
	if after < 20*s.Failed {
		t.Errorf("after the first timeout %d requests succeeded, %d failed in all: the service did not come back", after, s.Failed)
	}
}

// Requests already waiting on a target that goes down (the health check
// failed it) move to another target: none fails.
func TestRequestsWaitingOnATargetThatGoesDownMove(t *testing.T) {
	good := newBackend(t, "good", nil)
	svc, ts := poolOf(upstream.RoundRobin, good.addr(), hungTarget(t))
	hung := ts[1]
	const conns = 8
	ps := startProxy(t, proxy.Options{Router: tableWith(svc), ResponseTimeout: time.Minute}, proxy.ConnInfo{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan *loadclient.Result, 1)
	go func() {
		res, _ := loadclient.Run(ctx, loadclient.Options{Addr: ps.addr, Connections: conns, Duration: 30 * time.Second, Timeout: 40 * time.Second})
		done <- res
	}()
	// Round robin sends every client to the hung target soon.
	waitFor(t, func() bool { return hung.InFlight() == conns })
	served := ts[0].Served()
	hung.ReportFailure(errors.New("health check failed"))
	deadline := time.Now().Add(20 * time.Second)
	for hung.InFlight() != 0 || ts[0].Served() <= served+100 {
		if time.Now().After(deadline) {
			t.Fatalf("20s after the hung target went down it has %d requests in flight, and the good one served %d more (state %v/%v, ejected %v/%v)",
				hung.InFlight(), ts[0].Served()-served, ts[0].State(), hung.State(), ts[0].Ejected(), hung.Ejected())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	res := <-done
	if s := res.Summarize(); s.Failed != 0 {
		t.Fatalf("%d of %d requests failed (%v, %d non-2xx); want the waiting ones moved", s.Failed, s.Requests, s.ErrorKinds, s.Non2xx)
	}
}

// Under peak EWMA a slow target whose health check passes gets a small
// share of the requests; under round robin it gets half.
func TestSlowTargetGetsLessTrafficUnderPeakEWMA(t *testing.T) {
	share := map[upstream.Balance]float64{}
	for _, b := range []upstream.Balance{upstream.RoundRobin, upstream.PeakEWMA} {
		fast := newBackend(t, "fast", nil)
		slow := newBackend(t, "slow", func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(100 * time.Millisecond)
			w.Header().Set("X-Backend", "slow")
			io.WriteString(w, "slow")
		})
		svc, _ := poolOf(b, fast.addr(), slow.addr())
		ps := startProxy(t, proxy.Options{Router: tableWith(svc)}, proxy.ConnInfo{})
		s := load(t, context.Background(), ps.addr, 8, 1500*time.Millisecond).Summarize()
		if s.Failed != 0 {
			t.Fatalf("%v: %d requests failed", b, s.Failed)
		}
		share[b] = float64(s.ByBackend["slow"]) / float64(s.ByBackend["slow"]+s.ByBackend["fast"])
		t.Logf("%v: %d requests, %.3f%% to the slow target", b, s.Requests, 100*share[b])
	}
	if share[upstream.RoundRobin] < 0.3 {
		t.Fatalf("round robin sent %.1f%% to the slow target, want about half", 100*share[upstream.RoundRobin])
	}
	// Typically 0.5% against 50%; a busy machine slows the fast target too.
	if share[upstream.PeakEWMA]*5 > share[upstream.RoundRobin] {
		t.Errorf("peak EWMA sent %.2f%% to the slow target, round robin %.2f%%: want at least 5 times less",
			100*share[upstream.PeakEWMA], 100*share[upstream.RoundRobin])
	}
}
