package listen

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// CertOptions say where the HTTPS listener's certificates come from: PEM
// certificate and key pairs on disk (chosen by SNI), a self-signed pair that
// cutover makes for Hosts once and keeps under StateDir, and certificates
// obtained from an ACME CA.
type CertOptions struct {
	// CertFile and KeyFile are PEM files (tls.cert and tls.key). They are
	// only ever read, never written. They are the first pair, ahead of
	// Pairs.
	CertFile, KeyFile string
	// Pairs are more PEM pairs (tls.certificates). A handshake gets the
	// pair whose names match its SNI (exact, then wildcard); an unknown
	// name gets the first pair.
	Pairs []CertPair
	// SelfSigned generates a certificate for Hosts (tls.self_signed).
	SelfSigned bool
	// Hosts are the DNS names and IP addresses the self-signed certificate
	// covers; the first one is its common name. Empty means "localhost".
	Hosts []string
	// StateDir holds the self-signed pair in <StateDir>/tls and the ACME
	// account and certificates in <StateDir>/acme.
	StateDir string
	// ACME obtains and renews a certificate for each of its hosts (nil:
	// off). It starts with StartACME, once the listeners are bound.
	ACME *ACMEOptions
	// Logger receives diagnostics (generation, reloads, expiry warnings).
	// Nil means slog.Default().
	Logger *slog.Logger
}

// CertPair is one PEM certificate chain and its key (an entry of
// tls.certificates).
type CertPair struct {
	CertFile, KeyFile string
}

// CertSource hands certificates to TLS handshakes. The file and self-signed
// certificates sit behind an atomic pointer so that Reload can replace them
// while handshakes run: established connections keep the certificate they
// negotiated, new handshakes get the new one, nothing is dropped.
type CertSource struct {
	opts CertOptions
	log  *slog.Logger
	cur  atomic.Pointer[certSet]
	// acme is nil unless CertOptions.ACME is set.
	acme *acmeManager
	// reloadMu keeps two reloads (e.g. two quick SIGHUPs) from interleaving
	// their reads of the files.
	reloadMu sync.Mutex
}

// NewCertSource loads or creates the certificates that o describes. Its
// errors name the file, the problem and the fix.
func NewCertSource(o CertOptions) (*CertSource, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	cs := &CertSource{opts: o, log: log}
	haveFiles := o.CertFile != "" || o.KeyFile != "" || len(o.Pairs) > 0
	switch {
	case o.SelfSigned && haveFiles:
		return nil, errors.New("tls: both certificate files and self_signed are set: " +
			"use tls.cert and tls.key (or tls.certificates) for your own certificates, or tls.self_signed: true without them")
	case o.SelfSigned:
		cert, err := selfSigned(o, log)
		if err != nil {
			return nil, err
		}
		certFile, _ := SelfSignedPaths(o.StateDir)
		cs.cur.Store(newCertSet([]*tls.Certificate{cert}, []string{certFile}))
	case haveFiles:
		set, err := loadPairs(o)
		if err != nil {
			return nil, err
		}
		cs.cur.Store(set)
		cs.warnAll(set)
	case o.ACME == nil:
		return nil, errors.New("tls: a certificate needs both files: set tls.cert and tls.key " +
			"to PEM files, tls.certificates, tls.acme, or tls.self_signed: true")
	}
	if o.ACME != nil {
		m, err := newACMEManager(*o.ACME, o.StateDir, log)
		if err != nil {
			return nil, err
		}
		cs.acme = m
		if cs.cur.Load() == nil {
			// ACME only: names nobody asked a certificate for get the
			// first host's stand-in.
			cs.cur.Store(newCertSet([]*tls.Certificate{m.fallback}, []string{"(self-signed stand-in)"}))
		}
	}
	return cs, nil
}

// pairs lists the configured file pairs with the settings that name them
// in messages.
func (o CertOptions) pairs() []namedPair {
	var out []namedPair
	if o.CertFile != "" || o.KeyFile != "" {
		out = append(out, namedPair{CertPair{o.CertFile, o.KeyFile}, "tls.cert", "tls.key"})
	}
	for i, p := range o.Pairs {
		k := fmt.Sprintf("tls.certificates[%d]", i)
		out = append(out, namedPair{p, k + ".cert", k + ".key"})
	}
	return out
}

type namedPair struct {
	CertPair
	certSetting, keySetting string
}

// loadPairs reads every file pair; one bad pair fails them all, so a
// reload never serves half of a new set.
func loadPairs(o CertOptions) (*certSet, error) {
	var certs []*tls.Certificate
	var files []string
	for _, p := range o.pairs() {
		if p.CertFile == "" || p.KeyFile == "" {
			return nil, fmt.Errorf("tls: a certificate needs both files: set %s and %s to PEM files", p.certSetting, p.keySetting)
		}
		cert, err := loadPairAs(p.CertFile, p.KeyFile, p.certSetting, p.keySetting)
		if err != nil {
			return nil, err
		}
		certs = append(certs, cert)
		files = append(files, p.CertFile)
	}
	return newCertSet(certs, files), nil
}

