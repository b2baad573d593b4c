package demoapp

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"
)

// Per-route bounds: with no server-wide read/write timeouts, each long route
// limits itself.
const (
	maxSlowMS        = 60_000
	defaultEvents    = 5
	maxEvents        = 100_000
	defaultInterval  = 100
	maxIntervalMS    = 60_000
	defaultBytes     = 1024
	maxBytes         = 1 << 30
	wsReadLimit      = 1 << 20
	copyBufferSize   = 32 << 10
	profileHeader    = "X-Profile"
	methodHeader     = "X-Method"
	contentTypeJSON  = "application/json"
	contentTypeSSE   = "text/event-stream"
	contentTypeBytes = "application/octet-stream"
)

// Info is the JSON body of GET /, GET /info and GET /slow.
type Info struct {
	Profile  string `json:"profile"`
	Version  string `json:"version"`
	Hostname string `json:"hostname"`
	Method   string `json:"method"`
	// Path is the decoded request path; URI is the request target exactly
	// as received, query included, for byte-for-byte checks.
	Path       string `json:"path"`
	URI        string `json:"uri"`
	Proto      string `json:"proto"`
	RemoteAddr string `json:"remote_addr"`
	// Headers holds those of X-Forwarded-For, X-Real-Ip,
	// X-Forwarded-Proto, X-Forwarded-Host and X-Request-Id that are present
	// (several values joined with ", "), and always "Host".
	Headers map[string]string `json:"headers"`
	// SleptMS is set by /slow only.
	SleptMS *int64 `json:"slept_ms,omitempty"`
}

// Event is the JSON payload of each /stream event.
type Event struct {
	Seq      int    `json:"seq"`
	Profile  string `json:"profile"`
	Hostname string `json:"hostname"`
	// Time is when the event was produced (RFC 3339, nanoseconds), so a
	// client can tell whether it received an event before a later one
	// existed.
	Time time.Time `json:"time"`
}

func (a *App) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.count(a.root))
	mux.HandleFunc("GET /info", a.count(a.info))
	mux.HandleFunc("GET /healthz", a.health)
	mux.HandleFunc("POST /admin/health", a.setHealth)
	mux.HandleFunc("GET /slow", a.count(a.slow))
	mux.HandleFunc("GET /stream", a.count(a.stream))
	mux.HandleFunc("GET /ws", a.count(a.ws))
	mux.HandleFunc("/echo", a.count(a.echo))
	mux.HandleFunc("GET /bytes", a.count(a.bytes))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.inflight.add()
		defer a.inflight.done()
		w.Header().Set(profileHeader, a.profile)
		mux.ServeHTTP(w, r)
	})
}

// root is GET /: the info page, or a 500 for the share of requests
// Options.FailRate says.
func (a *App) root(w http.ResponseWriter, r *http.Request) {
	if a.failEvery > 0 && a.roots.Add(1)%a.failEvery == 0 {
		http.Error(w, "500 Internal Server Error: this version fails on purpose (FAIL_RATE)", http.StatusInternalServerError)
		return
	}
	a.info(w, r)
}

// count wraps the handlers whose requests Served counts.
func (a *App) count(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a.served.Add(1)
		h(w, r)
	}
}

func (a *App) newInfo(r *http.Request) Info {
	headers := map[string]string{"Host": r.Host}
	// The headers a reverse proxy sets or must preserve.
	for _, name := range [...]string{"X-Forwarded-For", "X-Real-Ip", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Request-Id"} {
		if v := r.Header.Values(name); len(v) > 0 {
			headers[name] = strings.Join(v, ", ")
		}
	}
	return Info{
		Profile:    a.profile,
		Version:    a.version,
		Hostname:   a.hostname,
		Method:     r.Method,
		Path:       r.URL.Path,
		URI:        r.RequestURI,
		Proto:      r.Proto,
		RemoteAddr: r.RemoteAddr,
		Headers:    headers,
	}
}

func (a *App) info(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, a.newInfo(r))
}

func writeJSON(w http.ResponseWriter, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encoding response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	body = append(body, '\n')
	w.Header().Set("Content-Type", contentTypeJSON)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body) // a failed write means the client left
}

func (a *App) health(w http.ResponseWriter, r *http.Request) {
	a.healthChecks.Add(1)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if !a.healthy.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "unhealthy\n")
		return
	}
	_, _ = io.WriteString(w, "ok\n")
}

// setHealth serves POST /admin/health?ok=true|false, so tests driving the
// app from outside (a container) can fail its health check.
func (a *App) setHealth(w http.ResponseWriter, r *http.Request) {
	raw := r.URL.Query().Get("ok")
	ok, err := strconv.ParseBool(raw)
	if err != nil {
		http.Error(w, fmt.Sprintf("query parameter ok=%q is not a boolean: use ok=true or ok=false", raw), http.StatusBadRequest)
		return
	}
	a.healthy.Store(ok)
	writeJSON(w, map[string]bool{"healthy": ok})
}

