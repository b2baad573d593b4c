package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/dataplane/upstream"
)

// env returns a lookup function over a fixed map, so tests do not depend on
// the process environment.
func env(vars map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	}
}

func mustParse(t *testing.T, text string, vars map[string]string) *Config {
	t.Helper()
	c, err := Parse([]byte(text), "/etc/cutover/cutover.yaml", env(vars))
	if err != nil {
		t.Fatalf("Parse: unexpected problems:\n%v", err)
	}
	return c
}

func problemsOf(t *testing.T, text string, vars map[string]string) []Problem {
	t.Helper()
	c, err := Parse([]byte(text), "cutover.yaml", env(vars))
	if err == nil {
		t.Fatalf("Parse accepted a bad file:\n%s", text)
	}
	if c != nil {
		t.Errorf("Parse returned a Config together with problems")
	}
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error is %T, want *Errors: %v", err, err)
	}
	return errs.Problems
}

const fullFile = `# every key, with values other than the defaults
listen: {http: "127.0.0.1:8080", https: "127.0.0.1:8443"}
tls: {cert: certs/fullchain.pem, key: /etc/ssl/privkey.pem}
state_dir: state
admin: {tcp: "127.0.0.1:9901", token: "${TOKEN}"}
trusted_proxies: ["10.0.0.0/8", 192.168.1.5, "fd00::/8", "::1", 172.16.3.4/12]
log: {access: logs/access.log, format: json, level: debug}
timeouts: {read_header: 5s, idle: 90s, read: 30s, write: 45s, shutdown: 0s}
limits: {max_header_bytes: 16384}
upstream: {connect_timeout: 2s, response_timeout: 30s, read_timeout: 20s, keepalive_timeout: 90s, max_idle_per_target: 0, try_timeout: 2s,
  outlier: {consecutive_failures: 3, base_ejection_time: 5s, max_ejection_time: 1m, max_ejection_percent: 30}}
docker: {network: my-network, host: "unix:///run/docker.sock"}
instance: edge-1
services:
  web:
    hosts: ["Example.COM", "*.example.com"]
    balance: least_conn
    health: {path: /ready, interval: 500ms, timeout: 3s, healthy: 1, unhealthy: 5}
    drain_timeout: 1m
    pools:
      blue:  ["127.0.0.1:9001", "127.0.0.1:9002"]
      green: {targets: ["127.0.0.1:9011"]}
      red:   {containers: [my-blue-server-1, my-blue-server-2], port: 8000}
      gold:  {compose: {project: green, service: web}, port: 8000}
      idle: []
    active: green
  api:
    pools:
      v1: ["[::1]:7000", "localhost:7001"]
`

