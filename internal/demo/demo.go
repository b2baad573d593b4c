// Package demo is cutover's built-in demonstration: it starts the demo
// app's blue and green pools in-process on 127.0.0.1, serves them with a
// real cutover proxy, and switches between them under load, counting every
// request. It needs nothing but the binary (no Docker, no files).
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/controlplane"
	"github.com/cutover/cutover/internal/demoapp"
	"github.com/cutover/cutover/internal/human"
	"github.com/cutover/cutover/internal/serve"
)

// Options configure a demonstration.
type Options struct {
	// Listen is the proxy's address (default 127.0.0.1:8080).
	Listen string
	// Switches is how many deploy/rollback switches the demonstration
	// makes under load (default 6).
	Switches int
	// Clients is the number of concurrent keep-alive load clients (default 16).
	Clients int
	// Once exits after the demonstration instead of serving on.
	Once bool
	// StateDir holds the state and admin socket (default: a temp folder).
	StateDir string
	Out      io.Writer
}

// Report is what the demonstration measured.
type Report struct {
	Requests, Failed int64
	Switches         int
	ByProfile        map[string]int64
	// Canary is the canary of a broken version that the guard rolled back.
	Canary CanaryReport
}

// CanaryReport is the canary part of the demonstration: a version that
// fails BrokenFailRate of its requests goes out to a share of the clients
// with a guard, which rolls it back.
type CanaryReport struct {
	// Requests and Failed count every request of the canary part; the
	// broken version's own 500s are counted apart (BrokenErrors), as the
	// guard counts them against it.
	Requests, Failed, BrokenRequests, BrokenErrors int64
	// Breach is what the guard found; BreachToRollback the time from its
	// finding to every client being back on the old pool.
	Breach           string
	BreachToRollback time.Duration
}

// brokenFailRate is the share of GET / the demo's broken version fails.
const brokenFailRate = 0.05

