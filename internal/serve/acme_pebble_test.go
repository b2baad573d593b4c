package serve_test

// Certificates from a real ACME server: Let's Encrypt's test CA, pebble,
// run inside the test process on 127.0.0.1. Its validation authority is
// pointed at the instance's own listeners (HTTP-01 at listen.http,
// TLS-ALPN-01 at listen.https), and a DNS responder in the test resolves
// every name to 127.0.0.1, so nothing leaves the machine.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/dataplane/listen"
	"github.com/cutover/cutover/internal/serve"
	"github.com/cutover/cutover/internal/testutil/lockedbuf"
)

// pebbleCA is an in-process pebble. Its HTTPS front end starts first (the
// instance needs the directory URL); its CA, VA and WFE are built by start
// once the instance's listeners, which the VA must connect to, are bound.
// Requests that arrive before then wait for it.
type pebbleCA struct {
	srv       *httptest.Server
	dir       string // directory URL
	rootsFile string // the front end's certificate, for tls.acme.ca_roots
	dnsAddr   string
	validity  time.Duration
	refuse    map[string]bool // names the DNS responder does not resolve
	ready     chan struct{}
	handler   atomic.Pointer[http.Handler]
	ca        *ca.CAImpl
	orders    atomic.Int64 // new-order requests
	log       *lockedbuf.Buffer
}

func newPebble(t *testing.T, validity time.Duration, refuse ...string) *pebbleCA {
	t.Helper()
	// No random validation sleeps, no nonces rejected on purpose, and a
	// fresh authorization (so a real challenge) for every order.
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	t.Setenv("PEBBLE_AUTHZREUSE", "0")
	p := &pebbleCA{validity: validity, refuse: map[string]bool{}, ready: make(chan struct{}), log: &lockedbuf.Buffer{}}
	for _, r := range refuse {
		p.refuse[dns.Fqdn(r)] = true
	}

	// The VA asks this responder (over TCP) where each name is.
	dl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ds := &dns.Server{Listener: dl, Handler: dns.HandlerFunc(p.answerDNS)}
	go ds.ActivateAndServe()
	t.Cleanup(func() { ds.Shutdown() })
	p.dnsAddr = dl.Addr().String()

	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(p.serveHTTP))
	p.srv.StartTLS()
	t.Cleanup(p.srv.Close)
	p.dir = p.srv.URL + wfe.DirectoryPath
	p.rootsFile = filepath.Join(t.TempDir(), "pebble-frontend.pem")
	pemData := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.srv.Certificate().Raw})
	if err := os.WriteFile(p.rootsFile, pemData, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pebble log:\n%s", p.log.String())
		}
	})
	return p
}

func (p *pebbleCA) answerDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	for _, q := range req.Question {
		if q.Qtype == dns.TypeA && !p.refuse[strings.ToLower(q.Name)] {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0},
				A:   net.IPv4(127, 0, 0, 1),
			})
		}
	}
	w.WriteMsg(m)
}

func (p *pebbleCA) serveHTTP(w http.ResponseWriter, r *http.Request) {
	select {
	case <-p.ready:
	case <-r.Context().Done():
		return
	case <-time.After(20 * time.Second):
		http.Error(w, "pebble was not started", http.StatusServiceUnavailable)
		return
	}
	if r.URL.Path == "/order-plz" {
		p.orders.Add(1)
	}
	(*p.handler.Load()).ServeHTTP(w, r)
}

// start builds the CA with the VA's HTTP-01 and TLS-ALPN-01 ports pointed
// at the instance's listeners.
func (p *pebbleCA) start(t *testing.T, in *serve.Instance) {
	t.Helper()
	httpPort, httpsPort := 0, portOf(t, in.HTTPSAddr())
	if a := in.HTTPAddr(); a != nil {
		httpPort = portOf(t, a)
	}
	p.startPorts(t, httpPort, httpsPort)
}