func TestParseFullFile(t *testing.T) {
	c := mustParse(t, fullFile, map[string]string{"TOKEN": "s3cret"})

	want := &Config{
		Path:     "/etc/cutover/cutover.yaml",
		Listen:   Listen{HTTP: "127.0.0.1:8080", HTTPS: "127.0.0.1:8443"},
		TLS:      TLS{Cert: "/etc/cutover/certs/fullchain.pem", Key: "/etc/ssl/privkey.pem"},
		StateDir: "/etc/cutover/state",
		Admin:    Admin{Socket: "/etc/cutover/state/admin.sock", TCP: "127.0.0.1:9901", Token: "s3cret"},
		TrustedProxies: []netip.Prefix{
			netip.MustParsePrefix("10.0.0.0/8"),
			netip.MustParsePrefix("192.168.1.5/32"),
			netip.MustParsePrefix("fd00::/8"),
			netip.MustParsePrefix("::1/128"),
			netip.MustParsePrefix("172.16.0.0/12"),
		},
		Log: Log{Access: "/etc/cutover/logs/access.log", Format: FormatJSON, Level: "debug"},
		Timeouts: Timeouts{ReadHeader: 5 * time.Second, Idle: 90 * time.Second, Read: 30 * time.Second,
			Write: 45 * time.Second, Shutdown: 0},
		Limits: Limits{MaxHeaderBytes: 16384},
		Upstream: Upstream{ConnectTimeout: 2 * time.Second, ResponseTimeout: 30 * time.Second,
			ReadTimeout: 20 * time.Second, KeepaliveTimeout: 90 * time.Second, MaxIdlePerTarget: 0, TryTimeout: 2 * time.Second,
			Outlier: Outlier{ConsecutiveFailures: 3, BaseEjectionTime: 5 * time.Second, MaxEjectionTime: time.Minute, MaxEjectionPercent: 30}},
		Docker:   Docker{Network: "my-network", Host: "unix:///run/docker.sock"},
		Instance: "edge-1",
		Services: []Service{
			{
				Name:    "web",
				Hosts:   []string{"example.com", "*.example.com"},
				Balance: "least_conn",
				Health: Health{Path: "/ready", Interval: 500 * time.Millisecond, Timeout: 3 * time.Second,
					Healthy: 1, Unhealthy: 5},
				DrainTimeout: time.Minute,
				Pools: []Pool{
					{Name: "blue", Targets: []string{"127.0.0.1:9001", "127.0.0.1:9002"}},
					{Name: "green", Targets: []string{"127.0.0.1:9011"}},
					{Name: "red", Containers: []string{"my-blue-server-1", "my-blue-server-2"}, Port: 8000},
					{Name: "gold", Compose: &ComposeRef{Project: "green", Service: "web"}, Port: 8000},
					{Name: "idle", Targets: []string{}},
				},
				Active: "green",
			},
			{
				Name:         "api",
				Balance:      upstream.DefaultBalance.String(),
				Health:       DefaultHealth(),
				DrainTimeout: 30 * time.Second,
				Pools:        []Pool{{Name: "v1", Targets: []string{"[::1]:7000", "localhost:7001"}}},
				Active:       "v1",
			},
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("parsed config differs\n got: %+v\nwant: %+v", c, want)
	}
	if !c.Services[0].Pools[2].FromDocker() || !c.Services[0].Pools[3].FromDocker() || c.Services[0].Pools[0].FromDocker() {
		t.Errorf("FromDocker wrong for pools %+v", c.Services[0].Pools)
	}
	if s, ok := c.Service("api"); !ok || s.Name != "api" {
		t.Errorf("Service(api) = %v, %v", s, ok)
	}
	if p, ok := c.Services[0].Pool("gold"); !ok || p.Compose.Project != "green" {
		t.Errorf("Pool(gold) = %v, %v", p, ok)
	}
}

func TestParseDefaults(t *testing.T) {
	c := mustParse(t, `
listen: {http: ":8080"}
services:
  web:
    pools:
      blue: ["127.0.0.1:9001"]
      green: []
`, nil)
	want := Default()
	want.Path = "/etc/cutover/cutover.yaml"
	want.Listen.HTTP = ":8080"
	svc := DefaultService("web")
	svc.Pools = []Pool{{Name: "blue", Targets: []string{"127.0.0.1:9001"}}, {Name: "green", Targets: []string{}}}
	svc.Active = "blue" // the first pool when active is omitted
	want.Services = []Service{svc}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("defaults differ\n got: %+v\nwant: %+v", c, want)
	}
	if c.Admin.Socket != "/var/lib/cutover/admin.sock" || c.Log.Access != "-" || c.Log.Format != "combined" ||
		c.Services[0].Health.Path != "/healthz" || c.Timeouts.ReadHeader != 10*time.Second ||
		c.Limits.MaxHeaderBytes != 32768 || c.Upstream.MaxIdlePerTarget != 64 {
		t.Errorf("a default is not the documented one: %+v", c)
	}
}

func TestDefaultAndValidate(t *testing.T) {
	c := Default()
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "services: no services") ||
		!strings.Contains(err.Error(), "listen: neither listen.http nor listen.https") {
		t.Fatalf("Validate of an empty Default() = %v, want problems about listen and services", err)
	}
	c.Listen.HTTP = "127.0.0.1:8080"
	s := DefaultService("demo")
	s.Pools = []Pool{{Name: "blue", Targets: []string{"127.0.0.1:9001"}}, {Name: "green", Targets: []string{"127.0.0.1:9002"}}}
	s.Active = "blue"
	c.Services = append(c.Services, s)
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate of a good built config: %v", err)
	}

	c.Services[0].Hosts = []string{"Demo.Example"}
	c.Services[0].Pools[1].Targets = []string{"127.0.0.1:9001"}
	err := c.Validate()
	var errs *Errors
	if !errors.As(err, &errs) || len(errs.Problems) != 2 {
		t.Fatalf("Validate = %v, want 2 problems", err)
	}
	if p := errs.Problems[0]; p.Key != "services.demo.hosts[0]" || !strings.Contains(p.Msg, "lowercase") {
		t.Errorf("first problem = %+v, want upper-case host", p)
	}
	if p := errs.Problems[1]; p.Key != "services.demo.pools.green.targets[0]" || !strings.Contains(p.Msg, "also in pool blue") {
		t.Errorf("second problem = %+v, want duplicate target", p)
	}
}

