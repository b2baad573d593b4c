package listen

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// testPair is a certificate and key in PEM, as a user would provide them.
type testPair struct {
	certPEM, keyPEM []byte
	leaf            *x509.Certificate
}

func newTestPair(t *testing.T, hosts ...string) testPair {
	t.Helper()
	if len(hosts) == 0 {
		hosts = []string{"localhost", "127.0.0.1"}
	}
	cert, certPEM, keyPEM, err := generateSelfSigned(hosts)
	if err != nil {
		t.Fatal(err)
	}
	return testPair{certPEM: certPEM, keyPEM: keyPEM, leaf: cert.Leaf}
}

// writePair writes p to cert.pem and key.pem in dir and returns the paths.
func writePair(t *testing.T, dir string, p testPair) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, certFile, p.certPEM)
	writeFile(t, keyFile, p.keyPEM)
	return certFile, keyFile
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// echoServer serves cfg on 127.0.0.1 and echoes every line back.
func echoServer(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, ln, func(c net.Conn, _ int) {
		defer c.Close()
		_, _ = io.Copy(c, c)
	})
	return ln.Addr().String()
}

func clientConfig(roots ...*x509.Certificate) *tls.Config {
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	return &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{"h2", "http/1.1"}}
}

func dialTLS(t *testing.T, addr string, cfg *tls.Config) *tls.Conn {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("tls dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func echo(t *testing.T, c *tls.Conn, r *bufio.Reader, msg string) {
	t.Helper()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		t.Fatalf("write on connection: %v", err)
	}
	got, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read on connection: %v", err)
	}
	if got != msg+"\n" {
		t.Fatalf("echo = %q, want %q", got, msg+"\n")
	}
}

