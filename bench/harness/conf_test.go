package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/config"
)

func TestCutoverConfParsesWithTheRealLoader(t *testing.T) {
	dir := t.TempDir()
	for i, accessLog := range []string{"", filepath.Join(dir, "access.log")} {
		metricsAddr := ""
		if i == 1 {
			metricsAddr = "127.0.0.1:19100" // cutover+metrics
		}
		text := cutoverConf(cutoverConfOptions{
			Metrics:   metricsAddr,
			Listen:    "127.0.0.1:18080",
			StateDir:  filepath.Join(dir, "state"),
			AccessLog: accessLog,
			Pools:     map[string][]string{"green": {"127.0.0.1:9011", "127.0.0.1:9012"}, "blue": {"127.0.0.1:9001", "127.0.0.1:9002"}},
			Active:    "blue",
		})
		cfg, err := config.Parse([]byte(text), "bench.yaml", func(string) (string, bool) { return "", false })
		if err != nil {
			t.Fatalf("config.Parse of the generated config:\n%s\nerror: %v", text, err)
		}
		if cfg.Metrics.Listen != metricsAddr {
			t.Errorf("metrics.listen = %q; want %q", cfg.Metrics.Listen, metricsAddr)
		}
		if cfg.Listen.HTTP != "127.0.0.1:18080" || cfg.StateDir != filepath.Join(dir, "state") {
			t.Errorf("listen/state_dir = %q/%q", cfg.Listen.HTTP, cfg.StateDir)
		}
		wantLog := "off"
		if accessLog != "" {
			wantLog = accessLog
			if cfg.Log.Format != "combined" {
				t.Errorf("log format = %q; want combined", cfg.Log.Format)
			}
		}
		if cfg.Log.Access != wantLog {
			t.Errorf("log access = %q; want %q", cfg.Log.Access, wantLog)
		}
		if len(cfg.Services) != 1 {
			t.Fatalf("services = %d; want 1", len(cfg.Services))
		}
		s := cfg.Services[0]
		if s.Active != "blue" || len(s.Pools) != 2 || s.Pools[0].Name != "blue" || s.Pools[1].Targets[1] != "127.0.0.1:9012" {
			t.Errorf("service = %+v; want blue then green pools, blue active", s)
		}
		if s.Health.Interval != 200*time.Millisecond || s.Health.Healthy != 1 || s.DrainTimeout != 5*time.Second {
			t.Errorf("health/drain = %+v / %v", s.Health, s.DrainTimeout)
		}
	}
}

