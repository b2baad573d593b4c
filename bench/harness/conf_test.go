package main

import (
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
