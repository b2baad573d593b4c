// Package shared tests several cutovers sharing one desired state through
// an embedded three-member etcd cluster: each instance under its own
// strict keep-alive load while deploys and rollbacks go through different
// instances, an etcd member stops, the quorum goes, one instance is cut
// off from etcd, and two deploys race.
package shared

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cutover/cutover/bench/loadclient"
	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/controlplane/state"
	"github.com/cutover/cutover/internal/controlplane/state/etcdstore"
	"github.com/cutover/cutover/internal/serve"
	"github.com/cutover/cutover/internal/testutil/etcdtest"
)

// switchesEnv sets how many deploys and rollbacks the main test makes (the
// issue's 50: CUTOVER_SHARED_SWITCHES=50); CI makes 12.
const switchesEnv = "CUTOVER_SHARED_SWITCHES"

// applied is one instance applying one desired state.
type applied struct {
	instance int
	rev      int64
	active   string
	// began is when the routing swap began, at when it was done: a
	// request sent in between may see either routing.
	began, at time.Time
}

type applyLog struct {
	mu  sync.Mutex
	all []applied
	// changed is closed and replaced on every apply.
	changed chan struct{}
}

func (l *applyLog) add(a applied) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all = append(l.all, a)
	close(l.changed)
	l.changed = make(chan struct{})
}

// waitAll waits until every listed instance applied rev (or a later one).
func (l *applyLog) waitAll(t *testing.T, rev int64, instances []int, limit time.Duration) {
	t.Helper()
	deadline := time.After(limit)
	for {
		l.mu.Lock()
		have := map[int]bool{}
		for _, a := range l.all {
			if a.rev >= rev {
				have[a.instance] = true
			}
		}
		ch := l.changed
		l.mu.Unlock()
		all := true
		for _, i := range instances {
			all = all && have[i]
		}
		if all {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("instances %v did not all apply revision %d within %s (applied: %v)", instances, rev, limit, have)
		}
	}
}

// skew is the time between the first and the last instance applying rev.
func (l *applyLog) skew(rev int64) (time.Duration, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var first, last time.Time
	n := 0
	for _, a := range l.all {
		if a.rev != rev {
			continue
		}
		n++
		if first.IsZero() || a.at.Before(first) {
			first = a.at
		}
		if a.at.After(last) {
			last = a.at
		}
	}
	return last.Sub(first), n
}

func (l *applyLog) of(instance int) []applied {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []applied
	for _, a := range l.all {
		if a.instance == instance {
			out = append(out, a)
		}
	}
	return out
}

func backend(t *testing.T, name string) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		io.WriteString(w, name)
	}))
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

type cluster struct {
	etcd *etcdtest.Cluster
	ins  []*serve.Instance
	log  *applyLog
	// relays carry the last instance's etcd traffic, one per member.
	relays []*etcdtest.Relay
}

