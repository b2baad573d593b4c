package etcdstore

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/controlplane/state"
	"github.com/cutover/cutover/internal/testutil/etcdtest"
)

func open(t *testing.T, endpoints []string, name string) *Store {
	t.Helper()
	// The locks these stores take are let go by the tests; a lease as
	// short as the instances' could expire on a busy machine between its
	// grant and its first keep-alive.
	s, err := Open(Options{Endpoints: endpoints, Instance: name, CacheDir: t.TempDir(), InstanceTTL: 2 * time.Second, LockTTL: DefaultLockTTL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	waitFor(t, "store reachable", func() bool { return s.Problem() == "" })
	return s
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// follower records what a store hands it.
type follower struct {
	mu       sync.Mutex
	services map[string]state.Service
	intents  map[string]bool
	ends     []state.TrialEnd
}

func newFollower() *follower {
	return &follower{services: map[string]state.Service{}, intents: map[string]bool{}}
}

func (f *follower) ApplyStored(ss map[string]state.Service, full bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, v := range ss {
		f.services[k] = v
	}
}

func (f *follower) Announced(i state.Intent, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.intents[i.ID] = on
}

func (f *follower) TrialEndAsked(e state.TrialEnd) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ends = append(f.ends, e)
}

func (f *follower) asked() []state.TrialEnd {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]state.TrialEnd(nil), f.ends...)
}

func (f *follower) get(name string) state.Service {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.services[name]
}

// twoStores opens stores a and b on a three-member cluster; b is
// followed by the returned follower until the test ends.
func twoStores(t *testing.T) (a, b *Store, fb *follower) {
	c := etcdtest.Start(t, 3)
	a, b = open(t, c.Endpoints(), "a"), open(t, c.Endpoints(), "b")
	fb = newFollower()
	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	go b.Follow(ctx, fb)
	return a, b, fb
}

