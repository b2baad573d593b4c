package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cutover/cutover/internal/dataplane/upstream"
)

// maxSocketPath is the longest Unix socket path Linux accepts (sun_path is
// 108 bytes including the terminating NUL).
const maxSocketPath = 107

// Validate checks a configuration built in code (Default plus services made
// with DefaultService) by the rules Parse applies to a file. It neither fills
// defaults nor changes c. The error is an *Errors, with no line numbers.
func (c *Config) Validate() error {
	var ps []Problem
	ch := checker{
		c:       c,
		present: func(string) bool { return false },
		report: func(key string, _ bool, msg string) {
			ps = append(ps, Problem{File: c.Path, Key: key, Msg: msg})
		},
	}
	ch.run()
	if len(ps) == 0 {
		return nil
	}
	return &Errors{Problems: ps}
}

// Validate checks a store.etcd block built in code (the CLI's --etcd) by
// the rules Parse applies to a file.
func (e *Etcd) Validate() error {
	c := &Config{Instance: "cli", Store: &Store{Etcd: e}}
	var ps []Problem
	ch := checker{
		c:       c,
		present: func(string) bool { return false },
		report: func(key string, _ bool, msg string) {
			ps = append(ps, Problem{Key: key, Msg: msg})
		},
	}
	ch.store()
	if len(ps) == 0 {
		return nil
	}
	return &Errors{Problems: ps}
}

// ValidName reports whether s can name a service or pool: lowercase letters,
// digits, '-' and '_', starting with a letter or digit, at most 63 bytes.
// Names appear in admin URLs and file names, hence the strict form.
func ValidName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '-' || c == '_') && i > 0:
		default:
			return false
		}
	}
	return true
}

// ValidateTarget checks a target address (host:port with a host and a port
// from 1 to 65535), e.g. one given to `cutover deploy --target`.
func ValidateTarget(addr string) error {
	if msg := addrProblem(addr, true); msg != "" {
		return errors.New(msg)
	}
	return nil
}

// checker applies the rules that concern values and the relations between
// them to a finished Config. Keys it reports are canonical dotted paths; the
// report function places them (Parse) or not (Validate).
type checker struct {
	c       *Config
	present func(key string) bool
	// report records a problem; aggregate marks problems about a whole
	// section, which Parse drops when something inside it was already
	// reported.
	report func(key string, aggregate bool, msg string)
}

func (ch *checker) add(key, msg string) { ch.report(key, false, msg) }

func (ch *checker) addf(key, format string, args ...any) {
	ch.report(key, false, fmt.Sprintf(format, args...))
}

func (ch *checker) run() {
	ch.listen()
	ch.tls()
	ch.files()
	ch.store()
	ch.log()
	ch.limits()
	ch.services()
}

func (ch *checker) listen() {
	l := ch.c.Listen
	if l.HTTP == "" && l.HTTPS == "" {
		ch.report("listen", true, `neither listen.http nor listen.https is set — add e.g. listen: {http: "127.0.0.1:8080"}`)
	}
	if l.HTTP != "" {
		if msg := addrProblem(l.HTTP, false); msg != "" {
			ch.add("listen.http", msg)
		}
	}
	if l.HTTPS != "" {
		if msg := addrProblem(l.HTTPS, false); msg != "" {
			ch.add("listen.https", msg)
		} else if l.HTTPS == l.HTTP {
			ch.add("listen.https", "is the same address as listen.http — give HTTPS its own port, e.g. 127.0.0.1:8443")
		}
	}
	switch l.Engine {
	case "", EngineLoops, EngineGoroutines:
	default:
		ch.addf("listen.engine", "%q is not an engine — use %s (event loops, the default) or %s (a goroutine per connection)", l.Engine, EngineLoops, EngineGoroutines)
	}
	if a := ch.c.Admin.TCP; a != "" && (a == l.HTTP || a == l.HTTPS) {
		ch.add("admin.tcp", "is the same address as a public listener — give the admin API its own address, e.g. 127.0.0.1:9901")
	}
	if m := ch.c.Metrics.Listen; m != "" {
		switch {
		case addrProblem(m, false) != "":
			ch.add("metrics.listen", addrProblem(m, false))
		case m == l.HTTP || m == l.HTTPS:
			ch.add("metrics.listen", "is the same address as a public listener — metrics are never served to the public; give them their own address, e.g. 127.0.0.1:9100")
		case m == ch.c.Admin.TCP:
			ch.add("metrics.listen", "is the same address as admin.tcp — give the metrics listener its own address, e.g. 127.0.0.1:9100")
		}
	}
}