func TestEnvExpansion(t *testing.T) {
	text := `listen: {http: "${ADDR}"}
admin: {socket: "${SOCK:-/run/cutover.sock}", tcp: "${ADMIN:-127.0.0.1:9901}", token: "pa$$word$x"}
# a commented-out ${UNSET} needs no value
services:
  web:
    hosts: ["${HOST:-localhost}"]
    pools: {blue: ["${TARGET}"]}
`
	c := mustParse(t, text, map[string]string{
		"ADDR":   "127.0.0.1:8081",
		"HOST":   "", // empty: the default applies
		"ADMIN":  "127.0.0.1:9999",
		"TARGET": "10.1.2.3:80",
	})
	if c.Listen.HTTP != "127.0.0.1:8081" {
		t.Errorf("listen.http = %q", c.Listen.HTTP)
	}
	if c.Admin.Socket != "/run/cutover.sock" || c.Admin.TCP != "127.0.0.1:9999" {
		t.Errorf("admin = %+v, want default socket and set tcp", c.Admin)
	}
	if c.Admin.Token != "pa$word$x" {
		t.Errorf("token = %q, want $$ to become $ and a lone $ kept", c.Admin.Token)
	}
	if got := c.Services[0].Hosts; !reflect.DeepEqual(got, []string{"localhost"}) {
		t.Errorf("hosts = %q, want the default for an empty variable", got)
	}
	if got := c.Services[0].Pools[0].Targets; !reflect.DeepEqual(got, []string{"10.1.2.3:80"}) {
		t.Errorf("targets = %q", got)
	}
}

func TestEnvUnsetIsAProblem(t *testing.T) {
	ps := problemsOf(t, `listen: {http: ":8080"}
services:
  web:
    hosts: ["${NGINX_HOST}"]
    pools: {blue: ["${T1}", "127.0.0.1:${PORT:-9002}"]}
`, nil)
	// The empty host and target that follow from the missing variables are
	// not reported again.
	want := []Problem{
		{File: "cutover.yaml", Line: 4, Key: "${NGINX_HOST}"},
		{File: "cutover.yaml", Line: 5, Key: "${T1}"},
	}
	if len(ps) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(ps), len(want), (&Errors{ps}).Error())
	}
	for i, w := range want {
		p := ps[i]
		if p.File != w.File || p.Line != w.Line || p.Key != w.Key {
			t.Errorf("problem %d = %+v, want %+v", i, p, w)
		}
		name := strings.Trim(w.Key, "${}")
		if !strings.Contains(p.Msg, "environment variable "+name+" is not set") || !strings.Contains(p.Msg, "${"+name+":-") {
			t.Errorf("problem %d message %q does not name the variable and the fix", i, p.Msg)
		}
	}
	if got := ps[0].String(); got != "cutover.yaml:4: ${NGINX_HOST}: environment variable NGINX_HOST is not set — set it, or give a default with ${NGINX_HOST:-value}" {
		t.Errorf("String() = %q", got)
	}
}

func TestEnvBadSyntax(t *testing.T) {
	ps := problemsOf(t, "listen: {http: \"${1X}\"}\nstate_dir: \"${OPEN\"\n", nil)
	if len(ps) < 2 || ps[0].Line != 1 || !strings.Contains(ps[0].Msg, "not a variable name") ||
		ps[1].Line != 2 || !strings.Contains(ps[1].Msg, "not closed") {
		t.Fatalf("problems = %v", (&Errors{ps}).Error())
	}
}

func TestEnvValueWithNewlineKeepsLines(t *testing.T) {
	// A value spanning lines must not shift the lines of later problems.
	ps := problemsOf(t, `listen: {http: ":8080"}
admin: {token: "${TOKEN}"}
services:
  web:
    balance: random
    pools: {blue: ["127.0.0.1:9001"]}
`, map[string]string{"TOKEN": "line one\nline two\nline three"})
	if len(ps) != 1 || ps[0].Line != 5 || ps[0].Key != "services.web.balance" {
		t.Fatalf("problems = %v, want one at line 5", (&Errors{ps}).Error())
	}
}

// base is a valid file that the error cases below change. Line numbers:
// 1 listen, 2 services, 3 web, 4 pools, 5 blue.
const base = `listen: {http: "127.0.0.1:8080"}
services:
  web:
    pools:
      blue: ["127.0.0.1:9001"]
`

// httpsBase is base with both listeners (line 1), for the tls.acme cases.
var httpsBase = `listen: {http: "127.0.0.1:8080", https: "127.0.0.1:8443"}` + "\n" + base[33:]

