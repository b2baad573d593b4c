package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/cutover/cutover/internal/testutil/freeport"
)

// debianTool is a needed program and the Debian package that ships it.
type debianTool struct{ program, pkg string }

// debianTools are the programs every run needs.
var debianTools = []debianTool{
	{"nginx", "nginx"},
	{"haproxy", "haproxy"},
	{"wrk", "wrk"},
}

// httpsTools are needed only by the https phase.
var httpsTools = []debianTool{{"h2load", "nghttp2-client"}, {"openssl", "openssl"}}

// findProgram looks in PATH and in the sbin folders, which are not always on
// a non-login PATH but are where nginx and haproxy live.
func findProgram(name string) (string, bool) {
	if p, err := exec.LookPath(name); err == nil {
		return p, true
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

// ensureTools finds nginx, HAProxy and wrk (and h2load for the https
// phase), installing the missing ones with apt-get (after apt-get update)
// when there are any.
func (h *harness) ensureTools(ctx context.Context) error {
	needed := slices.Clone(debianTools)
	if slices.Contains(h.opts.phases, phaseHTTPS) {
		needed = append(needed, httpsTools...)
	}
	var missing []string
	for _, t := range needed {
		if _, ok := findProgram(t.program); !ok {
			missing = append(missing, t.pkg)
		}
	}
	if len(missing) > 0 {
		h.logf("installing %s with apt-get", strings.Join(missing, ", "))
		if os.Geteuid() != 0 {
			return fmt.Errorf("%s missing and not running as root; install them with: sudo apt-get install -y %s", strings.Join(missing, ", "), strings.Join(missing, " "))
		}
		env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		for _, args := range [][]string{
			{"update", "-q"},
			append([]string{"install", "-y", "-q", "--no-install-recommends"}, missing...),
		} {
			cmd := exec.CommandContext(ctx, "apt-get", args...)
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("apt-get %s: %w\n%s\nthe benchmark needs nginx, haproxy and wrk (and h2load from nghttp2-client for -phases https) from Debian's packages", strings.Join(args, " "), err, tail(string(out), 20))
			}
		}
	}
	for _, t := range needed {
		p, ok := findProgram(t.program)
		if !ok {
			return fmt.Errorf("%s not found after installing package %s", t.program, t.pkg)
		}
		switch t.program {
		case "nginx":
			h.tools.nginx = p
		case "haproxy":
			h.tools.haproxy = p
		case "wrk":
			h.tools.wrk = p
		case "h2load":
			h.tools.h2load = p
		case "openssl":
			h.tools.openssl = p
		}
	}
	return nil
}

// prepare installs and builds what the run needs and starts the backends.
func (h *harness) prepare(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(h.opts.repo, "go.mod")); err != nil {
		return fmt.Errorf("-repo %s is not the cutover repository (no go.mod): %w", h.opts.repo, err)
	}
	if err := h.ensureTools(ctx); err != nil {
		return err
	}
	var err error
	if h.tls, err = writeCertificate(filepath.Join(h.dir, "tls")); err != nil {
		return err
	}
	bin := filepath.Join(h.dir, "bin")
	h.tools.backend = filepath.Join(bin, "backend")
	h.logf("building bench/backend and cmd/cutover")
	if out, err := h.goBuild(ctx, h.tools.backend, "./bench/backend"); err != nil {
		return fmt.Errorf("build the benchmark backend: %w\n%s", err, out)
	}
	h.tools.cutover = filepath.Join(bin, "cutover")
	if out, err := h.goBuild(ctx, h.tools.cutover, "./cmd/cutover"); err != nil {
		h.tools.cutoverMissing = fmt.Sprintf("go build ./cmd/cutover failed: %v\n%s", err, tail(out, 15))
	} else {
		h.checkCutoverCommands()
	}

	if slices.Contains(h.opts.proxies, proxyHTTPUtil) {
		h.tools.httputil = filepath.Join(bin, "httputilproxy")
		if out, err := h.goBuild(ctx, h.tools.httputil, "./bench/httputilproxy"); err != nil {
			return fmt.Errorf("build bench/httputilproxy: %w\n%s", err, out)
		}
	}

	colours := []string{"blue"}
	if slices.Contains(h.opts.phases, phaseSwitch) {
		colours = append(colours, "green")
	}
	h.backends = map[string][]string{}
	for _, c := range colours {
		for i := 1; i <= 2; i++ {
			name := fmt.Sprintf("%s-%d", c, i)
			addr, err := freeport.Addr()
			if err != nil {
				return err
			}
			proc, err := h.sup.start(startSpec{
				name:    "backend " + name,
				args:    []string{h.tools.backend, "-addr", addr, "-name", name},
				logPath: filepath.Join(h.dir, "backend-"+name+".out"),
			})
			if err != nil {
				return err
			}
			h.backendProcs = append(h.backendProcs, proc)
			if err := waitReady(ctx, addr, proc, 10*time.Second, probe); err != nil {
				return err
			}
			h.backends[c] = append(h.backends[c], addr)
		}
	}
	return nil
}

