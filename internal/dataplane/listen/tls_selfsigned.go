package listen

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cutover/cutover/internal/atomicfile"
)

// Self-signed pair's location under the state directory.
const (
	selfSignedDir  = "tls"
	selfSignedCert = "self-signed.crt"
	selfSignedKey  = "self-signed.key"
)

const (
	selfSignedValidity = 10 * 365 * 24 * time.Hour
	// selfSignedRenewBefore: a stored pair closer than this to expiry is
	// replaced at start-up rather than served until it breaks.
	selfSignedRenewBefore = 30 * 24 * time.Hour
)

// SelfSignedPaths returns where the self-signed certificate and key for
// stateDir live, e.g. to tell users which file to trust.
func SelfSignedPaths(stateDir string) (certFile, keyFile string) {
	dir := filepath.Join(stateDir, selfSignedDir)
	return filepath.Join(dir, selfSignedCert), filepath.Join(dir, selfSignedKey)
}

// selfSigned returns the stored self-signed pair when it still covers the
// hosts, and otherwise generates and stores a new one. Generating once and
// reusing keeps the certificate stable across restarts, so clients that
// were told to trust it keep trusting it.
func selfSigned(o CertOptions, log *slog.Logger) (*tls.Certificate, error) {
	hosts, err := normaliseHosts(o.Hosts)
	if err != nil {
		return nil, err
	}
	if o.StateDir == "" {
		return nil, errors.New("tls.self_signed needs state_dir to keep the certificate in: " +
			"set state_dir to a writable directory")
	}
	certPath, keyPath := SelfSignedPaths(o.StateDir)

	existing, err := loadPair(certPath, keyPath)
	switch {
	case err == nil:
		missing := uncovered(existing.Leaf, hosts)
		left := time.Until(existing.Leaf.NotAfter)
		if len(missing) == 0 && left > selfSignedRenewBefore {
			log.Debug("using stored self-signed tls certificate", "cert", certPath, "hosts", hosts)
			return existing, nil
		}
		if len(missing) > 0 {
			log.Info("tls.hosts changed: generating a new self-signed certificate",
				"cert", certPath, "not_covered", missing, "hosts", hosts)
		} else {
			log.Info("stored self-signed tls certificate is about to expire: generating a new one",
				"cert", certPath, "not_after", existing.Leaf.NotAfter.Format(time.RFC3339))
		}
	case errors.Is(err, fs.ErrNotExist):
		// First start: nothing stored yet.
	default:
		// The pair is cutover's own state (never a user's file), so a
		// damaged one is replaced rather than blocking start-up.
		log.Warn("stored self-signed tls certificate is unusable: generating a new one", "err", err)
	}

	cert, certPEM, keyPEM, err := generateSelfSigned(hosts)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(certPath)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %q for the self-signed certificate: %w; "+
			"make state_dir writable by the user running cutover", dir, err)
	}
	// The directory holds a private key: keep it private even if it was
	// created earlier with looser permissions.
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("restrict %q to mode 0700: %w", dir, err)
	}
	// Key first: a crash between the two writes leaves a new key with the
	// old certificate, which the next start detects as a mismatch and
	// replaces.
	if err := atomicfile.Write(keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := atomicfile.Write(certPath, certPEM, 0o644); err != nil {
		return nil, err
	}
	log.Info("generated self-signed tls certificate; clients must be told to trust it (e.g. curl --cacert)",
		"cert", certPath, "hosts", hosts, "not_after", cert.Leaf.NotAfter.Format(time.RFC3339))
	return cert, nil
}

// normaliseHosts checks tls.hosts and returns them lower-cased, without
// duplicates, IPv6 brackets removed. Empty means localhost.
func normaliseHosts(in []string) ([]string, error) {
	if len(in) == 0 {
		return []string{"localhost"}, nil
	}
	out := make([]string, 0, len(in))
	seen := make(map[string]bool, len(in))
	for _, h := range in {
		h = strings.ToLower(strings.TrimSpace(h))
		if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
			h = h[1 : len(h)-1]
		}
		if h == "" {
			return nil, errors.New("tls.hosts has an empty entry: list DNS names or IP addresses, e.g. [\"localhost\"]")
		}
		if _, err := netip.ParseAddr(h); err != nil {
			if strings.ContainsAny(h, ":/ \t") {
				return nil, fmt.Errorf("tls.hosts entry %q is not a DNS name or IP address: "+
					"write the name alone, without scheme, port or path", h)
			}
		}
		if !seen[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	return out, nil
}

// uncovered lists the hosts that leaf has no subject alternative name for.
// Names are compared literally (a wildcard SAN does not cover a listed
// name): the stored certificate must be the one generated for these hosts.
func uncovered(leaf *x509.Certificate, hosts []string) []string {
	var missing []string
	for _, h := range hosts {
		found := false
		if ip, err := netip.ParseAddr(h); err == nil {
			for _, have := range leaf.IPAddresses {
				if a, ok := netip.AddrFromSlice(have); ok && a.Unmap() == ip.Unmap() {
					found = true
					break
				}
			}
		} else {
			for _, have := range leaf.DNSNames {
				if strings.EqualFold(have, h) {
					found = true
					break
				}
			}
		}
		if !found {
			missing = append(missing, h)
		}
	}
	return missing
}

func generateSelfSigned(hosts []string) (cert *tls.Certificate, certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("generate self-signed key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("generate certificate serial number: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: hosts[0], Organization: []string{"cutover self-signed"}},
		// An hour of slack for clients whose clocks run behind.
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(selfSignedValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip, err := netip.ParseAddr(h); err == nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ip.AsSlice()))
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("create self-signed certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("parse generated certificate: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("encode self-signed key: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, certPEM, keyPEM, nil
}
