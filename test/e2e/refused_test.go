package e2e

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cutover/cutover/bench/loadclient"
	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/testutil/rofs"
)

// underLoad runs a strict keep-alive load against the stack while steps
// run, and returns what it recorded.
func underLoad(t *testing.T, st *stack, clients int, steps func()) *loadclient.Result {
	t.Helper()
	loadCtx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	done := make(chan *loadclient.Result, 1)
	go func() {
		res, err := loadclient.Run(loadCtx, loadclient.Options{
			Addr: st.proxyAddr, Connections: clients, Duration: 60 * time.Second,
			Host: "app.example", BackendHeader: "X-Backend", Timeout: requestTimeout,
		})
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	steps()
	stopLoad()
	res := <-done
	if res == nil {
		t.FailNow()
	}
	return res
}

// servedOnlyBy checks that every response answered within [from, to) came
// from pool, and returns how many it checked.
func servedOnlyBy(t *testing.T, st *stack, res *loadclient.Result, from, to time.Time, pool, what string) int {
	t.Helper()
	n := 0
	for _, r := range res.Records {
		sent, done := res.Start.Add(r.Sent), res.Start.Add(r.Done)
		if r.Failed() || sent.Before(from) || done.After(to) {
			continue
		}
		n++
		if got := st.poolOf(r.Backend); got != pool {
			t.Errorf("%s: a response came from %s (%s), want only %s", what, r.Backend, got, pool)
			return n
		}
	}
	return n
}

// Refused changes move no traffic and fail no request: a deploy and a
// rollback refused because the state cannot be written, and a deploy
// refused because its new targets are dead, each under load (issue 9,
// items 3 and 4).
func TestRefusedChangesUnderLoad(t *testing.T) {
	st := startStack(t, stackOptions{drainTimeout: 5 * time.Second})
	ctx := context.Background()
	timeout := admin.Duration(2 * time.Second)
	type check struct {
		what, live string
		from, to   time.Time
	}
	var checks []check
	refused := func(what, live string, kind admin.ErrorKind, run func() error) {
		t.Helper()
		began := time.Now()
		err := run()
		var ce *admin.Error
		if !errors.As(err, &ce) || ce.Kind != kind {
			t.Fatalf("%s: %v, want %s", what, err, kind)
		}
		// The load keeps going a little after the refusal.
		time.Sleep(100 * time.Millisecond)
		if ss, _ := st.m.Status("web"); ss[0].Active != live {
			t.Fatalf("%s: active %q after the refusal, want %q", what, ss[0].Active, live)
		}
		checks = append(checks, check{what, live, began, time.Now()})
	}
	res := underLoad(t, st, 16, func() {
		time.Sleep(200 * time.Millisecond)
		undo := rofs.Make(t, st.stateDir)
		refused("deploy with an unwritable state", "blue", admin.KindState, func() error {
			_, err := st.client.Deploy(ctx, admin.DeployRequest{Pool: "green", Timeout: timeout}, nil)
			return err
		})
		undo()
		refused("deploy to dead targets", "blue", admin.KindUnhealthy, func() error {
			_, err := st.client.Deploy(ctx, admin.DeployRequest{Pool: "green", Targets: []string{"127.0.0.1:1"}, Timeout: timeout}, nil)
			return err
		})
		if _, err := st.client.Deploy(ctx, admin.DeployRequest{Pool: "green", Timeout: timeout}, nil); err != nil {
			t.Fatalf("deploy of green's own targets after the refusals: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
		undo = rofs.Make(t, st.stateDir)
		refused("rollback with an unwritable state", "green", admin.KindState, func() error {
			_, err := st.client.Rollback(ctx, admin.RollbackRequest{Timeout: timeout}, nil)
			return err
		})
		undo()
		if _, err := st.client.Rollback(ctx, admin.RollbackRequest{Timeout: timeout}, nil); err != nil {
			t.Fatalf("rollback once writable: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	})
	sum := res.Summarize()
	if sum.Failed != 0 {
		t.Errorf("%d of %d requests failed (%d non-2xx, socket errors %v)", sum.Failed, sum.Requests, sum.Non2xx, sum.ErrorKinds)
	}
	for _, c := range checks {
		if n := servedOnlyBy(t, st, res, c.from, c.to, c.live, c.what); n == 0 {
			t.Errorf("%s: no response checked", c.what)
		}
	}
	t.Logf("requests %d, failed %d, per backend %v", sum.Requests, sum.Failed, sum.ByBackend)
}

// A burst of ten rollbacks, each sent with the pool its caller saw live
// (as the CLI does), flips the service once under load: the others are
// refused while the first runs, and so are those sent after it switched
// (issue 9, item 9).
func TestConcurrentRollbacksFlipOnce(t *testing.T) {
	st := startStack(t, stackOptions{drainTimeout: 5 * time.Second})
	ctx := context.Background()
	timeout := admin.Duration(5 * time.Second)
	var (
		deployed, rolled time.Time
		wins             []*admin.DeployResult
		refusals         = map[admin.ErrorKind]int{}
	)
	res := underLoad(t, st, 16, func() {
		if _, err := st.client.Deploy(ctx, admin.DeployRequest{Pool: "green", Expect: "blue", Timeout: timeout}, nil); err != nil {
			t.Fatalf("deploy green: %v", err)
		}
		deployed = time.Now()
		type outcome struct {
			res *admin.DeployResult
			err error
		}
		// Ten at once: they race, one switches and the others find it
		// running. Then three sent after the burst returned, by callers
		// that saw green live before it: the switch has happened, so
		// they must be refused for what they expect, not for being busy.
		// (Spreading one burst over time instead left the outcome to the
		// machine's speed: a slow first rollback kept them all busy.)
		out := make(chan outcome, 10)
		for range 10 {
			go func() {
				r, err := st.client.Rollback(ctx, admin.RollbackRequest{Expect: "green", Timeout: timeout}, nil)
				out <- outcome{r, err}
			}()
		}
		results := make([]outcome, 0, 13)
		for range 10 {
			results = append(results, <-out)
		}
		for range 3 {
			r, err := st.client.Rollback(ctx, admin.RollbackRequest{Expect: "green", Timeout: timeout}, nil)
			var ce *admin.Error
			if err == nil || !errors.As(err, &ce) || ce.Kind != admin.KindRefused {
				t.Errorf("a rollback expecting green after the switch: result %+v, err %v; want refused (%s)", r, err, admin.KindRefused)
			}
			results = append(results, outcome{r, err})
		}
		for _, o := range results {
			var ce *admin.Error
			switch {
			case o.err == nil:
				wins = append(wins, o.res)
			case errors.As(o.err, &ce):
				refusals[ce.Kind]++
			default:
				t.Errorf("rollback: %v", o.err)
			}
		}
		rolled = time.Now()
		time.Sleep(200 * time.Millisecond)
	})
	if len(wins) != 1 || wins[0].Pool != "blue" {
		t.Fatalf("rollbacks that switched: %+v, want exactly one to blue (refusals %v)", wins, refusals)
	}
	if refusals[admin.KindRefused] == 0 {
		t.Errorf("no rollback was refused for expecting green after the switch (refusals %v): the burst did not test it", refusals)
	}
	if ss, _ := st.m.Status("web"); ss[0].Active != "blue" {
		t.Fatalf("active %q after the burst, want blue", ss[0].Active)
	}
	sum := res.Summarize()
	if sum.Failed != 0 {
		t.Errorf("%d of %d requests failed (%d non-2xx, socket errors %v)", sum.Failed, sum.Requests, sum.Non2xx, sum.ErrorKinds)
	}
	// From the burst's end on only blue answered, and no request reached
	// green after the rollback that switched returned.
	if n := servedOnlyBy(t, st, res, rolled, time.Now(), "blue", "after the burst"); n == 0 {
		t.Error("no response checked after the burst")
	}
	for _, b := range st.backends["green"] {
		if at, ok := b.lastArrivalIn(rolled, time.Now().Add(time.Hour)); ok {
			t.Errorf("a request reached %s %s after the burst", b.name, at.Sub(rolled))
		}
	}
	t.Logf("requests %d, failed %d; deploy at %s; one rollback switched, refusals %v; per backend %v",
		sum.Requests, sum.Failed, deployed.Format("15:04:05.000"), refusals, sum.ByBackend)
}
