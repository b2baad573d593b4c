package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Load reads the configuration file at path and parses it with Parse.
// lookupEnv fills ${VAR} templates; nil means os.LookupEnv. A file that
// cannot be read is a plain error (errors.Is works with fs.ErrNotExist);
// problems in its content are an *Errors.
func Load(path string, lookupEnv func(string) (string, bool)) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	return Parse(data, path, lookupEnv)
}

// Parse parses and validates a configuration. path names the file in
// problems and anchors relative paths in the file ("" leaves them relative
// to the working directory). lookupEnv fills ${VAR} templates; nil means
// os.LookupEnv. The returned Config has every default filled in; on any
// problem the error is an *Errors listing all of them and the Config is nil.
func Parse(data []byte, path string, lookupEnv func(string) (string, bool)) (*Config, error) {
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	exp := expandEnv(data, lookupEnv)
	p := &parser{
		file:    path,
		srcLine: exp.srcLine,
		pos:     map[string]position{"": {line: 1}},
		tainted: map[string]bool{},
	}
	for _, pr := range exp.problems {
		pr.File = path
		p.problems = append(p.problems, pr)
	}

	var doc yaml.Node
	if err := yaml.Unmarshal(exp.text, &doc); err != nil {
		p.syntaxError(err, exp.text)
		return nil, p.result(exp.badLines)
	}
	if len(doc.Content) == 0 {
		p.problems = append(p.problems, Problem{File: path, Line: 1,
			Msg: "the file has no settings — add at least listen: and services: (see the configuration reference in the README)"})
		return nil, p.result(exp.badLines)
	}

	c := Default()
	c.Path = path
	c.Admin.Socket = "" // defaulted from state_dir below
	p.root(doc.Content[0], c)
	if err := resolvePaths(c, path); err != nil {
		p.add("", 0, err.Error())
	}
	normalize(c)
	ch := checker{
		c:       c,
		present: p.present,
		report:  p.report,
	}
	ch.run()
	if err := p.result(exp.badLines); err != nil {
		return nil, err
	}
	return c, nil
}

// position is where a key was found.
type position struct {
	key  string // the key as the file spells it (may differ from the canonical key)
	line int
}

// parser turns the YAML node tree into a Config, collecting problems.
// Keys are dotted paths ("services.web.pools.blue.targets[0]"); they are
// canonical, the same whichever of the equivalent YAML forms was used, so
// that the checks on the finished Config can find the line of what they
// complain about.
type parser struct {
	file     string
	srcLine  []int
	pos      map[string]position
	tainted  map[string]bool // keys with a problem already; the checker stays quiet about them
	problems []Problem
}

// field is one known key of a mapping and what to do with its value.
type field struct {
	name string
	set  func(key string, v *yaml.Node)
}