func TestProblems(t *testing.T) {
	cases := []struct {
		name string
		text string
		line int
		key  string
		msg  []string // substrings of the message, the fix included
	}{
		{"unknown key with hint", base + "servics: {}\n", 6, "servics", []string{`did you mean "services"`}},
		{"unknown nested key with hint", base + "    helth: {path: /}\n", 6, "services.web.helth", []string{`did you mean "health"`}},
		{"unknown key without hint", base + "frobnicate: 1\n", 6, "frobnicate", []string{"unknown key", "keys allowed here: listen, tls"}},
		{"duplicate key", base + "listen: {http: \":9\"}\n", 6, "listen", []string{"set twice (first at line 1)", "keep one"}},
		{"wrong type string", `listen: {http: ["a"]}` + base[len(`listen: {http: "127.0.0.1:8080"}`):], 1, "listen.http", []string{"must be a single value, not a list"}},
		{"wrong type mapping", base + "log: text\n", 6, "log", []string{"must be a mapping", `not the text "text"`}},
		{"wrong type list", base + "trusted_proxies: 10.0.0.0/8\n", 6, "trusted_proxies", []string{"must be a list"}},
		{"wrong type int", base + "limits: {max_header_bytes: big}\n", 6, "limits.max_header_bytes", []string{"must be a whole number"}},
		{"wrong type bool", base + "tls: {self_signed: yes, hosts: [a]}\n", 6, "tls.self_signed", []string{"must be true or false"}},
		{"duration without unit", base + "timeouts: {idle: 30}\n", 6, "timeouts.idle", []string{`"30" has no unit`, "30s"}},
		{"bad duration", base + "upstream: {connect_timeout: soon}\n", 6, "upstream.connect_timeout", []string{`"soon" is not a duration`, "500ms"}},
		{"zero timeout", base + "timeouts: {read_header: 0s}\n", 6, "timeouts.read_header", []string{"must be more than 0", "10s"}},
		{"negative drain", base + "    drain_timeout: -1s\n", 6, "services.web.drain_timeout", []string{"must not be negative"}},
		{"close spread longer than the drain", base + "    drain_timeout: 5s\n    drain_close_spread: 10s\n", 7, "services.web.drain_close_spread", []string{"longer than drain_timeout (5s)", "at most 5s"}},
		{"negative close spread", base + "    drain_close_spread: -1s\n", 6, "services.web.drain_close_spread", []string{"must not be negative", "a fifth of drain_timeout (6s)"}},
		{"address without port", "listen: {http: \"127.0.0.1\"}\n" + base[33:], 1, "listen.http", []string{"has no port", "host:port"}},
		{"address port range", "listen: {http: \"127.0.0.1:0\"}\n" + base[33:], 1, "listen.http", []string{"from 1 to 65535"}},
		{"address bad host", "listen: {http: \"bad host:80\"}\n" + base[33:], 1, "listen.http", []string{"not a valid host name"}},
		{"target without host", strings.Replace(base, `"127.0.0.1:9001"`, `":9001"`, 1), 5, "services.web.pools.blue[0]", []string{"has no host", "127.0.0.1:9001"}},
		{"target port", strings.Replace(base, `9001`, `70000`, 1), 5, "services.web.pools.blue[0]", []string{"from 1 to 65535"}},
		{"bad cidr", base + "trusted_proxies: [10.0.0.0/8, 10.0.0.0/33]\n", 6, "trusted_proxies[1]", []string{"not an IP address or CIDR", "10.0.0.0/8"}},
		{"bad engine", "listen: {http: \"127.0.0.1:8080\", engine: threads}\n" + base[33:], 1, "listen.engine", []string{`"threads" is not an engine`, "loops", "goroutines"}},
		{"bad balance", base + "    balance: random\n", 6, "services.web.balance", []string{`"random" is not a balance policy`, "round_robin or least_conn"}},
		{"duplicate target in pool", strings.Replace(base, `["127.0.0.1:9001"]`, `["127.0.0.1:9001", "127.0.0.1:9001"]`, 1), 5, "services.web.pools.blue[1]", []string{"listed twice", "remove one"}},
		{"duplicate target across pools", base + "      green: {targets: [\"127.0.0.1:9002\", \"127.0.0.1:9001\"]}\n", 6, "services.web.pools.green.targets[1]", []string{"also in pool blue", "remove it from one"}},
		{"active missing", base + "    active: green\n", 6, "services.web.active", []string{`names pool "green"`, "use one of: blue"}},
		{"active empty", base + "      green: []\n    active: green\n", 7, "services.web.active", []string{"active pool green has no targets"}},
		{"first pool empty", "listen: {http: \":80\"}\nservices:\n  web:\n    pools:\n      blue: []\n      green: [\"127.0.0.1:9001\"]\n", 5, "services.web.pools.blue", []string{"active pool blue has no targets"}},
		{"service without pools", base + "  api:\n    hosts: [api.example.com]\n", 6, "services.api.pools", []string{"has no pools", "add at least one"}},
		{"service with empty pools", base + "  api:\n    hosts: [api.example.com]\n    pools: {}\n", 8, "services.api.pools", []string{"has no pools"}},
		{"same host twice", "listen: {http: \":80\"}\nservices:\n  a:\n    hosts: [x.example.com]\n    pools: {blue: [\"127.0.0.1:1\"]}\n  b:\n    hosts: [y.example.com, X.example.com]\n    pools: {blue: [\"127.0.0.1:2\"]}\n",
			7, "services.b.hosts[1]", []string{`"x.example.com" is already routed to service a`}},
		{"two default services", base + "  api:\n    pools: {blue: [\"127.0.0.1:9002\"]}\n", 6, "services.api.hosts", []string{"default service", "web already is", "give one of them hosts"}},
		{"bad wildcard", base + "    hosts: [\"www.*.example.com\"]\n", 6, "services.web.hosts[0]", []string{"*.example.com"}},
		{"host with port", base + "    hosts: [\"example.com:8080\"]\n", 6, "services.web.hosts[0]", []string{"has a port", "remove :8080"}},
		{"https without tls", "listen: {https: \"127.0.0.1:8443\"}\n" + base[33:], 1, "listen.https", []string{"no tls section", "self_signed"}},
		{"tls files and self_signed", base + "tls: {cert: a.pem, key: b.pem, self_signed: true}\n", 6, "tls.self_signed", []string{"not both"}},
		{"tls neither", base + "tls: {hosts: [example.com]}\n", 6, "tls", []string{"neither cert and key", "self_signed"}},
		{"tls cert without key", base + "tls: {cert: a.pem}\n", 6, "tls.key", []string{"missing while tls.cert is set"}},
		{"self_signed without hosts", base + "tls:\n  self_signed: true\n", 6, "tls.hosts", []string{"self_signed needs the names", "tls.hosts"}},
		{"admin tcp without token", base + "admin: {tcp: \"127.0.0.1:9901\"}\n", 6, "admin.tcp", []string{"without admin.token", "admin.token:"}},
		{"metrics on a public listener", base + "metrics: {listen: \"127.0.0.1:8080\"}\n", 6, "metrics.listen", []string{"same address as a public listener", "127.0.0.1:9100"}},
		{"metrics bad address", base + "metrics: {listen: \"nowhere\"}\n", 6, "metrics.listen", []string{"nowhere"}},
		{"health threshold", base + "    health: {healthy: 0}\n", 6, "services.web.health.healthy", []string{"at least 1"}},
		{"health unhealthy", base + "    health:\n      unhealthy: -2\n", 7, "services.web.health.unhealthy", []string{"at least 1"}},
		{"health timeout", base + "    health: {timeout: 0s}\n", 6, "services.web.health.timeout", []string{"more than 0"}},
		{"health path", base + "    health: {path: healthz}\n", 6, "services.web.health.path", []string{"must start with /"}},
		{"log format", base + "log: {format: text}\n", 6, "log.format", []string{`"text" is not a log format`, "combined or json"}},
		{"log level", base + "log: {level: loud}\n", 6, "log.level", []string{"debug, info, warn or error"}},
		{"no listeners", "listen: {}\n" + base[33:], 1, "listen", []string{"neither listen.http nor listen.https", "listen: {http:"}},
		{"no listen section", base[33:], 1, "listen", []string{"neither listen.http nor listen.https"}},
		{"no services", "listen: {http: \":80\"}\n", 1, "services", []string{"no services are configured"}},
		{"bad service name", strings.Replace(base, "web:", "Web.App:", 1), 3, "services.Web.App", []string{"not a valid service name", "lowercase letters"}},
		{"bad pool name", strings.Replace(base, "blue:", "-blue:", 1), 5, "services.web.pools.-blue", []string{"not a valid pool name"}},
		{"docker pool without port", base + "      red: {containers: [c1]}\ndocker: {network: n}\n", 6, "services.web.pools.red.port", []string{"is missing", "port: 8000"}},
		{"docker pool without network", base + "      red: {compose: {project: p, service: s}, port: 8000}\n", 6, "services.web.pools.red", []string{"docker.network is not set", "docker: {network: NAME}"}},
		{"docker pool port range", base + "      red: {containers: [c1], port: 70000}\ndocker: {network: n}\n", 6, "services.web.pools.red.port", []string{"from 1 to 65535"}},
		{"compose without service", base + "      red: {compose: {project: p}, port: 8000}\ndocker: {network: n}\n", 6, "services.web.pools.red.compose.service", []string{"is missing"}},
		{"empty containers", base + "      red: {containers: [], port: 8000}\ndocker: {network: n}\n", 6, "services.web.pools.red.containers", []string{"is empty", "targets: []"}},
		{"two member kinds", base + "      red: {targets: [\"127.0.0.1:9009\"], containers: [c1], port: 8000}\ndocker: {network: n}\n", 6, "services.web.pools.red", []string{"exactly one"}},
		{"port with targets", base + "      red: {targets: [\"127.0.0.1:9009\"], port: 8000}\n", 6, "services.web.pools.red.port", []string{"applies only to containers and compose"}},
		{"pool wrong type", base + "      red: 5\n", 6, "services.web.pools.red", []string{"must be a list of targets or a mapping"}},
		{"max header bytes", base + "limits: {max_header_bytes: 10}\n", 6, "limits.max_header_bytes", []string{"from 1024 to 1048576"}},
		{"docker host", base + "docker: {host: /var/run/docker.sock}\n", 6, "docker.host", []string{"unix:///var/run/docker.sock"}},
		{"docker host and hosts", base + "docker:\n  host: unix:///var/run/docker.sock\n  hosts: [\"tcp://10.0.0.6:2375\"]\n", 8, "docker.hosts", []string{"exclusive", "keep docker.hosts"}},
		{"docker hosts bad address", base + "docker:\n  hosts: [\"unix:///var/run/docker.sock\", \"10.0.0.6:2375\"]\n", 7, "docker.hosts[1]", []string{`"10.0.0.6:2375" is not a Docker Engine address`, "tcp://"}},
		{"docker hosts twice", base + "docker:\n  hosts:\n    - tcp://10.0.0.6:2375\n    - tcp://10.0.0.6:2375\n", 9, "docker.hosts[1]", []string{"listed twice", "remove one"}},
		{"merge key", base + "    health:\n      <<: {path: /}\n", 7, "services.web.health.<<", []string{"merge keys are not supported"}},
		{"unknown key with anchor", base + "x: &h {path: /}\n", 6, "x", []string{"unknown key"}},
		{"yaml syntax", base + "  bad: [unclosed\n", 6, "", []string{"invalid YAML", "did not find expected"}},
		{"yaml scanner error", base + "  bad: a: b\n", 6, "", []string{"invalid YAML", "fix the YAML syntax at this line"}},
		{"tab indentation", base + "\tweb2: {}\n", 6, "", []string{"invalid YAML", "spaces"}},
		{"empty file", "# nothing here\n", 1, "", []string{"no settings", "listen: and services:"}},
		{"certificates not a list", base + "tls: {certificates: a.pem}\n", 6, "tls.certificates", []string{"must be a list of certificate pairs"}},
		{"certificates key missing", base + "tls:\n  certificates:\n    - {cert: a.pem, key: a.key}\n    - {cert: b.pem}\n", 9, "tls.certificates[1].cert", []string{"has no key beside it", "key: FILE"}},
		{"certificates unknown key", base + "tls:\n  certificates:\n    - {cert: a.pem, kee: a.key}\n", 8, "tls.certificates[0].kee", []string{`did you mean "key"`}},
		{"certificates and self_signed", base + "tls: {certificates: [{cert: a.pem, key: a.key}], self_signed: true, hosts: [a]}\n", 6, "tls.self_signed", []string{"not both"}},
		{"acme without https", base + "tls: {acme: {email: ops@example.com, hosts: [example.com]}}\n", 6, "tls.acme", []string{"needs listen.https", "https:"}},
		{"acme http-01 without http", "listen: {https: \"127.0.0.1:8443\"}\n" + base[33:] + "tls:\n  acme:\n    hosts: [example.com]\n", 7, "tls.acme.challenge", []string{"listen.http is not set", "tls-alpn-01"}},
		{"acme bad challenge", httpsBase + "tls:\n  acme:\n    hosts: [example.com]\n    challenge: dns-01\n", 9, "tls.acme.challenge", []string{`"dns-01" is not a challenge`, "http-01", "tls-alpn-01"}},
		{"acme wildcard host", httpsBase + "tls:\n  acme:\n    hosts: [\"*.example.com\"]\n", 8, "tls.acme.hosts[0]", []string{"wildcard", "dns-01", "tls.certificates"}},
		{"acme ip host", httpsBase + "tls:\n  acme:\n    hosts: [127.0.0.1]\n", 8, "tls.acme.hosts[0]", []string{"IP address", "DNS name"}},
		{"acme duplicate host", httpsBase + "tls:\n  acme:\n    hosts: [a.example.com, a.example.com]\n", 8, "tls.acme.hosts[1]", []string{"listed twice", "remove one"}},
		{"acme no hosts to default to", httpsBase + "tls:\n  acme: {email: ops@example.com}\n", 7, "tls.acme.hosts", []string{"no service has an exact host", "tls.acme.hosts: [example.com]"}},
		{"acme directory not https", httpsBase + "tls:\n  acme:\n    hosts: [example.com]\n    directory: http://ca.example/dir\n", 9, "tls.acme.directory", []string{"not an https:// URL", "letsencrypt"}},
		{"acme bad email", httpsBase + "tls:\n  acme:\n    hosts: [example.com]\n    email: ops\n", 9, "tls.acme.email", []string{"not an email address"}},
		{"acme unknown key", httpsBase + "tls:\n  acme:\n    hosts: [example.com]\n    challange: http-01\n", 9, "tls.acme.challange", []string{`did you mean "challenge"`}},
		{"long socket", base + "admin: {socket: /" + strings.Repeat("s", 120) + "}\n", 6, "admin.socket", []string{"at most 107"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ps := problemsOf(t, tc.text, nil)
			for _, p := range ps {
				if p.File != "cutover.yaml" {
					t.Errorf("problem %+v has file %q", p, p.File)
				}
				if !strings.Contains(p.Msg, " — ") {
					t.Errorf("problem %q does not say how to fix it", p)
				}
			}
			for _, p := range ps {
				if p.Line != tc.line || p.Key != tc.key {
					continue
				}
				for _, m := range tc.msg {
					if !strings.Contains(p.Msg, m) {
						t.Errorf("message %q lacks %q", p.Msg, m)
					}
				}
				return
			}
			t.Errorf("no problem at line %d key %q; got:\n%v", tc.line, tc.key, (&Errors{ps}).Error())
		})
	}
}