func (ch *checker) tls() {
	t := ch.c.TLS
	files := t.Cert != "" || t.Key != ""
	others := len(t.Certificates) > 0 || t.ACME != nil
	switch {
	case files && t.SelfSigned:
		ch.add("tls.self_signed", "is set together with tls.cert/tls.key — use either the certificate files or self_signed: true, not both")
	case t.SelfSigned && len(t.Certificates) > 0:
		ch.add("tls.self_signed", "is set together with tls.certificates — use either the certificate files or self_signed: true, not both")
	case t.Cert != "" && t.Key == "":
		ch.add("tls.key", "is missing while tls.cert is set — add tls.key: FILE, the certificate's private key")
	case t.Key != "" && t.Cert == "":
		ch.add("tls.cert", "is missing while tls.key is set — add tls.cert: FILE, the certificate (chain)")
	case !files && !t.SelfSigned && !others:
		if ch.present("tls") || len(t.Hosts) > 0 {
			ch.report("tls", true, "sets neither cert and key, certificates, acme nor self_signed — add tls.cert and tls.key, tls.acme: {email: you@example.com}, or self_signed: true with hosts")
		} else if ch.c.Listen.HTTPS != "" {
			ch.add("listen.https", "needs a certificate, but there is no tls section — add tls: {cert: FILE, key: FILE}, tls: {acme: {email: you@example.com}} or tls: {self_signed: true, hosts: [example.com]}")
		}
	}
	if t.SelfSigned && !files && len(t.Hosts) == 0 {
		ch.add("tls.hosts", `is empty, but self_signed needs the names to put in the certificate — add e.g. tls.hosts: ["example.com"]`)
	}
	for i, h := range t.Hosts {
		if msg := hostProblem(h, true); msg != "" {
			ch.add(fmt.Sprintf("tls.hosts[%d]", i), msg)
		}
	}
	for i, pr := range t.Certificates {
		k := fmt.Sprintf("tls.certificates[%d]", i)
		switch {
		case pr.Cert == "" && pr.Key == "":
			ch.add(k, "names neither cert nor key — write {cert: FILE, key: FILE}, or remove the entry")
		case pr.Cert == "":
			ch.add(k+".key", "has no cert beside it — add cert: FILE, the certificate (chain) for this key")
		case pr.Key == "":
			ch.add(k+".cert", "has no key beside it — add key: FILE, the certificate's private key")
		}
	}
	if t.ACME != nil {
		ch.acme()
	}
}

// acme checks tls.acme.
func (ch *checker) acme() {
	a := ch.c.TLS.ACME
	l := ch.c.Listen
	if l.HTTPS == "" {
		ch.add("tls.acme", "needs listen.https, where the certificates are served — add e.g. listen: {https: \":443\"}")
	}
	switch a.Challenge {
	case "", ChallengeHTTP01:
		if l.HTTP == "" {
			ch.add("tls.acme.challenge", "is http-01, which the CA checks on port 80 through listen.http, but listen.http is not set — add listen: {http: \":80\"}, or use challenge: tls-alpn-01 (checked on port 443)")
		}
	case ChallengeTLSALPN01:
	default:
		ch.addf("tls.acme.challenge", "%q is not a challenge cutover answers — use %s (on listen.http, port 80) or %s (on listen.https, port 443)", a.Challenge, ChallengeHTTP01, ChallengeTLSALPN01)
	}
	if a.Directory != "" {
		if u, err := url.Parse(a.Directory); err != nil || u.Scheme != "https" || u.Host == "" {
			ch.addf("tls.acme.directory", "%q is not an https:// URL — give the CA's directory URL, e.g. %s (the default)", a.Directory, DefaultACMEDirectory)
		}
	}
	if a.Email != "" && (!strings.Contains(a.Email, "@") || strings.ContainsAny(a.Email, " \t<>")) {
		ch.addf("tls.acme.email", "%q is not an email address — write e.g. ops@example.com, or leave it out", a.Email)
	}
	if a.Hosts == nil {
		if len(ch.c.ACMEHosts()) == 0 {
			ch.add("tls.acme.hosts", "is not set and no service has an exact host to default to — add tls.acme.hosts: [example.com], or hosts: to a service")
		}
		return
	}
	if len(a.Hosts) == 0 {
		ch.add("tls.acme.hosts", "is empty — list the names to get certificates for, e.g. [example.com], or leave it out for every service host")
	}
	seen := map[string]int{}
	for i, h := range a.Hosts {
		k := fmt.Sprintf("tls.acme.hosts[%d]", i)
		if msg := hostProblem(h, true); msg != "" {
			ch.add(k, msg)
			continue
		}
		if strings.HasPrefix(h, "*.") {
			ch.addf(k, "%q is a wildcard, which needs the dns-01 challenge that cutover does not answer — list the names (e.g. www%s), or use a wildcard certificate from a file in tls.certificates", h, h[1:])
			continue
		}
		if _, err := netip.ParseAddr(h); err == nil {
			ch.addf(k, "%q is an IP address — ACME certificates here are for host names; list a DNS name that points at this server", h)
			continue
		}
		if first, dup := seen[h]; dup {
			ch.addf(k, "%q is listed twice (first at tls.acme.hosts[%d]) — remove one", h, first)
			continue
		}
		seen[h] = i
	}
}

