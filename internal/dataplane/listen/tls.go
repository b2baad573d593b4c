package listen

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// CertOptions says where the HTTPS listener's certificate comes from: a PEM
// certificate and key pair on disk, or a self-signed pair that cutover makes
// for Hosts once and keeps under StateDir.
type CertOptions struct {
	// CertFile and KeyFile are PEM files (tls.cert and tls.key). They are
	// only ever read, never written.
	CertFile, KeyFile string
	// SelfSigned generates a certificate for Hosts (tls.self_signed).
	SelfSigned bool
	// Hosts are the DNS names and IP addresses the self-signed certificate
	// covers; the first one is its common name. Empty means "localhost".
	Hosts []string
	// StateDir holds the self-signed pair in <StateDir>/tls.
	StateDir string
	// Logger receives diagnostics (generation, reloads, expiry warnings).
	// Nil means slog.Default().
	Logger *slog.Logger
}

// CertSource hands the current certificate to TLS handshakes. The
// certificate sits behind an atomic pointer so that Reload can replace it
// while handshakes run: established connections keep the certificate they
// negotiated, new handshakes get the new one, nothing is dropped.
type CertSource struct {
	opts CertOptions
	log  *slog.Logger
	cur  atomic.Pointer[tls.Certificate]
	// reloadMu keeps two reloads (e.g. two quick SIGHUPs) from interleaving
	// their reads of the files.
	reloadMu sync.Mutex
}

// NewCertSource loads or creates the certificate that o describes. Its
// errors name the file, the problem and the fix.
func NewCertSource(o CertOptions) (*CertSource, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	cs := &CertSource{opts: o, log: log}
	haveFiles := o.CertFile != "" || o.KeyFile != ""
	switch {
	case o.SelfSigned && haveFiles:
		return nil, errors.New("tls: both certificate files and self_signed are set: " +
			"use tls.cert and tls.key for your own certificate, or tls.self_signed: true without them")
	case o.SelfSigned:
		cert, err := selfSigned(o, log)
		if err != nil {
			return nil, err
		}
		cs.cur.Store(cert)
	case o.CertFile == "" || o.KeyFile == "":
		return nil, errors.New("tls: a certificate needs both files: set tls.cert and tls.key " +
			"to PEM files, or set tls.self_signed: true")
	default:
		cert, err := loadPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, err
		}
		cs.cur.Store(cert)
		warnExpiry(log, cert.Leaf, o.CertFile)
	}
	return cs, nil
}

// Reload re-reads the certificate and key files; it is what SIGHUP does.
// When the new pair cannot be used the current certificate stays in service
// and the error names the file and the problem. For a self-signed
// certificate there is nothing to re-read and Reload returns nil.
func (cs *CertSource) Reload() error {
	if cs.opts.SelfSigned {
		return nil
	}
	cs.reloadMu.Lock()
	defer cs.reloadMu.Unlock()
	cert, err := loadPair(cs.opts.CertFile, cs.opts.KeyFile)
	if err != nil {
		return fmt.Errorf("tls reload failed, still serving the previous certificate: %w", err)
	}
	cs.cur.Store(cert)
	cs.log.Info("tls certificate reloaded",
		"cert", cs.opts.CertFile,
		"subject", cert.Leaf.Subject.String(),
		"not_after", cert.Leaf.NotAfter.Format(time.RFC3339))
	warnExpiry(cs.log, cert.Leaf, cs.opts.CertFile)
	return nil
}

// TLSConfig returns a new server configuration that serves the current
// certificate: TLS 1.2 or later, HTTP/2 offered first by ALPN. Each call
// returns a fresh value, so the caller may adjust it.
func (cs *CertSource) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: cs.getCertificate,
	}
}

func (cs *CertSource) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return cs.cur.Load(), nil
}

// Leaf is the parsed certificate currently served (for status and tests).
func (cs *CertSource) Leaf() *x509.Certificate {
	return cs.cur.Load().Leaf
}

// expiryWarning is how close to expiry a certificate earns a warning.
const expiryWarning = 14 * 24 * time.Hour

func warnExpiry(log *slog.Logger, leaf *x509.Certificate, file string) {
	now := time.Now()
	switch {
	case now.After(leaf.NotAfter):
		log.Warn("tls certificate has expired: clients will reject it; renew it and send SIGHUP",
			"cert", file, "not_after", leaf.NotAfter.Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		log.Warn("tls certificate is not valid yet: check the system clock",
			"cert", file, "not_before", leaf.NotBefore.Format(time.RFC3339))
	case leaf.NotAfter.Sub(now) < expiryWarning:
		log.Warn("tls certificate expires soon: renew it and send SIGHUP",
			"cert", file, "not_after", leaf.NotAfter.Format(time.RFC3339))
	}
}
