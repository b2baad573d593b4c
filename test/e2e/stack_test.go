// Package e2e tests cutover's guarantees end to end: the real data plane
// (listeners and proxy) in front of real backends, switched by the real
// control plane through the real admin API, under concurrent load.
package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/controlplane"
	"github.com/cutover/cutover/internal/dataplane/listen"
	"github.com/cutover/cutover/internal/dataplane/proxy"
)

// requestTimeout bounds each load request. It is far above any latency
// cutover adds: it only turns a hung request into a failure, and leaves
// room for a CI machine busy with other tests under -race.
const requestTimeout = 30 * time.Second

// appBackend is one replica: it names itself in X-Backend and in every
// body, and records when each "/" request arrived.
type appBackend struct {
	name string
	srv  *httptest.Server

	mu       sync.Mutex
	arrivals []time.Time

	// slowArrived receives the backend's name when a /slow request
	// arrives, so a test knows it is running before it switches.
	slowArrived chan string
	// unhealthy makes /healthz answer 503.
	unhealthy atomic.Bool
	// wsClosed records, for each /ws connection that ended, the close
	// status the proxy sent this backend (-1: none, the connection broke).
	wsClosed chan websocket.StatusCode
}

func newAppBackend(t *testing.T, name string, slowArrived chan string) *appBackend {
	t.Helper()
	b := &appBackend{name: name, slowArrived: slowArrived, arrivals: make([]time.Time, 0, 1<<16), wsClosed: make(chan websocket.StatusCode, 256)}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if b.unhealthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// The time is read under the lock so that arrivals stay sorted
		// (lastArrivalIn searches them): read before it, a handler
		// descheduled between the two could append an earlier time after
		// a later one, and the search could then report an arrival from
		// outside the window it asks about. Read here it is still before
		// the response is written, so before the proxy ends the request.
		b.mu.Lock()
		b.arrivals = append(b.arrivals, time.Now())
		b.mu.Unlock()
		w.Header().Set("X-Backend", name)
		io.WriteString(w, name)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		if b.slowArrived != nil {
			b.slowArrived <- name
		}
		// The request's own work: it must outlive the switch.
		time.Sleep(time.Duration(ms) * time.Millisecond)
		w.Header().Set("X-Backend", name)
		io.WriteString(w, name)
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		ctx := context.Background()
		for {
			typ, msg, err := c.Read(ctx)
			if err != nil {
				select {
				case b.wsClosed <- websocket.CloseStatus(err):
				default:
				}
				return
			}
			if err := c.Write(ctx, typ, append([]byte(name+":"), msg...)); err != nil {
				select {
				case b.wsClosed <- websocket.CloseStatus(err):
				default:
				}
				return
			}
		}
	})
	mux.HandleFunc("/events", func(w http.ResponseWriter, r *http.Request) {
		// An event stream whose events arrive in two writes each, so a
		// relay sees the middle of events as well as their ends.
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		rc := http.NewResponseController(w)
		for i := 0; ; i++ {
			fmt.Fprintf(w, "id: %d\ndata: %s", i, name)
			if rc.Flush() != nil {
				return
			}
			select {
			case <-r.Context().Done():
				return
			case <-time.After(5 * time.Millisecond):
			}
			io.WriteString(w, " event\n\n")
			if rc.Flush() != nil {
				return
			}
			select {
			case <-r.Context().Done():
				return
			case <-time.After(15 * time.Millisecond):
			}
		}
	})
	b.srv = httptest.NewServer(mux)
	t.Cleanup(b.srv.Close)
	return b
}

func (b *appBackend) addr() string { return b.srv.Listener.Addr().String() }

// lastArrivalIn returns the latest arrival in [from, to), if any.
func (b *appBackend) lastArrivalIn(from, to time.Time) (time.Time, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	i := sort.Search(len(b.arrivals), func(i int) bool { return !b.arrivals[i].Before(to) })
	if i == 0 || b.arrivals[i-1].Before(from) {
		return time.Time{}, false
	}
	return b.arrivals[i-1], true
}

// stack is a whole cutover in-process: control plane, proxy on a
// 127.0.0.1 listener, admin API on a Unix socket.
type stack struct {
	proxyAddr string
	px        *proxy.Proxy
	client    *admin.Client
	m         *controlplane.Manager
	backends  map[string][]*appBackend // by pool
	stateDir  string
}

type stackOptions struct {
	previewHosts []string
	drainTimeout time.Duration
	closeSpread  time.Duration
	slowArrived  chan string
}

func startStack(t *testing.T, o stackOptions) *stack {
	t.Helper()
	dir, err := os.MkdirTemp("", "cutover-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	st := &stack{backends: map[string][]*appBackend{}, stateDir: dir}
	cfg := config.Default()
	cfg.StateDir = dir
	cfg.Admin.Socket = filepath.Join(dir, "admin.sock")
	svc := config.DefaultService("web")
	svc.Health.Interval = 20 * time.Millisecond
	svc.Health.Timeout = time.Second
	svc.DrainTimeout = o.drainTimeout
	svc.DrainCloseSpread = o.closeSpread
	for _, pool := range []string{"blue", "green"} {
		var addrs []string
		for i := 1; i <= 2; i++ {
			b := newAppBackend(t, fmt.Sprintf("%s-%d", pool, i), o.slowArrived)
			st.backends[pool] = append(st.backends[pool], b)
			addrs = append(addrs, b.addr())
		}
		svc.Pools = append(svc.Pools, config.Pool{Name: pool, Targets: addrs})
	}
	svc.Active = "blue"
	svc.PreviewHosts = o.previewHosts
	cfg.Services = []config.Service{svc}

	quiet := slog.New(slog.DiscardHandler)
	st.m, err = controlplane.New(cfg, controlplane.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.m.Close)

	st.px = proxy.New(proxy.Options{Router: st.m.Router(), Logger: quiet})
	st.proxyAddr = st.listen(t, listen.Options{HTTP: "127.0.0.1:0"}).HTTPAddr().String()

	srv, err := admin.Listen(admin.Options{Socket: cfg.Admin.Socket, Manager: st.m, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	st.client = admin.NewUnixClient(cfg.Admin.Socket)
	t.Cleanup(st.client.Close)
	return st
}

func (st *stack) poolOf(backend string) string {
	pool, _, _ := strings.Cut(backend, "-")
	return pool
}

// listen serves the stack's proxy on one more set of listeners (o's Proxy
// and Logger are filled in), until the test ends.
func (st *stack) listen(t *testing.T, o listen.Options) *listen.Server {
	t.Helper()
	o.Proxy = st.px
	o.Logger = slog.New(slog.DiscardHandler)
	ls, err := listen.New(o)
	if err != nil {
		t.Fatal(err)
	}
	go ls.Serve()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ls.Shutdown(ctx)
	})
	return ls
}
