package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/controlplane"
)

type backend struct {
	*httptest.Server
	status atomic.Int32
}

func newBackend(t *testing.T) *backend {
	t.Helper()
	b := &backend{}
	b.status.Store(http.StatusOK)
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(b.status.Load()))
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *backend) addr() string { return b.Listener.Addr().String() }

// shortDir is a temporary folder with a path short enough for a Unix
// socket (t.TempDir can exceed the 107-byte limit).
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cutover-admin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

const configTemplate = `listen:
  http: "127.0.0.1:8080"
state_dir: %[1]s
admin:
  socket: %[1]s/admin.sock
services:
  web:
    health: {path: /healthz, interval: 20ms, timeout: 1s, healthy: 2, unhealthy: 2}
    drain_timeout: 5s
    pools:
      blue: ["%[2]s"]
      green: ["%[3]s"]
    active: blue
`

// fixture is a real Manager behind a real admin server on a Unix socket.
type fixture struct {
	dir, cfgPath string
	m            *controlplane.Manager
	srv          *admin.Server
	client       *admin.Client
	blue, green  *backend
}

func newFixture(t *testing.T, edit func(*admin.Options)) *fixture {
	t.Helper()
	f := &fixture{dir: shortDir(t), blue: newBackend(t), green: newBackend(t)}
	f.cfgPath = filepath.Join(f.dir, "cutover.yaml")
	f.writeConfig(t, fmt.Sprintf(configTemplate, f.dir, f.blue.addr(), f.green.addr()))
	cfg, err := config.Load(f.cfgPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.m, err = controlplane.New(cfg, controlplane.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.m.Close)
	o := admin.Options{Socket: cfg.Admin.Socket, Manager: f.m, Reload: admin.FileReloader(f.cfgPath, nil, f.m.Reload)}
	if edit != nil {
		edit(&o)
	}
	f.srv, err = admin.Listen(o)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- f.srv.Serve() }()
	t.Cleanup(func() {
		f.srv.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	f.client = admin.NewUnixClient(cfg.Admin.Socket)
	t.Cleanup(f.client.Close)
	return f
}

func (f *fixture) writeConfig(t *testing.T, text string) {
	t.Helper()
	if err := os.WriteFile(f.cfgPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestSocketMode0600AndHealth(t *testing.T) {
	f := newFixture(t, nil)
	fi, err := os.Stat(f.srv.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket mode %v, want a socket with 0600", fi.Mode())
	}
	h, err := f.client.Health(context.Background())
	if err != nil || h.Status != "ok" || h.PID != os.Getpid() {
		t.Fatalf("health: %+v, %v", h, err)
	}
}

func TestStatusJSONSchema(t *testing.T) {
	f := newFixture(t, nil)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", f.srv.SocketPath())
	}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("http://cutover/v1/status?service=web")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status answered %s %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	var raw struct {
		Services []map[string]json.RawMessage `json:"services"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		t.Fatal(err)
	}
	if len(raw.Services) != 1 {
		t.Fatalf("%d services", len(raw.Services))
	}
	for _, key := range []string{"name", "hosts", "active", "previous", "balance", "operation", "pools"} {
		if _, ok := raw.Services[0][key]; !ok {
			t.Errorf("service object lacks %q", key)
		}
	}
	var pools []map[string]json.RawMessage
	json.Unmarshal(raw.Services[0]["pools"], &pools)
	for _, key := range []string{"name", "active", "source", "in_flight", "served", "targets"} {
		if _, ok := pools[0][key]; !ok {
			t.Errorf("pool object lacks %q", key)
		}
	}
	var targets []map[string]json.RawMessage
	json.Unmarshal(pools[0]["targets"], &targets)
	for _, key := range []string{"addr", "label", "state", "since", "consecutive_passes", "last_error", "last_probe", "in_flight", "served", "failures"} {
		if _, ok := targets[0][key]; !ok {
			t.Errorf("target object lacks %q", key)
		}
	}

	st, err := f.client.Status(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if st.Services[0].Active != "blue" || st.Services[0].Pools[1].Name != "green" {
		t.Fatalf("status %+v", st.Services[0])
	}
	_, err = f.client.Status(context.Background(), "nope")
	var ce *admin.Error
	if !errors.As(err, &ce) || ce.Kind != admin.KindNotFound || !strings.Contains(err.Error(), `no service "nope"`) {
		t.Fatalf("status of an unknown service: %v", err)
	}
}

func TestDeployStreamsProgressLive(t *testing.T) {
	f := newFixture(t, nil)
	f.green.status.Store(http.StatusServiceUnavailable)
	events := make(chan admin.Event, 100)
	type outcome struct {
		res *admin.DeployResult
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := f.client.Deploy(context.Background(), admin.DeployRequest{Pool: "green", Timeout: admin.Duration(20 * time.Second)},
			func(ev admin.Event) { events <- ev })
		done <- outcome{res, err}
	}()
	// A progress line about the failing target arrives while the deploy
	// is still waiting: the stream is flushed as it goes.
	for {
		ev := <-events
		if ev.Target != nil && strings.Contains(ev.Target.Error, "503") {
			break
		}
	}
	select {
	case o := <-done:
		t.Fatalf("deploy finished before green was healthy: %+v", o)
	default:
	}
	// A second deploy is refused at once with 409 and the running one named.
	_, err := f.client.Deploy(context.Background(), admin.DeployRequest{Pool: "green"}, nil)
	var ce *admin.Error
	if !errors.As(err, &ce) || ce.Kind != admin.KindBusy || !strings.Contains(err.Error(), `deploy of service "web" to pool "green"`) {
		t.Fatalf("concurrent deploy: %v", err)
	}
	f.green.status.Store(http.StatusOK)
	o := <-done
	if o.err != nil || o.res.Pool != "green" || o.res.From != "blue" {
		t.Fatalf("deploy: %+v, %v", o.res, o.err)
	}
	res, err := f.client.Rollback(context.Background(), admin.RollbackRequest{}, nil)
	if err != nil || res.Pool != "blue" {
		t.Fatalf("rollback: %+v, %v", res, err)
	}
}

func TestDeployFailureCarriesFailingTargets(t *testing.T) {
	f := newFixture(t, nil)
	f.green.status.Store(http.StatusInternalServerError)
	_, err := f.client.Deploy(context.Background(), admin.DeployRequest{Pool: "green", Timeout: admin.Duration(300 * time.Millisecond)}, nil)
	var ce *admin.Error
	if !errors.As(err, &ce) || ce.Kind != admin.KindUnhealthy || len(ce.Failing) != 1 || ce.Failing[0].Addr != f.green.addr() {
		t.Fatalf("deploy to a failing pool: %#v", err)
	}
	if !strings.Contains(err.Error(), "500") {
		t.Errorf("error lacks the probe error: %v", err)
	}
	st, _ := f.client.Status(context.Background(), "web")
	if st.Services[0].Active != "blue" {
		t.Fatalf("active %q after a failed deploy", st.Services[0].Active)
	}
}

func TestReloadThroughAPI(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	// An invalid file is refused with its problems; the running
	// configuration keeps serving.
	f.writeConfig(t, fmt.Sprintf(configTemplate, f.dir, f.blue.addr(), "not-an-address"))
	_, err := f.client.Reload(ctx)
	var ce *admin.Error
	if !errors.As(err, &ce) || ce.Kind != admin.KindInvalid || !strings.Contains(err.Error(), f.cfgPath) || !strings.Contains(err.Error(), "keeps serving") {
		t.Fatalf("reload of an invalid file: %v", err)
	}
	st, _ := f.client.Status(ctx, "web")
	if got := st.Services[0].Pools[1].Targets[0].Addr; got != f.green.addr() {
		t.Fatalf("refused reload changed green to %s", got)
	}
	// A valid file applies.
	other := newBackend(t)
	f.writeConfig(t, fmt.Sprintf(configTemplate, f.dir, f.blue.addr(), other.addr()))
	r, err := f.client.Reload(ctx)
	if err != nil || r.Status != "ok" {
		t.Fatalf("reload: %+v, %v", r, err)
	}
	st, _ = f.client.Status(ctx, "web")
	if got := st.Services[0].Pools[1].Targets[0].Addr; got != other.addr() {
		t.Fatalf("green after reload: %s, want %s", got, other.addr())
	}
}

func TestUnknownRouteAndBadBody(t *testing.T) {
	f := newFixture(t, nil)
	err := f.client.GetJSON(context.Background(), http.MethodGet, "/v2/status", nil, &struct{}{})
	var ce *admin.Error
	if !errors.As(err, &ce) || ce.Kind != admin.KindNotFound || !strings.Contains(err.Error(), "/v1/status") {
		t.Fatalf("unknown route: %v", err)
	}
	_, err = f.client.Stream(context.Background(), "/v1/deploy", map[string]any{"pool": "green", "colour": "x"}, nil)
	if !errors.As(err, &ce) || ce.Kind != admin.KindInvalid || !strings.Contains(err.Error(), "colour") {
		t.Fatalf("unknown field: %v", err)
	}
}

func TestStaleSocketReplacedLiveOneRefused(t *testing.T) {
	dir := shortDir(t)
	sock := filepath.Join(dir, "admin.sock")
	// A socket file left behind by a process that died.
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}
	m := newManager(t)
	srv, err := admin.Listen(admin.Options{Socket: sock, Manager: m})
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	go srv.Serve()
	defer srv.Close()
	if _, err := admin.NewUnixClient(sock).Health(context.Background()); err != nil {
		t.Fatalf("health after replacing the stale socket: %v", err)
	}
	// A second server on a live socket is refused and the first keeps it.
	_, err = admin.Listen(admin.Options{Socket: sock, Manager: m})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("another cutover (pid %d)", os.Getpid())) {
		t.Fatalf("Listen on a live socket: %v", err)
	}
	if _, err := admin.NewUnixClient(sock).Health(context.Background()); err != nil {
		t.Fatalf("first server lost its socket: %v", err)
	}
	// A path that is not a socket is never removed.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("x"), 0o600)
	if _, err := admin.Listen(admin.Options{Socket: file, Manager: m}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen on a regular file: %v", err)
	}
	if _, err := os.Stat(file); err != nil {
		t.Fatal("regular file removed")
	}
}

func TestShutdownRemovesSocket(t *testing.T) {
	sock := filepath.Join(shortDir(t), "admin.sock")
	srv, err := admin.Listen(admin.Options{Socket: sock, Manager: newManager(t)})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket file after shutdown: %v", err)
	}
}

func TestTCPNeedsToken(t *testing.T) {
	sock := filepath.Join(shortDir(t), "admin.sock")
	_, err := admin.Listen(admin.Options{Socket: sock, TCP: "127.0.0.1:0", Manager: newManager(t)})
	if err == nil || !strings.Contains(err.Error(), "admin.token") {
		t.Fatalf("TCP without a token: %v", err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatal("a refused start left the socket behind")
	}

	const token = "s3cret-token"
	srv, err := admin.Listen(admin.Options{Socket: sock, TCP: "127.0.0.1:0", Token: token, Manager: newManager(t)})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	defer srv.Close()
	url := "http://" + srv.TCPAddr() + "/v1/status"
	for name, auth := range map[string]string{"none": "", "wrong": "Bearer nope", "no scheme": token, "prefix": "Bearer s3cret"} {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "bearer token") {
			t.Errorf("%s token: %s %s, want 401", name, resp.Status, body)
		}
	}
	c := admin.NewTCPClient(srv.TCPAddr(), token)
	defer c.Close()
	if _, err := c.Status(context.Background(), ""); err != nil {
		t.Fatalf("status with the token: %v", err)
	}
	_, err = admin.NewTCPClient(srv.TCPAddr(), "bad").Status(context.Background(), "")
	var ce *admin.Error
	if !errors.As(err, &ce) || ce.Kind != admin.KindUnauthorized {
		t.Fatalf("client with a wrong token: %v", err)
	}
	// The Unix socket needs no token.
	if _, err := admin.NewUnixClient(sock).Status(context.Background(), ""); err != nil {
		t.Fatalf("status on the socket: %v", err)
	}
}

func TestClientUnreachable(t *testing.T) {
	sock := filepath.Join(shortDir(t), "nothing.sock")
	_, err := admin.NewUnixClient(sock).Status(context.Background(), "")
	var ue *admin.UnreachableError
	if !errors.As(err, &ue) {
		t.Fatalf("status with nothing listening: %v", err)
	}
	want := fmt.Sprintf("no cutover is running at %s (connect: no such file or directory): start it with `cutover serve -c FILE` or point --socket at the right path", sock)
	if err.Error() != want {
		t.Fatalf("message:\n%s\nwant:\n%s", err, want)
	}
}

// newManager is a started Manager over one real backend, for the
// listener tests.
func newManager(t *testing.T) *controlplane.Manager {
	t.Helper()
	dir := shortDir(t)
	cfg, err := config.Parse([]byte(fmt.Sprintf(configTemplate, dir, newBackend(t).addr(), newBackend(t).addr())), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := controlplane.New(cfg, controlplane.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func TestDashboardLoginSessionAndHealthz(t *testing.T) {
	const token = "s3cret-token"
	ready := errors.New("starting")
	f := newFixture(t, func(o *admin.Options) {
		o.TCP, o.Token = "127.0.0.1:0", token
		o.Ready = func() error { return ready }
	})
	base := "http://" + f.srv.TCPAddr()
	do := func(method, path, body string, hdr map[string]string, cookies ...*http.Cookie) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		for _, c := range cookies {
			req.AddCookie(c)
		}
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}

	// /healthz needs no token and follows Ready.
	if r := do("GET", "/healthz", "", nil); r.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("healthz while starting: %s, want 503", r.Status)
	}
	ready = nil
	if r := do("GET", "/healthz", "", nil); r.StatusCode != http.StatusOK {
		t.Fatalf("healthz while serving: %s, want 200", r.Status)
	}
	if err := f.client.Healthz(context.Background()); err != nil {
		t.Fatalf("healthz on the socket: %v", err)
	}
	if err := admin.CheckHealthz(context.Background(), base+"/healthz"); err != nil {
		t.Fatalf("CheckHealthz: %v", err)
	}

	// The page itself is public, with a policy that keeps it to its own files.
	r := do("GET", "/ui/", "", nil)
	if r.StatusCode != http.StatusOK || !strings.Contains(r.Header.Get("Content-Security-Policy"), "default-src 'self'") {
		t.Fatalf("GET /ui/: %s, CSP %q", r.Status, r.Header.Get("Content-Security-Policy"))
	}
	for _, p := range []string{"/ui/app.js", "/ui/app.css"} {
		if r := do("GET", p, "", nil); r.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s", p, r.Status)
		}
	}
	// The API is not, without a token or a session.
	if r := do("GET", "/v1/status", "", nil); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status without auth: %s", r.Status)
	}
	// A wrong token gets no cookie.
	if r := do("POST", "/ui/login", `{"token":"wrong"}`, nil); r.StatusCode != http.StatusUnauthorized || len(r.Cookies()) != 0 {
		t.Fatalf("login with a wrong token: %s, cookies %v", r.Status, r.Cookies())
	}
	r = do("POST", "/ui/login", `{"token":"`+token+`"}`, nil)
	if r.StatusCode != http.StatusNoContent || len(r.Cookies()) != 1 {
		t.Fatalf("login: %s, cookies %v", r.Status, r.Cookies())
	}
	c := r.Cookies()[0]
	if c.Name != admin.SessionCookie || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Value == "" || strings.Contains(c.Value, token) {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, not the token", c)
	}
	if r := do("GET", "/v1/status", "", nil, c); r.StatusCode != http.StatusOK {
		t.Fatalf("status with the session: %s", r.Status)
	}
	if r := do("GET", "/v1/history", "", nil, c); r.StatusCode != http.StatusOK {
		t.Fatalf("history with the session: %s", r.Status)
	}
	// A change with the cookie alone (what a forged cross-site form could
	// send) is refused; with the dashboard's header it goes through.
	if r := do("POST", "/v1/rollback", `{}`, nil, c); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("rollback with the cookie but no %s: %s", admin.UIHeader, r.Status)
	}
	if r := do("POST", "/v1/rollback", `{}`, map[string]string{admin.UIHeader: "1"}, c); r.StatusCode != http.StatusConflict {
		t.Fatalf("rollback with the session (no previous pool): %s, want 409", r.Status)
	}
	// A forged cookie is not a session; a logged-out one is no longer.
	if r := do("GET", "/v1/status", "", nil, &http.Cookie{Name: admin.SessionCookie, Value: "00"}); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status with a made-up session: %s", r.Status)
	}
	do("POST", "/ui/logout", "", nil, c)
	if r := do("GET", "/v1/status", "", nil, c); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status after logout: %s", r.Status)
	}
	// The bearer token still works alongside sessions.
	if r := do("GET", "/v1/status", "", map[string]string{"Authorization": "Bearer " + token}); r.StatusCode != http.StatusOK {
		t.Fatalf("status with the bearer token: %s", r.Status)
	}
}
