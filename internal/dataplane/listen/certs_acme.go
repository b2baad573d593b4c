package listen

// Certificates from an ACME CA (Let's Encrypt by default).
//
// The ACME work is done by Caddy's certmagic rather than by
// golang.org/x/crypto/acme with renewal written here: certmagic already has
// what a long-running proxy needs around the protocol and has been run that
// way for years, namely renewal by a share of the lifetime and by ACME
// Renewal Information, retries with growing back-off, storage of the
// account and certificates as files (written atomically, keys 0600), a
// lock in that storage so several processes sharing state_dir do not
// obtain the same certificate twice at once, and challenge state kept in
// the same storage so whichever of those processes receives the CA's
// request can answer it. Written by hand, each of these would be new code
// to get right; cutover only decides which host gets which certificate and
// what to serve while there is none.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"

	"github.com/cutover/cutover/internal/config"
)

// ACMETLSProtocol is the ALPN protocol of the TLS-ALPN-01 challenge.
const ACMETLSProtocol = acmez.ACMETLS1Protocol

// ACME challenge types, as tls.acme.challenge spells them.
const (
	ChallengeHTTP01    = config.ChallengeHTTP01
	ChallengeTLSALPN01 = config.ChallengeTLSALPN01
)

// acmeDir is where the ACME account, certificates and locks live under the
// state directory.
const acmeDir = "acme"

// ACMEOptions configure certificates from an ACME CA.
type ACMEOptions struct {
	// Email is the account's contact address ("" for none).
	Email string
	// Directory is the CA's directory URL.
	Directory string
	// CARoots is a PEM file of roots trusted for the directory's HTTPS
	// ("" for the system roots).
	CARoots string
	// Hosts get a certificate each.
	Hosts []string
	// Challenge is ChallengeHTTP01 or ChallengeTLSALPN01.
	Challenge string
	// Storage is the folder for the account, certificates and locks (""
	// for <state_dir>/acme).
	Storage string
	// RenewCheckInterval is how often the certificates are checked for
	// renewal (default: certmagic's, 10 minutes). Tests shorten it.
	RenewCheckInterval time.Duration
}

// acmeManager owns the certmagic cache and configuration for the ACME
// hosts and tracks, per host, what the log, status and metrics report.
type acmeManager struct {
	o       ACMEOptions
	log     *slog.Logger
	storage string // <state_dir>/acme
	hosts   map[string]bool
	// fallback is a self-signed certificate for every host, made in memory
	// at start: what a host is served until the CA has given it one.
	fallback *tls.Certificate
	cache    *certmagic.Cache
	cfg      *certmagic.Config
	issuer   *certmagic.ACMEIssuer
	cancel   context.CancelFunc
	stopOnce sync.Once

	mu    sync.Mutex
	state map[string]*acmeHost
}

// acmeHost is what is known about one host's certificate beyond the cache.
type acmeHost struct {
	lastError string
	// onFallback is set once a handshake got the stand-in certificate
	// (and that was logged), until the CA's certificate arrives.
	onFallback bool
}