func (ch *checker) files() {
	c := ch.c
	if c.StateDir == "" {
		ch.add("state_dir", "is empty — set it to a folder cutover may write, e.g. "+DefaultStateDir)
	}
	switch {
	case c.Admin.Socket == "":
		ch.add("admin.socket", "is empty — set it to a path for the admin API's Unix socket, e.g. "+DefaultStateDir+"/"+AdminSocketName)
	case len(c.Admin.Socket) > maxSocketPath:
		ch.addf("admin.socket", "%q is %d bytes long, but Unix socket paths can have at most %d — set a shorter admin.socket (or state_dir)",
			c.Admin.Socket, len(c.Admin.Socket), maxSocketPath)
	}
	if c.Admin.TCP != "" {
		if msg := addrProblem(c.Admin.TCP, false); msg != "" {
			ch.add("admin.tcp", msg)
		}
		if c.Admin.Token == "" {
			ch.add("admin.tcp", "is set without admin.token — add admin.token: ${CUTOVER_ADMIN_TOKEN} (anyone who reaches the port could otherwise deploy)")
		}
	}
	if h := c.Docker.Host; h != "" && !strings.Contains(h, "://") {
		ch.addf("docker.host", "%q is not a Docker Engine address — write e.g. unix:///var/run/docker.sock or tcp://127.0.0.1:2375", h)
	}
	if c.Docker.Host != "" && len(c.Docker.Hosts) > 0 {
		ch.add("docker.hosts", "is set together with docker.host, but they are exclusive — keep docker.hosts and list that engine there too, or keep only docker.host")
	}
	firstHost := map[string]int{}
	for i, h := range c.Docker.Hosts {
		k := fmt.Sprintf("docker.hosts[%d]", i)
		if first, dup := firstHost[h]; dup && h != "" {
			ch.addf(k, "%q is listed twice (first at docker.hosts[%d]) — remove one", h, first)
			continue
		}
		firstHost[h] = i
		if h != "" && !strings.Contains(h, "://") {
			ch.addf(k, "%q is not a Docker Engine address — write e.g. unix:///var/run/docker.sock or tcp://10.0.0.6:2375", h)
		}
	}
}