// Run starts the pools and the proxy, runs the switching demonstration and
// then, unless Once, serves until ctx ends.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Listen == "" {
		o.Listen = "127.0.0.1:8080"
	}
	if o.Switches <= 0 {
		o.Switches = 6
	}
	if o.Clients <= 0 {
		o.Clients = 16
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.StateDir == "" {
		dir, err := os.MkdirTemp("", "cutover-demo-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		o.StateDir = dir
	}

	apps, pools, err := startApps()
	defer func() {
		for _, a := range apps {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			a.Shutdown(ctx)
			cancel()
		}
	}()
	if err != nil {
		return nil, err
	}

	cfg := config.Default()
	cfg.Listen.HTTP = o.Listen
	cfg.StateDir = o.StateDir
	cfg.Admin.Socket = filepath.Join(o.StateDir, config.AdminSocketName)
	cfg.Log.Access = config.AccessOff
	// The load clients name themselves in X-Forwarded-For, as the clients
	// of a proxy in front would be, so the canary sees many clients.
	cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	svc := config.DefaultService("web")
	svc.Health.Interval = 100 * time.Millisecond
	svc.Health.Timeout = time.Second
	svc.DrainTimeout = 5 * time.Second
	svc.Pools = []config.Pool{{Name: "blue", Targets: pools["blue"]}, {Name: "green", Targets: pools["green"]}, {Name: "red", Targets: pools["red"]}}
	svc.Active = "blue"
	cfg.Services = []config.Service{svc}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}

	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	in, err := serve.Start(ctx, serve.Options{Config: cfg, Logger: quiet, Stdout: io.Discard})
	if err != nil {
		return nil, fmt.Errorf("starting the proxy on %s: %w (pick another address with --listen)", o.Listen, err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		in.Shutdown(sctx)
		cancel()
	}()
	url := "http://" + in.HTTPAddr().String() + "/"
	fmt.Fprintf(o.Out, "cutover demo: proxy on %s\n", url)
	fmt.Fprintf(o.Out, "  blue pool:  %v (PROFILE=blue-1, blue-2)\n", pools["blue"])
	fmt.Fprintf(o.Out, "  green pool: %v (PROFILE=green-1, green-2)\n", pools["green"])
	fmt.Fprintf(o.Out, "  red pool:   %v (PROFILE=red-1, red-2: a broken version, GET / fails %g%% of the time)\n", pools["red"], 100*brokenFailRate)
	fmt.Fprintf(o.Out, "switching blue ↔ green %s under %s...\n", human.Count(o.Switches, "time"), human.Count(o.Clients, "concurrent keep-alive client"))

	rep, err := demonstrate(ctx, in.Manager(), url, o)
	if err != nil {
		return rep, err
	}
	fmt.Fprintf(o.Out, "done: %s, %d failed, %s; responses by profile: %v\n",
		human.Count(int(rep.Requests), "request"), rep.Failed, human.Count(rep.Switches, "switch", "switches"), rep.ByProfile)
	if err := canary(ctx, in.Manager(), url, o, rep); err != nil {
		return rep, err
	}
	if o.Once {
		return rep, nil
	}
	sock := cfg.Admin.Socket
	fmt.Fprintf(o.Out, "\nserving until Ctrl-C. Try, in another terminal:\n")
	fmt.Fprintf(o.Out, "  curl -s %s\n", url)
	fmt.Fprintf(o.Out, "  cutover status --socket %s\n", sock)
	fmt.Fprintf(o.Out, "  cutover deploy green --socket %s\n", sock)
	fmt.Fprintf(o.Out, "  cutover rollback --socket %s\n", sock)
	fmt.Fprintf(o.Out, "  cutover deploy green --canary 10 --guard 5m --detach --socket %s   # then: cutover promote / cutover abort\n", sock)
	<-ctx.Done()
	return rep, nil
}

func startApps() ([]*demoapp.App, map[string][]string, error) {
	var apps []*demoapp.App
	pools := map[string][]string{}
	for _, colour := range []string{"blue", "green", "red"} {
		for i := 1; i <= 2; i++ {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return apps, nil, err
			}
			failRate := 0.0
			if colour == "red" {
				failRate = brokenFailRate
			}
			a := demoapp.New(demoapp.Options{
				Profile: fmt.Sprintf("%s-%d", colour, i), Version: colour, FailRate: failRate,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			})
			apps = append(apps, a)
			go a.Serve(ln)
			pools[colour] = append(pools[colour], ln.Addr().String())
		}
	}
	return apps, pools, nil
}

// demonstrate runs the load clients while switching, and counts.
func demonstrate(ctx context.Context, m *controlplane.Manager, url string, o Options) (*Report, error) {
	rep := &Report{ByProfile: map[string]int64{}}
	var sent, failed atomic.Int64
	var mu sync.Mutex
	stop := startClients(o.Clients, func(client *http.Client) {
		sent.Add(1)
		profile, err := get(client, url)
		if err != nil {
			failed.Add(1)
			return
		}
		mu.Lock()
		rep.ByProfile[profile]++
		mu.Unlock()
	})
	var err error
	for i := 0; i < o.Switches && err == nil; i++ {
		time.Sleep(300 * time.Millisecond) // let traffic flow between switches
		var res *admin.DeployResult
		if i%2 == 0 {
			res, err = m.Deploy(ctx, admin.DeployRequest{Service: "web", Pool: "green"}, nil)
		} else {
			res, err = m.Rollback(ctx, admin.RollbackRequest{Service: "web"}, nil)
		}
		if err == nil {
			rep.Switches++
			fmt.Fprintf(o.Out, "  %s → %s (drained %d in-flight requests in %s)\n", res.From, res.Pool, res.Drained, res.TimeToDrain)
		}
	}
	time.Sleep(300 * time.Millisecond)
	stop()
	rep.Requests, rep.Failed = sent.Load(), failed.Load()
	if err != nil {
		return rep, fmt.Errorf("switch failed: %w", err)
	}
	if rep.Failed > 0 {
		return rep, errors.New("some requests failed during the demonstration")
	}
	return rep, nil
}

