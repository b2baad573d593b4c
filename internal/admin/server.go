package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cutover/cutover/internal/config"
)

// Manager is what the admin API needs of the control plane
// (*Manager implements it).
type Manager interface {
	Status(service string) ([]ServiceStatus, error)
	Deploy(ctx context.Context, req DeployRequest, progress func(Event)) (*DeployResult, error)
	Rollback(ctx context.Context, req RollbackRequest, progress func(Event)) (*DeployResult, error)
	// Promote and Abort end a canary or preview.
	Promote(ctx context.Context, req TrialRequest, progress func(Event)) (*DeployResult, error)
	Abort(ctx context.Context, req TrialRequest, progress func(Event)) (*DeployResult, error)
	// StateProblem says why the state cannot be written ("" when it can).
	StateProblem() string
	History(service string) []HistoryEntry
}

// Options configure a Server.
type Options struct {
	// Socket is the Unix socket path (required).
	Socket string
	// TCP is an optional host:port to serve the API on as well; it requires
	// Token.
	TCP string
	// Token is the bearer token required on TCP.
	Token string
	// Manager answers status, deploy and rollback.
	Manager Manager
	// Certificates reports the HTTPS certificates for GET /v1/status (nil:
	// none are listed).
	Certificates func() []CertificateStatus
	// Store reports the shared desired state for GET /v1/status (nil or
	// returning nil: none).
	Store func() *StoreStatus
	// Reload re-reads the configuration and applies it (see FileReloader);
	// nil makes POST /v1/reload answer that reloading is not available.
	Reload func(ctx context.Context) error
	// Logger receives admin requests that change something (default: discard).
	Logger *slog.Logger
	// Ready says whether cutover serves (nil error) for GET /healthz; nil
	// means it does whenever the admin API answers.
	Ready func() error
	// SocketRetry, when set, keeps cutover serving when the socket cannot
	// be made because its folder is not writable (permissions, read-only
	// or full disk, a stale socket file that cannot be removed): Listen
	// logs why and succeeds, the TCP listener (if any) serves, and Serve
	// tries the socket again at this interval until it works. Without it
	// Listen fails.
	SocketRetry time.Duration

	// UnixListener and TCPListener, when set, are listening sockets handed
	// over by the cutover this process upgrades, used instead of binding
	// Socket and TCP.
	UnixListener, TCPListener net.Listener
	// Gate, when set, is asked before every request that changes state
	// (deploy, rollback, reload); an error refuses the request, and
	// release is called when it ends. An upgrade closes the gate.
	Gate func() (release func(), err error)
	// Upgrade starts the new process and hands over (POST /v1/upgrade);
	// nil refuses upgrades.
	Upgrade func(ctx context.Context, req UpgradeRequest) (*UpgradeResponse, error)
}

// Server timeouts. There is no write timeout: deploy streams last as long as
// the health wait and the drain. Short responses set their own deadline.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 30 * time.Second
	idleTimeout       = 60 * time.Second
	shortWriteTimeout = 30 * time.Second
	maxBodyBytes      = 1 << 20
	// probeTimeout bounds the check for another process on the socket.
	probeTimeout = time.Second
)

// Server serves the admin API.
type Server struct {
	o      Options
	log    *slog.Logger
	unix   net.Listener
	tcp    net.Listener
	unixHS *http.Server
	tcpHS  *http.Server
	// socketPending: the socket could not be made yet (see SocketRetry).
	socketPending bool
	// done is closed by Close and Shutdown, ending the socket retries.
	done chan struct{}
	// sessions are the dashboard's logins (TCP listener only).
	sessions *sessions

	closeOnce sync.Once
	// lnMu guards unix, which retrySocket sets late, for the hand-over.
	lnMu sync.Mutex
}