// ValidInstance reports whether s can name an instance: letters, digits,
// '.', '-' and '_' (a host name fits), at most 63 bytes. It is a key in
// the shared store, hence no '/'.
func ValidInstance(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

// store checks store and instance.
func (ch *checker) store() {
	c := ch.c
	if !ValidInstance(c.Instance) {
		ch.addf("instance", "%q cannot name this cutover — use letters, digits, '.', '-' and '_' (at most 63), e.g. edge-1", c.Instance)
	}
	if c.Store == nil {
		return
	}
	e := c.Store.Etcd
	if e == nil {
		ch.report("store", true, "names no store — add store: {etcd: {endpoints: [\"https://10.0.0.5:2379\"]}}, or remove store: to keep the state file in state_dir")
		return
	}
	if len(e.Endpoints) == 0 {
		ch.add("store.etcd.endpoints", `is empty — list the etcd members' client URLs, e.g. ["https://10.0.0.5:2379", "https://10.0.0.6:2379"]`)
	}
	seen := map[string]int{}
	for i, ep := range e.Endpoints {
		k := fmt.Sprintf("store.etcd.endpoints[%d]", i)
		if ep == "" {
			continue // reported by the parser
		}
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
			ch.addf(k, "%q is not an etcd client URL — write scheme://host:port, e.g. https://10.0.0.5:2379", ep)
			continue
		}
		if u.Scheme == "http" && (e.Cert != "" || e.CA != "") {
			ch.addf(k, "%q is plain http, but store.etcd has TLS files — use https:// for members that speak TLS", ep)
		}
		if first, dup := seen[ep]; dup {
			ch.addf(k, "%q is listed twice (first at store.etcd.endpoints[%d]) — remove one", ep, first)
			continue
		}
		seen[ep] = i
	}
	if !strings.HasPrefix(e.Prefix, "/") || !strings.HasSuffix(e.Prefix, "/") || strings.Contains(e.Prefix, "//") {
		ch.addf("store.etcd.prefix", "%q must start and end with '/' (so that one prefix is never the start of another), e.g. %s", e.Prefix, DefaultEtcdPrefix)
	}
	switch {
	case e.Cert != "" && e.Key == "":
		ch.add("store.etcd.cert", "is set without store.etcd.key — add store.etcd.key: FILE, the client certificate's private key")
	case e.Key != "" && e.Cert == "":
		ch.add("store.etcd.key", "is set without store.etcd.cert — add store.etcd.cert: FILE, the client certificate")
	}
	switch {
	case e.Username != "" && e.Password == "":
		ch.add("store.etcd.username", "is set without store.etcd.password — add store.etcd.password: ${ETCD_PASSWORD}")
	case e.Password != "" && e.Username == "":
		ch.add("store.etcd.password", "is set without store.etcd.username — add store.etcd.username: NAME")
	}
}

func (ch *checker) log() {
	l := ch.c.Log
	if l.Access == "" {
		ch.add("log.access", `is empty — use "-" for stdout, "off", or a file path`)
	}
	if l.Format != FormatCombined && l.Format != FormatJSON {
		ch.addf("log.format", "%q is not a log format — use %s or %s", l.Format, FormatCombined, FormatJSON)
	}
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		ch.addf("log.level", "%q is not a log level — use debug, info, warn or error", l.Level)
	}
}

// durationRule is one duration setting and its bounds.
type durationRule struct {
	key       string
	d, def    time.Duration
	allowZero bool
}

func (ch *checker) durations(rules []durationRule) {
	for _, r := range rules {
		switch {
		case r.d < 0:
			ch.addf(r.key, "is %s, but must not be negative — use e.g. %s (the default)", r.d, r.def)
		case r.d == 0 && !r.allowZero:
			ch.addf(r.key, "is 0, but must be more than 0 — use e.g. %s (the default)", r.def)
		}
	}
}

