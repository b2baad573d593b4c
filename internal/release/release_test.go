package release

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/controlplane"
	"github.com/cutover/cutover/internal/dataplane/upstream"
	"github.com/cutover/cutover/internal/provider/docker"
)

// A failed compose run says why (its stderr), not only "exit status 1".
func TestRunComposeFailureShowsStderr(t *testing.T) {
	compose := []string{"sh", "-c", `echo "Pulling web (app:v9)..."; echo "ERROR: pull access denied for app, repository does not exist or may require 'docker login'" >&2; exit 1`, "sh"}
	var out strings.Builder
	err := RunCompose(context.Background(), compose, []string{"up", "-d"}, os.Environ(), &out)
	if err == nil {
		t.Fatal("a compose that exits 1 succeeded")
	}
	for _, want := range []string{"pull access denied for app", "exit status 1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "Pulling web") {
		t.Errorf("error %q carries stdout too", err)
	}
	if !strings.Contains(out.String(), "    | Pulling web") {
		t.Errorf("output not copied:\n%s", out.String())
	}
	if err := RunCompose(context.Background(), []string{"true"}, nil, os.Environ(), io.Discard); err != nil {
		t.Errorf("a compose that succeeds: %v", err)
	}
}

// A release into the warm rollback colour (the previous pool, still
// running) is refused unless --replace-previous, before anything is
// touched; with it, the release says it replaces that colour.
func TestReleaseRefusesToReplaceTheWarmRollbackColour(t *testing.T) {
	backend := func() upstream.TargetSpec {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		t.Cleanup(s.Close)
		return upstream.TargetSpec{Addr: strings.TrimPrefix(s.URL, "http://"), Label: "c-" + s.Listener.Addr().String()}
	}
	dir, err := os.MkdirTemp("", "rel")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := config.Default()
	cfg.StateDir = dir
	cfg.Admin.Socket = filepath.Join(dir, "a.sock")
	cfg.Listen.HTTP = "127.0.0.1:8080"
	cfg.Docker.Network = "net"
	svc := config.DefaultService("web")
	svc.Health.Interval = 20 * time.Millisecond
	for _, colour := range []string{"blue", "green"} {
		svc.Pools = append(svc.Pools, config.Pool{Name: colour, Compose: &config.ComposeRef{Project: "web-" + colour, Service: "web"}, Port: 8000})
	}
	svc.Active = "blue"
	cfg.Services = []config.Service{svc}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	m, err := controlplane.New(cfg, controlplane.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	// What the Docker provider would do: each colour's containers.
	for _, colour := range []string{"blue", "green"} {
		if err := m.SetTargets("web", colour, []upstream.TargetSpec{backend()}); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := admin.Listen(admin.Options{Socket: cfg.Admin.Socket, Manager: m})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	api := admin.NewUnixClient(cfg.Admin.Socket)
	t.Cleanup(api.Close)
	ctx := context.Background()
	if _, err := api.Deploy(ctx, admin.DeployRequest{Pool: "green", Timeout: admin.Duration(10 * time.Second)}, nil); err != nil {
		t.Fatal(err)
	}
	// blue is now the warm rollback colour, and the idle one.
	noDocker := errors.New("no Docker in this test")
	connected := false
	connect := func(context.Context) (*docker.Engine, error) { connected = true; return nil, noDocker }
	o := Options{Files: []string{"compose.yaml"}, Pools: []string{"blue", "green"}, Timeout: time.Minute, Command: "true"}

	var out strings.Builder
	err = Run(ctx, o, api, connect, &out)
	if err == nil || !strings.Contains(err.Error(), "warm rollback colour") || !strings.Contains(err.Error(), "--replace-previous") || !strings.Contains(err.Error(), "blue") {
		t.Fatalf("release into the warm rollback colour: %v", err)
	}
	if connected {
		t.Fatal("the refused release reached Docker")
	}
	if st, _ := api.Status(ctx, ""); st.Services[0].Active != "green" || st.Services[0].Previous != "blue" {
		t.Fatalf("after the refusal: %+v", st.Services[0])
	}

	o.ReplacePrevious = true
	out.Reset()
	err = Run(ctx, o, api, connect, &out)
	if !errors.Is(err, noDocker) || !connected {
		t.Fatalf("release with --replace-previous: %v (connected %v), want it to go on to Docker", err, connected)
	}
	if !strings.Contains(out.String(), "replacing the warm rollback colour blue") {
		t.Errorf("output does not name the replaced colour:\n%s", out.String())
	}
}