// startPorts is start with the VA's ports given.
func (p *pebbleCA) startPorts(t *testing.T, httpPort, httpsPort int) {
	t.Helper()
	logger := log.New(p.log, "pebble ", log.Lmicroseconds)
	store := db.NewMemoryStore()
	profiles := map[string]ca.Profile{"default": {Description: "test", ValidityPeriod: uint64(p.validity / time.Second)}}
	p.ca = ca.New(logger, store, "", "ecdsa", 0, 1, profiles)
	v := va.New(logger, httpPort, httpsPort, false, p.dnsAddr, store)
	front := wfe.New(logger, store, v, p.ca, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	h := front.Handler()
	p.handler.Store(&h)
	close(p.ready)
}

// roots is the pool a client verifies issued certificates with.
func (p *pebbleCA) roots() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.ca.GetRootCert(0).Cert)
	return pool
}

func portOf(t *testing.T, a net.Addr) int {
	t.Helper()
	_, port, err := net.SplitHostPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// acmeSetup is what an instance under test is started with.
type acmeSetup struct {
	stateDir  string
	challenge string
	hosts     []string
	backend   string
	logs      *lockedbuf.Buffer
	// storage is tls.acme.storage ("" for the default in stateDir).
	storage string
}

func startACMEInstance(t *testing.T, p *pebbleCA, s acmeSetup) *serve.Instance {
	t.Helper()
	cfg := config.Default()
	cfg.Listen.HTTPS = "127.0.0.1:0"
	if s.challenge == config.ChallengeHTTP01 {
		cfg.Listen.HTTP = "127.0.0.1:0"
	}
	cfg.StateDir = s.stateDir
	cfg.Admin.Socket = filepath.Join(s.stateDir, config.AdminSocketName)
	cfg.Log.Access = config.AccessOff
	cfg.Metrics.Listen = "127.0.0.1:0"
	cfg.TLS.ACME = &config.ACME{
		Email: "ops@example.com", Directory: p.dir, CARoots: p.rootsFile,
		Hosts: s.hosts, Challenge: s.challenge, Storage: s.storage,
	}
	svc := config.DefaultService("web")
	svc.Hosts = s.hosts
	svc.Pools = []config.Pool{{Name: "blue", Targets: []string{s.backend}}}
	svc.Active = "blue"
	cfg.Services = []config.Service{svc}
	logger := slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	in, err := serve.Start(context.Background(), serve.Options{
		Config: cfg, Logger: logger, Stdout: io.Discard, ACMERenewCheck: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		in.Shutdown(ctx)
	})
	return in
}

func newLogs(t *testing.T) *lockedbuf.Buffer {
	b := &lockedbuf.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cutover log:\n%s", b.String())
		}
	})
	return b
}

// okBackend answers every request with 200 "ok".
func okBackend(t *testing.T) string {
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	t.Cleanup(b.Close)
	return strings.TrimPrefix(b.URL, "http://")
}

// waitState waits until host's certificate is in state, and returns how
// long that took from since.
func waitState(t *testing.T, in *serve.Instance, host, state string, since time.Time, limit time.Duration) time.Duration {
	t.Helper()
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, s := range in.Certificates().Status() {
			if s.Host == host && s.Source == "acme" && s.State == state {
				return time.Since(since)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not reach state %q within %s; status: %+v", host, state, limit, in.Certificates().Status())
		}
		<-tick.C
	}
}

// handshake connects to addr with SNI host and returns the certificate
// presented; verify checks it against roots for host.
func handshake(t *testing.T, addr, host string, roots *x509.CertPool, verify bool) *x509.Certificate {
	t.Helper()
	cfg := &tls.Config{ServerName: host, RootCAs: roots, NextProtos: []string{"http/1.1"}, InsecureSkipVerify: !verify}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("handshake for %s: %v", host, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// strictClient sends requests for any host to addr over HTTPS, verifying
// the certificate against roots, one connection per request (so every
// request makes a handshake).
func strictClient(addr string, roots *x509.CertPool) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			TLSClientConfig:   &tls.Config{RootCAs: roots},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, addr)
			},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// getOK fetches url through c and fails unless the answer is 200 "ok".
