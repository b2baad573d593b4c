package proxy_test

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/dataplane/proxy"
	"github.com/cutover/cutover/internal/dataplane/route"
	"github.com/cutover/cutover/internal/dataplane/upstream"
)

// recorded is the part of an Outcome a test checks, copied out of Observe.
type recorded struct {
	service, pool, target string
	status, upstream      int
	local                 bool
	bytesIn, bytesOut     int64
	attempts              int
	failed                []string // "target:reason"
	failure               proxy.Failure
	proto                 string
}

// recorder is an Observer that keeps a copy of every Outcome and signals
// each one, so a test can wait for a request's end instead of sleeping.
type recorder struct {
	mu    sync.Mutex
	all   []recorded
	ended chan struct{}
}

func newRecorder() *recorder { return &recorder{ended: make(chan struct{}, 1024)} }

func (r *recorder) Observe(o *proxy.Outcome) {
	rec := recorded{status: o.Status, upstream: o.UpstreamStatus, local: o.Local,
		bytesIn: o.BytesIn, bytesOut: o.BytesOut, attempts: o.Attempts, failure: o.Failure, proto: o.Proto}
	if o.Service != nil {
		rec.service = o.Service.Name()
	}
	if o.Pool != nil {
		rec.pool = o.Pool.Name()
	}
	if o.Target != nil {
		rec.target = o.Target.Addr()
	}
	for _, f := range o.Failed {
		rec.failed = append(rec.failed, f.Target.Addr()+":"+f.Reason.String())
	}
	r.mu.Lock()
	r.all = append(r.all, rec)
	r.mu.Unlock()
	r.ended <- struct{}{}
}

// wait returns once n more requests ended, or fails the test.
func (r *recorder) wait(t *testing.T, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		select {
		case <-r.ended:
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d requests ended", i, n)
		}
	}
}

func (r *recorder) snapshot() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recorded(nil), r.all...)
}

// TestEveryRequestEndsOnceWithItsOutcome: on each engine, every request
// (with and without a body, answered by a target or by the proxy) gives
// exactly one Outcome, with the access log off.
func TestEveryRequestEndsOnceWithItsOutcome(t *testing.T) {
	b := newBackend(t, "b1", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "hello")
	})
	svc := newService("web", upstream.RoundRobin, poolSpec{"blue", []*backend{b}})
	rec := newRecorder()
	ps := startProxy(t, proxy.Options{Router: tableWith(svc), Observers: []proxy.Observer{rec}}, proxy.ConnInfo{})

	c := strictClient()
	const n = 30
	for i := 0; i < n; i++ {
		var resp *http.Response
		var err error
		if i%2 == 0 {
			resp, err = c.Get("http://" + ps.addr + "/")
		} else {
			resp, err = c.Post("http://"+ps.addr+"/", "text/plain", strings.NewReader("0123456789"))
		}
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	rec.wait(t, n)
	got := rec.snapshot()
	if len(got) != n {
		t.Fatalf("%d outcomes for %d requests", len(got), n)
	}
	var posts int
	for _, o := range got {
		if o.service != "web" || o.pool != "blue" || o.target != b.addr() || o.status != 200 || o.upstream != 200 ||
			o.local || o.attempts != 1 || o.failure != proxy.FailNone || o.bytesOut != 5 || o.proto != "HTTP/1.1" {
			t.Fatalf("outcome %+v", o)
		}
		if o.bytesIn == 10 {
			posts++
		}
	}
	if posts != n/2 {
		t.Fatalf("%d outcomes carry the POST body's 10 bytes, want %d", posts, n/2)
	}
	if got := svc.Active().InFlight(); got != 0 {
		t.Fatalf("pool in-flight %d after every request ended", got)
	}
}

// TestOutcomesOfProxyAnswers: unknown host, a pool with no targets and an
// unreachable target are each one Outcome naming what failed.
func TestOutcomesOfProxyAnswers(t *testing.T) {
	// An address nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()

	deadSvc := route.NewService("dead")
	p := upstream.NewPool("blue", upstream.RoundRobin)
	p.SetTargets([]upstream.TargetSpec{{Addr: dead}}, func(s upstream.TargetSpec) *upstream.Target {
		return upstream.NewTarget(upstream.TargetOptions{Addr: s.Addr, Initial: upstream.Up})
	})
	deadSvc.Apply(&route.Routes{Stable: p})
	emptySvc := route.NewService("empty")
	emptySvc.Apply(&route.Routes{Stable: upstream.NewPool("blue", upstream.RoundRobin)})
	tbl := route.NewTable()
	tbl.Add(deadSvc, []string{"dead.test"})
	tbl.Add(emptySvc, []string{"empty.test"})
	rec := newRecorder()
	ps := startProxy(t, proxy.Options{Router: route.NewRouter(tbl), Observers: []proxy.Observer{rec}}, proxy.ConnInfo{})

	cases := []struct {
		host    string
		status  int
		failure proxy.Failure
		failed  int
	}{
		{"nobody.test", 404, proxy.FailNone, 0},
		{"empty.test", 503, proxy.FailNoTarget, 0},
		{"dead.test", 502, proxy.FailConnect, 1},
	}
	for _, tc := range cases {
		resp, _ := rawResponse(t, ps.addr, "GET / HTTP/1.1\r\nHost: "+tc.host+"\r\nConnection: close\r\n\r\n")
		if resp.StatusCode != tc.status {
			t.Fatalf("%s: status %d, want %d", tc.host, resp.StatusCode, tc.status)
		}
		rec.wait(t, 1)
		got := rec.snapshot()
		o := got[len(got)-1]
		if o.status != tc.status || !o.local || o.failure != tc.failure || len(o.failed) != tc.failed {
			t.Fatalf("%s: outcome %+v, want status %d local failure %q and %d failed attempts", tc.host, o, tc.status, tc.failure, tc.failed)
		}
		if tc.failed > 0 && o.failed[0] != dead+":connect" {
			t.Fatalf("%s: failed attempts %v, want %s:connect", tc.host, o.failed, dead)
		}
	}
	if n := len(rec.snapshot()); n != len(cases) {
		t.Fatalf("%d outcomes for %d requests", n, len(cases))
	}
}

// TestClientThatLeavesIsNotTheTargetsFault: a client whose request body
// breaks off (it closed the connection) is recorded as its own failure,
// and the target, which did nothing wrong, stays up with no failure
// counted against it.
func TestClientThatLeavesIsNotTheTargetsFault(t *testing.T) {
	b := newBackend(t, "b1", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	})
	svc := newService("web", upstream.RoundRobin, poolSpec{"blue", []*backend{b}})
	rec := newRecorder()
	ps := startProxy(t, proxy.Options{Router: tableWith(svc), Observers: []proxy.Observer{rec}}, proxy.ConnInfo{})

	c, err := net.Dial("tcp", ps.addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly-part-of-it")
	// Leave with the body unfinished: the proxy reads the head and the
	// part that was sent, then the end of the connection.
	c.Close()
	rec.wait(t, 1)
	o := rec.snapshot()[0]
	if o.failure.Upstream() || o.failure == proxy.FailNone || o.status == 502 {
		t.Fatalf("a client that left mid-body: outcome %+v; want a client failure, not the target's", o)
	}
	tgt := svc.Active().Targets()[0]
	if st := tgt.Status(); st.State != "up" || st.Failures != 0 {
		t.Fatalf("target after a client left: state %s, %d failures; want up with none", st.State, st.Failures)
	}
}