func servedSerial(c *tls.Conn) string {
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

func TestSelfSignedGeneratedOnceAndReused(t *testing.T) {
	state := t.TempDir()
	hosts := []string{"localhost", "127.0.0.1", "::1", "app.example.test"}
	cs, err := NewCertSource(CertOptions{SelfSigned: true, Hosts: hosts, StateDir: state, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	leaf := cs.Leaf()
	if leaf.Subject.CommonName != "localhost" {
		t.Errorf("CN = %q, want localhost", leaf.Subject.CommonName)
	}
	if got := strings.Join(leaf.DNSNames, ","); got != "localhost,app.example.test" {
		t.Errorf("DNS SANs = %s", got)
	}
	var ips []string
	for _, ip := range leaf.IPAddresses {
		ips = append(ips, ip.String())
	}
	if got := strings.Join(ips, ","); got != "127.0.0.1,::1" {
		t.Errorf("IP SANs = %s", got)
	}
	if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key %T, want ECDSA P-256", leaf.PublicKey)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("KeyUsage = %v, want digital signature", leaf.KeyUsage)
	}
	if len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("ExtKeyUsage = %v, want server auth", leaf.ExtKeyUsage)
	}
	if years := time.Until(leaf.NotAfter).Hours() / 24 / 365; years < 9.9 || years > 10.1 {
		t.Errorf("valid for %.2f years, want about 10", years)
	}

	certFile, keyFile := SelfSignedPaths(state)
	assertMode(t, filepath.Dir(certFile), 0o700)
	assertMode(t, keyFile, 0o600)
	assertMode(t, certFile, 0o644)
	certBefore, _ := os.ReadFile(certFile)
	keyBefore, _ := os.ReadFile(keyFile)

	// A restart: a new CertSource on the same state directory.
	again, err := NewCertSource(CertOptions{SelfSigned: true, Hosts: hosts, StateDir: state, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if again.Leaf().SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Fatalf("serial after restart = %v, want the stored %v", again.Leaf().SerialNumber, leaf.SerialNumber)
	}
	certAfter, _ := os.ReadFile(certFile)
	keyAfter, _ := os.ReadFile(keyFile)
	if !bytes.Equal(certBefore, certAfter) || !bytes.Equal(keyBefore, keyAfter) {
		t.Error("stored pair was rewritten on restart")
	}
	// A subset of the hosts is still covered by the stored certificate.
	sub, err := NewCertSource(CertOptions{SelfSigned: true, Hosts: []string{"LOCALHOST"}, StateDir: state, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if sub.Leaf().SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Error("a subset of the hosts regenerated the certificate")
	}
	assertNoTempFiles(t, filepath.Dir(certFile))
}

func TestSelfSignedRegeneratedWhenHostsChange(t *testing.T) {
	state := t.TempDir()
	first, err := NewCertSource(CertOptions{SelfSigned: true, Hosts: []string{"localhost"}, StateDir: state, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	changed, err := NewCertSource(CertOptions{SelfSigned: true, Hosts: []string{"localhost", "10.1.2.3"}, StateDir: state, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if changed.Leaf().SerialNumber.Cmp(first.Leaf().SerialNumber) == 0 {
		t.Fatal("hosts changed but the certificate was reused")
	}
	if len(changed.Leaf().IPAddresses) != 1 || changed.Leaf().IPAddresses[0].String() != "10.1.2.3" {
		t.Errorf("IP SANs = %v, want [10.1.2.3]", changed.Leaf().IPAddresses)
	}
	// The regenerated pair is what is stored now.
	certFile, keyFile := SelfSignedPaths(state)
	stored, err := loadPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if stored.Leaf.SerialNumber.Cmp(changed.Leaf().SerialNumber) != 0 {
		t.Error("stored certificate is not the regenerated one")
	}
	assertMode(t, keyFile, 0o600)
	assertNoTempFiles(t, filepath.Dir(certFile))
}

func TestSelfSignedReplacesDamagedState(t *testing.T) {
	state := t.TempDir()
	certFile, keyFile := SelfSignedPaths(state)
	if err := os.MkdirAll(filepath.Dir(certFile), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, certFile, []byte("not a certificate"))
	writeFile(t, keyFile, []byte("not a key"))
	cs, err := NewCertSource(CertOptions{SelfSigned: true, StateDir: state, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if got := cs.Leaf().DNSNames; len(got) != 1 || got[0] != "localhost" {
		t.Errorf("default hosts: SANs = %v, want [localhost]", got)
	}
	if _, err := loadPair(certFile, keyFile); err != nil {
		t.Errorf("stored pair after repair: %v", err)
	}
	// A directory created earlier with looser permissions is tightened.
	assertMode(t, filepath.Dir(certFile), 0o700)
}

func TestSelfSignedHandshakeVerifies(t *testing.T) {
	cs, err := NewCertSource(CertOptions{SelfSigned: true, Hosts: []string{"localhost", "127.0.0.1"},
		StateDir: t.TempDir(), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	addr := echoServer(t, cs.TLSConfig())
	for _, name := range []string{"localhost", "127.0.0.1"} {
		cfg := clientConfig(cs.Leaf())
		cfg.ServerName = name
		c := dialTLS(t, addr, cfg)
		echo(t, c, bufio.NewReader(c), "hello "+name)
	}
	cfg := clientConfig(cs.Leaf())
	cfg.ServerName = "other.example.test"
	if c, err := tls.Dial("tcp", addr, cfg); err == nil {
		c.Close()
		t.Error("handshake for a name outside the SANs succeeded")
	}
}

func TestFilePairLoads(t *testing.T) {
	p := newTestPair(t)
	certFile, keyFile := writePair(t, t.TempDir(), p)
	cs, err := NewCertSource(CertOptions{CertFile: certFile, KeyFile: keyFile, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if !cs.Leaf().Equal(p.leaf) {
		t.Fatal("Leaf is not the certificate in the file")
	}
	c := dialTLS(t, echoServer(t, cs.TLSConfig()), clientConfig(p.leaf))
	if got, want := servedSerial(c), p.leaf.SerialNumber.String(); got != want {
		t.Errorf("served serial %s, want %s", got, want)
	}
}

func TestReloadKeepsExistingConnections(t *testing.T) {
	dir := t.TempDir()
	a, b := newTestPair(t), newTestPair(t)
	certFile, keyFile := writePair(t, dir, a)
	cs, err := NewCertSource(CertOptions{CertFile: certFile, KeyFile: keyFile, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	addr := echoServer(t, cs.TLSConfig())
	trustBoth := clientConfig(a.leaf, b.leaf)

	before := dialTLS(t, addr, trustBoth)
	beforeR := bufio.NewReader(before)
	echo(t, before, beforeR, "before reload")
	if got := servedSerial(before); got != a.leaf.SerialNumber.String() {
		t.Fatalf("first connection got serial %s, want pair A's", got)
	}

	writePair(t, dir, b)
	if err := cs.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if !cs.Leaf().Equal(b.leaf) {
		t.Fatal("Leaf after Reload is not pair B")
	}

	// The connection made before the reload still carries traffic.
	echo(t, before, beforeR, "after reload, old connection")
	after := dialTLS(t, addr, trustBoth)
	echo(t, after, bufio.NewReader(after), "after reload, new connection")
	if got := servedSerial(after); got != b.leaf.SerialNumber.String() {
		t.Fatalf("new connection got serial %s, want pair B's", got)
	}
}

func TestReloadFailureKeepsCertificate(t *testing.T) {
	dir := t.TempDir()
	a, other := newTestPair(t), newTestPair(t)
	certFile, keyFile := writePair(t, dir, a)
	cs, err := NewCertSource(CertOptions{CertFile: certFile, KeyFile: keyFile, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	addr := echoServer(t, cs.TLSConfig())

	// Half-finished renewal: new certificate, old key.
	writeFile(t, certFile, other.certPEM)
	err = cs.Reload()
	if err == nil || !strings.Contains(err.Error(), keyFile) || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("Reload with mismatched pair: err = %v, want one naming %s and the mismatch", err, keyFile)
	}
	writeFile(t, certFile, []byte("garbage"))
	err = cs.Reload()
	if err == nil || !strings.Contains(err.Error(), certFile) || !strings.Contains(err.Error(), "not a PEM certificate") {
		t.Fatalf("Reload with garbage: err = %v, want one naming %s", err, certFile)
	}
	if !cs.Leaf().Equal(a.leaf) {
		t.Fatal("failed reload replaced the certificate")
	}
	c := dialTLS(t, addr, clientConfig(a.leaf))
	echo(t, c, bufio.NewReader(c), "still serving")
	if got := servedSerial(c); got != a.leaf.SerialNumber.String() {
		t.Errorf("after a failed reload the served serial is %s, want pair A's", got)
	}
}

func TestBadFilesGiveNamedErrors(t *testing.T) {
	dir := t.TempDir()
	a, b := newTestPair(t), newTestPair(t)
	good := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		writeFile(t, p, data)
		return p
	}
	certA, keyA := good("a.crt", a.certPEM), good("a.key", a.keyPEM)
	keyB := good("b.key", b.keyPEM)
	missing := filepath.Join(dir, "missing.pem")
	notPEM := good("not.pem", []byte("this is not PEM\n"))
	empty := good("empty.pem", nil)
	derCert := good("cert.der", a.leaf.Raw)
	encrypted := good("enc.key", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1, 2, 3}}))
	chainWrongOrder := good("chain.crt", append(append([]byte{}, b.certPEM...), a.certPEM...))

	cases := []struct {
		name       string
		cert, key  string
		wantPath   string
		wantPhrase string
	}{
		{"missing cert", missing, keyA, missing, "does not exist"},
		{"missing key", certA, missing, missing, "does not exist"},
		{"cert not PEM", notPEM, keyA, notPEM, "not a PEM certificate"},
		{"cert is DER", derCert, keyA, derCert, "openssl x509 -inform der"},
		{"key not PEM", certA, notPEM, notPEM, "not a PEM private key"},
		{"empty cert", empty, keyA, empty, "is empty"},
		{"key does not match", certA, keyB, keyB, "does not match the certificate"},
		{"swapped", keyA, certA, keyA, "swapped"},
		{"encrypted key", certA, encrypted, encrypted, "passphrase"},
		{"chain in wrong order", chainWrongOrder, keyA, chainWrongOrder, "put the server certificate first"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewCertSource(CertOptions{CertFile: tc.cert, KeyFile: tc.key, Logger: quietLogger()})
			if err == nil {
				t.Fatal("NewCertSource succeeded")
			}
			if !strings.Contains(err.Error(), tc.wantPath) || !strings.Contains(err.Error(), tc.wantPhrase) {
				t.Fatalf("error %q: want it to name %s and say %q", err, tc.wantPath, tc.wantPhrase)
			}
		})
	}
	t.Run("missing is fs.ErrNotExist", func(t *testing.T) {
		_, err := NewCertSource(CertOptions{CertFile: missing, KeyFile: keyA, Logger: quietLogger()})
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("err = %v, want it to wrap fs.ErrNotExist", err)
		}
	})
	t.Run("unreadable", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root reads files regardless of mode")
		}
		p := good("locked.key", a.keyPEM)
		if err := os.Chmod(p, 0); err != nil {
			t.Fatal(err)
		}
		_, err := NewCertSource(CertOptions{CertFile: certA, KeyFile: p, Logger: quietLogger()})
		if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "not readable") {
			t.Fatalf("err = %v, want one naming %s as not readable", err, p)
		}
	})
}

func TestOptionErrors(t *testing.T) {
	cases := []struct {
		name string
		o    CertOptions
		want string
	}{
		{"nothing", CertOptions{}, "set tls.cert and tls.key"},
		{"cert without key", CertOptions{CertFile: "/x.pem"}, "set tls.cert and tls.key"},
		{"files and self-signed", CertOptions{CertFile: "/x.pem", KeyFile: "/y.pem", SelfSigned: true}, "both certificate files and self_signed"},
		{"self-signed without state dir", CertOptions{SelfSigned: true}, "state_dir"},
		{"host with port", CertOptions{SelfSigned: true, StateDir: "/nonexistent", Hosts: []string{"example.com:443"}}, "without scheme, port or path"},
		{"empty host", CertOptions{SelfSigned: true, StateDir: "/nonexistent", Hosts: []string{" "}}, "empty entry"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Logger = quietLogger()
			_, err := NewCertSource(tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestALPNNegotiatesH2(t *testing.T) {
	cs, err := NewCertSource(CertOptions{SelfSigned: true, Hosts: []string{"localhost"}, StateDir: t.TempDir(), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	cfg := cs.TLSConfig()
	if cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion = %x, want TLS 1.2", cfg.MinVersion)
	}
	addr := echoServer(t, cfg)

	c := dialTLS(t, addr, clientConfig(cs.Leaf()))
	if got := c.ConnectionState().NegotiatedProtocol; got != "h2" {
		t.Errorf("client offering h2: negotiated %q, want h2", got)
	}
	h1 := clientConfig(cs.Leaf())
	h1.NextProtos = []string{"http/1.1"}
	if got := dialTLS(t, addr, h1).ConnectionState().NegotiatedProtocol; got != "http/1.1" {
		t.Errorf("client offering http/1.1: negotiated %q", got)
	}
	old := clientConfig(cs.Leaf())
	old.MaxVersion = tls.VersionTLS11
	if c, err := tls.Dial("tcp", addr, old); err == nil {
		c.Close()
		t.Error("a TLS 1.1 handshake succeeded, want it refused")
	}
}

func TestHTTP2ServedThroughTLSConfig(t *testing.T) {
	cs, err := NewCertSource(CertOptions{SelfSigned: true, Hosts: []string{"localhost"}, StateDir: t.TempDir(), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, r.Proto)
		}),
		TLSConfig:         cs.TLSConfig(),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       5 * time.Second,
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("ServeTLS: %v", err)
		}
	})

	tr := &http.Transport{TLSClientConfig: clientConfig(cs.Leaf()), ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := client.Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.Proto != "HTTP/2.0" || string(body) != "HTTP/2.0" {
		t.Fatalf("client saw %s, server saw %q; want HTTP/2.0 on both ends", resp.Proto, body)
	}
}

func assertMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %o, want %o", path, got, want)
	}
}

func assertNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}