func getOK(t *testing.T, c *http.Client, url string) *http.Response {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("GET %s = %d %q", url, resp.StatusCode, body)
	}
	return resp
}

// Two hosts get a certificate each by HTTP-01, answered on listen.http
// ahead of its 308 redirect; each handshake presents its host's
// certificate, valid under pebble's root; the account is stored 0600; a
// restart serves the stored certificates at once with pebble gone.
func TestACMEHTTP01CertificatePerHostAndRestart(t *testing.T) {
	p := newPebble(t, 24*time.Hour)
	hosts := []string{"a.example.com", "b.example.com"}
	s := acmeSetup{stateDir: t.TempDir(), challenge: config.ChallengeHTTP01, hosts: hosts, backend: okBackend(t), logs: newLogs(t)}
	began := time.Now()
	in := startACMEInstance(t, p, s)
	p.start(t, in)
	for _, h := range hosts {
		d := waitState(t, in, h, listen.CertValid, began, 60*time.Second)
		t.Logf("time to first certificate for %s (http-01): %s", h, d.Round(time.Millisecond))
	}
	roots := p.roots()
	httpsAddr := in.HTTPSAddr().String()
	serials := map[string]string{}
	for _, h := range hosts {
		leaf := handshake(t, httpsAddr, h, roots, true)
		if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != h {
			t.Errorf("%s was served a certificate for %v", h, leaf.DNSNames)
		}
		serials[h] = leaf.SerialNumber.String()
		getOK(t, strictClient(httpsAddr, roots), "https://"+h+"/")
	}
	if serials[hosts[0]] == serials[hosts[1]] {
		t.Error("both hosts were served the same certificate")
	}
	if n := p.orders.Load(); n != int64(len(hosts)) {
		t.Errorf("pebble saw %d orders, want one per host (%d)", n, len(hosts))
	}

	// The challenge path is answered only for challenges in flight: any
	// other request on listen.http is still redirected.
	plain := strictClient(in.HTTPAddr().String(), roots)
	for _, path := range []string{"/", "/.well-known/acme-challenge/not-a-token"} {
		resp, err := plain.Get("http://a.example.com" + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusPermanentRedirect {
			t.Errorf("GET %s on listen.http = %d, want 308", path, resp.StatusCode)
		}
	}
	if !strings.Contains(s.logs.String(), "acme: certificate obtained") {
		t.Error("the log does not say a certificate was obtained")
	}
	assertKeysPrivate(t, filepath.Join(s.stateDir, "acme"))

	// Restart on the same state_dir with the CA gone: the stored
	// certificates are served from the first handshake.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := in.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	p.srv.Close()
	ordersBefore := p.orders.Load()
	s.logs = newLogs(t)
	restarted := time.Now()
	in2 := startACMEInstance(t, p, s)
	for _, h := range hosts {
		// Loaded from storage before Start returned: no waiting.
		st := stateOf(in2, h)
		if st != listen.CertValid {
			t.Errorf("after restart %s is %q, want valid at once", h, st)
		}
		leaf := handshake(t, in2.HTTPSAddr().String(), h, roots, true)
		if leaf.SerialNumber.String() != serials[h] {
			t.Errorf("after restart %s was served serial %s, want the stored %s", h, leaf.SerialNumber, serials[h])
		}
	}
	t.Logf("restart to serving the stored certificates: %s", time.Since(restarted).Round(time.Millisecond))
	if n := p.orders.Load(); n != ordersBefore {
		t.Errorf("the restart sent %d orders to the CA, want none", n-ordersBefore)
	}
}

func stateOf(in *serve.Instance, host string) string {
	for _, s := range in.Certificates().Status() {
		if s.Host == host && s.Source == "acme" {
			return s.State
		}
	}
	return ""
}

// assertKeysPrivate checks every private key and account file under dir
// has mode 0600.
func assertKeysPrivate(t *testing.T, dir string) {
	t.Helper()
	var keys int
	err := filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		if strings.HasSuffix(path, ".key") || strings.HasSuffix(path, ".json") {
			keys++
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s has mode %o, want 600", path, fi.Mode().Perm())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if keys == 0 {
		t.Errorf("no key or account files under %s", dir)
	}
	var accounts int
	filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && strings.Contains(path, string(filepath.Separator)+"users"+string(filepath.Separator)) && strings.HasSuffix(path, ".key") {
			accounts++
		}
		return nil
	})
	if accounts != 1 {
		t.Errorf("%d account keys under %s, want one account", accounts, dir)
	}
}