func TestManyProblemsAtOnce(t *testing.T) {
	text := `listen: {http: "127.0.0.1:8080"}
lsiten: {}
timeouts: {idle: 30}
services:
  web:
    balance: random
    pools:
      blue: ["127.0.0.1:9001", "127.0.0.1:9001"]
    active: green
  api:
    pools: {v1: ["localhost"]}
`
	ps := problemsOf(t, text, nil)
	type at struct {
		line int
		key  string
	}
	var got []at
	for _, p := range ps {
		got = append(got, at{p.Line, p.Key})
	}
	want := []at{
		{2, "lsiten"},
		{3, "timeouts.idle"},
		{6, "services.web.balance"},
		{8, "services.web.pools.blue[1]"},
		{9, "services.web.active"},
		{10, "services.api.hosts"},
		{11, "services.api.pools.v1[0]"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("problems (line, key):\n got %v\nwant %v\n%v", got, want, (&Errors{ps}).Error())
	}
	lines := strings.Split((&Errors{ps}).Error(), "\n")
	if len(lines) != len(want) || !strings.HasPrefix(lines[0], "cutover.yaml:2: lsiten: unknown key — ") {
		t.Errorf("Error() = %q, want one problem per line as FILE:LINE: KEY: message", lines)
	}
}

func TestConsequencesNotRepeated(t *testing.T) {
	// A listener with the wrong type is one problem, not also "no listener".
	ps := problemsOf(t, "listen: {http: 8080.5x}\n"+base[33:], nil)
	if len(ps) != 1 || ps[0].Key != "listen.http" {
		t.Errorf("got %v", (&Errors{ps}).Error())
	}
	ps = problemsOf(t, "listen: {http: [a]}\n"+base[33:], nil)
	if len(ps) != 1 || ps[0].Key != "listen.http" {
		t.Errorf("got %v", (&Errors{ps}).Error())
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cutover.yaml")
	text := base + "state_dir: run\nlog: {access: \"off\"}\ntls: {self_signed: true, hosts: [Example.com]}\n"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path, env(nil))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.Path != path || c.StateDir != filepath.Join(dir, "run") || c.Admin.Socket != filepath.Join(dir, "run", "admin.sock") {
		t.Errorf("paths not resolved against the file's folder: %+v", c)
	}
	if c.Log.Access != AccessOff || !reflect.DeepEqual(c.TLS.Hosts, []string{"example.com"}) {
		t.Errorf("log/tls = %+v %+v", c.Log, c.TLS)
	}

	_, err = Load(filepath.Join(dir, "missing.yaml"), nil)
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load of a missing file = %v, want ErrNotExist", err)
	}
}