func newACMEManager(o ACMEOptions, stateDir string, log *slog.Logger) (*acmeManager, error) {
	if len(o.Hosts) == 0 {
		return nil, errors.New("tls.acme: no hosts to obtain certificates for: set tls.acme.hosts, or hosts: on a service")
	}
	if stateDir == "" && o.Storage == "" {
		return nil, errors.New("tls.acme needs state_dir to keep the account and certificates in: set state_dir to a writable directory")
	}
	switch o.Challenge {
	case ChallengeHTTP01, ChallengeTLSALPN01:
	default:
		return nil, fmt.Errorf("tls.acme.challenge %q: use %s or %s", o.Challenge, ChallengeHTTP01, ChallengeTLSALPN01)
	}
	var roots *x509.CertPool
	if o.CARoots != "" {
		data, err := os.ReadFile(o.CARoots)
		if err != nil {
			return nil, fmt.Errorf("tls.acme.ca_roots %q cannot be read: %w; point it at the CA's root certificate (PEM)", o.CARoots, err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("tls.acme.ca_roots %q holds no PEM certificate: point it at the CA's root certificate (PEM)", o.CARoots)
		}
	}
	fallback, _, _, err := generateSelfSigned(o.Hosts)
	if err != nil {
		return nil, fmt.Errorf("tls.acme: making the stand-in certificate: %w", err)
	}
	m := &acmeManager{
		o:        o,
		log:      log,
		storage:  filepath.Join(stateDir, acmeDir),
		hosts:    make(map[string]bool, len(o.Hosts)),
		fallback: fallback,
		state:    make(map[string]*acmeHost, len(o.Hosts)),
	}
	if o.Storage != "" {
		m.storage = o.Storage
	}
	for _, h := range o.Hosts {
		m.hosts[h] = true
		m.state[h] = &acmeHost{}
	}
	zl := zapToSlog(log.With("component", "acme"))
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return m.cfg, nil },
		RenewCheckInterval: o.RenewCheckInterval,
		Logger:             zl,
	})
	m.cfg = certmagic.New(m.cache, certmagic.Config{
		// The rule: renew with a third of the lifetime left (also
		// certmagic's default; said here so it cannot drift).
		RenewalWindowRatio: 1.0 / 3,
		Storage:            &certmagic.FileStorage{Path: m.storage},
		OnEvent:            m.onEvent,
		Logger:             zl,
	})
	m.issuer = certmagic.NewACMEIssuer(m.cfg, certmagic.ACMEIssuer{
		CA:                      o.Directory,
		TestCA:                  o.Directory,
		Email:                   o.Email,
		Agreed:                  true,
		DisableHTTPChallenge:    o.Challenge != ChallengeHTTP01,
		DisableTLSALPNChallenge: o.Challenge != ChallengeTLSALPN01,
		TrustedRoots:            roots,
		Logger:                  zl,
	})
	m.cfg.Issuers = []certmagic.Issuer{m.issuer}
	return m, nil
}