// Listen opens the admin listeners: the Unix socket (a stale socket file
// left by a crash is replaced; a socket another process answers on is not)
// with mode 0600, and the TCP listener when configured with a token. Serve
// then answers on them.
func Listen(o Options) (*Server, error) {
	if o.Manager == nil {
		return nil, errors.New("admin: no manager given")
	}
	if o.Socket == "" {
		return nil, errors.New("admin.socket is empty — set it to a path, e.g. /var/lib/cutover/admin.sock")
	}
	if o.TCP != "" && o.Token == "" {
		return nil, fmt.Errorf("admin.tcp is set (%s) but admin.token is not: a TCP admin listener without a token would let anyone who reaches %s deploy — set admin.token (e.g. from ${CUTOVER_ADMIN_TOKEN}), or remove admin.tcp and use the Unix socket", o.TCP, o.TCP)
	}
	s := &Server{o: o, log: o.Logger, done: make(chan struct{})}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	ln := o.UnixListener
	if ln == nil {
		var err error
		ln, err = listenUnix(o.Socket)
		switch {
		case err == nil:
		case o.SocketRetry > 0 && unwritable(err):
			s.socketPending = true
			s.log.Error("admin socket cannot be made; serving traffic without it and trying again",
				"socket", o.Socket, "error", err, "retry_every", o.SocketRetry)
		default:
			return nil, err
		}
	}
	if ln != nil {
		s.unix = newPausable(ln)
	}
	if o.TCP != "" {
		tl := o.TCPListener
		if tl == nil {
			var err error
			if tl, err = net.Listen("tcp", o.TCP); err != nil {
				if ln != nil {
					ln.Close()
				}
				return nil, fmt.Errorf("admin.tcp %s: %w", o.TCP, err)
			}
		}
		s.tcp = newPausable(tl)
	} else if o.TCPListener != nil {
		o.TCPListener.Close()
	}
	mux := s.routes()
	s.unixHS = newHTTPServer(mux, s.log)
	if s.tcp != nil {
		s.sessions = newSessions()
		s.tcpHS = newHTTPServer(s.tcpRoutes(mux), s.log)
	}
	return s, nil
}

func newHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// unwritable reports whether err says a file could not be made or removed
// because the disk or folder does not allow it.
func unwritable(err error) bool {
	return errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// retrySocket tries to make the socket every SocketRetry until it works,
// then serves on it; it returns nil when the server is closed first.
func (s *Server) retrySocket() error {
	tick := time.NewTicker(s.o.SocketRetry)
	defer tick.Stop()
	last := ""
	for {
		select {
		case <-s.done:
			return nil
		case <-tick.C:
		}
		ln, err := listenUnix(s.o.Socket)
		if err != nil {
			if msg := err.Error(); msg != last {
				last = msg
				s.log.Error("admin socket still cannot be made", "socket", s.o.Socket, "error", err)
			}
			continue
		}
		s.log.Info("admin socket made; the admin API answers on it", "socket", s.o.Socket)
		p := newPausable(ln)
		s.lnMu.Lock()
		s.unix = p
		s.lnMu.Unlock()
		return s.unixHS.Serve(p)
	}
}

// listenUnix listens on path with mode 0600, replacing a stale socket file.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("admin socket %s: create its folder: %w", path, err)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	// The socket file gets the umask's mode at creation; tighten it and
	// check, since anyone who can connect can deploy.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket %s: chmod 0600: %w", path, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		ln.Close()
		return nil, fmt.Errorf("admin socket %s has mode %04o after chmod 0600 — the file system does not keep modes; put admin.socket on a local file system", path, perm)
	}
	return ln, nil
}

// removeStale removes a socket file nothing answers on (left by a process
// that died). It refuses when something answers, or when the path is not a
// socket.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("admin socket %s: %w", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("admin socket %s exists and is not a socket — remove it, or set admin.socket to another path", path)
	}
	conn, err := net.DialTimeout("unix", path, probeTimeout)
	if err == nil {
		conn.Close()
		who := "another process"
		if h, err := NewUnixClient(path).Health(context.Background()); err == nil {
			who = fmt.Sprintf("another cutover (pid %d)", h.PID)
		}
		return fmt.Errorf("admin socket %s: %s is answering on it — stop that one first, or give this one another admin.socket", path, who)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("admin socket %s exists and cannot be checked (%v) — remove it if no cutover runs, or set admin.socket to another path", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("admin socket %s: remove the stale socket: %w", path, err)
	}
	return nil
}

// SocketPath is the Unix socket the server listens on.
func (s *Server) SocketPath() string { return s.o.Socket }