func (cs *CertSource) warnAll(set *certSet) {
	for i, c := range set.certs {
		warnExpiry(cs.log, c.Leaf, set.files[i])
	}
}

// Reload re-reads the certificate and key files; it is what SIGHUP does.
// When a pair cannot be used the current certificates stay in service and
// the error names the file and the problem. For a self-signed certificate
// there is nothing to re-read and Reload returns nil.
func (cs *CertSource) Reload() error {
	cs.reloadMu.Lock()
	pairs := cs.opts.Pairs
	cs.reloadMu.Unlock()
	return cs.ReloadFiles(cs.opts.CertFile, cs.opts.KeyFile, pairs)
}

// ReloadFiles is Reload with a new list of files (a reloaded configuration
// may add or remove tls.certificates entries). The list is only taken when
// every pair in it loads.
func (cs *CertSource) ReloadFiles(certFile, keyFile string, pairs []CertPair) error {
	if cs.opts.SelfSigned {
		return nil
	}
	cs.reloadMu.Lock()
	defer cs.reloadMu.Unlock()
	o := cs.opts
	o.CertFile, o.KeyFile, o.Pairs = certFile, keyFile, pairs
	if len(o.pairs()) == 0 {
		if cs.acme != nil {
			return nil // ACME only: nothing on disk to re-read
		}
		return errors.New("tls reload refused: the new configuration has no certificate files; still serving the previous certificates")
	}
	set, err := loadPairs(o)
	if err != nil {
		return fmt.Errorf("tls reload failed, still serving the previous certificates: %w", err)
	}
	cs.opts = o
	cs.cur.Store(set)
	for i, c := range set.certs {
		cs.log.Info("tls certificate reloaded",
			"cert", set.files[i],
			"names", c.Leaf.DNSNames,
			"subject", c.Leaf.Subject.String(),
			"not_after", c.Leaf.NotAfter.Format(time.RFC3339))
	}
	cs.warnAll(set)
	return nil
}

// StartACME begins obtaining and renewing the ACME certificates. It must
// run after the listeners are bound (httpAddr and httpsAddr are their
// addresses, nil for none), so the ACME library finds the challenge ports
// taken by cutover itself and leaves answering to it. Without tls.acme it
// does nothing.
func (cs *CertSource) StartACME(ctx context.Context, httpAddr, httpsAddr string) error {
	if cs.acme == nil {
		return nil
	}
	return cs.acme.start(ctx, httpAddr, httpsAddr)
}

// Close stops ACME renewals (established connections are not affected).
func (cs *CertSource) Close() {
	if cs.acme != nil {
		cs.acme.stop()
	}
}

// TLSConfig returns a new server configuration that serves the current
// certificates: TLS 1.2 or later, HTTP/2 offered first by ALPN (and the
// TLS-ALPN-01 protocol when ACME is on). Each call returns a fresh value,
// so the caller may adjust it.
func (cs *CertSource) TLSConfig() *tls.Config {
	protos := []string{"h2", "http/1.1"}
	if cs.acme != nil {
		protos = append(protos, ACMETLSProtocol)
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     protos,
		GetCertificate: cs.getCertificate,
	}
}

func (cs *CertSource) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	set := cs.cur.Load()
	if cs.acme != nil {
		if cert, ok, err := cs.acme.certificate(hello, set); ok {
			return cert, err
		}
	}
	cert, _ := set.lookup(hello.ServerName)
	return cert, nil
}

// Leaf is the parsed default certificate (for status and tests).
func (cs *CertSource) Leaf() *x509.Certificate {
	return cs.cur.Load().certs[0].Leaf
}

// expiryWarning is how close to expiry a certificate earns a warning.
const expiryWarning = 14 * 24 * time.Hour

func warnExpiry(log *slog.Logger, leaf *x509.Certificate, file string) {
	if msg := expiryProblem(leaf, time.Now()); msg != "" {
		log.Warn("tls certificate "+msg+"; renew it and send SIGHUP",
			"cert", file, "not_before", leaf.NotBefore.Format(time.RFC3339), "not_after", leaf.NotAfter.Format(time.RFC3339))
	}
}

// expiryProblem says what is wrong with a certificate's validity period at
// now ("" when nothing is).
func expiryProblem(leaf *x509.Certificate, now time.Time) string {
	switch {
	case now.After(leaf.NotAfter):
		return "has expired: clients will reject it"
	case now.Before(leaf.NotBefore):
		return "is not valid yet: check the system clock"
	case leaf.NotAfter.Sub(now) < expiryWarning:
		return "expires soon"
	}
	return ""
}