// The generated nginx config passes `nginx -t` where nginx is installed.
func TestNginxConfValid(t *testing.T) {
	nginx, ok := findProgram("nginx")
	if !ok {
		t.Skip("nginx not installed; bench/run installs it")
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	up := filepath.Join(dir, "upstream.conf")
	if err := os.WriteFile(up, []byte(nginxUpstream([]string{"127.0.0.1:9001", "127.0.0.1:9002"})), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, accessLog := range []string{"", filepath.Join(dir, "access.log")} {
		conf := nginxConf(nginxConfOptions{Dir: dir, Listen: "127.0.0.1:18081", UpstreamFile: up, AccessLog: accessLog})
		for _, want := range []string{"worker_processes auto;", "keepalive 64;", "proxy_http_version 1.1;", `proxy_set_header Connection "";`} {
			if !strings.Contains(conf+nginxUpstream(nil), want) {
				t.Errorf("nginx config lacks %q", want)
			}
		}
		path := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(nginx, "-t", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", path).CombinedOutput()
		if err != nil {
			t.Fatalf("nginx -t (access log %q): %v\n%s\n%s", accessLog, err, out, conf)
		}
	}
}

// The generated HAProxy config passes `haproxy -c` where HAProxy is installed.
func TestHAProxyConfValid(t *testing.T) {
	haproxy, ok := findProgram("haproxy")
	if !ok {
		t.Skip("haproxy not installed; bench/run installs it")
	}
	for _, logOn := range []bool{false, true} {
		conf := haproxyConf(haproxyConfOptions{Listen: "127.0.0.1:18082", Servers: []string{"127.0.0.1:9001", "127.0.0.1:9002"}, LogToStdout: logOn})
		for _, want := range []string{"nbthread 2", "http-reuse always"} {
			if !strings.Contains(conf, want) {
				t.Errorf("HAProxy config lacks %q", want)
			}
		}
		if logOn != strings.Contains(conf, "option httplog") {
			t.Errorf("log %v: option httplog present = %v", logOn, !logOn)
		}
		path := filepath.Join(t.TempDir(), "haproxy.cfg")
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(haproxy, "-c", "-f", path).CombinedOutput(); err != nil {
			t.Fatalf("haproxy -c (log %v): %v\n%s\n%s", logOn, err, out, conf)
		}
	}
}

func TestAvailableCommands(t *testing.T) {
	help := `Zero-downtime blue-green reverse proxy and deploy tool

Usage:
  cutover [command]

Available Commands:
  completion  Generate the autocompletion script for the specified shell
  deploy      Switch a service to a pool
  serve       Run the proxy

Flags:
  -h, --help   help for cutover
`
	got := availableCommands(help)
	if !got["serve"] || !got["deploy"] || got["rollback"] || got["-h,"] || got["Usage:"] {
		t.Errorf("availableCommands = %v; want completion, deploy, serve only", got)
	}
}

// The HTTPS configurations: each proxy serves the generated certificate
// with HTTP/2 offered, and nginx and HAProxy accept their files.
func TestTLSConfs(t *testing.T) {
	dir := t.TempDir()
	files, err := writeCertificate(filepath.Join(dir, "tls"))
	if err != nil {
		t.Fatal(err)
	}

	text := cutoverConf(cutoverConfOptions{Listen: "127.0.0.1:18443", StateDir: filepath.Join(dir, "state"), TLS: files,
		Pools: map[string][]string{"blue": {"127.0.0.1:9001"}}, Active: "blue"})
	cfg, err := config.Parse([]byte(text), "bench.yaml", func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("config.Parse of the generated HTTPS config:\n%s\nerror: %v", text, err)
	}
	if cfg.Listen.HTTPS != "127.0.0.1:18443" || cfg.Listen.HTTP != "" || cfg.TLS.Cert != files.Cert || cfg.TLS.Key != files.Key {
		t.Errorf("listen %+v, tls cert/key %q/%q; want HTTPS only with %q/%q", cfg.Listen, cfg.TLS.Cert, cfg.TLS.Key, files.Cert, files.Key)
	}

	conf := nginxConf(nginxConfOptions{Dir: dir, Listen: "127.0.0.1:18444", UpstreamFile: filepath.Join(dir, "upstream.conf"), TLS: files, WorkerConnections: 10200})
	for _, want := range []string{"listen 127.0.0.1:18444 ssl http2;", "ssl_certificate " + files.Cert + ";", "ssl_certificate_key " + files.Key + ";", "keepalive_requests 100000000;", "worker_connections 10200;", "X-Forwarded-Proto $scheme;"} {
		if !strings.Contains(conf, want) {
			t.Errorf("nginx HTTPS config lacks %q:\n%s", want, conf)
		}
	}
	if plain := nginxConf(nginxConfOptions{Dir: dir, Listen: "127.0.0.1:18444", UpstreamFile: "u"}); strings.Contains(plain, "ssl") || !strings.Contains(plain, "worker_connections 4096;") {
		t.Errorf("plain nginx config mentions ssl or lacks the default worker_connections:\n%s", plain)
	}
	hconf := haproxyConf(haproxyConfOptions{Listen: "127.0.0.1:18445", Servers: []string{"127.0.0.1:9001"}, TLS: files, MaxConn: 10200})
	for _, want := range []string{"bind 127.0.0.1:18445 ssl crt " + files.Combined + " alpn h2,http/1.1", "maxconn 10200", "no strict-limits", "X-Forwarded-Proto https", "ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256:"} {
		if !strings.Contains(hconf, want) {
			t.Errorf("HAProxy HTTPS config lacks %q:\n%s", want, hconf)
		}
	}

	if nginx, ok := findProgram("nginx"); ok {
		if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "upstream.conf"), []byte(nginxUpstream([]string{"127.0.0.1:9001"})), 0o644); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(nginx, "-t", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", path).CombinedOutput(); err != nil {
			t.Errorf("nginx -t of the HTTPS config: %v\n%s", err, out)
		}
	}
	if haproxy, ok := findProgram("haproxy"); ok {
		path := filepath.Join(dir, "haproxy.cfg")
		if err := os.WriteFile(path, []byte(hconf), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(haproxy, "-c", "-f", path).CombinedOutput(); err != nil {
			t.Errorf("haproxy -c of the HTTPS config: %v\n%s", err, out)
		}
	}
}

// The generated certificate is ECDSA P-256 for localhost and 127.0.0.1,
// and its files load as a key pair, also from the combined file.
func TestWriteCertificate(t *testing.T) {
	files, err := writeCertificate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(files.Cert, files.Key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.LoadX509KeyPair(files.Combined, files.Combined); err != nil {
		t.Errorf("the combined file does not load as a pair: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Fatalf("public key %T; want ECDSA P-256", leaf.PublicKey)
	}
	for _, host := range []string{certHost, "127.0.0.1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: files.Pool}); err != nil {
			t.Errorf("verify for %s against the pool: %v", host, err)
		}
	}
}
