package admin

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"sync"
	"time"
)

// The dashboard: a page embedded in the binary (plain HTML, CSS and
// JavaScript written for it: no build step, nothing fetched from elsewhere)
// served at /ui/ on the TCP listener. The page is public, the data is not:
// it reads the admin API with a session cookie it gets by posting the token
// to /ui/login. Opening /ui/#token=TOKEN does that from the URL fragment,
// which browsers never send, so the token is in no request line and no
// server log.

//go:embed ui
var uiFiles embed.FS

const (
	// SessionCookie names the dashboard's session cookie.
	SessionCookie = "cutover_session"
	// UIHeader must be sent (value "1") by requests that change something
	// and are authorised by the session cookie. SameSite=Strict already
	// keeps the cookie off other sites' requests; a header other sites
	// cannot set without a CORS preflight makes a forged request fail
	// even in a browser that ignores SameSite.
	UIHeader = "X-Cutover-UI"
	// sessionTTL is how long a dashboard login lasts.
	sessionTTL = 12 * time.Hour
	// maxSessions bounds the session table (a login beyond it drops the
	// oldest).
	maxSessions = 1024
)

// LoginRequest is the body of POST /ui/login.
type LoginRequest struct {
	Token string `json:"token"`
}

// sessions are the dashboard's logins, in memory: a restart logs out.
type sessions struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]time.Time // sha256 of the cookie value → expiry
}

func newSessions() *sessions { return &sessions{m: map[[sha256.Size]byte]time.Time{}} }

func (ss *sessions) create(now time.Time) (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	id := hex.EncodeToString(b[:])
	ss.mu.Lock()
	defer ss.mu.Unlock()
	var oldestKey [sha256.Size]byte
	var oldest time.Time
	for k, exp := range ss.m {
		if now.After(exp) {
			delete(ss.m, k)
			continue
		}
		if oldest.IsZero() || exp.Before(oldest) {
			oldest, oldestKey = exp, k
		}
	}
	if len(ss.m) >= maxSessions {
		delete(ss.m, oldestKey)
	}
	ss.m[sha256.Sum256([]byte(id))] = now.Add(sessionTTL)
	return id, nil
}

func (ss *sessions) valid(id string, now time.Time) bool {
	if id == "" {
		return false
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	exp, ok := ss.m[sha256.Sum256([]byte(id))]
	return ok && now.Before(exp)
}

func (ss *sessions) drop(id string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.m, sha256.Sum256([]byte(id)))
}

// tcpRoutes is the TCP listener's handler: /healthz and the dashboard's
// files are public, /ui/login checks the token, everything else is the API
// behind the token or a dashboard session.
func (s *Server) tcpRoutes(api http.Handler) http.Handler {
	static, _ := fs.Sub(uiFiles, "ui")
	files := http.StripPrefix("/ui/", http.FileServerFS(static))
	top := http.NewServeMux()
	top.Handle("GET /healthz", api)
	top.Handle("GET /ui/", uiHeaders(files))
	top.HandleFunc("POST /ui/login", s.login)
	top.HandleFunc("POST /ui/logout", s.logout)
	top.Handle("/", s.authorize(api))
	return top
}

// uiHeaders keep the page to its own files: nothing from elsewhere, no
// framing, no referrer.
func uiHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// tokenOK compares a presented token with admin.token as SHA-256 sums in
// constant time, so neither its content nor its length leaks by timing.
func tokenOK(got, want string) bool {
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// authorize lets through requests with "Authorization: Bearer TOKEN", and
// requests with a live dashboard session (those that change something
// must also carry UIHeader).
func (s *Server) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if auth := r.Header.Get("Authorization"); auth != "" || s.sessions == nil {
			if !tokenOK(auth, "Bearer "+s.o.Token) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="cutover"`)
				writeError(w, &Error{Kind: KindUnauthorized, Message: "missing or wrong bearer token — send Authorization: Bearer <admin.token>"})
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		c, err := r.Cookie(SessionCookie)
		if err != nil || !s.sessions.valid(c.Value, time.Now()) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="cutover"`)
			writeError(w, &Error{Kind: KindUnauthorized, Message: "missing or wrong bearer token — send Authorization: Bearer <admin.token>, or log in to the dashboard at /ui/#token=<admin.token>"})
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Header.Get(UIHeader) != "1" {
			writeError(w, &Error{Kind: KindUnauthorized, Message: "a request that changes something with the dashboard's session must send " + UIHeader + ": 1"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	shortDeadline(w)
	var req LoginRequest
	if !decode(w, r, &req) {
		return
	}
	if !tokenOK(req.Token, s.o.Token) {
		// The token is not logged, right or wrong.
		s.log.Warn("admin: dashboard login refused: wrong token", "remote", r.RemoteAddr)
		writeError(w, &Error{Kind: KindUnauthorized, Message: "wrong token — open /ui/#token=<admin.token> with the admin.token of the running cutover"})
		return
	}
	id, err := s.sessions.create(time.Now())
	if err != nil {
		writeError(w, &Error{Kind: KindInternal, Message: "cannot make a session: " + err.Error()})
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: id, Path: "/", MaxAge: int(sessionTTL / time.Second),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
	s.log.Info("admin: dashboard login", "remote", r.RemoteAddr)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	shortDeadline(w)
	if c, err := r.Cookie(SessionCookie); err == nil {
		s.sessions.drop(c.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	w.WriteHeader(http.StatusNoContent)
}

// HealthzResponse is the body of GET /healthz.
type HealthzResponse struct {
	Status string `json:"status"`           // "ok" or "unavailable"
	Reason string `json:"reason,omitempty"` // why not ok
}

// healthz answers 200 while cutover serves and 503 (with why) before it
// does and once it is shutting down. It needs no token: it says nothing
// but whether cutover serves.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	shortDeadline(w)
	if s.o.Ready != nil {
		if err := s.o.Ready(); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, HealthzResponse{Status: "unavailable", Reason: err.Error()})
			return
		}
	}
	writeJSON(w, http.StatusOK, HealthzResponse{Status: "ok"})
}