// start points the challenge solvers at cutover's own listeners and begins
// managing the hosts. certmagic tries to bind the challenge port itself
// and, finding it taken, leaves answering to whoever holds it: cutover's
// listen.http (HTTPChallenge) or listen.https (the TLS-ALPN certificate in
// certificate). That is why this runs only after the listeners are bound.
func (m *acmeManager) start(ctx context.Context, httpAddr, httpsAddr string) error {
	addr := httpAddr
	if m.o.Challenge == ChallengeTLSALPN01 {
		addr = httpsAddr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("tls.acme: the %s challenge needs its listener, got address %q: %w", m.o.Challenge, addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return fmt.Errorf("tls.acme: listener port %q: %w", port, err)
	}
	m.issuer.ListenHost = host
	m.issuer.AltHTTPPort, m.issuer.AltTLSALPNPort = p, p
	// The management lives until Close, not as long as the context that
	// started it.
	ctx, m.cancel = context.WithCancel(context.WithoutCancel(ctx))
	// Certificates already in storage are loaded before this returns, so
	// a restart serves them from the first handshake (ManageAsync would
	// load them in the background); the cache's maintenance renews them
	// when due.
	for _, h := range m.o.Hosts {
		if _, err := m.cfg.CacheManagedCertificate(ctx, h); err != nil && !errors.Is(err, fs.ErrNotExist) {
			m.log.Warn("acme: the stored certificate cannot be loaded; obtaining a new one", "host", h, "err", err)
		}
	}
	// Missing ones are obtained in the background, with retries.
	if err := m.cfg.ManageAsync(ctx, m.o.Hosts); err != nil {
		m.cancel()
		return fmt.Errorf("tls.acme: %w", err)
	}
	m.log.Info("acme certificates managed", "hosts", m.o.Hosts, "directory", m.o.Directory,
		"challenge", m.o.Challenge, "storage", m.storage)
	return nil
}

func (m *acmeManager) stop() {
	m.stopOnce.Do(func() {
		if m.cancel != nil {
			m.cancel()
		}
		m.cache.Stop()
	})
}

// certificate serves ACME hosts and the TLS-ALPN-01 challenge; ok is false
// for a handshake that is neither, which the file certificates serve.
func (m *acmeManager) certificate(hello *tls.ClientHelloInfo, files *certSet) (*tls.Certificate, bool, error) {
	if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == ACMETLSProtocol {
		cert, err := m.cfg.GetCertificate(hello)
		return cert, true, err
	}
	name := normalName(hello.ServerName)
	if !m.hosts[name] {
		return nil, false, nil
	}
	if c := m.best(name); c != nil {
		return &c.Certificate, true, nil
	}
	m.noteFallback(name)
	if cert, matched := files.lookup(name); matched {
		return cert, true, nil
	}
	return m.fallback, true, nil
}

// best is the host's certificate from the CA: the one valid longest, or
// the last good one when all have expired (a renewal that keeps failing
// serves the old certificate rather than a stand-in). Nil when there is
// none yet.
func (m *acmeManager) best(name string) *certmagic.Certificate {
	var best *certmagic.Certificate
	for _, c := range m.cache.AllMatchingCertificates(name) {
		if c.Leaf == nil {
			continue
		}
		if best == nil || c.Leaf.NotAfter.After(best.Leaf.NotAfter) {
			best = &c
		}
	}
	return best
}

// noteFallback logs, once until a certificate arrives, that a host is
// being served its stand-in and why.
func (m *acmeManager) noteFallback(name string) {
	m.mu.Lock()
	st := m.state[name]
	first := !st.onFallback
	st.onFallback = true
	why := st.lastError
	m.mu.Unlock()
	if !first {
		return
	}
	if why == "" {
		why = "the certificate is still being obtained"
	}
	m.log.Warn("tls: serving a self-signed stand-in until the ACME certificate arrives; clients will not trust it",
		"host", name, "why", why)
}

// onEvent follows certmagic's events to keep the per-host state and say
// in the log what happened, in cutover's words.
func (m *acmeManager) onEvent(_ context.Context, event string, data map[string]any) error {
	name, _ := data["identifier"].(string)
	renewal, _ := data["renewal"].(bool)
	m.mu.Lock()
	st := m.state[name]
	if st == nil {
		m.mu.Unlock()
		return nil
	}
	switch event {
	case "cert_obtained":
		st.lastError, st.onFallback = "", false
	case "cert_failed":
		st.lastError = fmt.Sprint(data["error"])
	}
	m.mu.Unlock()

	switch event {
	case "cert_obtaining":
		m.log.Info("acme: requesting a certificate", "host", name, "renewal", renewal)
	case "cert_obtained":
		attrs := []any{"host", name, "renewal", renewal}
		if c := m.best(name); c != nil {
			attrs = append(attrs, "not_after", c.Leaf.NotAfter.Format(time.RFC3339))
		}
		m.log.Info("acme: certificate obtained", attrs...)
	case "cert_failed":
		what := "obtaining the certificate failed; the host is served a self-signed stand-in"
		if renewal {
			what = "renewing the certificate failed; the current certificate is served until it expires"
		}
		m.log.Warn("acme: "+what+"; retrying with back-off", "host", name, "err", data["error"])
	}
	return nil
}

// HTTPChallenge answers an ACME HTTP-01 request (GET
// /.well-known/acme-challenge/TOKEN on listen.http) with the key
// authorization for host, whether this process or another one sharing
// state_dir started the challenge; ok is false when it is not a challenge
// cutover knows of. It is the hook the plain-HTTP listener calls ahead of
// its redirect to HTTPS.
func (cs *CertSource) HTTPChallenge(host, path string) (body string, ok bool) {
	if cs.acme == nil || cs.acme.o.Challenge != ChallengeHTTP01 {
		return "", false
	}
	r, err := http.NewRequest(http.MethodGet, "http://"+host+path, nil)
	if err != nil {
		return "", false
	}
	r.Host = host
	var w challengeWriter
	if !cs.acme.issuer.HandleHTTPChallenge(&w, r) {
		return "", false
	}
	return string(w.body), true
}

// challengeWriter collects the body certmagic's challenge handler writes;
// the proxy writes the response itself.
type challengeWriter struct {
	h    http.Header
	body []byte
}

func (w *challengeWriter) Header() http.Header {
	if w.h == nil {
		w.h = make(http.Header)
	}
	return w.h
}
func (w *challengeWriter) Write(b []byte) (int, error) {
	w.body = append(w.body, b...)
	return len(b), nil
}
func (w *challengeWriter) WriteHeader(int) {}

// CertStatus is the state of one host's certificate, for `cutover status`
// and the metrics.
type CertStatus struct {
	// Host is the ACME host, or a file certificate's first name.
	Host string
	// Source is "acme", "file" or "self-signed".
	Source string
	// State: "valid", "pending" (no certificate yet, being obtained),
	// "failing" (no certificate, the last attempt failed), "renewal_failing"
	// or "expired".
	State string
	// NotAfter is the served certificate's expiry (zero when the host has
	// none from its source yet).
	NotAfter time.Time
	// LastError is the last failed attempt's error ("" after a success).
	LastError string
	// Warning says what needs attention ("" when nothing does).
	Warning string
}

// DaysLeft is the time to expiry in days (negative once expired, 0 when
// there is no certificate): the value of the per-host expiry gauge.
func (s CertStatus) DaysLeft(now time.Time) float64 {
	if s.NotAfter.IsZero() {
		return 0
	}
	return s.NotAfter.Sub(now).Hours() / 24
}

// Certificate states of CertStatus.State.
const (
	CertValid          = "valid"
	CertPending        = "pending"
	CertFailing        = "failing"
	CertRenewalFailing = "renewal_failing"
	CertExpired        = "expired"
)

// Status reports every certificate served: the file or self-signed ones
// in order, then each ACME host.
func (cs *CertSource) Status() []CertStatus {
	now := time.Now()
	var out []CertStatus
	if set := cs.cur.Load(); set != nil && !(cs.acme != nil && len(set.certs) == 1 && set.certs[0] == cs.acme.fallback) {
		src := "file"
		if cs.opts.SelfSigned {
			src = "self-signed"
		}
		for _, c := range set.certs {
			st := CertStatus{Host: firstName(c.Leaf), Source: src, State: CertValid, NotAfter: c.Leaf.NotAfter}
			if msg := expiryProblem(c.Leaf, now); msg != "" {
				st.Warning = "certificate " + msg
				if now.After(c.Leaf.NotAfter) {
					st.State = CertExpired
				}
			}
			out = append(out, st)
		}
	}
	if cs.acme != nil {
		out = append(out, cs.acme.status(now)...)
	}
	return out
}

func (m *acmeManager) status(now time.Time) []CertStatus {
	out := make([]CertStatus, 0, len(m.o.Hosts))
	for _, h := range m.o.Hosts {
		m.mu.Lock()
		st := *m.state[h]
		m.mu.Unlock()
		s := CertStatus{Host: h, Source: "acme", LastError: st.lastError}
		c := m.best(h)
		switch {
		case c == nil && st.lastError != "":
			s.State = CertFailing
			s.Warning = "no certificate from the CA yet (serving a self-signed stand-in): " + st.lastError
		case c == nil:
			s.State = CertPending
		case now.After(c.Leaf.NotAfter):
			s.State, s.NotAfter = CertExpired, c.Leaf.NotAfter
			s.Warning = "the certificate has expired and renewing it has not succeeded"
			if st.lastError != "" {
				s.Warning += ": " + st.lastError
			}
		case st.lastError != "":
			s.State, s.NotAfter = CertRenewalFailing, c.Leaf.NotAfter
			s.Warning = "renewing the certificate failed (retrying; the current one is served until it expires): " + st.lastError
		default:
			s.State, s.NotAfter = CertValid, c.Leaf.NotAfter
		}
		out = append(out, s)
	}
	return out
}

func firstName(leaf *x509.Certificate) string {
	switch {
	case len(leaf.DNSNames) > 0:
		return leaf.DNSNames[0]
	case len(leaf.IPAddresses) > 0:
		return leaf.IPAddresses[0].String()
	}
	return leaf.Subject.CommonName
}
