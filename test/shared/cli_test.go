package shared

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/cli"
	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/controlplane/state"
	"github.com/cutover/cutover/internal/controlplane/state/etcdstore"
	"github.com/cutover/cutover/internal/testutil/refused"
)

// cliFile writes the instances' configuration as the CLI reads it with
// -c: its services say which pool serves a service no switch has stored
// yet.
func (c *cluster) cliFile(t *testing.T) string {
	t.Helper()
	sc := c.ins[0].Manager().Config().Services[0]
	var b strings.Builder
	fmt.Fprintf(&b, "listen: {http: \"127.0.0.1:8080\"}\nservices:\n  %s:\n    hosts: [app.example]\n    pools:\n", sc.Name)
	for _, p := range sc.Pools {
		fmt.Fprintf(&b, "      %s: [%q]\n", p.Name, strings.Join(p.Targets, ""))
	}
	fmt.Fprintf(&b, "    active: %s\n", sc.Active)
	path := filepath.Join(t.TempDir(), "cutover.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// cutover runs the CLI in this process and returns what it printed.
func cutover(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	root := cli.NewRoot(cli.Streams{In: strings.NewReader(""), Out: &out, Err: &out})
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

func (c *cluster) etcdFlag() string { return strings.Join(c.etcd.Endpoints(), ",") }

// active is each instance's active pool and revision of web.
func (c *cluster) active(t *testing.T) (pools []string, revs []int64) {
	t.Helper()
	for i, in := range c.ins {
		st, err := in.Manager().Status("web")
		if err != nil {
			t.Fatalf("status of instance %d: %v", i+1, err)
		}
		pools, revs = append(pools, st[0].Active), append(revs, st[0].Revision)
	}
	return pools, revs
}

// stored is web's desired state in etcd (revision 0: no key).
func (c *cluster) stored(t *testing.T) state.Service {
	t.Helper()
	st, err := etcdstore.OpenClient(context.Background(), etcdstore.Options{Endpoints: c.etcd.Endpoints(), Instance: "test-reader"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	all, err := st.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return all["web"]
}

// TestCLIDeploysThroughEtcd: cutover deploy and rollback with --etcd, made
// by no instance, switch all three under strict keep-alive load: the CLI
// returns once every instance applied the switch, no request fails, and
// none reaches the old pool through an instance after it applied.
func TestCLIDeploysThroughEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("load test: skipped with -short")
	}
	c := start(t, 3)
	file := c.cliFile(t)
	stopLoad := c.load(t)
	switches := max(4, switchCount(t)/3)
	for k := range switches {
		args := []string{"rollback"}
		want := "blue"
		if k%2 == 0 {
			args, want = []string{"deploy", "green"}, "green"
		}
		args = append(args, "--etcd", c.etcdFlag(), "-c", file, "--timeout", "20s")
		out, err := cutover(t, args...)
		if err != nil {
			t.Fatalf("switch %d (cutover %s): %v\n%s", k, strings.Join(args, " "), err, out)
		}
		pools, revs := c.active(t)
		for i, p := range pools {
			if p != want {
				t.Fatalf("switch %d: instance %d serves %q once the CLI returned, want %q (revisions %v)\n%s", k, i+1, p, want, revs, out)
			}
			if !strings.Contains(out, fmt.Sprintf("instance edge-%d applied revision %d", i+1, revs[i])) {
				t.Errorf("switch %d: the CLI did not show instance edge-%d applying revision %d:\n%s", k, i+1, revs[i], out)
			}
		}
		c.log.waitAll(t, revs[0], c.all(), 10*time.Second)
		d, _ := c.log.skew(revs[0])
		t.Logf("switch %d to %s at revision %d: first-to-last apply %s", k, want, revs[0], d.Round(time.Microsecond))
		if k == 0 {
			t.Logf("cutover %s:\n%s", strings.Join(args, " "), out)
		}
	}
	total, failed := stopLoad()
	t.Logf("%d switches through etcd by the CLI; %d requests, %d failed", switches, total, failed)

	out, err := cutover(t, "status", "--etcd", c.etcdFlag())
	pools, revs := c.active(t)
	if err != nil || !strings.Contains(out, fmt.Sprintf("web: active %s, previous", pools[0])) || !strings.Contains(out, fmt.Sprintf("(revision %d)", revs[0])) {
		t.Fatalf("cutover status --etcd: %v, want web on %s at revision %d:\n%s", err, pools[0], revs[0], out)
	}
	for i := range c.ins {
		if !regexp.MustCompile(fmt.Sprintf(`edge-%d +%d +up to date`, i+1, revs[i])).MatchString(out) {
			t.Errorf("cutover status --etcd does not show edge-%d at revision %d:\n%s", i+1, revs[i], out)
		}
	}
	t.Logf("cutover status --etcd:\n%s", out)
}

// TestCLIPreviewPromoteAbort: a preview deployed with --etcd reaches every
// instance's preview hosts; abort --etcd drops it everywhere, promote
// --etcd makes it the stable pool everywhere, under strict load.
func TestCLIPreviewPromoteAbort(t *testing.T) {
	if testing.Short() {
		t.Skip("load test: skipped with -short")
	}
	c := start(t, 3, func(_ int, cfg *config.Config) { cfg.Services[0].PreviewHosts = []string{"preview.example"} })
	file := c.cliFile(t)
	stopLoad := c.load(t)
	etcd := []string{"--etcd", c.etcdFlag(), "-c", file}
	each := func(what string, ok func(st admin.ServiceStatus) bool) {
		t.Helper()
		for i, in := range c.ins {
			st, err := in.Manager().Status("web")
			if err != nil || !ok(st[0]) {
				t.Fatalf("%s: instance %d has %+v (%v)", what, i+1, st, err)
			}
		}
	}
	for _, end := range []string{"abort", "promote"} {
		if out, err := cutover(t, append([]string{"deploy", "green", "--preview", "--timeout", "20s"}, etcd...)...); err != nil {
			t.Fatalf("deploy green --preview --etcd: %v\n%s", err, out)
		}
		each("after the preview", func(st admin.ServiceStatus) bool { return st.Preview == "green" && st.Active == "blue" })
		out, err := cutover(t, append([]string{end}, etcd...)...)
		if err != nil {
			t.Fatalf("%s --etcd: %v\n%s", end, err, out)
		}
		t.Logf("cutover %s --etcd:\n%s", end, out)
		if end == "abort" {
			each("after the abort", func(st admin.ServiceStatus) bool { return st.Preview == "" && st.Active == "blue" })
		}
	}
	each("after the promotion", func(st admin.ServiceStatus) bool {
		return st.Preview == "" && st.Active == "green" && st.Previous == "blue"
	})
	if out, err := cutover(t, append([]string{"abort"}, etcd...)...); err == nil || !strings.Contains(err.Error(), "has no canary or preview pool") {
		t.Fatalf("abort --etcd with nothing held: %v, want refused\n%s", err, out)
	}
	stopLoad()
}

// TestCLIDeployRefusals: a CLI deploy is refused, changing nothing, while
// another deploy holds the lock, when one instance does not see the pool
// healthy within --timeout, when the pool is unknown to the instances,
// and when etcd cannot be reached.
func TestCLIDeployRefusals(t *testing.T) {
	// Instance 2's "green" is an address nothing answers on: it never
	// sees green ready, while the others do.
	dead := refused.Addr(t)
	c := start(t, 3, func(i int, cfg *config.Config) {
		if i == 1 {
			cfg.Services[0].Pools[1].Targets = []string{dead}
		}
	})
	file := c.cliFile(t)
	unchanged := func(what string) {
		t.Helper()
		pools, revs := c.active(t)
		for i := range pools {
			if pools[i] != "blue" || revs[i] != 0 {
				t.Errorf("%s: instance %d serves %q at revision %d, want blue unchanged (0)", what, i+1, pools[i], revs[i])
			}
		}
		if st := c.stored(t); st.Revision != 0 {
			t.Errorf("%s: etcd holds web at revision %d (%+v), want nothing committed", what, st.Revision, st)
		}
	}

	// Another deploy, through instance 1, holds the lock while it waits
	// (5 s) for a pool that never becomes healthy.
	locked := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		once := false
		_, err := c.ins[0].Manager().Deploy(context.Background(), admin.DeployRequest{Service: "web", Pool: "red", Targets: []string{dead}, Timeout: admin.Duration(5 * time.Second)},
			func(ev admin.Event) {
				if !once && strings.Contains(ev.Message, "took the deploy lock") {
					once = true
					close(locked)
				}
			})
		done <- err
	}()
	select {
	case <-locked:
	case err := <-done:
		t.Fatalf("the deploy meant to hold the lock ended first: %v", err)
	}
	out, err := cutover(t, "deploy", "green", "--etcd", c.etcdFlag(), "-c", file)
	if err == nil || cli.ExitCode(err) != 1 || !strings.Contains(err.Error(), "holds the deploy lock") || !strings.Contains(err.Error(), "through instance edge-1") {
		t.Fatalf("CLI deploy while instance 1's deploy holds the lock: %v (exit %d), want refused naming the holder\n%s", err, cli.ExitCode(err), out)
	}
	t.Logf("refused: %v", err)
	unchanged("deploy refused by the lock")
	if err := <-done; !errors.As(err, new(*admin.Error)) {
		t.Fatalf("the deploy that held the lock: %v, want refused (red never healthy)", err)
	}

	// Instance 2 never sees green ready.
	start := time.Now()
	out, err = cutover(t, "deploy", "green", "--etcd", c.etcdFlag(), "-c", file, "--timeout", "2s")
	took := time.Since(start)
	var ae *admin.Error
	if err == nil || !errors.As(err, &ae) || ae.Kind != admin.KindUnhealthy || !strings.Contains(err.Error(), "instance edge-2 waits on "+dead) {
		t.Fatalf("CLI deploy of a pool instance 2 finds unhealthy: %v, want refused naming edge-2 and %s\n%s", err, dead, out)
	}
	if !strings.Contains(err.Error(), "\n  instance edge-2: "+dead+": ") {
		t.Errorf("the refusal's list of failing targets does not name the instance that sees each:\n%v", err)
	}
	if !strings.Contains(out, "instance edge-2 waits on "+dead) {
		t.Errorf("the CLI did not show which instance waits for which target:\n%s", out)
	}
	t.Logf("refused after %s: %v", took.Round(time.Millisecond), err)
	unchanged("deploy refused by an unhealthy pool")

	out, err = cutover(t, "deploy", "purple", "--etcd", c.etcdFlag(), "-c", file, "--timeout", "20s")
	if err == nil || !errors.As(err, &ae) || ae.Kind != admin.KindNotFound || !strings.Contains(err.Error(), `has no pool "purple"`) {
		t.Fatalf("CLI deploy of a pool no instance has: %v, want refused naming the pool\n%s", err, out)
	}
	unchanged("deploy of an unknown pool")

	out, err = cutover(t, "deploy", "green", "-s", "shop", "--etcd", c.etcdFlag(), "-c", file)
	if err == nil || !errors.As(err, &ae) || ae.Kind != admin.KindNotFound || !strings.Contains(err.Error(), `no service "shop"`) {
		t.Fatalf("CLI deploy of an unknown service: %v, want refused naming it\n%s", err, out)
	}

	out, err = cutover(t, "deploy", "green", "--etcd", "http://"+refused.Addr(t), "-c", file)
	if err == nil || cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), "cannot be reached") {
		t.Fatalf("CLI deploy with etcd unreachable: %v (exit %d), want exit 2 naming the store\n%s", err, cli.ExitCode(err), out)
	}
	unchanged("deploy with etcd unreachable")
}