func (p *parser) root(n *yaml.Node, c *Config) {
	p.mapping("", n, []field{
		{"listen", func(k string, v *yaml.Node) {
			p.mapping(k, v, []field{
				{"http", p.str(&c.Listen.HTTP)},
				{"https", p.str(&c.Listen.HTTPS)},
				{"engine", p.str(&c.Listen.Engine)},
			})
		}},
		{"tls", func(k string, v *yaml.Node) {
			p.mapping(k, v, []field{
				{"cert", p.str(&c.TLS.Cert)},
				{"key", p.str(&c.TLS.Key)},
				{"certificates", p.certPairs(&c.TLS.Certificates)},
				{"self_signed", p.boolean(&c.TLS.SelfSigned)},
				{"hosts", p.strList(&c.TLS.Hosts)},
				{"acme", func(k string, v *yaml.Node) {
					a := &ACME{}
					p.mapping(k, v, []field{
						{"email", p.str(&a.Email)},
						{"directory", p.str(&a.Directory)},
						{"ca_roots", p.str(&a.CARoots)},
						{"hosts", p.strList(&a.Hosts)},
						{"challenge", p.str(&a.Challenge)},
						{"storage", p.str(&a.Storage)},
					})
					c.TLS.ACME = a
				}},
			})
		}},
		{"state_dir", p.str(&c.StateDir)},
		{"admin", func(k string, v *yaml.Node) {
			p.mapping(k, v, []field{
				{"socket", p.str(&c.Admin.Socket)},
				{"tcp", p.str(&c.Admin.TCP)},
				{"token", p.str(&c.Admin.Token)},
			})
		}},
		{"metrics", func(k string, v *yaml.Node) {
			p.mapping(k, v, []field{
				{"listen", p.str(&c.Metrics.Listen)},
			})
		}},
		{"trusted_proxies", p.prefixes(&c.TrustedProxies)},
		{"log", func(k string, v *yaml.Node) {
			p.mapping(k, v, []field{
				{"access", p.str(&c.Log.Access)},
				{"format", p.str(&c.Log.Format)},
				{"level", p.str(&c.Log.Level)},
			})
		}},
		{"timeouts", func(k string, v *yaml.Node) {
			t := &c.Timeouts
			p.mapping(k, v, []field{
				{"read_header", p.duration(&t.ReadHeader)},
				{"idle", p.duration(&t.Idle)},
				{"read", p.duration(&t.Read)},
				{"write", p.duration(&t.Write)},
				{"shutdown", p.duration(&t.Shutdown)},
			})
		}},
		{"limits", func(k string, v *yaml.Node) {
			p.mapping(k, v, []field{
				{"max_header_bytes", p.integer(&c.Limits.MaxHeaderBytes)},
			})
		}},
		{"upstream", func(k string, v *yaml.Node) {
			u := &c.Upstream
			p.mapping(k, v, []field{
				{"connect_timeout", p.duration(&u.ConnectTimeout)},
				{"response_timeout", p.duration(&u.ResponseTimeout)},
				{"read_timeout", p.duration(&u.ReadTimeout)},
				{"keepalive_timeout", p.duration(&u.KeepaliveTimeout)},
				{"max_idle_per_target", p.integer(&u.MaxIdlePerTarget)},
				{"try_timeout", p.duration(&u.TryTimeout)},
				{"outlier", func(k string, v *yaml.Node) {
					o := &u.Outlier
					p.mapping(k, v, []field{
						{"consecutive_failures", p.integer(&o.ConsecutiveFailures)},
						{"base_ejection_time", p.duration(&o.BaseEjectionTime)},
						{"max_ejection_time", p.duration(&o.MaxEjectionTime)},
						{"max_ejection_percent", p.integer(&o.MaxEjectionPercent)},
					})
				}},
			})
		}},
		{"docker", func(k string, v *yaml.Node) {
			p.mapping(k, v, []field{
				{"network", p.str(&c.Docker.Network)},
				{"host", p.str(&c.Docker.Host)},
				{"hosts", p.strList(&c.Docker.Hosts)},
			})
		}},
		{"store", func(k string, v *yaml.Node) {
			st := &Store{}
			p.mapping(k, v, []field{
				{"etcd", func(k string, v *yaml.Node) {
					e := &Etcd{}
					p.mapping(k, v, []field{
						{"endpoints", p.strList(&e.Endpoints)},
						{"prefix", p.str(&e.Prefix)},
						{"cert", p.str(&e.Cert)},
						{"key", p.str(&e.Key)},
						{"ca", p.str(&e.CA)},
						{"username", p.str(&e.Username)},
						{"password", p.str(&e.Password)},
					})
					st.Etcd = e
				}},
			})
			c.Store = st
		}},
		{"instance", p.str(&c.Instance)},
		{"services", func(k string, v *yaml.Node) {
			p.pairs(k, v, func(name, child string, _, v *yaml.Node) {
				c.Services = append(c.Services, p.service(child, name, v))
			})
		}},
	})
}

func (p *parser) service(key, name string, n *yaml.Node) Service {
	s := DefaultService(name)
	p.mapping(key, n, []field{
		{"hosts", p.strList(&s.Hosts)},
		{"preview_hosts", p.strList(&s.PreviewHosts)},
		{"balance", p.str(&s.Balance)},
		{"health", func(k string, v *yaml.Node) {
			h := &s.Health
			p.mapping(k, v, []field{
				{"path", p.str(&h.Path)},
				{"interval", p.duration(&h.Interval)},
				{"timeout", p.duration(&h.Timeout)},
				{"healthy", p.integer(&h.Healthy)},
				{"unhealthy", p.integer(&h.Unhealthy)},
			})
		}},
		{"drain_timeout", p.duration(&s.DrainTimeout)},
		{"drain_close_spread", p.duration(&s.DrainCloseSpread)},
		{"pools", func(k string, v *yaml.Node) {
			p.pairs(k, v, func(name, child string, _, v *yaml.Node) {
				s.Pools = append(s.Pools, p.pool(child, name, v))
			})
		}},
		{"active", p.str(&s.Active)},
	})
	if s.Active == "" && len(s.Pools) > 0 {
		s.Active = s.Pools[0].Name
	}
	return s
}