// slow serves GET /slow?ms=N: it answers like GET / after N milliseconds,
// or not at all if the client goes away first.
func (a *App) slow(w http.ResponseWriter, r *http.Request) {
	ms, err := intParam(r, "ms", 0, 0, maxSlowMS)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	start := time.Now()
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
		return
	case <-a.hard:
		// Shutdown deadline: cut the connection rather than send a
		// response that would claim the full wait happened.
		panic(http.ErrAbortHandler)
	}
	info := a.newInfo(r)
	slept := time.Since(start).Milliseconds()
	info.SleptMS = &slept
	writeJSON(w, info)
}

// stream serves GET /stream?n=N&interval=MS: N server-sent events, the first
// at once and the rest MS apart, each flushed as soon as it is written.
func (a *App) stream(w http.ResponseWriter, r *http.Request) {
	n, err := intParam(r, "n", defaultEvents, 0, maxEvents)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	interval, err := intParam(r, "interval", defaultInterval, 0, maxIntervalMS)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", contentTypeSSE)
	h.Set("Cache-Control", "no-cache")
	// Asks nginx-style proxies in front not to buffer the stream.
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		a.log.Warn("demo app: /stream cannot flush, events will arrive late", "err", err)
	}

	wait := time.NewTimer(0)
	defer wait.Stop()
	for seq := 1; seq <= n; seq++ {
		if seq > 1 {
			wait.Reset(time.Duration(interval) * time.Millisecond)
			select {
			case <-wait.C:
			case <-r.Context().Done():
				return
			case <-a.hard:
				// Shutdown deadline: cut the connection, since a
				// cleanly ended stream would look complete.
				panic(http.ErrAbortHandler)
			}
		}
		data, err := json.Marshal(Event{Seq: seq, Profile: a.profile, Hostname: a.hostname, Time: time.Now()})
		if err != nil {
			return // cannot happen for this type; nothing sensible to send mid-stream
		}
		if _, err := fmt.Fprintf(w, "id: %d\ndata: %s\n\n", seq, data); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// ws serves GET /ws: a WebSocket that echoes every text and binary message
// until the client closes it.
func (a *App) ws(w http.ResponseWriter, r *http.Request) {
	// Any origin is accepted: behind a proxy the Origin rarely matches
	// Host, and the app has no cookies or state to protect.
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return // Accept has already answered the client
	}
	defer c.CloseNow()
	c.SetReadLimit(wsReadLimit)

	// When the shutdown deadline passes, tell the client to go away
	// rather than cutting it silently.
	stop := make(chan struct{})
	closerDone := make(chan struct{})
	go func() {
		defer close(closerDone)
		select {
		case <-a.hard:
			_ = c.Close(websocket.StatusGoingAway, "server shutting down")
		case <-stop:
		}
	}()
	defer func() {
		close(stop)
		<-closerDone
	}()

	ctx := r.Context()
	for {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			return // closed by the client, by shutdown, or broken
		}
		if err := c.Write(ctx, typ, msg); err != nil {
			return
		}
	}
}

// echo serves /echo with any method: the request body streams back as it
// arrives, with the request's Content-Type and the method in X-Method.
func (a *App) echo(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	// HTTP/1 servers otherwise stop reading the body once the response
	// starts; echoing as the body arrives needs both directions at once.
	_ = rc.EnableFullDuplex() // not supported on HTTP/2, which is full duplex anyway
	h := w.Header()
	h.Set(methodHeader, r.Method)
	if ct := r.Header.Get("Content-Type"); ct != "" {
		h.Set("Content-Type", ct)
	} else {
		h.Set("Content-Type", contentTypeBytes)
	}
	if r.ContentLength >= 0 {
		h.Set("Content-Length", strconv.FormatInt(r.ContentLength, 10))
	}
	w.WriteHeader(http.StatusOK)

	buf := make([]byte, copyBufferSize)
	for {
		n, err := r.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if ferr := rc.Flush(); ferr != nil {
				return
			}
		}
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			return // the client went away mid-body; the status is already sent
		}
	}
}

// bytes serves GET /bytes?n=N: N bytes where byte i is 'a'+i%26, so clients
// can check both length and content.
func (a *App) bytes(w http.ResponseWriter, r *http.Request) {
	n, err := intParam(r, "n", defaultBytes, 0, maxBytes)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	// 26*1260 bytes: a whole number of alphabets, so every chunk starts
	// with 'a' and the pattern continues across chunks.
	chunk := make([]byte, 26*1260)
	for i := range chunk {
		chunk[i] = byte('a' + i%26)
	}
	w.Header().Set("Content-Type", contentTypeBytes)
	w.Header().Set("Content-Length", strconv.Itoa(n))
	for left := n; left > 0; {
		k := min(left, len(chunk))
		if _, err := w.Write(chunk[:k]); err != nil {
			return
		}
		left -= k
	}
}

// intParam reads an integer query parameter, returning def when it is absent
// and an error naming the parameter, the value and the allowed range
// otherwise.
func intParam(r *http.Request, name string, def, lo, hi int) (int, error) {
	raw := r.URL.Query().Get(name)
	if raw == "" {
		return def, nil
	}
	v, err := strconv.Atoi(raw)
	if err != nil || v < lo || v > hi {
		return 0, fmt.Errorf("query parameter %s=%q is invalid: use an integer from %d to %d", name, raw, lo, hi)
	}
	return v, nil
}
