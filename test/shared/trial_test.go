package shared

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/controlplane/history"
	"github.com/cutover/cutover/internal/controlplane/state/etcdstore"
	"github.com/cutover/cutover/internal/serve"
	"github.com/cutover/cutover/internal/testutil/servetest"
)

func webStatus(t *testing.T, in *serve.Instance) admin.ServiceStatus {
	t.Helper()
	st, err := in.Manager().Status("web")
	if err != nil {
		t.Fatal(err)
	}
	return st[0]
}

// refusedBusy checks that err is a busy refusal whose message has every
// one of want.
func refusedBusy(t *testing.T, what string, err error, want ...string) {
	t.Helper()
	var ae *admin.Error
	if !errors.As(err, &ae) || ae.Kind != admin.KindBusy {
		t.Fatalf("%s: %v, want refused as busy", what, err)
	}
	for _, w := range want {
		if !strings.Contains(ae.Message, w) {
			t.Fatalf("%s: %q does not name %q", what, ae.Message, w)
		}
	}
	t.Logf("%s refused: %s", what, ae.Message)
}

// TestCanaryHoldsTheSharedLock: a canary run by one instance holds the
// deploy lock for as long as it runs: a deploy through the other instance
// is refused naming the canary and changes nothing, and promote and abort
// through the other instance end it (the instance running it acts).
func TestCanaryHoldsTheSharedLock(t *testing.T) {
	c := start(t, 2)
	finish := load(t, c.ins, 4, 2*time.Minute)
	ctx := context.Background()
	a, b := c.ins[0], c.ins[1]
	timeout := admin.Duration(20 * time.Second)

	canary := func(via *serve.Instance, name string) {
		t.Helper()
		res, err := via.Manager().Deploy(ctx, admin.DeployRequest{Service: "web", Pool: "green", Canary: []float64{10}, Timeout: timeout}, nil)
		if err != nil {
			t.Fatalf("canary through %s: %v", name, err)
		}
		t.Logf("canary through %s: %s", name, res.Message)
		for i, in := range c.ins {
			waitFor(t, fmt.Sprintf("instance %d applies the canary", i+1), 10*time.Second, func() bool { return webStatus(t, in).Canary == "green" })
		}
	}
	canary(a, "edge-1")
	before := webStatus(t, b)

	_, err := b.Manager().Deploy(ctx, admin.DeployRequest{Service: "web", Pool: "green", Timeout: timeout}, nil)
	refusedBusy(t, "deploy of green through edge-2 during edge-1's canary", err, "canary 10%", "instance edge-1", "cutover promote", "cutover abort")
	_, err = b.Manager().Deploy(ctx, admin.DeployRequest{Service: "web", Pool: "green", Targets: []string{backend(t, "green2")}, Timeout: timeout}, nil)
	refusedBusy(t, "deploy of green with new targets through edge-2 during edge-1's canary", err, "canary 10%", "instance edge-1")
	if _, err := b.Manager().Rollback(ctx, admin.RollbackRequest{Service: "web"}, nil); err == nil {
		t.Fatal("rollback through edge-2 during edge-1's canary was not refused")
	}
	for i, in := range c.ins {
		st := webStatus(t, in)
		if st.Revision != before.Revision || st.Active != "blue" || st.Canary != "green" || st.CanaryPercent != 10 {
			t.Fatalf("instance %d after the refused commands: revision %d active %s canary %s %g%%, want revision %d blue, green at 10%%",
				i+1, st.Revision, st.Active, st.Canary, st.CanaryPercent, before.Revision)
		}
	}

	// Abort through the instance that does not run the canary.
	res, err := b.Manager().Abort(ctx, admin.TrialRequest{Service: "web", Timeout: timeout}, nil)
	if err != nil {
		t.Fatalf("abort through edge-2 of edge-1's canary: %v", err)
	}
	if !strings.Contains(res.Message, "edge-1") {
		t.Fatalf("abort through edge-2: %q does not name the instance that ran the canary", res.Message)
	}
	t.Logf("abort through edge-2: %s", res.Message)
	// The instance asked has applied the abort when it answers; the
	// one that ran it too.
	if st := webStatus(t, b); st.Canary != "" || st.Active != "blue" {
		t.Fatalf("edge-2 after the abort it answered: active %s canary %q, want blue alone", st.Active, st.Canary)
	}
	waitFor(t, "edge-1 serves blue alone", 10*time.Second, func() bool {
		st := webStatus(t, a)
		return st.Active == "blue" && st.Canary == ""
	})
	// The trial has let go of the lock: the other instance runs the next
	// canary, and the first promotes it.
	canary(b, "edge-2")
	_, err = a.Manager().Deploy(ctx, admin.DeployRequest{Service: "web", Pool: "green", Timeout: timeout}, nil)
	refusedBusy(t, "deploy of green through edge-1 during edge-2's canary", err, "instance edge-2")
	res, err = a.Manager().Promote(ctx, admin.TrialRequest{Service: "web", Timeout: timeout}, nil)
	if err != nil {
		t.Fatalf("promote through edge-1 of edge-2's canary: %v", err)
	}
	t.Logf("promote through edge-1: %s", res.Message)
	for i, in := range c.ins {
		waitFor(t, fmt.Sprintf("instance %d serves green alone", i+1), 10*time.Second, func() bool {
			st := webStatus(t, in)
			return st.Active == "green" && st.Canary == ""
		})
	}
	// Once the trial is over its lock is free: a rollback through edge-1.
	waitFor(t, "edge-2's trial to end", 10*time.Second, func() bool { return webStatus(t, b).Operation == nil })
	if _, err := a.Manager().Rollback(ctx, admin.RollbackRequest{Service: "web", Timeout: timeout}, nil); err != nil {
		t.Fatalf("rollback after the promoted canary: %v", err)
	}
	finish()
}