func (ch *checker) limits() {
	c, def := ch.c, Default()
	t, dt := c.Timeouts, def.Timeouts
	u, du := c.Upstream, def.Upstream
	ch.durations([]durationRule{
		{key: "timeouts.read_header", d: t.ReadHeader, def: dt.ReadHeader},
		{key: "timeouts.idle", d: t.Idle, def: dt.Idle},
		{key: "timeouts.read", d: t.Read, def: dt.Read},
		{key: "timeouts.write", d: t.Write, def: dt.Write},
		{key: "timeouts.shutdown", d: t.Shutdown, def: dt.Shutdown, allowZero: true},
		{key: "upstream.connect_timeout", d: u.ConnectTimeout, def: du.ConnectTimeout},
		{key: "upstream.response_timeout", d: u.ResponseTimeout, def: du.ResponseTimeout},
		{key: "upstream.read_timeout", d: u.ReadTimeout, def: du.ReadTimeout},
		{key: "upstream.keepalive_timeout", d: u.KeepaliveTimeout, def: du.KeepaliveTimeout},
		{key: "upstream.try_timeout", d: u.TryTimeout, def: du.TryTimeout, allowZero: true},
		{key: "upstream.outlier.base_ejection_time", d: u.Outlier.BaseEjectionTime, def: du.Outlier.BaseEjectionTime},
		{key: "upstream.outlier.max_ejection_time", d: u.Outlier.MaxEjectionTime, def: du.Outlier.MaxEjectionTime},
	})
	if u.TryTimeout > 0 && u.ResponseTimeout > 0 && u.TryTimeout >= u.ResponseTimeout {
		ch.addf("upstream.try_timeout", "is %s, but must be shorter than upstream.response_timeout (%s), which bounds every try — shorten it, or remove it to wait the response timeout on one target", u.TryTimeout, u.ResponseTimeout)
	}
	o, do := u.Outlier, du.Outlier
	if o.BaseEjectionTime > 0 && o.MaxEjectionTime > 0 && o.MaxEjectionTime < o.BaseEjectionTime {
		ch.addf("upstream.outlier.max_ejection_time", "is %s, shorter than upstream.outlier.base_ejection_time (%s) — make it at least that (default %s)", o.MaxEjectionTime, o.BaseEjectionTime, do.MaxEjectionTime)
	}
	if o.ConsecutiveFailures < 0 {
		ch.addf("upstream.outlier.consecutive_failures", "is %d, but must not be negative — use 0 to eject on timeouts only, or e.g. %d (the default)", o.ConsecutiveFailures, do.ConsecutiveFailures)
	}
	if o.MaxEjectionPercent < 0 || o.MaxEjectionPercent > 100 {
		ch.addf("upstream.outlier.max_ejection_percent", "is %d, but must be from 0 (no ejection) to 100 — the default is %d", o.MaxEjectionPercent, do.MaxEjectionPercent)
	}
	if n := c.Limits.MaxHeaderBytes; n < 1024 || n > 1<<20 {
		ch.addf("limits.max_header_bytes", "is %d, but must be from 1024 to 1048576 — the default is %d", n, def.Limits.MaxHeaderBytes)
	}
	if n := u.MaxIdlePerTarget; n < 0 {
		ch.addf("upstream.max_idle_per_target", "is %d, but must not be negative — use 0 to keep no idle connections, or e.g. %d (the default)", n, du.MaxIdlePerTarget)
	}
}

func (ch *checker) services() {
	c := ch.c
	if len(c.Services) == 0 {
		ch.report("services", true, `no services are configured — add one, e.g. services: {web: {pools: {blue: ["127.0.0.1:9001"]}}}`)
		return
	}
	seen := map[string]bool{}
	hostOwner := map[string]string{}
	defaultService := ""
	networkReported := false
	for _, s := range c.Services {
		key := "services." + s.Name
		if !ValidName(s.Name) {
			ch.addf(key, "%q is not a valid service name — use lowercase letters, digits, - and _, starting with a letter or digit (names appear in URLs and file names)", s.Name)
		}
		if seen[s.Name] {
			ch.addf(key, "service %q is defined twice — rename or remove one", s.Name)
		}
		seen[s.Name] = true

		if len(s.Hosts) == 0 {
			if defaultService != "" {
				ch.addf(key+".hosts", "is empty, which makes %s a default service, but %s already is — give one of them hosts", s.Name, defaultService)
			} else {
				defaultService = s.Name
			}
		}
		for _, list := range []struct {
			field string
			hosts []string
		}{{"hosts", s.Hosts}, {"preview_hosts", s.PreviewHosts}} {
			for j, h := range list.hosts {
				hk := fmt.Sprintf("%s.%s[%d]", key, list.field, j)
				if msg := hostProblem(h, true); msg != "" {
					ch.add(hk, msg)
					continue
				}
				if owner, ok := hostOwner[h]; ok {
					if owner == s.Name {
						ch.addf(hk, "%q is listed twice in service %s (hosts and preview_hosts together) — remove one", h, s.Name)
					} else {
						ch.addf(hk, "%q is already routed to service %s — a host belongs to one service; remove it from one of them", h, owner)
					}
					continue
				}
				hostOwner[h] = s.Name
			}
		}

		if _, ok := upstream.ParseBalance(s.Balance); !ok || s.Balance == "" {
			ch.addf(key+".balance", "%q is not a balance policy — use %s", s.Balance, upstream.BalanceChoices())
		}
		ch.health(key+".health", s.Health)
		ch.durations([]durationRule{{key: key + ".drain_timeout", d: s.DrainTimeout, def: DefaultService("").DrainTimeout, allowZero: true}})
		switch sp := s.DrainCloseSpread; {
		case sp < 0:
			ch.addf(key+".drain_close_spread", "is %s, but must not be negative — leave it out for a fifth of drain_timeout (%s)", sp, s.DrainTimeout/closeSpreadShare)
		case sp > s.DrainTimeout && s.DrainTimeout >= 0:
			ch.addf(key+".drain_close_spread", "is %s, longer than drain_timeout (%s) — it is the last part of the drain window; use at most %s", sp, s.DrainTimeout, s.DrainTimeout)
		}

		if len(s.Pools) == 0 {
			ch.report(key+".pools", true, `has no pools — add at least one, e.g. pools: {blue: ["127.0.0.1:9001"]}`)
			continue
		}
		ch.pools(key, s, &networkReported)
		ch.active(key, s)
	}
}