func (p *parser) pool(key, name string, n *yaml.Node) Pool {
	pl := Pool{Name: name}
	switch {
	case isNull(n):
		// An empty pool: an idle colour whose targets come later.
	case n.Kind == yaml.SequenceNode:
		pl.Targets = p.list(key+".targets", key, n)
	case n.Kind == yaml.MappingNode:
		p.mapping(key, n, []field{
			{"targets", p.strList(&pl.Targets)},
			{"containers", func(k string, v *yaml.Node) {
				pl.Containers = p.list(k, k, v)
				if v.Kind == yaml.SequenceNode && len(v.Content) == 0 {
					p.add(k, p.line(v), "is empty — list at least one container name, or use targets: [] for a pool that is filled later")
				}
			}},
			{"compose", func(k string, v *yaml.Node) {
				if isNull(v) {
					return
				}
				ref := &ComposeRef{}
				p.mapping(k, v, []field{
					{"project", p.str(&ref.Project)},
					{"service", p.str(&ref.Service)},
				})
				pl.Compose = ref
			}},
			{"port", p.integer(&pl.Port)},
		})
	default:
		p.wrongType(key, n, "a list of targets or a mapping",
			`["127.0.0.1:9001"], {targets: [...]}, {containers: [NAME], port: 8000} or {compose: {project: P, service: S}, port: 8000}`)
	}
	return pl
}

// pairs walks a mapping in file order, rejecting duplicate and non-scalar
// keys, and records each key's position.
func (p *parser) pairs(key string, n *yaml.Node, fn func(name, child string, k, v *yaml.Node)) {
	n = resolve(n)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		p.wrongType(key, n, "a mapping", "name: value lines or {name: value}")
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			p.add(key, p.line(k), "has a key that is a list or mapping — keys are plain names; write name: value")
			continue
		}
		name := k.Value
		child := join(key, name)
		if name == "<<" {
			p.add(child, p.line(k), "merge keys are not supported — write the keys out in full")
			continue
		}
		if first, dup := seen[name]; dup {
			p.add(child, p.line(k), fmt.Sprintf("is set twice (first at line %d) — keep one of them", first))
			continue
		}
		seen[name] = p.line(k)
		line := p.line(k)
		if v.Kind == yaml.ScalarNode && !isNull(v) {
			line = p.line(v)
		}
		p.pos[child] = position{key: child, line: line}
		fn(name, child, k, v)
	}
}

// mapping walks a mapping whose keys are fixed.
func (p *parser) mapping(key string, n *yaml.Node, fields []field) {
	p.pairs(key, n, func(name, child string, k, v *yaml.Node) {
		for _, f := range fields {
			if f.name == name {
				f.set(child, v)
				return
			}
		}
		names := make([]string, len(fields))
		for i, f := range fields {
			names[i] = f.name
		}
		delete(p.pos, child)
		if s := suggest(name, names); s != "" {
			p.add(child, p.line(k), fmt.Sprintf("unknown key — did you mean %q?", s))
		} else {
			p.add(child, p.line(k), "unknown key — remove it; keys allowed here: "+strings.Join(names, ", "))
		}
	})
}

// str sets *dst from a scalar. An empty value counts as not set, so the
// default stays (an env var set to "" behaves like a missing key).
func (p *parser) str(dst *string) func(string, *yaml.Node) {
	return func(key string, v *yaml.Node) {
		if isNull(v) {
			return
		}
		if v.Kind != yaml.ScalarNode {
			p.wrongType(key, v, "a single value", `key: "value"`)
			return
		}
		if v.Value != "" {
			*dst = v.Value
		}
	}
}

func (p *parser) boolean(dst *bool) func(string, *yaml.Node) {
	return func(key string, v *yaml.Node) {
		if isNull(v) {
			return
		}
		if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!bool" {
			p.wrongType(key, v, "true or false", "true")
			return
		}
		if err := v.Decode(dst); err != nil {
			p.add(key, p.line(v), fmt.Sprintf("%q is not true or false — write true or false", v.Value))
		}
	}
}