// TestCLIEndsARunningCanary: abort and promote with --etcd reach the
// canary an instance runs (it holds the deploy lock): that instance acts,
// and the CLI returns once every instance applied it; no request fails.
func TestCLIEndsARunningCanary(t *testing.T) {
	c := start(t, 3)
	file := c.cliFile(t)
	finish := load(t, c.ins, 4, 2*time.Minute)
	timeout := admin.Duration(20 * time.Second)
	for _, end := range []string{"abort", "promote"} {
		res, err := c.ins[0].Manager().Deploy(context.Background(), admin.DeployRequest{Service: "web", Pool: "green", Canary: []float64{50}, Timeout: timeout}, nil)
		if err != nil || res.Canary != 50 {
			t.Fatalf("canary through edge-1: %+v, %v", res, err)
		}
		for i, in := range c.ins {
			waitFor(t, fmt.Sprintf("instance %d applies the canary", i+1), 10*time.Second, func() bool { return webStatus(t, in).Canary == "green" })
		}
		out, err := cutover(t, end, "--etcd", c.etcdFlag(), "-c", file)
		if err != nil || !strings.Contains(out, "done by instance edge-1") {
			t.Fatalf("cutover %s --etcd of edge-1's running canary: %v\n%s", end, err, out)
		}
		t.Logf("cutover %s --etcd:\n%s", end, out)
		want := "blue"
		if end == "promote" {
			want = "green"
		}
		// The CLI returned once every instance applied what the trial did.
		for i, in := range c.ins {
			if st := webStatus(t, in); st.Active != want || st.Canary != "" {
				t.Fatalf("after cutover %s --etcd: instance %d serves %s with canary %q, want %s alone", end, i+1, st.Active, st.Canary, want)
			}
		}
		waitFor(t, "edge-1's trial to end", 10*time.Second, func() bool { return webStatus(t, c.ins[0]).Operation == nil })
	}
	finish()
}
