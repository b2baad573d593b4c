package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/cutover/cutover/internal/testutil/freeport"
)

// screenshotEnv names where TestDashboardInChromium saves its screenshot
// (default: cutover-dashboard.png in the temporary folder).
const screenshotEnv = "CUTOVER_DASHBOARD_SCREENSHOT"

// browser starts a headless Chromium for the test, or skips the test
// saying why none can run.
func browser(t *testing.T) context.Context {
	t.Helper()
	var path string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		t.Skip("no Chromium on PATH (apt-get install chromium; .ci/run installs it): the dashboard test needs a real browser")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // CI runs as root, where Chromium's sandbox cannot start
		chromedp.WindowSize(1360, 1100),
		chromedp.Flag("disable-gpu", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Skipf("Chromium at %s cannot start: %v", path, err)
	}
	return ctx
}

// within runs steps with a deadline (the browser's own context has none:
// a timeout there would stop the browser).
func within(t *testing.T, ctx context.Context, d time.Duration, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if err := chromedp.Do(tctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func evalString(t *testing.T, ctx context.Context, expr string) string {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// until waits for a JavaScript condition in the page.
func until(expr string, d time.Duration) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(d), chromedp.WithPollingInterval(20*time.Millisecond))
}

// TestDashboardInChromium drives the dashboard of the real binary in a
// real headless Chromium: a wrong token is refused, the right one logs in
// from the URL fragment, a deploy made with the CLI shows within 2 s, live
// progress and a refused rollback's message show, while a load runs
// through the proxy without a failed request.
func TestDashboardInChromium(t *testing.T) {
	ctx := browser(t)
	const token = "dash-e2e-token-7f3a"
	bs := newBinaryStack(t)
	adminAddr := freeport.For(t)
	bs.writeConfig(t, fmt.Sprintf("  tcp: \"%s\"\n  token: \"%s\"\n", adminAddr, token))
	srv := bs.serve(t)
	base := "http://" + adminAddr

	// A steady load through the proxy, so the charts have something to
	// show and the deploy moves real traffic. Bounded in time and count.
	var sent, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 5 * time.Second}
			tick := time.NewTicker(10 * time.Millisecond) // pacing: ~100 requests/s per worker
			defer tick.Stop()
			for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline) && sent.Load() < 20000; {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				sent.Add(1)
				resp, err := c.Get("http://" + bs.proxyAddr + "/")
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
				}
			}
		}()
	}
	loadDone := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}
	t.Cleanup(loadDone)

	// 1. A wrong token: refused, nothing shown, no session.
	within(t, ctx, 15*time.Second, "open the dashboard with a wrong token",
		chromedp.Navigate(base+"/ui/#token=wrong-token"),
		until(`document.querySelector('#login-error').textContent.length > 0`, 10*time.Second))
	if msg := evalString(t, ctx, `document.querySelector('#login-error').textContent`); !strings.Contains(msg, "wrong token") {
		t.Fatalf("login error shown: %q, want it to say wrong token", msg)
	}
	if hidden := evalString(t, ctx, `String(document.querySelector('#app').hidden)`); hidden != "true" {
		t.Fatal("the dashboard shows data after a wrong token")
	}
	if code := evalString(t, ctx, `fetch('/v1/status').then(r => String(r.status))`); code != "401" {
		t.Fatalf("the API answered %s to the page after a wrong token, want 401", code)
	}

	// 2. The right token: logged in, the live pool shown, the token gone
	// from the address bar.
	within(t, ctx, 15*time.Second, "log in with the token",
		chromedp.Navigate(base+"/ui/#token="+token),
		until(`document.querySelector('#active-web') && document.querySelector('#active-web').textContent === 'blue'`, 10*time.Second))
	if h := evalString(t, ctx, `location.hash`); h != "" {
		t.Fatalf("the token stays in the address bar: %q", h)
	}
	if cookies := evalString(t, ctx, `document.cookie`); strings.Contains(cookies, "cutover_session") {
		t.Fatal("the session cookie is readable by scripts: want HttpOnly")
	}
	within(t, ctx, 10*time.Second, "the served counters move (req/s shown)",
		until(`Array.from(document.querySelectorAll('tr.pool[data-pool="blue"] td.num')).some(td => parseFloat(td.textContent) > 0)`, 8*time.Second))

	// 3. A deploy made with the CLI shows within 2 s: the active badge
	// changes and the history gains a row.
	if out, errOut, code := bs.cli(t, "deploy", "green", "--timeout", "20s"); code != 0 {
		t.Fatalf("cutover deploy green: exit %d\n%s%s", code, out, errOut)
	}
	deployed := time.Now()
	within(t, ctx, 10*time.Second, "the page shows the deploy within 2s",
		until(`document.querySelector('#active-web').textContent === 'green' &&
			document.querySelectorAll('#history tbody tr').length === 1 &&
			document.querySelector('#history tbody tr .result').textContent === 'succeeded'`, 2*time.Second))
	t.Logf("the CLI's deploy showed in the page %s after the command returned", time.Since(deployed).Round(time.Millisecond))
	if got := evalString(t, ctx, `document.querySelector('#previous-web').textContent`); got != "blue" {
		t.Fatalf("previous pool shown: %q, want blue", got)
	}

	// 4. Blue goes down; a rollback to it from the page asks for
	// confirmation, shows its live progress (0 of 1 targets ready), and is
	// refused with the control plane's message.
	bs.blue.unhealthy.Store(true)
	within(t, ctx, 10*time.Second, "blue's target shows down",
		until(`document.querySelector('tr.pool[data-pool="blue"] + tr.target .state')?.textContent === 'down'`, 8*time.Second))
	within(t, ctx, 10*time.Second, "roll back from the page",
		chromedp.Click(chromedp.CSS("#rollback-web")),
		until(`document.querySelector('#confirm').open`, 5*time.Second),
		chromedp.SetValue(chromedp.CSS("#confirm-timeout"), "3s"),
		chromedp.Click(chromedp.CSS("#confirm-ok")),
		until(`(document.querySelector('#op-web')?.textContent || '').includes('rollback to blue: targets ready 0/1')`, 5*time.Second))
	within(t, ctx, 15*time.Second, "the refusal shows",
		until(`document.querySelector('#message').getAttribute('data-kind') === 'error'`, 12*time.Second))
	msg := evalString(t, ctx, `document.querySelector('#message').textContent`)
	for _, want := range []string{`rollback of service "web" to pool "blue" refused`, "not healthy within 3s", `live traffic stays on "green"`, bs.blue.addr()} {
		if !strings.Contains(msg, want) {
			t.Errorf("refusal shown lacks %q:\n%s", want, msg)
		}
	}
	within(t, ctx, 5*time.Second, "the refused rollback enters the history",
		until(`document.querySelectorAll('#history tbody tr').length === 2 &&
			document.querySelector('#history tbody tr .result').textContent === 'timed out' &&
			document.querySelector('#active-web').textContent === 'green'`, 3*time.Second))

	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	path := os.Getenv(screenshotEnv)
	if path == "" {
		path = filepath.Join(os.TempDir(), "cutover-dashboard.png")
	}
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(shot))

	loadDone()
	if failed.Load() != 0 || sent.Load() == 0 {
		t.Fatalf("%d of %d requests through the proxy failed during the test", failed.Load(), sent.Load())
	}
	t.Logf("load through the proxy: %d requests, %d failed", sent.Load(), failed.Load())
	// The token never reached cutover's log (the fragment is not sent; the
	// login body is not logged).
	if strings.Contains(srv.stderr.String(), token) {
		t.Fatal("the admin token appears in cutover's log")
	}
}