func TestCommitIsCompareAndSwapAndFollowed(t *testing.T) {
	a, b, fb := twoStores(t)
	ctx := context.Background()

	rev, err := a.Commit(ctx, []state.Change{{Service: "web", Value: &state.Service{Active: "blue"}}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b follows the first commit", func() bool { return fb.get("web").Revision == rev })
	if got := fb.get("web"); got.Active != "blue" {
		t.Fatalf("b got %+v, want blue", got)
	}
	// Two writers from the same revision: exactly one wins.
	var wins, conflicts int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, st := range []*Store{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := st.Commit(ctx, []state.Change{{Service: "web", Value: &state.Service{Active: "green", Previous: "blue"}, Revision: rev}})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, state.ErrConflict):
				conflicts++
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || conflicts != 3 {
		t.Fatalf("%d commits won and %d conflicted, want 1 and 3", wins, conflicts)
	}
	loaded, err := b.Load(ctx)
	if err != nil || loaded["web"].Active != "green" || loaded["web"].Revision <= rev {
		t.Fatalf("Load = %+v, %v; want green at a newer revision than %d", loaded, err, rev)
	}
	waitFor(t, "b follows the switch", func() bool { return fb.get("web").Active == "green" })
}

func TestLockIsExclusiveAndAnnounced(t *testing.T) {
	a, b, fb := twoStores(t)
	ctx := context.Background()
	i := state.Intent{ID: "x1", Kind: "deploy", Service: "web", Pool: "green", Instance: "a", Started: time.Now()}
	release, err := a.Lock(ctx, i)
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Lock(ctx, state.Intent{ID: "y1", Kind: "deploy", Service: "web", Pool: "blue", Instance: "b"})
	var le *state.LockedError
	if !errors.As(err, &le) || le.Holder.Instance != "a" || !strings.Contains(err.Error(), `to pool "green" through instance a`) {
		t.Fatalf("second lock: %v, want a LockedError naming instance a's deploy of green", err)
	}
	waitFor(t, "b sees the announcement", func() bool { fb.mu.Lock(); defer fb.mu.Unlock(); return fb.intents["x1"] })
	release()
	waitFor(t, "b sees the release", func() bool { fb.mu.Lock(); defer fb.mu.Unlock(); return !fb.intents["x1"] })
	release2, err := b.Lock(ctx, state.Intent{ID: "y2", Kind: "deploy", Service: "web", Pool: "blue", Instance: "b"})
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	release2()
}

// TestEndTrialReachesTheHolder: a promote or abort asked through another
// store reaches the trial holding the lock and returns once the trial
// acted; without a trial there is nothing to ask, and a plain deploy's
// lock refuses it.
func TestEndTrialReachesTheHolder(t *testing.T) {
	a, b, fb := twoStores(t)
	ctx := context.Background()
	if _, _, err := a.EndTrial(ctx, "web", "abort"); !errors.Is(err, state.ErrNoTrial) {
		t.Fatalf("EndTrial without a lock: %v, want ErrNoTrial", err)
	}
	plain, err := b.Lock(ctx, state.Intent{ID: "d1", Kind: "deploy", Service: "web", Pool: "green", Instance: "b", Started: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	var le *state.LockedError
	if _, _, err := a.EndTrial(ctx, "web", "abort"); !errors.As(err, &le) || le.Holder.ID != "d1" {
		t.Fatalf("EndTrial of a plain deploy's lock: %v, want a LockedError naming it", err)
	}
	plain()

	rev, err := b.Commit(ctx, []state.Change{{Service: "web", Value: &state.Service{Active: "blue", Canary: "green", Weight: 1000}}})
	if err != nil {
		t.Fatal(err)
	}
	trial := state.Intent{ID: "t1", Kind: "deploy", Service: "web", Pool: "green", Instance: "b", Started: time.Now(), Trial: "canary 10%"}
	release, err := b.Lock(ctx, trial)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if _, err := a.Lock(ctx, state.Intent{ID: "x", Kind: "deploy", Service: "web", Pool: "green", Instance: "a"}); err == nil ||
		!strings.Contains(err.Error(), "canary 10%") || !strings.Contains(err.Error(), "cutover abort") {
		t.Fatalf("deploy lock during a trial: %v, want refused naming the trial and how to end it", err)
	}
	type result struct {
		holder state.Intent
		rev    int64
		err    error
	}
	done := make(chan result, 1)
	go func() {
		h, r, err := a.EndTrial(ctx, "web", "abort")
		done <- result{h, r, err}
	}()
	waitFor(t, "the holder is asked to end its trial", func() bool { return len(fb.asked()) > 0 })
	if e := fb.asked()[0]; e.ID != "t1" || e.Action != "abort" || e.By != "a" {
		t.Fatalf("the holder was asked %+v, want abort of t1 by a", e)
	}
	// A canary step (only the weight moves) is not the trial acting.
	step, err := b.Commit(ctx, []state.Change{{Service: "web", Value: &state.Service{Active: "blue", Canary: "green", Weight: 5000}, Revision: rev}})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		t.Fatalf("EndTrial returned %+v after a weight step, before the trial acted", r)
	case <-time.After(200 * time.Millisecond):
	}
	dropped, err := b.Commit(ctx, []state.Change{{Service: "web", Value: &state.Service{Active: "blue"}, Revision: step}})
	if err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.rev != dropped || r.holder.ID != "t1" {
		t.Fatalf("EndTrial = %+v, want the holder t1 and revision %d", r, dropped)
	}
}

// TestNewProcessKeepsTheRegistration: the process an upgrade starts (a
// second store of the same instance) takes the registration at once; the
// old one can no longer write over it, its leaving does not remove it, and
// an old process whose upgrade failed takes it back with Claim.
func TestNewProcessKeepsTheRegistration(t *testing.T) {
	c := etcdtest.Start(t, 1)
	cli := c.Client(t)
	key := config.DefaultEtcdPrefix + dirInstances + "edge"
	leaseOf := func() int64 {
		resp, err := cli.Get(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			return 0
		}
		return resp.Kvs[0].Lease
	}
	old := open(t, c.Endpoints(), "edge")
	<-old.Registered()
	waitFor(t, "the old process registered", func() bool { return leaseOf() == old.lease.Load() })

	fresh := open(t, c.Endpoints(), "edge")
	<-fresh.Registered()
	if got := leaseOf(); got != fresh.lease.Load() {
		t.Fatalf("after the new process registered the key has lease %x, want the new process's %x", got, fresh.lease.Load())
	}
	// The old process applies a change (it still serves while draining)
	// and publishes readiness: neither writes over the new process.
	old.Applied(map[string]state.Service{"web": {Active: "green", Revision: 7}})
	if err := old.PublishReady(context.Background(), state.Readiness{ID: "x", Service: "web", Pool: "green", Instance: "edge", Ready: true}); err != nil {
		t.Fatalf("readiness of the replaced process: %v, want dropped quietly", err)
	}
	waitFor(t, "the old process to see it is replaced", func() bool { return old.superseded.Load() })
	if got := leaseOf(); got != fresh.lease.Load() {
		t.Fatalf("the old process wrote over the new one's registration (lease %x, want %x)", got, fresh.lease.Load())
	}
	ready, err := cli.Get(context.Background(), config.DefaultEtcdPrefix+dirReady, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || ready.Count != 0 {
		t.Fatalf("the replaced process published readiness (%d keys, %v)", ready.Count, err)
	}
	// An upgrade that failed: the new process goes, the old claims back.
	fresh.Close()
	old.Claim()
	waitFor(t, "the old process to take its registration back", func() bool { return leaseOf() == old.lease.Load() })

	// And a successful one: the old process leaving keeps the new one's.
	next := open(t, c.Endpoints(), "edge")
	<-next.Registered()
	old.Close()
	if got := leaseOf(); got != next.lease.Load() {
		t.Fatalf("after the old process left the registration has lease %x, want the new process's %x", got, next.lease.Load())
	}
	// The last process of the instance leaving takes the registration
	// with it at once (its lease revoked, not left to expire).
	next.Close()
	if got := leaseOf(); got != 0 {
		t.Fatalf("after the instance's last process closed its store the registration is still there (lease %x)", got)
	}
}

// TestHelperLockHolder is the process TestKilledDeployerLockExpires kills.
func TestHelperLockHolder(t *testing.T) {
	eps := os.Getenv("CUTOVER_TEST_LOCK_HOLDER")
	if eps == "" {
		t.Skip("helper process")
	}
	s, err := Open(Options{Endpoints: strings.Split(eps, ","), Instance: "doomed", LockTTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "store reachable", func() bool { return s.Problem() == "" })
	if _, err := s.Lock(context.Background(), state.Intent{ID: "doomed", Kind: "deploy", Service: "web", Pool: "green", Instance: "doomed", Started: time.Now()}); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("locked\n")
	select {} // until killed
}

func TestKilledDeployerLockExpires(t *testing.T) {
	c := etcdtest.Start(t, 3)
	b := open(t, c.Endpoints(), "b")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperLockHolder$", "-test.v")
	cmd.Env = append(os.Environ(), "CUTOVER_TEST_LOCK_HOLDER="+strings.Join(c.Endpoints(), ","))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(out)
	locked := false
	for sc.Scan() {
		if sc.Text() == "locked" {
			locked = true
			break
		}
	}
	if !locked {
		t.Fatal("the helper did not take the lock")
	}
	go func() {
		for sc.Scan() {
		}
	}()
	i := state.Intent{ID: "next", Kind: "deploy", Service: "web", Pool: "blue", Instance: "b"}
	if _, err := b.Lock(context.Background(), i); err == nil || !strings.Contains(err.Error(), "through instance doomed") {
		t.Fatalf("lock while the helper holds it: %v, want refused naming instance doomed", err)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	killed := time.Now()
	var release func()
	waitFor(t, "the killed deployer's lock to expire", func() bool {
		var err error
		release, err = b.Lock(context.Background(), i)
		return err == nil
	})
	release()
	t.Logf("lock of the deployer killed with SIGKILL expired after %s (lease TTL 2s)", time.Since(killed).Round(time.Millisecond))
}

func TestUnreachableAtStartServesTheCache(t *testing.T) {
	c := etcdtest.Start(t, 1)
	dir := t.TempDir()
	s, err := Open(Options{Endpoints: c.Endpoints(), Instance: "a", CacheDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "store reachable", func() bool { return s.Problem() == "" })
	s.Applied(map[string]state.Service{"web": {Active: "green", Previous: "blue", Revision: 7}})
	waitFor(t, "the cache file", func() bool {
		st, err := state.Load(dir + "/" + CacheFile)
		return err == nil && st != nil && st.Services["web"].Active == "green"
	})
	s.Close()
	c.Stop(0)

	s2, err := Open(Options{Endpoints: c.Endpoints(), Instance: "a", CacheDir: dir, RequestTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got, err := s2.Load(context.Background())
	if err != nil || got["web"].Active != "green" || got["web"].Revision != 7 {
		t.Fatalf("Load with etcd down = %+v, %v; want the cached green at revision 7", got, err)
	}
	if p := s2.Problem(); !strings.Contains(p, c.Members[0].ClientURL) {
		t.Fatalf("Problem = %q, want it to name the endpoint", p)
	}
	if err := s2.Check(context.Background()); err == nil {
		t.Fatal("Check passed with etcd down")
	}
}