func (p *parser) integer(dst *int) func(string, *yaml.Node) {
	return func(key string, v *yaml.Node) {
		if isNull(v) {
			return
		}
		if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" {
			p.wrongType(key, v, "a whole number", "8000")
			return
		}
		if err := v.Decode(dst); err != nil {
			p.add(key, p.line(v), fmt.Sprintf("%s is out of range — use a smaller number", v.Value))
		}
	}
}

func (p *parser) duration(dst *time.Duration) func(string, *yaml.Node) {
	return func(key string, v *yaml.Node) {
		if isNull(v) {
			return
		}
		if v.Kind != yaml.ScalarNode {
			p.wrongType(key, v, "a duration", "30s")
			return
		}
		d, err := time.ParseDuration(v.Value)
		if err != nil {
			msg := fmt.Sprintf("%q is not a duration — write a number with a unit, e.g. 500ms, 10s, 1m30s", v.Value)
			if _, nerr := strconv.ParseFloat(v.Value, 64); nerr == nil {
				msg = fmt.Sprintf("%q has no unit — add one, e.g. %ss or %sms", v.Value, v.Value, v.Value)
			}
			p.add(key, p.line(v), msg)
			return
		}
		*dst = d
	}
}

func (p *parser) strList(dst *[]string) func(string, *yaml.Node) {
	return func(key string, v *yaml.Node) { *dst = p.list(key, key, v) }
}

// list reads a list of non-empty scalars. canon is the key the checker uses,
// display the key as the file spells it (they differ for a pool written as a
// bare list of targets). Bad elements are kept as "" so that indices keep
// matching the file.
func (p *parser) list(canon, display string, n *yaml.Node) []string {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.addAt(canon, display, p.line(n), wrongTypeMsg(n, "a list", `["a", "b"]`))
		return nil
	}
	out := make([]string, len(n.Content))
	for i, e := range n.Content {
		e = resolve(e)
		ck := fmt.Sprintf("%s[%d]", canon, i)
		p.pos[ck] = position{key: fmt.Sprintf("%s[%d]", display, i), line: p.line(e)}
		switch {
		case e.Kind != yaml.ScalarNode:
			p.wrongType(ck, e, "a single value", `"value"`)
		case isNull(e) || e.Value == "":
			p.add(ck, p.line(e), "is empty — remove it or give it a value")
		default:
			out[i] = e.Value
		}
	}
	return out
}

// certPairs reads tls.certificates: a list of {cert: FILE, key: FILE}.
func (p *parser) certPairs(dst *[]CertPair) func(string, *yaml.Node) {
	return func(key string, v *yaml.Node) {
		v = resolve(v)
		if isNull(v) {
			return
		}
		if v.Kind != yaml.SequenceNode {
			p.wrongType(key, v, "a list of certificate pairs", "[{cert: site.pem, key: site.key}]")
			return
		}
		out := make([]CertPair, len(v.Content))
		for i, e := range v.Content {
			e = resolve(e)
			ek := fmt.Sprintf("%s[%d]", key, i)
			p.pos[ek] = position{key: ek, line: p.line(e)}
			if e.Kind != yaml.MappingNode {
				p.wrongType(ek, e, "a mapping", "{cert: site.pem, key: site.key}")
				continue
			}
			p.mapping(ek, e, []field{
				{"cert", p.str(&out[i].Cert)},
				{"key", p.str(&out[i].Key)},
			})
		}
		*dst = out
	}
}

// prefixes reads trusted_proxies: CIDRs, or bare IPs meaning just that address.
func (p *parser) prefixes(dst *[]netip.Prefix) func(string, *yaml.Node) {
	return func(key string, v *yaml.Node) {
		items := p.list(key, key, v)
		var out []netip.Prefix
		for i, s := range items {
			if s == "" {
				continue // reported by list
			}
			pfx, err := parsePrefix(s)
			if err != nil {
				p.add(fmt.Sprintf("%s[%d]", key, i), p.pos[fmt.Sprintf("%s[%d]", key, i)].line,
					fmt.Sprintf("%q is not an IP address or CIDR — write e.g. 10.0.0.0/8, 192.168.1.5 or fd00::/8", s))
				continue
			}
			out = append(out, pfx)
		}
		*dst = out
	}
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return pfx.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a.Zone() != "" {
		return netip.Prefix{}, errors.New("zones are not allowed")
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (p *parser) wrongType(key string, n *yaml.Node, want, example string) {
	p.add(key, p.line(n), wrongTypeMsg(n, want, example))
}

func wrongTypeMsg(n *yaml.Node, want, example string) string {
	return fmt.Sprintf("must be %s, not %s — write e.g. %s", want, describe(n), example)
}

// describe names a node's type for people.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!int", "!!float":
			return "the number " + n.Value
		case "!!bool":
			return n.Value
		case "!!null":
			return "empty"
		}
		return fmt.Sprintf("the text %q", n.Value)
	}
	return "an unsupported YAML value"
}

