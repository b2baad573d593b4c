package serve_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/controlplane/state"
	"github.com/cutover/cutover/internal/serve"
	"github.com/cutover/cutover/internal/testutil/lockedbuf"
	"github.com/cutover/cutover/internal/testutil/rofs"
)

// cutover starts when state_dir is not writable (here it cannot even
// remove the old admin socket file): it serves the last state it can read,
// refuses changes and says why, and once the folder is writable again the
// admin socket comes up and changes work (issue 9, item 5).
func TestServeStartsWithUnwritableStateDir(t *testing.T) {
	backend := func(name string) string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) }))
		t.Cleanup(s.Close)
		return strings.TrimPrefix(s.URL, "http://")
	}
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Listen.HTTP = "127.0.0.1:0"
	cfg.StateDir = dir
	cfg.Admin.Socket = filepath.Join(dir, config.AdminSocketName)
	cfg.Log.Access = config.AccessOff
	svc := config.DefaultService("web")
	svc.Health.Interval = 20 * time.Millisecond
	svc.Pools = []config.Pool{{Name: "blue", Targets: []string{backend("blue")}}, {Name: "green", Targets: []string{backend("green")}}}
	svc.Active = "blue"
	cfg.Services = []config.Service{svc}

	// The last run switched to green, and died leaving its socket file.
	st := state.New()
	st.Services["web"] = state.Service{Active: "green", Previous: "blue"}
	if err := state.Save(state.Path(dir), st); err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.Admin.Socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	undo := rofs.Make(t, dir)

	logs := &lockedbuf.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	in, err := serve.Start(context.Background(), serve.Options{Config: cfg, Logger: log, Stdout: io.Discard})
	if err != nil {
		t.Fatalf("serve with an unwritable state_dir: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		in.Shutdown(ctx)
	})
	if got := get(t, "http://"+in.HTTPAddr().String()+"/"); got != "green" {
		t.Fatalf("served %q, want green (the state's active pool)", got)
	}
	if p := in.Manager().StateProblem(); !strings.Contains(p, dir) {
		t.Errorf("StateProblem %q does not name %s", p, dir)
	}
	for _, want := range []string{"admin socket cannot be made", "state cannot be written"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log does not say %q:\n%s", want, logs.String())
		}
	}
	_, err = in.Manager().Rollback(context.Background(), admin.RollbackRequest{}, nil)
	var ce *admin.Error
	if !errors.As(err, &ce) || ce.Kind != admin.KindState {
		t.Fatalf("rollback while the state is unwritable: %v, want KindState", err)
	}
	if got := get(t, "http://"+in.HTTPAddr().String()+"/"); got != "green" {
		t.Fatalf("after the refused rollback served %q, want green", got)
	}

	undo()
	c := admin.NewUnixClient(cfg.Admin.Socket)
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := c.Health(context.Background()); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("admin socket not up 10s after state_dir became writable: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // polling the socket the server retries on
	}
	res, err := c.Rollback(context.Background(), admin.RollbackRequest{}, nil)
	if err != nil || res.Pool != "blue" {
		t.Fatalf("rollback through the socket once writable: %+v, %v", res, err)
	}
	if got := get(t, "http://"+in.HTTPAddr().String()+"/"); got != "blue" {
		t.Fatalf("after the rollback served %q, want blue", got)
	}
	sr, err := c.Status(context.Background(), "")
	if err != nil || sr.StateError != "" {
		t.Fatalf("status after a good write: state_error %q, %v", sr.StateError, err)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}