// start runs n instances sharing one etcd cluster; each tweak (may be
// none) adjusts instance i's configuration before it starts.
func start(t *testing.T, n int, tweaks ...func(i int, cfg *config.Config)) *cluster {
	t.Helper()
	c := &cluster{etcd: etcdtest.Start(t, 3), log: &applyLog{changed: make(chan struct{})}}
	blue, green := backend(t, "blue"), backend(t, "green")
	for _, ep := range c.etcd.Endpoints() {
		c.relays = append(c.relays, etcdtest.NewRelay(t, strings.TrimPrefix(ep, "http://")))
	}
	for i := range n {
		dir, err := os.MkdirTemp("", "cutover-shared-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		eps := c.etcd.Endpoints()
		if i == n-1 {
			eps = nil
			for _, r := range c.relays {
				eps = append(eps, r.URL())
			}
		}
		cfg := instanceConfig(fmt.Sprintf("edge-%d", i+1), dir, eps, blue, green)
		for _, tw := range tweaks {
			tw(i, cfg)
		}
		idx := i
		in, err := serve.Start(context.Background(), serve.Options{
			Config: cfg, Stdout: io.Discard, Stderr: io.Discard,
			OnApply: func(service string, d state.Service, began time.Time) {
				c.log.add(applied{instance: idx, rev: d.Revision, active: d.Active, began: began, at: time.Now()})
			},
			Etcd: shortLeases,
		})
		if err != nil {
			t.Fatalf("start instance %d: %v", i+1, err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			in.Shutdown(ctx)
		})
		c.ins = append(c.ins, in)
	}
	for i, in := range c.ins {
		waitFor(t, fmt.Sprintf("instance %d reaches etcd", i+1), 15*time.Second, func() bool { return in.Manager().StateProblem() == "" })
	}
	waitFor(t, "every instance registered", 15*time.Second, func() bool {
		st := c.ins[0].Manager().StoreStatus()
		return st != nil && len(st.Instances) == n
	})
	return c
}

// instanceConfig is the configuration of instance name: service web with
// pools blue and green (blue stable), its desired state in etcd at eps.
func instanceConfig(name, dir string, eps []string, blue, green string) *config.Config {
	cfg := config.Default()
	cfg.Listen.HTTP = "127.0.0.1:0"
	cfg.StateDir = dir
	cfg.Admin.Socket = filepath.Join(dir, config.AdminSocketName)
	cfg.Log.Access = config.AccessOff
	cfg.Instance = name
	cfg.Store = &config.Store{Etcd: &config.Etcd{Endpoints: eps, Prefix: config.DefaultEtcdPrefix}}
	svc := config.DefaultService("web")
	svc.Health.Interval, svc.Health.Timeout = 20*time.Millisecond, time.Second
	svc.DrainTimeout = 5 * time.Second
	svc.Pools = []config.Pool{{Name: "blue", Targets: []string{blue}}, {Name: "green", Targets: []string{green}}}
	svc.Active = "blue"
	cfg.Services = []config.Service{svc}
	return cfg
}

// shortLeases makes a dead instance's registration go after 2 s (the
// deploy lock keeps its default lease: a test that kills its holder sets
// its own, and one as short as 2 s could lapse on a busy machine while
// its holder lives).
func shortLeases(o *etcdstore.Options) {
	o.InstanceTTL = 2 * time.Second
	o.RequestTimeout = time.Second
}

func waitFor(t *testing.T, what string, limit time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (c *cluster) all() []int {
	out := make([]int, len(c.ins))
	for i := range out {
		out[i] = i
	}
	return out
}

// switchOnce makes switch k through instance via: a deploy of green or a
// rollback, alternately. It returns the revision switched to.
func (c *cluster) switchOnce(t *testing.T, k, via int) int64 {
	t.Helper()
	ctx := context.Background()
	m := c.ins[via].Manager()
	var res *admin.DeployResult
	var err error
	if k%2 == 0 {
		res, err = m.Deploy(ctx, admin.DeployRequest{Service: "web", Pool: "green", Timeout: admin.Duration(20 * time.Second)}, nil)
	} else {
		res, err = m.Rollback(ctx, admin.RollbackRequest{Service: "web", Timeout: admin.Duration(20 * time.Second)}, nil)
	}
	if err != nil {
		t.Fatalf("switch %d through instance %d: %v", k, via+1, err)
	}
	if res.NoOp {
		t.Fatalf("switch %d through instance %d did nothing: %s", k, via+1, res.Message)
	}
	st, _ := m.Status("web")
	return st[0].Revision
}

// idle is the pool of web that in does not serve.
func idle(t *testing.T, in *serve.Instance) string {
	t.Helper()
	st, err := in.Manager().Status("web")
	if err != nil {
		t.Fatal(err)
	}
	if st[0].Active == "green" {
		return "blue"
	}
	return "green"
}

func switchCount(t *testing.T) int {
	if v := os.Getenv(switchesEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 4 {
			t.Fatalf("%s=%q: give a number of at least 4", switchesEnv, v)
		}
		return n
	}
	return 12
}

// TestThreeInstancesShareOneState: three instances under load switch
// together through whichever instance a deploy or rollback is made on;
// one etcd member stops mid-run, then one instance is cut off from etcd,
// then the quorum goes; no request fails anywhere, and no request reaches
// the old pool through an instance after that instance applied a switch.
func TestThreeInstancesShareOneState(t *testing.T) {
	if testing.Short() {
		t.Skip("load test: skipped with -short")
	}
	c := start(t, 3)
	switches := switchCount(t)
	stopLoad := c.load(t)

	var skews []time.Duration
	record := func(rev int64, instances []int) {
		c.log.waitAll(t, rev, instances, 10*time.Second)
		if len(instances) == len(c.ins) {
			d, _ := c.log.skew(rev)
			skews = append(skews, d)
		}
	}
	// Phase 1: switches through every instance in turn; member m2 stops
	// half-way and comes back at the end.
	for k := range switches {
		if k == switches/2 {
			c.etcd.Stop(2)
			t.Logf("etcd member m2 stopped after %d switches", k)
		}
		record(c.switchOnce(t, k, k%len(c.ins)), c.all())
	}
	c.etcd.Restart(2)
	c.etcd.WaitReady(2)

	// Phase 2: the last instance is cut off from etcd; it keeps serving
	// its last state, shows stale, and catches up once it is back.
	cut := len(c.ins) - 1
	for _, r := range c.relays {
		r.Cut()
	}
	waitFor(t, "the cut-off instance to show stale", 10*time.Second, func() bool {
		st := c.ins[cut].Manager().StoreStatus()
		return st.Stale && c.ins[cut].Manager().StateProblem() != ""
	})
	if _, err := c.ins[cut].Manager().Deploy(context.Background(), admin.DeployRequest{Service: "web", Pool: idle(t, c.ins[cut])}, nil); err == nil || !strings.Contains(err.Error(), "cannot be reached") {
		t.Fatalf("deploy through the cut-off instance: %v, want refused because etcd cannot be reached", err)
	}
	var lastRev int64
	others := c.all()[:cut]
	for k := switches; k < switches+2; k++ {
		// The cut-off instance leaves the live set when its lease ends;
		// until then the switch waits for it.
		lastRev = c.switchOnce(t, k, k%cut)
		record(lastRev, others)
	}
	for _, r := range c.relays {
		r.Resume()
	}
	resumed := time.Now()
	c.log.waitAll(t, lastRev, []int{cut}, 10*time.Second)
	catchUp := time.Since(resumed)
	waitFor(t, "the reconnected instance to be fresh", 10*time.Second, func() bool { return !c.ins[cut].Manager().StoreStatus().Stale })

	// Phase 3: quorum lost (two members stop): every instance keeps
	// serving, deploys are refused naming the store, and everything
	// converges when the quorum is back.
	c.etcd.Stop(1)
	c.etcd.Stop(2)
	for i, in := range c.ins {
		waitFor(t, fmt.Sprintf("instance %d to show stale without quorum", i+1), 10*time.Second, func() bool { return in.Manager().StateProblem() != "" })
	}
	_, err := c.ins[0].Manager().Rollback(context.Background(), admin.RollbackRequest{Service: "web"}, nil)
	var ae *admin.Error
	if !errors.As(err, &ae) || ae.Kind != admin.KindState || !strings.Contains(ae.Message, "cannot be reached") || !strings.Contains(ae.Message, c.etcd.Members[0].ClientURL) {
		t.Fatalf("rollback without quorum: %v, want a state refusal naming the etcd endpoints", err)
	}
	t.Logf("refused without quorum: %s", ae.Message)
	c.etcd.Restart(1)
	c.etcd.Restart(2)
	c.etcd.WaitReady(1)
	c.etcd.WaitReady(2)
	for i, in := range c.ins {
		waitFor(t, fmt.Sprintf("instance %d fresh after the quorum returned", i+1), 15*time.Second, func() bool { return in.Manager().StateProblem() == "" })
	}
	waitFor(t, "every instance live again", 15*time.Second, func() bool { return len(c.ins[0].Manager().StoreStatus().Instances) == len(c.ins) })
	k := switches + 2
	record(c.switchOnce(t, k, 1), c.all())
	k++

	// Phase 4: two deploys at once through two instances: exactly one
	// runs.
	if c.ins[0].Manager().Config() != nil {
		pool := idle(t, c.ins[0])
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for j := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[j] = c.ins[j].Manager().Deploy(context.Background(), admin.DeployRequest{Service: "web", Pool: pool, Timeout: admin.Duration(20 * time.Second)}, nil)
			}()
		}
		wg.Wait()
		ok, busy := 0, 0
		for _, err := range errs {
			var ae *admin.Error
			switch {
			case err == nil:
				ok++
			case errors.As(err, &ae) && (ae.Kind == admin.KindBusy || ae.Kind == admin.KindRefused):
				busy++
				t.Logf("the other deploy: %v", err)
			default:
				t.Errorf("concurrent deploy: %v", err)
			}
		}
		if ok != 1 || busy != 1 {
			t.Fatalf("two deploys at once: %d ran and %d were refused, want 1 and 1 (%v)", ok, busy, errs)
		}
		st, _ := c.ins[0].Manager().Status("web")
		record(st[0].Revision, c.all())
	}

	total, failed := stopLoad()
	sorted := slices.Clone(skews)
	sort.Slice(sorted, func(a, b int) bool { return sorted[a] < sorted[b] })
	if len(sorted) == 0 {
		t.Fatal("no switch measured")
	}
	t.Logf("%d switches applied by all three instances; first-to-last apply: median %s, p90 %s, max %s; reconnected instance applied the current state %s after its etcd traffic resumed; %d requests, %d failed",
		len(sorted), sorted[len(sorted)/2].Round(time.Microsecond), sorted[len(sorted)*9/10].Round(time.Microsecond),
		sorted[len(sorted)-1].Round(time.Microsecond), catchUp.Round(time.Millisecond), total, failed)
}