// TCPAddr is the TCP address the server listens on ("" when none).
func (s *Server) TCPAddr() string {
	if s.tcp == nil {
		return ""
	}
	return s.tcp.Addr().String()
}

// Serve answers requests until Shutdown or Close. It returns nil after
// those, or the first listener error.
func (s *Server) Serve() error {
	errc := make(chan error, 2)
	n := 1
	if s.socketPending {
		go func() { errc <- s.retrySocket() }()
	} else {
		go func() { errc <- s.unixHS.Serve(s.unix) }()
	}
	if s.tcpHS != nil {
		n++
		go func() { errc <- s.tcpHS.Serve(s.tcp) }()
	}
	var first error
	for range n {
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) && first == nil {
			first = err
			s.Close()
		}
	}
	return first
}

// Shutdown stops accepting requests and waits for those running (a deploy
// stream included) until ctx ends. The socket file is removed.
func (s *Server) Shutdown(ctx context.Context) error {
	var err error
	s.closeOnce.Do(func() {
		close(s.done)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, hs := range []*http.Server{s.unixHS, s.tcpHS} {
			if hs == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = hs.Shutdown(ctx)
			}()
		}
		wg.Wait()
		err = errors.Join(errs...)
	})
	return err
}

// Close stops the server at once, cutting running requests.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.done)
		err = s.unixHS.Close()
		if s.tcpHS != nil {
			err = errors.Join(err, s.tcpHS.Close())
		}
	})
	return err
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", s.health)
	mux.HandleFunc("GET /v1/status", s.status)
	mux.HandleFunc("POST /v1/deploy", s.gated(s.deploy))
	mux.HandleFunc("POST /v1/rollback", s.gated(s.rollback))
	mux.HandleFunc("POST /v1/promote", s.gated(s.trialEnd(OpPromote)))
	mux.HandleFunc("POST /v1/abort", s.gated(s.trialEnd(OpAbort)))
	mux.HandleFunc("POST /v1/reload", s.gated(s.reload))
	mux.HandleFunc("POST /v1/upgrade", s.upgrade)
	mux.HandleFunc("GET /v1/history", s.history)
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &Error{Kind: KindNotFound,
			Message: fmt.Sprintf("no admin route %s %s — the routes are GET /healthz, GET /v1/health, GET /v1/status, GET /v1/history, POST /v1/deploy, POST /v1/rollback, POST /v1/promote, POST /v1/abort, POST /v1/reload, POST /v1/upgrade", r.Method, r.URL.Path)})
	})
	return mux
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	shortDeadline(w)
	writeJSON(w, http.StatusOK, HealthResponse{Status: "ok", PID: os.Getpid()})
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	shortDeadline(w)
	list, err := s.o.Manager.Status(r.URL.Query().Get("service"))
	if err != nil {
		writeError(w, asError(err))
		return
	}
	resp := StatusResponse{Services: list, StateError: s.o.Manager.StateProblem()}
	if s.o.Store != nil {
		resp.Store = s.o.Store()
	}
	if s.o.Certificates != nil {
		resp.Certificates = s.o.Certificates()
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) history(w http.ResponseWriter, r *http.Request) {
	shortDeadline(w)
	writeJSON(w, http.StatusOK, HistoryResponse{Entries: s.o.Manager.History(r.URL.Query().Get("service"))})
}

func (s *Server) reload(w http.ResponseWriter, r *http.Request) {
	shortDeadline(w)
	if s.o.Reload == nil {
		writeError(w, &Error{Kind: KindRefused, Message: "this cutover cannot reload: it was not started from a configuration file"})
		return
	}
	if err := s.o.Reload(r.Context()); err != nil {
		s.log.Warn("reload refused", "error", err.Error())
		writeError(w, reloadError(err))
		return
	}
	s.log.Info("configuration reloaded through the admin API")
	writeJSON(w, http.StatusOK, ReloadResponse{Status: "ok", Message: "configuration reloaded"})
}