// startClients runs n keep-alive load clients, each calling one in a loop
// with a shared client, until the returned stop is called; stop waits for
// them.
func startClients(n int, one func(*http.Client)) (stop func()) {
	tr := &http.Transport{MaxIdleConnsPerHost: n}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				one(client)
			}
		}()
	}
	return func() {
		close(done)
		wg.Wait()
		tr.CloseIdleConnections()
	}
}

// get sends one GET that net/http may not retry on its own (a body without
// GetBody makes it non-replayable), so every failure is counted.
func get(c *http.Client, url string) (string, error) {
	profile, status, err := getAs(c, url, "")
	if err == nil && status != 200 {
		err = fmt.Errorf("status %d", status)
	}
	return profile, err
}

// canary sends the broken version (red) to 20% of the clients, then 50%,
// with a guard, under load from many clients, and reports the guard's
// rollback. The clients get whatever the stable pool is after the
// switching part.
func canary(ctx context.Context, m *controlplane.Manager, url string, o Options, rep *Report) error {
	fmt.Fprintf(o.Out, "canary of the broken version: red to 20%% then 50%% of the clients (a step every 5s), guard 20s...\n")
	cr := &rep.Canary
	var sent, failed, broken, brokenErr atomic.Int64
	var next atomic.Int64
	stop := startClients(o.Clients, func(client *http.Client) {
		// A thousand client addresses, in turn: the canary's share of
		// them is split off by the proxy.
		n := next.Add(1) % 1000
		sent.Add(1)
		profile, status, err := getAs(client, url, fmt.Sprintf("10.9.%d.%d", n/256, n%256))
		switch {
		case strings.HasPrefix(profile, "red") && status == 500:
			broken.Add(1)
			brokenErr.Add(1)
		case err != nil || status != 200:
			failed.Add(1)
		case strings.HasPrefix(profile, "red"):
			broken.Add(1)
		}
	})
	// A moment of the stable pool's own numbers: the guard's baseline.
	time.Sleep(time.Second)
	_, err := m.Deploy(ctx, admin.DeployRequest{Service: "web", Pool: "red", Canary: []float64{20, 50}, Step: admin.Duration(5 * time.Second),
		Guard: &admin.GuardSettings{Window: admin.Duration(20 * time.Second)}}, func(ev admin.Event) {
		fmt.Fprintf(o.Out, "  %s\n", ev.Message)
	})
	time.Sleep(300 * time.Millisecond)
	stop()
	cr.Requests, cr.Failed, cr.BrokenRequests, cr.BrokenErrors = sent.Load(), failed.Load(), broken.Load(), brokenErr.Load()
	var ce *admin.Error
	if !errors.As(err, &ce) || ce.Kind != admin.KindGuard || ce.Guard == nil {
		return fmt.Errorf("the guard did not roll the broken version back (%v)", err)
	}
	g := ce.Guard
	cr.Breach = g.Breach
	if !g.RolledBackAt.IsZero() {
		cr.BreachToRollback = g.RolledBackAt.Sub(g.BreachedAt)
	}
	fmt.Fprintf(o.Out, "guard: %s\n", g.Breach)
	fmt.Fprintf(o.Out, "rolled back %s after the breach; %s in the canary part, %d failed; red answered %d (%d of them its own 500s)\n",
		human.Duration(cr.BreachToRollback), human.Count(int(cr.Requests), "request"), cr.Failed, cr.BrokenRequests, cr.BrokenErrors)
	if cr.Failed > 0 {
		return errors.New("some requests failed during the canary")
	}
	return nil
}

// getAs is get for a client named by its address in X-Forwarded-For ("":
// none); it returns the status rather than failing on a non-200.
func getAs(c *http.Client, url, client string) (profile string, status int, err error) {
	req, err := http.NewRequest("GET", url, io.NopCloser(strings.NewReader("")))
	if err != nil {
		return "", 0, err
	}
	req.GetBody = nil
	if client != "" {
		req.Header.Set("X-Forwarded-For", client)
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.Header.Get("X-Profile"), resp.StatusCode, nil
}