// One host by TLS-ALPN-01, answered on listen.https.
func TestACMETLSALPN01(t *testing.T) {
	p := newPebble(t, 24*time.Hour)
	host := "c.example.com"
	s := acmeSetup{stateDir: t.TempDir(), challenge: config.ChallengeTLSALPN01, hosts: []string{host}, backend: okBackend(t), logs: newLogs(t)}
	began := time.Now()
	in := startACMEInstance(t, p, s)
	if in.HTTPAddr() != nil {
		t.Fatal("test setup: tls-alpn-01 should run without listen.http")
	}
	p.start(t, in)
	d := waitState(t, in, host, listen.CertValid, began, 60*time.Second)
	t.Logf("time to first certificate for %s (tls-alpn-01): %s", host, d.Round(time.Millisecond))
	leaf := handshake(t, in.HTTPSAddr().String(), host, p.roots(), true)
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != host {
		t.Errorf("%s was served a certificate for %v", host, leaf.DNSNames)
	}
	getOK(t, strictClient(in.HTTPSAddr().String(), p.roots()), "https://"+host+"/")
}

// A host the CA will not validate (its name does not resolve) stays on
// the self-signed stand-in, with a log line saying why and a warning in
// the status; the other host is served its certificate.
func TestACMERefusedHostStaysOnFallback(t *testing.T) {
	good, bad := "ok.example.com", "refused.example.com"
	p := newPebble(t, 24*time.Hour, bad)
	s := acmeSetup{stateDir: t.TempDir(), challenge: config.ChallengeHTTP01, hosts: []string{good, bad}, backend: okBackend(t), logs: newLogs(t)}
	began := time.Now()
	in := startACMEInstance(t, p, s)
	// Before the CA answers anything, both hosts get the stand-in.
	if leaf := handshake(t, in.HTTPSAddr().String(), bad, nil, false); leaf.Issuer.CommonName != leaf.Subject.CommonName {
		t.Errorf("before any certificate %s was served %v issued by %q, want the self-signed stand-in", bad, leaf.DNSNames, leaf.Issuer.CommonName)
	}
	p.start(t, in)
	waitState(t, in, good, listen.CertValid, began, 60*time.Second)
	waitState(t, in, bad, listen.CertFailing, began, 60*time.Second)

	roots := p.roots()
	getOK(t, strictClient(in.HTTPSAddr().String(), roots), "https://"+good+"/")
	leaf := handshake(t, in.HTTPSAddr().String(), bad, nil, false)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: bad}); err == nil {
		t.Errorf("%s was served a certificate from the CA it refused", bad)
	}
	if !containsName(leaf, bad) {
		t.Errorf("the stand-in for %s names %v", bad, leaf.DNSNames)
	}
	logs := s.logs.String()
	for _, want := range []string{
		"acme: obtaining the certificate failed; the host is served a self-signed stand-in; retrying with back-off",
		"host=" + bad,
		"serving a self-signed stand-in until the ACME certificate arrives",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log lacks %q", want)
		}
	}
	var st *listen.CertStatus
	for _, c := range in.Certificates().Status() {
		if c.Host == bad {
			st = &c
		}
	}
	if st == nil || st.Warning == "" || st.LastError == "" || st.DaysLeft(time.Now()) != 0 {
		t.Errorf("status of %s = %+v, want a warning with the error and 0 days left", bad, st)
	}
	// The expiry gauge, scraped from metrics.listen.
	resp0, err := http.Get("http://" + in.MetricsAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp0.Body)
	resp0.Body.Close()
	gauges := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, "cutover_certificate_expiry_days{"); ok {
			labels, value, _ := strings.Cut(rest, "} ")
			v, _ := strconv.ParseFloat(value, 64)
			gauges[labels] = v
		}
	}
	if g, b := gauges[`host="`+good+`",source="acme"`], gauges[`host="`+bad+`",source="acme"`]; g < 0.9 || b != 0 || len(gauges) != 2 {
		t.Errorf("cutover_certificate_expiry_days = %v, want ~1 for %s and 0 for %s", gauges, good, bad)
	}

	// cutover status shows the same, through the admin API.
	c := admin.NewUnixClient(filepath.Join(s.stateDir, config.AdminSocketName))
	defer c.Close()
	resp, err := c.Status(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]admin.CertificateStatus{}
	for _, cs := range resp.Certificates {
		states[cs.Host] = cs
	}
	if g := states[good]; g.State != listen.CertValid || g.NotAfter == nil || g.Warning != "" || g.DaysLeft < 0.9 {
		t.Errorf("status of %s through the admin API = %+v", good, g)
	}
	if b := states[bad]; b.State != listen.CertFailing || !strings.Contains(b.Warning, "self-signed stand-in") || b.NotAfter != nil {
		t.Errorf("status of %s through the admin API = %+v", bad, b)
	}
}

