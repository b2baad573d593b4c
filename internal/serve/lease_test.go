package serve_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/serve"
)

// Two cutovers on one state_dir would each write their own state: the
// second is refused (naming the first's pid) and binds nothing, and once the
// first stops, its lease is free for the next start.
func TestSecondServeOnOneStateDirIsRefused(t *testing.T) {
	dir := t.TempDir()
	start := func(socket string) (*serve.Instance, error) {
		cfg := config.Default()
		cfg.Listen.HTTP = "127.0.0.1:0"
		cfg.StateDir = dir
		cfg.Admin.Socket = filepath.Join(dir, socket)
		cfg.Log.Access = config.AccessOff
		svc := config.DefaultService("web")
		svc.Pools = []config.Pool{{Name: "blue", Targets: []string{"127.0.0.1:1"}}}
		svc.Active = "blue"
		cfg.Services = []config.Service{svc}
		return serve.Start(context.Background(), serve.Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Stdout: io.Discard})
	}
	first, err := start("a.sock")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := start("b.sock"); err == nil || !strings.Contains(err.Error(), "in use by another cutover") || !strings.Contains(err.Error(), "pid") {
		t.Fatalf("second serve on the same state_dir: %v, want a refusal naming the first", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	first.Shutdown(ctx)
	again, err := start("c.sock")
	if err != nil {
		t.Fatalf("start after the first stopped: %v", err)
	}
	again.Shutdown(ctx)
}