func (ch *checker) health(key string, h Health) {
	def := DefaultHealth()
	if !strings.HasPrefix(h.Path, "/") {
		ch.addf(key+".path", "%q must start with / — write e.g. %s", h.Path, def.Path)
	}
	ch.durations([]durationRule{
		{key: key + ".interval", d: h.Interval, def: def.Interval},
		{key: key + ".timeout", d: h.Timeout, def: def.Timeout},
	})
	if h.Healthy < 1 {
		ch.addf(key+".healthy", "is %d, but must be at least 1 — it counts the passed checks that make a target healthy (default %d)", h.Healthy, def.Healthy)
	}
	if h.Unhealthy < 1 {
		ch.addf(key+".unhealthy", "is %d, but must be at least 1 — it counts the failed checks that make a target unhealthy (default %d)", h.Unhealthy, def.Unhealthy)
	}
}

func (ch *checker) pools(key string, s Service, networkReported *bool) {
	seenPool := map[string]bool{}
	targetPool := map[string]string{} // target → pool that lists it first
	for _, p := range s.Pools {
		pk := key + ".pools." + p.Name
		if !ValidName(p.Name) {
			ch.addf(pk, "%q is not a valid pool name — use lowercase letters, digits, - and _, starting with a letter or digit (names appear in URLs and file names)", p.Name)
		}
		if seenPool[p.Name] {
			ch.addf(pk, "pool %q is defined twice — rename or remove one", p.Name)
		}
		seenPool[p.Name] = true

		kinds := 0
		for _, set := range []bool{len(p.Targets) > 0, len(p.Containers) > 0, p.Compose != nil} {
			if set {
				kinds++
			}
		}
		if kinds > 1 {
			ch.add(pk, "takes members from more than one of targets, containers and compose — use exactly one")
		}

		for j, t := range p.Targets {
			tk := fmt.Sprintf("%s.targets[%d]", pk, j)
			if msg := addrProblem(t, true); msg != "" {
				ch.add(tk, msg)
				continue
			}
			if owner, ok := targetPool[t]; ok {
				if owner == p.Name {
					ch.addf(tk, "%q is listed twice in this pool — remove one", t)
				} else {
					ch.addf(tk, "%q is also in pool %s — a target belongs to one pool of a service; remove it from one of them", t, owner)
				}
				continue
			}
			targetPool[t] = p.Name
		}

		if !p.FromDocker() {
			if p.Port != 0 {
				ch.add(pk+".port", "applies only to containers and compose — for targets, write the port in each host:port")
			}
			continue
		}
		switch {
		case p.Port == 0:
			ch.add(pk+".port", "is missing — add port: N, the port the app listens on inside the container, e.g. port: 8000")
		case p.Port < 0 || p.Port > 65535:
			ch.addf(pk+".port", "is %d, but must be from 1 to 65535 — use the port the app listens on inside the container", p.Port)
		}
		if ch.c.Docker.Network == "" && !*networkReported {
			*networkReported = true
			ch.add(pk, "takes members from Docker, but docker.network is not set — add docker: {network: NAME}, the network on which cutover reaches the containers")
		}
		seenContainer := map[string]bool{}
		for j, name := range p.Containers {
			ck := fmt.Sprintf("%s.containers[%d]", pk, j)
			switch {
			case name == "":
				ch.add(ck, "is empty — give a container name or ID")
			case seenContainer[name]:
				ch.addf(ck, "%q is listed twice — remove one", name)
			}
			seenContainer[name] = true
		}
		if p.Compose != nil {
			if p.Compose.Project == "" {
				ch.add(pk+".compose.project", "is missing — add the compose project name (as in docker compose -p NAME)")
			}
			if p.Compose.Service == "" {
				ch.add(pk+".compose.service", "is missing — add the service name from the compose file")
			}
		}
	}
}

