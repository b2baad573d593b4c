// Package demoapp is a small HTTP application that stands in for the seed's
// Django servers: it reports which replica answered (profile, version,
// hostname) and offers the awkward kinds of traffic a reverse proxy must carry
// — slow responses, server-sent events, WebSocket, streamed bodies — so the
// proxy and the deploy flow can be tested against a real backend.
package demoapp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cutover/cutover/internal/human"
)

// Server limits. Read and write timeouts stay zero on purpose: /stream, /ws,
// /echo and /slow are long by design and bound themselves (see the handlers);
// a whole-request deadline would cut them.
const (
	readHeaderTimeout = 5 * time.Second
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 64 << 10

	// goingAwayGrace is how long WebSocket clients get, after the shutdown
	// deadline, to answer the server's close frame before their connections
	// are cut.
	goingAwayGrace = time.Second
	// cutGrace bounds the wait for handlers to return once their
	// connections have been closed.
	cutGrace = 5 * time.Second
)

// Options configures an App.
type Options struct {
	// Profile names the replica, as the seed's PROFILE variable does
	// (for example "set1-server1").
	Profile string
	// Version is the application version reported by GET /.
	Version string
	// Hostname is reported by GET /; empty means os.Hostname().
	Hostname string
	// Logger receives server errors; nil means slog.Default().
	Logger *slog.Logger
	// FailRate is the share (0..1) of GET / requests answered 500, evenly
	// spread (every 1/FailRate-th request), for showing a broken version
	// that a deploy's guard rolls back. /healthz keeps passing.
	FailRate float64
}

// App is the demo application. Create it with New; its handler can be
// mounted anywhere (httptest.Server) or served with Serve and stopped with
// Shutdown.
type App struct {
	profile  string
	version  string
	hostname string
	log      *slog.Logger

	healthy atomic.Bool
	served  atomic.Int64
	// failEvery is n when every n-th GET / fails (0: none); roots counts
	// them.
	failEvery    int64
	roots        atomic.Int64
	healthChecks atomic.Int64
	inflight     tracker

	handler http.Handler
	srv     *http.Server

	// baseCancel cancels every request context; called only when the
	// shutdown deadline has passed.
	baseCancel context.CancelFunc
	// hard is closed when the shutdown deadline has passed, to tell
	// long-lived handlers to end.
	hard     chan struct{}
	hardOnce sync.Once
}

// New returns an App that is healthy and not yet serving.
func New(o Options) *App {
	host := o.Hostname
	if host == "" {
		// An unknown hostname is reported as empty rather than failing:
		// the app must start in any container.
		host, _ = os.Hostname()
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.Default()
	}
	a := &App{
		profile:  o.Profile,
		version:  o.Version,
		hostname: host,
		log:      logger,
		hard:     make(chan struct{}),
	}
	a.inflight.init()
	a.healthy.Store(true)
	if o.FailRate > 0 {
		a.failEvery = max(1, int64(math.Round(1/min(o.FailRate, 1))))
	}
	a.handler = a.routes()

	base, cancel := context.WithCancel(context.Background())
	a.baseCancel = cancel
	a.srv = &http.Server{
		Handler:           a.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		BaseContext:       func(net.Listener) context.Context { return base },
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return a
}

// Handler returns the app's HTTP handler.
func (a *App) Handler() http.Handler { return a.handler }

// SetHealthy makes /healthz answer 200 (true) or 503 (false).
func (a *App) SetHealthy(ok bool) { a.healthy.Store(ok) }

// Healthy reports what /healthz currently answers.
func (a *App) Healthy() bool { return a.healthy.Load() }

// Served reports how many requests the app has received, counted when the
// handler starts. Requests to /healthz and /admin/ are not counted, so that a
// proxy's health checks do not skew balance tests; see HealthChecks.
func (a *App) Served() int64 { return a.served.Load() }

// HealthChecks reports how many requests /healthz has received.
func (a *App) HealthChecks() int64 { return a.healthChecks.Load() }

// InFlight reports how many requests are being handled right now (all
// paths, WebSocket sessions included).
func (a *App) InFlight() int64 { return a.inflight.count() }

// Serve accepts connections on ln until Shutdown is called. It returns nil
// after a shutdown and the accept error otherwise. Serve may be called for
// several listeners.
func (a *App) Serve(ln net.Listener) error {
	err := a.srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("demo app: serving on %s: %w", ln.Addr(), err)
	}
	return nil
}

// Shutdown stops accepting connections and waits for in-flight requests,
// streams and WebSocket sessions to end on their own. When ctx ends first,
// WebSocket clients are sent a "going away" close frame, every remaining
// connection is closed, and Shutdown returns an error wrapping ctx.Err().
func (a *App) Shutdown(ctx context.Context) error {
	err := a.srv.Shutdown(ctx)
	if err == nil {
		// Plain connections are done; hijacked ones (WebSocket) are not
		// tracked by http.Server, so wait for their handlers too.
		select {
		case <-a.inflight.idle():
			return nil
		case <-ctx.Done():
		}
	} else if ctx.Err() == nil {
		return fmt.Errorf("demo app: shutdown: %w", err)
	}

	open := a.inflight.count()
	a.hardOnce.Do(func() { close(a.hard) })
	goingAway := time.NewTimer(goingAwayGrace)
	defer goingAway.Stop()
	select {
	case <-a.inflight.idle():
	case <-goingAway.C:
	}
	a.baseCancel()
	_ = a.srv.Close() // the only possible error is from closing listeners, already closed by Shutdown
	cut := time.NewTimer(cutGrace)
	defer cut.Stop()
	select {
	case <-a.inflight.idle():
	case <-cut.C:
		return fmt.Errorf("demo app: shutdown deadline passed and %s did not return within %s of their connections closing: %w",
			human.Count(int(a.inflight.count()), "handler"), cutGrace, ctx.Err())
	}
	return fmt.Errorf("demo app: shutdown deadline passed with %s open; their connections were closed: %w", human.Count(int(open), "request"), ctx.Err())
}

// tracker counts in-flight handlers and lets callers wait for zero. Unlike
// sync.WaitGroup it allows new work to start while someone waits.
type tracker struct {
	mu     sync.Mutex
	n      int64
	zeroCh chan struct{} // closed while n == 0
}

func (t *tracker) init() {
	t.zeroCh = make(chan struct{})
	close(t.zeroCh)
}

func (t *tracker) add() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == 0 {
		t.zeroCh = make(chan struct{})
	}
	t.n++
}

func (t *tracker) done() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.n == 0 {
		close(t.zeroCh)
	}
}

func (t *tracker) count() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}

func (t *tracker) idle() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.zeroCh
}