func TestTLSCertificatesAndACME(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cutover.yaml")
	text := `listen: {http: "127.0.0.1:8080", https: "127.0.0.1:8443"}
services:
  web:
    hosts: [Example.com, "*.example.com", www.example.com]
    pools: {blue: ["127.0.0.1:9001"]}
  api:
    hosts: [api.example.com, www.example.com.test, 10.0.0.1]
    pools: {blue: ["127.0.0.1:9002"]}
tls:
  cert: default.pem
  key: default.key
  certificates:
    - {cert: certs/a.pem, key: /etc/a.key}
  acme:
    email: ops@example.com
    ca_roots: pebble.pem
    storage: shared/acme
`
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path, env(nil))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := []CertPair{{Cert: filepath.Join(dir, "certs/a.pem"), Key: "/etc/a.key"}}
	if !reflect.DeepEqual(c.TLS.Certificates, want) || c.TLS.Cert != filepath.Join(dir, "default.pem") {
		t.Errorf("certificates = %+v, cert %q", c.TLS.Certificates, c.TLS.Cert)
	}
	a := c.TLS.ACME
	if a == nil || a.Directory != DefaultACMEDirectory || a.Challenge != ChallengeHTTP01 ||
		a.CARoots != filepath.Join(dir, "pebble.pem") || a.Email != "ops@example.com" || a.Storage != filepath.Join(dir, "shared/acme") {
		t.Fatalf("acme = %+v", a)
	}
	// Wildcards and IP addresses cannot be had by http-01/tls-alpn-01;
	// the rest in file order, once each.
	if got := c.ACMEHosts(); !reflect.DeepEqual(got, []string{"example.com", "www.example.com", "api.example.com", "www.example.com.test"}) {
		t.Errorf("ACMEHosts = %q", got)
	}

	c2, err := Parse([]byte(httpsBase+"tls:\n  acme:\n    hosts: [A.example.com]\n    challenge: tls-alpn-01\n"), "", env(nil))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got := c2.ACMEHosts(); !reflect.DeepEqual(got, []string{"a.example.com"}) || c2.TLS.ACME.Challenge != ChallengeTLSALPN01 {
		t.Errorf("explicit hosts = %q, challenge %q", got, c2.TLS.ACME.Challenge)
	}
	if Default().ACMEHosts() != nil {
		t.Error("ACMEHosts without tls.acme is not nil")
	}
}