// load runs a strict keep-alive load client through each instance. stop
// ends them and checks what they got: no request failed, and none reached
// the old pool through an instance after it applied a switch.
func (c *cluster) load(t *testing.T) (stop func() (total, failed int)) {
	t.Helper()
	finish := load(t, c.ins, 6, 5*time.Minute)
	return func() (total, failed int) {
		for i, res := range finish() {
			if res == nil {
				continue
			}
			sum := res.Summarize()
			total += sum.Requests
			failed += sum.Failed
			checkNoOldPool(t, i, res, c.log.of(i))
		}
		return total, failed
	}
}

// load runs a strict keep-alive client with conns connections through
// each instance, for at most limit, until finish is called: finish fails
// the test when any request failed and returns each instance's results.
func load(t *testing.T, ins []*serve.Instance, conns int, limit time.Duration) (finish func() []*loadclient.Result) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	results := make([]*loadclient.Result, len(ins))
	var wg sync.WaitGroup
	for i, in := range ins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := loadclient.Run(ctx, loadclient.Options{
				Addr: in.HTTPAddr().String(), Connections: conns, Duration: limit,
				Host: "app.example", BackendHeader: "X-Backend", Timeout: 10 * time.Second,
			})
			if err != nil {
				t.Error(err)
			}
			results[i] = res
		}()
	}
	var once sync.Once
	finish = func() []*loadclient.Result {
		once.Do(func() {
			stop()
			wg.Wait()
			for i, res := range results {
				if res == nil {
					t.Errorf("instance %d: the load client did not run", i+1)
					continue
				}
				sum := res.Summarize()
				t.Logf("instance %d: %d requests, %d failed, by pool %v", i+1, sum.Requests, sum.Failed, sum.ByBackend)
				if sum.Requests == 0 || sum.Failed > 0 {
					t.Errorf("instance %d: %d of %d requests failed (%v)", i+1, sum.Failed, sum.Requests, sum.ErrorKinds)
				}
			}
		})
		return results
	}
	t.Cleanup(func() { finish() })
	return finish
}