func (ch *checker) active(key string, s Service) {
	ak := key + ".active"
	if s.Active == "" {
		ch.add(ak, "is not set — name the pool that serves on first start")
		return
	}
	p, ok := s.Pool(s.Active)
	if !ok {
		names := make([]string, len(s.Pools))
		for i, p := range s.Pools {
			names[i] = p.Name
		}
		ch.addf(ak, "names pool %q, which service %s does not have — use one of: %s", s.Active, s.Name, strings.Join(names, ", "))
		return
	}
	if !p.FromDocker() && len(p.Targets) == 0 {
		k := ak
		if !ch.present(ak) {
			k = key + ".pools." + p.Name
		}
		ch.addf(k, "active pool %s has no targets — add targets to it, or make a pool that has targets active", p.Name)
	}
}

// addrProblem checks a host:port address. A target needs a host; a listen
// address may leave it out (":8080" listens on every interface). It returns
// "" when the address is fine.
func addrProblem(addr string, target bool) string {
	example := "127.0.0.1:8080"
	if target {
		example = "127.0.0.1:9001"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		if strings.Contains(err.Error(), "missing port") {
			return fmt.Sprintf("%q has no port — write host:port, e.g. %s", addr, example)
		}
		return fmt.Sprintf("%q is not a host:port address — write e.g. %s (an IPv6 host goes in brackets: [::1]:8080)", addr, example)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Sprintf("%q has port %q, which is not a number from 1 to 65535 — use a port in that range", addr, port)
	}
	if host == "" {
		if target {
			return fmt.Sprintf("%q has no host — write the target as host:port, e.g. 127.0.0.1:%s", addr, port)
		}
		return ""
	}
	if msg := hostProblem(host, false); msg != "" {
		return fmt.Sprintf("%q: host %s", addr, msg)
	}
	return ""
}

// hostProblem checks a host name or IP address. Routing names (service and
// TLS hosts) may start with the "*." wildcard and must be lowercase (Parse
// lowercases them; a Config built in code must do it itself). It returns
// "" when the name is fine.
func hostProblem(h string, routing bool) string {
	if h == "" {
		return "is empty — give a host name, e.g. example.com"
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return ""
	}
	if i := strings.LastIndexByte(h, ':'); routing && i >= 0 {
		if _, err := strconv.Atoi(h[i+1:]); err == nil {
			return fmt.Sprintf("%q has a port — hosts are matched without the port; remove %s", h, h[i:])
		}
	}
	name := h
	if routing {
		name = strings.TrimPrefix(h, "*.")
		if strings.ToLower(h) != h {
			return fmt.Sprintf("%q has upper-case letters — write it in lowercase", h)
		}
	}
	if strings.Contains(name, "*") {
		if routing {
			return fmt.Sprintf("%q has a wildcard that is not the first label — write wildcards as *.example.com", h)
		}
		return fmt.Sprintf("%q has a wildcard — give one host name or IP address", h)
	}
	if len(name) > 253 {
		return fmt.Sprintf("%q is longer than 253 bytes — use a shorter name", h)
	}
	for _, label := range strings.Split(name, ".") {
		switch {
		case label == "":
			return fmt.Sprintf("%q has an empty label (a leading, trailing or doubled dot) — remove the extra dot", h)
		case len(label) > 63:
			return fmt.Sprintf("%q has a label longer than 63 bytes — use a shorter name", h)
		case label[0] == '-' || label[len(label)-1] == '-':
			return fmt.Sprintf("%q has a label that starts or ends with - — fix the name", h)
		}
		for _, c := range label {
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
			if !ok {
				return fmt.Sprintf("%q is not a valid host name or IP address (%q is not allowed) — use letters, digits, - and . only", h, c)
			}
		}
	}
	return ""
}