func reloadError(err error) *Error {
	var problems *config.Errors
	if errors.As(err, &problems) {
		lines := make([]string, len(problems.Problems))
		for i, p := range problems.Problems {
			lines[i] = "  " + p.String()
		}
		return &Error{Kind: KindInvalid,
			Message: "reload refused, the running configuration keeps serving; the file has these problems:\n" + strings.Join(lines, "\n")}
	}
	var ce *Error
	if errors.As(err, &ce) {
		return ce
	}
	return &Error{Kind: KindInvalid, Message: "reload refused, the running configuration keeps serving: " + err.Error()}
}

func (s *Server) deploy(w http.ResponseWriter, r *http.Request) {
	var req DeployRequest
	if !decode(w, r, &req) {
		return
	}
	s.log.Info("admin: deploy requested", "service", req.Service, "pool", req.Pool, "targets", req.Targets)
	st := newStream(w)
	res, err := s.o.Manager.Deploy(r.Context(), req, st.event)
	st.finish(res, err)
}

func (s *Server) rollback(w http.ResponseWriter, r *http.Request) {
	var req RollbackRequest
	if !decode(w, r, &req) {
		return
	}
	s.log.Info("admin: rollback requested", "service", req.Service)
	st := newStream(w)
	res, err := s.o.Manager.Rollback(r.Context(), req, st.event)
	st.finish(res, err)
}

// trialEnd serves POST /v1/promote and /v1/abort.
func (s *Server) trialEnd(op string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req TrialRequest
		if !decode(w, r, &req) {
			return
		}
		s.log.Info("admin: "+op+" requested", "service", req.Service)
		st := newStream(w)
		run := s.o.Manager.Abort
		if op == OpPromote {
			run = s.o.Manager.Promote
		}
		res, err := run(r.Context(), req, st.event)
		st.finish(res, err)
	}
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		writeError(w, &Error{Kind: KindInvalid, Message: "request body: " + err.Error()})
		return false
	}
	return true
}

// stream writes NDJSON lines, flushing each. The status line is written
// with the first line, so a request refused before any event gets the
// status code that says why.
type stream struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	enc     *json.Encoder
	started bool
	broken  bool
}

func newStream(w http.ResponseWriter) *stream {
	return &stream{w: w, rc: http.NewResponseController(w), enc: json.NewEncoder(w)}
}

func (st *stream) start(code int) {
	if st.started {
		return
	}
	st.started = true
	st.w.Header().Set("Content-Type", "application/x-ndjson")
	st.w.Header().Set("Cache-Control", "no-store")
	st.w.Header().Set("X-Content-Type-Options", "nosniff")
	st.w.WriteHeader(code)
}

func (st *stream) line(l StreamLine) {
	if st.broken {
		return
	}
	// A client that went away does not stop the operation; the
	// remaining lines are dropped.
	if err := st.enc.Encode(l); err != nil {
		st.broken = true
		return
	}
	if err := st.rc.Flush(); err != nil {
		st.broken = true
	}
}

func (st *stream) event(ev Event) {
	st.start(http.StatusOK)
	st.line(StreamLine{Type: LineEvent, Event: &ev})
}

func (st *stream) finish(res *DeployResult, err error) {
	if err != nil {
		e := asError(err)
		st.start(statusFor(e.Kind))
		st.line(StreamLine{Type: LineError, Error: e})
		return
	}
	st.start(http.StatusOK)
	st.line(StreamLine{Type: LineResult, Result: res})
}

func asError(err error) *Error {
	var ce *Error
	if errors.As(err, &ce) {
		return ce
	}
	return &Error{Kind: KindInternal, Message: err.Error()}
}

func shortDeadline(w http.ResponseWriter) {
	http.NewResponseController(w).SetWriteDeadline(time.Now().Add(shortWriteTimeout))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, e *Error) {
	writeJSON(w, statusFor(e.Kind), ErrorResponse{Error: e})
}

// FileReloader returns a Reload function for Options: it reads the
// configuration file at path again (filling ${VAR} from lookupEnv, nil for
// the process environment) and hands it to apply (e.g. Manager.Reload). A
// file with problems is refused with all of them, and nothing changes.
func FileReloader(path string, lookupEnv func(string) (string, bool), apply func(*config.Config) error) func(context.Context) error {
	return func(context.Context) error {
		cfg, err := config.Load(path, lookupEnv)
		if err != nil {
			return err
		}
		return apply(cfg)
	}
}