// holderEnv makes the test binary a cutover that starts a canary and
// holds it until killed (TestHelperTrialHolder); its value is
// "ENDPOINTS|BLUE|GREEN|STATE_DIR".
const holderEnv = "CUTOVER_TEST_TRIAL_HOLDER"

// holderLockTTL is the helper's lock lease.
const holderLockTTL = 5 * time.Second

// TestHelperTrialHolder is the process TestKilledTrialHolderLockExpires
// kills: it joins the shared store, starts a held canary of green and
// waits.
func TestHelperTrialHolder(t *testing.T) {
	v := os.Getenv(holderEnv)
	if v == "" {
		t.Skip("helper process of TestKilledTrialHolderLockExpires")
	}
	parts := strings.Split(v, "|")
	cfg := instanceConfig("edge-doomed", parts[3], strings.Split(parts[0], ","), parts[1], parts[2])
	in, err := serve.Start(context.Background(), serve.Options{Config: cfg, Stdout: io.Discard, Stderr: io.Discard, Etcd: func(o *etcdstore.Options) {
		shortLeases(o)
		// Long enough for the deploy right after the kill to find the
		// lock (a busy machine delays it), short for the test.
		o.LockTTL = holderLockTTL
	}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "etcd", 15*time.Second, func() bool { return in.Manager().StateProblem() == "" })
	if _, err := in.Manager().Deploy(context.Background(), admin.DeployRequest{Service: "web", Pool: "green", Canary: []float64{10}, Timeout: admin.Duration(30 * time.Second)}, nil); err != nil {
		t.Fatal(err)
	}
	fmt.Println("holding")
	select {} // until killed
}

// TestKilledTrialHolderLockExpires: the process running a canary is
// killed with SIGKILL; until its lock's lease expires a deploy is refused
// naming the canary, then the next deploy proceeds. An abort made right
// after the kill waits for the lock to expire and then ends the canary
// the dead process left.
func TestKilledTrialHolderLockExpires(t *testing.T) {
	t.Run("deploy once the lock expired", func(t *testing.T) { killTrialHolder(t, false) })
	t.Run("abort at once", func(t *testing.T) { killTrialHolder(t, true) })
}

func killTrialHolder(t *testing.T, abort bool) {
	c := start(t, 1)
	b := c.ins[0]
	finish := load(t, c.ins, 4, 2*time.Minute)
	var blue, green string
	for _, p := range b.Manager().Config().Services[0].Pools {
		switch p.Name {
		case "blue":
			blue = p.Targets[0]
		case "green":
			green = p.Targets[0]
		}
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperTrialHolder$", "-test.v")
	cmd.Env = append(os.Environ(), holderEnv+"="+strings.Join([]string{strings.Join(c.etcd.Endpoints(), ","), blue, green, dir}, "|"))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	holding := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "holding" {
				holding <- true
				continue
			}
			// Its test output: why it did not get to hold, if it did not.
			t.Logf("helper: %s", sc.Text())
		}
		close(holding)
	}()
	select {
	case ok := <-holding:
		if !ok {
			t.Fatal("the helper exited before holding its canary")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the helper did not start its canary within 60s")
	}
	waitFor(t, "edge-1 applies the helper's canary", 10*time.Second, func() bool { return webStatus(t, b).Canary == "green" })
	cli := c.etcd.Client(t)
	lockKey := config.DefaultEtcdPrefix + "locks/web"
	got, err := cli.Get(context.Background(), lockKey)
	if err != nil || len(got.Kvs) == 0 {
		t.Fatalf("the helper's canary holds no lock at %s: %v", lockKey, err)
	}
	wctx, stopWatch := context.WithTimeout(context.Background(), 30*time.Second)
	defer stopWatch()
	gone := cli.Watch(wctx, lockKey, clientv3.WithRev(got.Header.Revision+1))

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	cmd.Wait()
	before := webStatus(t, b)
	ctx := context.Background()
	deploy := func() (*admin.DeployResult, error) {
		return b.Manager().Deploy(ctx, admin.DeployRequest{Service: "web", Pool: "green", Timeout: admin.Duration(20 * time.Second)}, nil)
	}
	_, err = deploy()
	refusedBusy(t, "deploy while the killed holder's lock lives", err, "canary 10%", "instance edge-doomed", "cutover abort")
	if st := webStatus(t, b); st.Revision != before.Revision {
		t.Fatalf("the refused deploy moved the revision from %d to %d", before.Revision, st.Revision)
	}
	if abort {
		res, err := b.Manager().Abort(ctx, admin.TrialRequest{Service: "web", Timeout: admin.Duration(20 * time.Second)}, nil)
		if err != nil {
			t.Fatalf("abort through edge-1 of the killed holder's canary: %v", err)
		}
		t.Logf("abort through edge-1 %s after the canary's holder was killed: %s", time.Since(killed).Round(time.Millisecond), res.Message)
		if st := webStatus(t, b); st.Active != "blue" || st.Canary != "" {
			t.Fatalf("after the abort: active %s canary %q, want blue alone", st.Active, st.Canary)
		}
	}
	expired := false
	for wr := range gone {
		for _, ev := range wr.Events {
			expired = expired || ev.Type == clientv3.EventTypeDelete
		}
		if expired {
			break
		}
	}
	if !expired {
		t.Fatalf("the killed holder's lock did not expire within 30s")
	}
	t.Logf("the killed holder's lock expired %s after SIGKILL (lease %s)", time.Since(killed).Round(time.Millisecond), holderLockTTL)
	res, err := deploy()
	if err != nil {
		t.Fatalf("deploy after the killed holder's lock expired: %v", err)
	}
	t.Logf("deploy proceeded %s after the canary's holder was killed (lock lease %s): %s", time.Since(killed).Round(time.Millisecond), holderLockTTL, res.Message)
	if st := webStatus(t, b); st.Active != "green" || st.Canary != "" {
		t.Fatalf("after the deploy: active %s canary %q, want green alone", st.Active, st.Canary)
	}
	finish()
}

// TestShutdownStopsTheTrialAndFreesTheLock: an instance running a canary
// (steps of an hour) shuts down gracefully. Its trial stops where it is:
// the deploy lock is gone when Shutdown returns (not left to its lease),
// the trial's end is in that instance's history, and the canary keeps its
// share in the desired state, so the other instance (under a strict load
// client all along) serves the same split and promotes it at once.
func TestShutdownStopsTheTrialAndFreesTheLock(t *testing.T) {
	c := start(t, 2)
	a, b := c.ins[0], c.ins[1]
	finish := load(t, []*serve.Instance{b}, 4, 2*time.Minute)
	ctx := context.Background()
	timeout := admin.Duration(20 * time.Second)
	res, err := a.Manager().Deploy(ctx, admin.DeployRequest{Service: "web", Pool: "green", Canary: []float64{10, 50},
		Step: admin.Duration(time.Hour), Detach: true, Timeout: timeout}, nil)
	if err != nil {
		t.Fatalf("canary through edge-1: %v", err)
	}
	t.Logf("canary through edge-1: %s", res.Message)
	waitFor(t, "edge-2 applies the canary", 10*time.Second, func() bool { return webStatus(t, b).Canary == "green" })
	cli := c.etcd.Client(t)
	lockKey := config.DefaultEtcdPrefix + "locks/web"
	if got, err := cli.Get(ctx, lockKey); err != nil || len(got.Kvs) == 0 {
		t.Fatalf("the canary holds no lock at %s: %v", lockKey, err)
	}

	took := servetest.ShutdownWithin(t, a, 10*time.Second)
	got, err := cli.Get(ctx, lockKey)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Kvs) != 0 {
		t.Fatalf("after edge-1 shut down (in %s) its canary's lock is still held, left to its lease: %s", took, got.Kvs[0].Value)
	}
	// Its registration goes too (the instance left the live set), so a
	// deploy through edge-2 does not wait for edge-1 to report.
	regKey := config.DefaultEtcdPrefix + "instances/edge-1"
	if got, err := cli.Get(ctx, regKey); err != nil || len(got.Kvs) != 0 {
		t.Fatalf("after edge-1 shut down its registration %s is still there (left to its lease): %v", regKey, err)
	}
	t.Logf("edge-1 shut down in %s and let go of the deploy lock and its registration", took.Round(time.Millisecond))

	trial := servetest.LastEntry(t, a.Manager().Config().StateDir, "web", history.KindTrial)
	if trial == nil || trial.Ended == nil || trial.ErrorKind != string(admin.KindCanceled) ||
		!strings.Contains(trial.Reason, "shut down") || !strings.Contains(trial.Reason, "keeps 10%") {
		t.Fatalf("edge-1's history does not record the trial stopped by the shutdown with its share: %+v", trial)
	}
	t.Logf("edge-1's history: %s", trial.Reason)

	if st := webStatus(t, b); st.Active != "blue" || st.Canary != "green" || st.CanaryPercent != 10 {
		t.Fatalf("edge-2 after edge-1 shut down: active %s canary %q at %g%%, want blue with green at 10%%", st.Active, st.Canary, st.CanaryPercent)
	}
	began := time.Now()
	res, err = b.Manager().Promote(ctx, admin.TrialRequest{Service: "web", Timeout: timeout}, func(ev admin.Event) {
		if strings.Contains(ev.Message, "edge-1") {
			t.Errorf("the promote through edge-2 waited for edge-1, which had shut down: %s", ev.Message)
		}
	})
	if err != nil {
		t.Fatalf("promote through edge-2 of the canary edge-1 left: %v", err)
	}
	t.Logf("promote through edge-2 in %s: %s", time.Since(began).Round(time.Millisecond), res.Message)
	if st := webStatus(t, b); st.Active != "green" || st.Canary != "" {
		t.Fatalf("edge-2 after the promote: active %s canary %q, want green alone", st.Active, st.Canary)
	}
	finish()
}