// add records a problem at key; the key is shown as the file spells it.
func (p *parser) add(key string, line int, msg string) {
	display := key
	if pos, ok := p.pos[key]; ok && pos.key != "" {
		display = pos.key
	}
	p.addAt(key, display, line, msg)
}

func (p *parser) addAt(canon, display string, line int, msg string) {
	p.tainted[canon] = true
	p.tainted[display] = true
	p.problems = append(p.problems, Problem{File: p.file, Line: line, Key: display, Msg: msg})
}

// report is the checker's sink: it finds the line for a canonical key
// (falling back to the closest enclosing key that the file has) and drops
// problems that follow from one already reported. aggregate problems (about
// a whole section) are also dropped when anything inside the section had a
// problem.
func (p *parser) report(key string, aggregate bool, msg string) {
	for k := key; ; k = parent(k) {
		if p.tainted[k] {
			return
		}
		if k == "" {
			break
		}
	}
	if aggregate {
		for k := range p.tainted {
			if strings.HasPrefix(k, key+".") || strings.HasPrefix(k, key+"[") || key == "" {
				return
			}
		}
	}
	display, line := key, 0
	if pos, ok := p.pos[key]; ok {
		display, line = pos.key, pos.line
	} else {
		for k := parent(key); ; k = parent(k) {
			if pos, ok := p.pos[k]; ok {
				line = pos.line
				break
			}
			if k == "" {
				break
			}
		}
	}
	p.problems = append(p.problems, Problem{File: p.file, Line: line, Key: display, Msg: msg})
}

// present reports whether the file has the key.
func (p *parser) present(key string) bool { _, ok := p.pos[key]; return ok }

// syntaxError turns a YAML parser error into a problem at its line.
func (p *parser) syntaxError(err error, text []byte) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, after, ok := strings.Cut(rest, ": "); ok {
			if n, err := strconv.Atoi(num); err == nil {
				line, msg = n, after
			}
		}
	}
	fix := "fix the YAML syntax at this line"
	if yamlParserProblem(msg) {
		// The YAML library reports these at the 0-based line where the
		// enclosing block or flow collection starts.
		line++
		fix = "check the indentation and punctuation from this line on"
	} else if line == 0 {
		line = 1
	}
	lines := strings.Split(string(text), "\n")
	if strings.Contains(msg, "tab") || (line <= len(lines) && strings.Contains(lines[line-1], "\t")) {
		fix = "indent with spaces: YAML does not allow tabs"
	}
	p.problems = append(p.problems, Problem{File: p.file, Line: p.mapLine(line), Msg: fmt.Sprintf("invalid YAML: %s — %s", msg, fix)})
}

// yamlParserProblem reports whether msg comes from the YAML library's parser
// (as opposed to its scanner); the two number lines differently.
func yamlParserProblem(msg string) bool {
	switch msg {
	case "did not find expected ',' or ']'", "did not find expected ',' or '}'",
		"did not find expected '-' indicator", "did not find expected <document start>",
		"did not find expected <stream-start>", "did not find expected key",
		"did not find expected node content", "found duplicate %TAG directive",
		"found duplicate %YAML directive", "found incompatible YAML document",
		"found undefined tag handle":
		return true
	}
	return false
}

// result returns the collected problems, if any, as *Errors.
func (p *parser) result(badLines map[int]bool) error {
	var out []Problem
	for _, pr := range p.problems {
		isEnv := strings.HasPrefix(pr.Key, "${")
		if !isEnv && badLines[pr.Line] {
			continue // follows from the variable reported on this line
		}
		out = append(out, pr)
	}
	if len(out) == 0 {
		return nil
	}
	sortProblems(out)
	return &Errors{Problems: out}
}

