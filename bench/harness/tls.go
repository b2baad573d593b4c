package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// certHost is the name in the benchmark certificate; clients send it as SNI.
const certHost = "localhost"

// tlsFiles is the one certificate every proxy serves in the HTTPS phases.
type tlsFiles struct {
	// Cert and Key are PEM files (nginx, cutover); Combined is both in one
	// file, which HAProxy's `crt` wants.
	Cert, Key, Combined string
	// Pool trusts the certificate, for the harness's own clients.
	Pool *x509.CertPool
}

// writeCertificate generates a self-signed ECDSA P-256 certificate for
// localhost and 127.0.0.1 (the key type the measurements used) into
// dir. Generated per run rather than kept in the repository, so no key is
// ever committed.
func writeCertificate(dir string) (*tlsFiles, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate the benchmark's ECDSA key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return nil, fmt.Errorf("certificate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: certHost},
		DNSNames:              []string{certHost},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create the benchmark certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode the benchmark key: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	f := &tlsFiles{
		Cert:     filepath.Join(dir, "cert.pem"),
		Key:      filepath.Join(dir, "key.pem"),
		Combined: filepath.Join(dir, "combined.pem"),
		Pool:     x509.NewCertPool(),
	}
	// nginx's workers (user nobody) read the files only after the master
	// (root) has loaded them, so 0600 is enough for the key.
	for _, w := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{f.Cert, certPEM, 0o644}, {f.Key, keyPEM, 0o600}, {f.Combined, append(append([]byte(nil), certPEM...), keyPEM...), 0o600}} {
		if err := os.WriteFile(w.path, w.data, w.mode); err != nil {
			return nil, fmt.Errorf("write %s: %w", w.path, err)
		}
	}
	if !f.Pool.AppendCertsFromPEM(certPEM) {
		return nil, fmt.Errorf("the generated certificate does not parse back")
	}
	return f, nil
}

// clientConfig is the harness's TLS client configuration: HTTP/1.1 only
// (the idle check and the readiness probe speak it), no session resumption
// so each connection does a full handshake as a new visitor's does.
func (f *tlsFiles) clientConfig() *tls.Config {
	return &tls.Config{RootCAs: f.Pool, ServerName: certHost, NextProtos: []string{"http/1.1"}}
}

// probeTLS sends one GET / over a fresh TLS connection.
func probeTLS(addr string, cfg *tls.Config) error {
	d := &net.Dialer{Timeout: time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	return probeOn(c, certHost)
}