func (h *harness) goBuild(ctx context.Context, out, pkg string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = h.opts.repo
	b, err := cmd.CombinedOutput()
	return string(b), err
}

// checkCutoverCommands asks the built binary which commands it has, so the
// harness can say clearly what is missing while cutover is being built.
func (h *harness) checkCutoverCommands() {
	out, err := exec.Command(h.tools.cutover, "--help").CombinedOutput()
	if err != nil {
		h.tools.cutoverMissing = fmt.Sprintf("cutover --help failed: %v\n%s", err, tail(string(out), 10))
		return
	}
	cmds := availableCommands(string(out))
	if !cmds["serve"] {
		h.tools.cutoverMissing = "the built cutover has no `serve` command yet"
		return
	}
	var lack []string
	for _, c := range []string{"deploy", "rollback"} {
		if !cmds[c] {
			lack = append(lack, c)
		}
	}
	if len(lack) > 0 {
		h.tools.cutoverNoSwitch = "the built cutover has no `" + strings.Join(lack, "`, `") + "` command yet"
	}
}

// availableCommands reads the command names from cobra's help output.
func availableCommands(help string) map[string]bool {
	cmds := map[string]bool{}
	in := false
	sc := bufio.NewScanner(strings.NewReader(help))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "Available Commands:"):
			in = true
		case in && strings.TrimSpace(line) == "":
			in = false
		case in:
			if f := strings.Fields(line); len(f) > 0 {
				cmds[f[0]] = true
			}
		}
	}
	return cmds
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// machine describes where the benchmark ran.
type machine struct {
	NProc                           int
	CPU, Kernel                     string
	Nginx, HAProxy, Wrk, Go, Commit string
	H2load                          string // "" unless the https phase ran
}

func readMachine(repo string, t tools) machine {
	m := machine{NProc: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	first := func(name string, args ...string) string {
		out, _ := exec.Command(name, args...).CombinedOutput()
		return strings.TrimSpace(firstLine(string(out)))
	}
	m.Nginx = strings.TrimPrefix(first(t.nginx, "-v"), "nginx version: ")
	m.HAProxy = regexp.MustCompile(` - https?://\S+`).ReplaceAllString(first(t.haproxy, "-v"), "")
	m.Wrk = regexp.MustCompile(` Copyright.*`).ReplaceAllString(first(t.wrk, "-v"), "")
	if t.h2load != "" {
		m.H2load = first(t.h2load, "--version")
	}
	m.Go = first("go", "version")
	m.Commit = first("git", "-C", repo, "rev-parse", "--short", "HEAD")
	if out, err := exec.Command("git", "-C", repo, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(out))) > 0 {
		m.Commit += " (with uncommitted changes)"
	}
	return m
}

func (m machine) markdown() string {
	wrk := orUnknown(m.Wrk)
	if m.H2load != "" {
		wrk += "; " + m.H2load
	}
	return fmt.Sprintf(`Machine: %d CPUs (%s), %s. Load generator, proxy and backends share this machine.
Versions: %s; %s; %s; %s; cutover at commit %s.
`, m.NProc, orUnknown(m.CPU), orUnknown(m.Kernel), orUnknown(m.Nginx), orUnknown(m.HAProxy), wrk, orUnknown(m.Go), orUnknown(m.Commit))
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
