package serve_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/dataplane/proxy"
	"github.com/cutover/cutover/internal/serve"
)

// The event loops get processors of their own while they hold
// connections, give them back a while after the last one closes, and on
// Shutdown; the goroutine engine leaves GOMAXPROCS alone.
func TestLoopsGetProcessorsOfTheirOwn(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	defer backend.Close()
	for _, engine := range []string{config.EngineLoops, config.EngineGoroutines} {
		t.Run(engine, func(t *testing.T) {
			before := runtime.GOMAXPROCS(0)
			dir := t.TempDir()
			cfg := config.Default()
			cfg.Listen.HTTP = "127.0.0.1:0"
			cfg.Listen.Engine = engine
			cfg.StateDir = dir
			cfg.Admin.Socket = filepath.Join(dir, config.AdminSocketName)
			cfg.Log.Access = config.AccessOff
			svc := config.DefaultService("web")
			svc.Pools = []config.Pool{{Name: "blue", Targets: []string{strings.TrimPrefix(backend.URL, "http://")}}}
			svc.Active = "blue"
			cfg.Services = []config.Service{svc}
			in, err := serve.Start(context.Background(), serve.Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Stdout: io.Discard})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := in.Shutdown(ctx); err != nil {
					t.Errorf("Shutdown: %v", err)
				}
				if got := runtime.GOMAXPROCS(0); got != before {
					t.Errorf("GOMAXPROCS after Shutdown = %d, want %d", got, before)
				}
			}()
			busy := before
			if engine == config.EngineLoops && proxy.LoopsSupported {
				busy = 2 * before // one loop per processor, and as many again
			}
			if got := runtime.GOMAXPROCS(0); got != before {
				t.Errorf("GOMAXPROCS with no connection = %d, want %d", got, before)
			}
			// A keep-alive connection stays on a loop until it is closed.
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			get := func() {
				t.Helper()
				resp, err := (&http.Client{Transport: tr}).Get("http://" + in.HTTPAddr().String() + "/")
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(body) != "ok" {
					t.Errorf("request through the instance: %d %q", resp.StatusCode, body)
				}
			}
			get()
			awaitProcs(t, "with a connection on the loops", busy)
			tr.CloseIdleConnections()
			awaitProcs(t, "after the last connection closed", before)
			get() // and lent again, held at Shutdown
			awaitProcs(t, "with a connection again", busy)
		})
	}
}

// awaitProcs waits up to 5 s for GOMAXPROCS to become want: the lender
// looks at the loops ten times a second and gives processors back after
// a second without connections.
func awaitProcs(t *testing.T, when string, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.GOMAXPROCS(0) != want {
		if time.Now().After(deadline) {
			t.Fatalf("GOMAXPROCS %s = %d, want %d", when, runtime.GOMAXPROCS(0), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
