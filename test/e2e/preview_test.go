package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/cutover/cutover/bench/loadclient"
	"github.com/cutover/cutover/internal/admin"
)

// Preview under load (issue 11 §2): strict keep-alive clients on the
// service's host and on its preview host at once. deploy green --preview
// sends only the preview host to green; abort returns it to blue; a second
// preview and promote switch everyone to green. No request fails, each
// host is served by the pool it should be after each step returns, and no
// request reaches a pool after it stopped getting that traffic.
func TestPreviewPromoteAbortUnderLoad(t *testing.T) {
	st := startStack(t, stackOptions{drainTimeout: 5 * time.Second, previewHosts: []string{"preview.example"}})
	ctx := context.Background()
	timeout := admin.Duration(10 * time.Second)

	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	run := func(host string) chan *loadclient.Result {
		ch := make(chan *loadclient.Result, 1)
		go func() {
			res, err := loadclient.Run(loadCtx, loadclient.Options{
				Addr: st.proxyAddr, Connections: 8, Duration: 60 * time.Second,
				Host: host, BackendHeader: "X-Backend", Timeout: requestTimeout,
			})
			if err != nil {
				t.Error(err)
			}
			ch <- res
		}()
		return ch
	}
	liveCh, previewCh := run("app.example"), run("preview.example")
	type step struct {
		name                string
		returned, next      time.Time
		live, preview, left string // pools serving each host after the step; the pool that left the preview host
		leftAll             bool   // left is out of every host's routing
	}
	var steps []*step
	do := func(name string, live, preview, left string, leftAll bool, f func() (*admin.DeployResult, error)) {
		t.Helper()
		time.Sleep(150 * time.Millisecond) // load before the step
		if len(steps) > 0 {
			steps[len(steps)-1].next = time.Now()
		}
		res, err := f()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Logf("%s: %s", name, res.Message)
		steps = append(steps, &step{name: name, returned: time.Now(), live: live, preview: preview, left: left, leftAll: leftAll})
	}
	do("deploy green --preview", "blue", "green", "", false, func() (*admin.DeployResult, error) {
		return st.client.Deploy(ctx, admin.DeployRequest{Pool: "green", Preview: true, Expect: "blue", Timeout: timeout}, nil)
	})
	if ss, _ := st.m.Status("web"); ss[0].Active != "blue" || ss[0].Preview != "green" {
		t.Fatalf("status after the preview: active %q preview %q", ss[0].Active, ss[0].Preview)
	}
	do("abort", "blue", "blue", "green", true, func() (*admin.DeployResult, error) {
		return st.client.Abort(ctx, admin.TrialRequest{}, nil)
	})
	do("deploy green --preview again", "blue", "green", "", false, func() (*admin.DeployResult, error) {
		return st.client.Deploy(ctx, admin.DeployRequest{Pool: "green", Preview: true, Timeout: timeout}, nil)
	})
	do("promote", "green", "green", "blue", true, func() (*admin.DeployResult, error) {
		return st.client.Promote(ctx, admin.TrialRequest{Timeout: timeout}, nil)
	})
	time.Sleep(150 * time.Millisecond)
	steps[len(steps)-1].next = time.Now()
	stopLoad()
	liveRes, previewRes := <-liveCh, <-previewCh
	if liveRes == nil || previewRes == nil {
		t.FailNow()
	}
	if ss, _ := st.m.Status("web"); ss[0].Active != "green" || ss[0].Preview != "" || ss[0].Previous != "blue" {
		t.Fatalf("status after promote: active %q preview %q previous %q", ss[0].Active, ss[0].Preview, ss[0].Previous)
	}
	for host, res := range map[string]*loadclient.Result{"app.example": liveRes, "preview.example": previewRes} {
		sum := res.Summarize()
		if sum.Failed != 0 || sum.Requests == 0 {
			t.Errorf("%s: %d of %d requests failed (%v)", host, sum.Failed, sum.Requests, sum.ErrorKinds)
		}
		t.Logf("%s: requests %d, failed %d, per backend %v", host, sum.Requests, sum.Failed, sum.ByBackend)
	}
	for _, sp := range steps {
		if n := servedOnlyBy(t, st, liveRes, sp.returned, sp.next, sp.live, sp.name+" (app.example)"); n == 0 {
			t.Errorf("%s: no app.example response checked", sp.name)
		}
		if n := servedOnlyBy(t, st, previewRes, sp.returned, sp.next, sp.preview, sp.name+" (preview.example)"); n == 0 {
			t.Errorf("%s: no preview.example response checked", sp.name)
		}
		// The pool that left gets no request from any host once the step
		// returned (it drained before returning), until the next step.
		if sp.leftAll {
			for _, b := range st.backends[sp.left] {
				if at, ok := b.lastArrivalIn(sp.returned, sp.next); ok {
					t.Errorf("%s: a request reached %s %s after it returned", sp.name, b.name, at.Sub(sp.returned))
				}
			}
		}
	}
}