func TestParseWithoutPathKeepsRelativePaths(t *testing.T) {
	c, err := Parse([]byte(base+"state_dir: rel\n"), "", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.StateDir != "rel" || c.Admin.Socket != filepath.Join("rel", "admin.sock") {
		t.Errorf("state_dir %q socket %q", c.StateDir, c.Admin.Socket)
	}
	_, err = Parse([]byte(base+"log: {level: loud}\n"), "", env(nil))
	if err == nil || err.Error() != `line 6: log.level: "loud" is not a log level — use debug, info, warn or error` {
		t.Errorf("error without a file = %v", err)
	}
}

func TestSuggest(t *testing.T) {
	known := []string{"listen", "tls", "state_dir", "services", "self_signed", "targets", "containers"}
	for in, want := range map[string]string{
		"lsiten": "listen", "Listen": "listen", "servces": "services", "self-signed": "self_signed",
		"target": "targets", "container": "containers", "statedir": "state_dir", "zzz": "", "tcp": "",
	} {
		if got := suggest(in, known); got != want {
			t.Errorf("suggest(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestValidateTargetAndName(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:80": true, "[::1]:8080": true, "app_1:8000": true, "host": false, ":80": false,
		"1.2.3.4:0": false, "a:65536": false, "::1:80": false,
	} {
		if err := ValidateTarget(addr); (err == nil) != ok {
			t.Errorf("ValidateTarget(%q) = %v, want ok=%v", addr, err, ok)
		}
	}
	for name, ok := range map[string]bool{"blue": true, "v2-canary_1": true, "0": true, "": false, "Blue": false, "-x": false, "a.b": false, strings.Repeat("a", 64): false} {
		if ValidName(name) != ok {
			t.Errorf("ValidName(%q) = %v", name, !ok)
		}
	}
}

func TestAliasesAreFollowed(t *testing.T) {
	c := mustParse(t, `listen: {http: ":8080"}
services:
  web:
    hosts: [a.example]
    health: &checks {path: /up, healthy: 4}
    pools: {blue: ["127.0.0.1:9001"]}
  api:
    health: *checks
    pools: {blue: ["127.0.0.1:9002"]}
`, nil)
	for _, s := range c.Services {
		if s.Health.Path != "/up" || s.Health.Healthy != 4 || s.Health.Unhealthy != 3 {
			t.Errorf("service %s health = %+v", s.Name, s.Health)
		}
	}
}

// TestCloseSpread: drain_close_spread as set, or a fifth of drain_timeout.
func TestCloseSpread(t *testing.T) {
	for _, c := range []struct {
		text string
		want time.Duration
	}{
		{"", 6 * time.Second},
		{"    drain_timeout: 10s\n", 2 * time.Second},
		{"    drain_timeout: 10s\n    drain_close_spread: 4s\n", 4 * time.Second},
		{"    drain_timeout: 0s\n", 0},
	} {
		cfg, err := Parse([]byte(base+c.text), "cutover.yaml", env(nil))
		if err != nil {
			t.Fatalf("%q: %v", c.text, err)
		}
		if got := cfg.Services[0].CloseSpread(); got != c.want {
			t.Errorf("%q: CloseSpread = %s, want %s", c.text, got, c.want)
		}
	}
}