// line is a node's line in the original file.
func (p *parser) line(n *yaml.Node) int { return p.mapLine(n.Line) }

func (p *parser) mapLine(l int) int {
	switch {
	case l <= 0:
		return 0
	case l <= len(p.srcLine):
		return p.srcLine[l-1]
	case len(p.srcLine) > 0:
		return p.srcLine[len(p.srcLine)-1] + l - len(p.srcLine)
	}
	return l
}

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

func join(key, name string) string {
	if key == "" {
		return name
	}
	return key + "." + name
}

// parent is the enclosing key: "a.b[0]" → "a.b" → "a" → "".
func parent(key string) string {
	i := strings.LastIndexAny(key, ".[")
	if i < 0 {
		return ""
	}
	return key[:i]
}

// resolvePaths makes relative paths relative to the configuration file's
// folder (so the file means the same whatever the working directory) and
// defaults admin.socket into state_dir.
func resolvePaths(c *Config, path string) error {
	dir := ""
	if path != "" {
		abs, err := filepath.Abs(filepath.Dir(path))
		if err != nil {
			return fmt.Errorf("cannot find the configuration file's folder: %w — give the file as an absolute path", err)
		}
		dir = abs
	}
	rel := func(s string) string {
		if s == "" || dir == "" || filepath.IsAbs(s) {
			return s
		}
		return filepath.Join(dir, s)
	}
	c.TLS.Cert = rel(c.TLS.Cert)
	c.TLS.Key = rel(c.TLS.Key)
	for i := range c.TLS.Certificates {
		pr := &c.TLS.Certificates[i]
		pr.Cert, pr.Key = rel(pr.Cert), rel(pr.Key)
	}
	if a := c.TLS.ACME; a != nil {
		a.CARoots = rel(a.CARoots)
		a.Storage = rel(a.Storage)
	}
	c.StateDir = rel(c.StateDir)
	if c.Store != nil && c.Store.Etcd != nil {
		e := c.Store.Etcd
		e.Cert, e.Key, e.CA = rel(e.Cert), rel(e.Key), rel(e.CA)
	}
	if c.Admin.Socket == "" {
		c.Admin.Socket = filepath.Join(c.StateDir, AdminSocketName)
	} else {
		c.Admin.Socket = rel(c.Admin.Socket)
	}
	if c.Log.Access != AccessStdout && c.Log.Access != AccessOff {
		c.Log.Access = rel(c.Log.Access)
	}
	return nil
}

// normalize puts values into the one form the rest of cutover compares.
func normalize(c *Config) {
	for i, h := range c.TLS.Hosts {
		c.TLS.Hosts[i] = strings.ToLower(h)
	}
	for i := range c.Services {
		s := &c.Services[i]
		for j, h := range s.Hosts {
			s.Hosts[j] = strings.ToLower(h)
		}
	}
	if c.Store != nil && c.Store.Etcd != nil && c.Store.Etcd.Prefix == "" {
		c.Store.Etcd.Prefix = DefaultEtcdPrefix
	}
	if a := c.TLS.ACME; a != nil {
		for i, h := range a.Hosts {
			a.Hosts[i] = strings.ToLower(h)
		}
		if a.Directory == "" {
			a.Directory = DefaultACMEDirectory
		}
		if a.Challenge == "" {
			a.Challenge = ChallengeHTTP01
		}
	}
}

// suggest returns the known name closest to name, if it is close enough to
// be a likely typo.
//
// The distance is at least the difference in length, so names whose length
// is already too far off are not compared: the distance costs time and
// memory in the product of the lengths, and a key pasted by mistake may be
// megabytes long.
func suggest(name string, known []string) string {
	best, bestD := "", 0
	lower := strings.ToLower(name)
	for _, k := range known {
		if abs(len(lower)-len(k)) > max(1, len(k)/3) {
			continue
		}
		d := editDistance(lower, k)
		if d <= max(1, len(k)/3) && (best == "" || d < bestD) {
			best, bestD = k, d
		}
	}
	return best
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// editDistance is the optimal string alignment distance: insertions,
// deletions, substitutions and swaps of neighbours each cost 1.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range rb {
		d[0][j+1] = j + 1
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}