// checkNoOldPool: a request sent after the instance applied a switch is
// served by that switch's pool, or by one it switched to while the request
// ran.
func checkNoOldPool(t *testing.T, instance int, res *loadclient.Result, applies []applied) {
	t.Helper()
	bad := 0
	for _, rec := range res.Records {
		if rec.Failed() {
			continue
		}
		sent, done := res.Start.Add(rec.Sent), res.Start.Add(rec.Done)
		cur := -1
		for j, a := range applies {
			if a.at.Before(sent) {
				cur = j
			}
		}
		if cur < 0 || applies[cur].active == rec.Backend {
			continue
		}
		// A pool may take requests from when the swap to it began until
		// the next swap was done: fine if the request's time overlaps such
		// a span of its pool.
		fine := false
		for j, a := range applies {
			if a.active != rec.Backend || !a.began.Before(done) {
				continue
			}
			if j+1 == len(applies) || applies[j+1].at.After(sent) {
				fine = true
			}
		}
		if !fine {
			if bad < 3 {
				t.Errorf("instance %d: a request sent %s after it applied revision %d (%s) was served by %s",
					instance+1, sent.Sub(applies[cur].at), applies[cur].rev, applies[cur].active, rec.Backend)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("instance %d: %d requests reached the old pool after the switch was applied", instance+1, bad)
	}
}