func containsName(leaf *x509.Certificate, name string) bool {
	for _, n := range leaf.DNSNames {
		if n == name {
			return true
		}
	}
	return false
}

// With a short validity the certificate is renewed while clients keep
// connecting; every request succeeds, before, across and after the swap.
func TestACMERenewalUnderLoad(t *testing.T) {
	const validity = 15 * time.Second
	p := newPebble(t, validity)
	host := "renew.example.com"
	s := acmeSetup{stateDir: t.TempDir(), challenge: config.ChallengeHTTP01, hosts: []string{host}, backend: okBackend(t), logs: newLogs(t)}
	began := time.Now()
	in := startACMEInstance(t, p, s)
	p.start(t, in)
	waitState(t, in, host, listen.CertValid, began, 60*time.Second)
	roots := p.roots()
	first := handshake(t, in.HTTPSAddr().String(), host, roots, true).SerialNumber.String()

	const workers = 4
	const maxRequests = 20000
	deadline := time.Now().Add(validity + 10*time.Second)
	var sent, failed atomic.Int64
	var mu sync.Mutex
	serials := map[string]int{}
	var firstErr atomic.Value
	renewed := make(chan struct{})
	var renewedOnce sync.Once
	var afterSwap atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := strictClient(in.HTTPSAddr().String(), roots)
			for time.Now().Before(deadline) && sent.Add(1) <= maxRequests {
				resp, err := c.Get("https://" + host + "/")
				if err == nil {
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || string(body) != "ok" {
						err = fmt.Errorf("status %d body %q", resp.StatusCode, body)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				serial := resp.TLS.PeerCertificates[0].SerialNumber.String()
				mu.Lock()
				serials[serial]++
				mu.Unlock()
				if serial != first {
					renewedOnce.Do(func() { close(renewed) })
					// Keep going a while on the new certificate.
					if afterSwap.Add(1) >= 200 {
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	select {
	case <-renewed:
	default:
		t.Errorf("no renewed certificate was served within %s of issuance (validity %s)", validity+10*time.Second, validity)
	}
	t.Logf("requests: %d, failed: %d, certificates served: %v", sent.Load(), failed.Load(), serials)
	if n := failed.Load(); n != 0 {
		t.Errorf("%d requests failed across the renewal; first: %v", n, firstErr.Load())
	}
	if !strings.Contains(s.logs.String(), "renewal=true") {
		t.Error("the log does not show a renewal")
	}
}
