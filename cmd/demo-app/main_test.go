package main

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/demoapp"
)

// buildDemoApp builds this command as the static binary the scratch image
// uses.
func buildDemoApp(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go tool is needed to build demo-app: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "demo-app")
	cmd := exec.Command(goBin, "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build with CGO_ENABLED=0: %v\n%s", err, out)
	}
	return bin
}

// proc is a running demo-app process.
type proc struct {
	cmd    *exec.Cmd
	addr   string // as logged at start
	exited chan struct{}
	err    error // from Wait, valid once exited is closed

	mu     sync.Mutex
	stderr strings.Builder
}

// startProc runs bin and waits for its "listening" log line. The process is
// killed by PID when the test ends if it is still running.
func startProc(t *testing.T, bin string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), exited: make(chan struct{})}
	p.cmd.Env = env
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	listeningAddr := regexp.MustCompile(`msg="demo-app listening" addr=(\S+)`)
	addrc := make(chan string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.stderr.WriteString(line + "\n")
			p.mu.Unlock()
			if m := listeningAddr.FindStringSubmatch(line); m != nil {
				addrc <- m[1]
			}
		}
	}()
	go func() {
		<-scanned // Wait closes the pipe, so read it all first
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	select {
	case p.addr = <-addrc:
	case <-p.exited:
		t.Fatalf("demo-app exited before listening (%v):\n%s", p.err, p.logs())
	case <-time.After(10 * time.Second):
		t.Fatalf("demo-app did not log its address within 10s:\n%s", p.logs())
	}
	return p
}

func (p *proc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// waitExit returns the exit code, failing the test if the process does not
// exit within 15s (longer than the 10s shutdown timeout).
func (p *proc) waitExit(t *testing.T) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		t.Fatalf("demo-app did not exit:\n%s", p.logs())
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatalf("wait: %v", p.err)
	}
	return 0
}

func envWith(kv ...string) []string {
	var env []string
	for _, e := range os.Environ() {
		name, _, _ := strings.Cut(e, "=")
		if name != "PORT" && name != "PROFILE" && name != "VERSION" {
			env = append(env, e)
		}
	}
	return append(env, kv...)
}

func getInfo(t *testing.T, url string) demoapp.Info {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var info demoapp.Info
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		t.Fatalf("GET %s: decoding: %v", url, err)
	}
	return info
}

func healthcheckExit(t *testing.T, bin, url string) (int, string) {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "-healthcheck", url)
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), stderr.String()
	default:
		t.Fatalf("run -healthcheck: %v", err)
		return -1, ""
	}
}

func TestProcessServesHealthchecksAndStopsOnSIGTERM(t *testing.T) {
	bin := buildDemoApp(t)
	if runtime.GOOS == "linux" {
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				t.Error("demo-app is dynamically linked; a FROM scratch image needs a static binary")
			}
		}
		f.Close()
	}

	p := startProc(t, bin, envWith("PROFILE=set1-server1", "VERSION=v9"), "-addr", "127.0.0.1:0")
	base := "http://" + p.addr

	info := getInfo(t, base+"/")
	if info.Profile != "set1-server1" || info.Version != "v9" || info.Hostname == "" {
		t.Errorf("GET / = %+v, want profile set1-server1, version v9 and a hostname", info)
	}

	if code, out := healthcheckExit(t, bin, base+"/healthz"); code != 0 {
		t.Errorf("-healthcheck on a healthy app: exit %d (%s), want 0", code, out)
	}
	resp, err := http.Post(base+"/admin/health?ok=false", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if code, out := healthcheckExit(t, bin, base+"/healthz"); code != 1 || !strings.Contains(out, "503") {
		t.Errorf("-healthcheck on an unhealthy app: exit %d (%q), want 1 naming the 503", code, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/healthz"
	ln.Close()
	if code, _ := healthcheckExit(t, bin, closed); code != 1 {
		t.Errorf("-healthcheck on a closed port: exit %d, want 1", code)
	}

	// SIGTERM during a stream: the stream finishes, then the process
	// exits 0.
	resp, err = http.Get(base + "/stream?n=3&interval=200")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "id: 1") {
		t.Fatalf("first event line %q, %v", line, err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("stream after SIGTERM: %v", err)
	}
	if n := strings.Count(string(rest), "data: "); n != 3 || !strings.Contains(string(rest), `"seq":3`) {
		t.Errorf("after SIGTERM the stream delivered %d more events (%q), want the whole stream of 3", n, rest)
	}
	if code := p.waitExit(t); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0:\n%s", code, p.logs())
	}
	if logs := p.logs(); !strings.Contains(logs, `msg="demo-app stopped"`) {
		t.Errorf("no stop log line:\n%s", logs)
	}
}

func TestProcessUsesPORTAndStopsOnSIGINT(t *testing.T) {
	bin := buildDemoApp(t)
	// PORT=0 picks a free port on all interfaces; traffic goes to 127.0.0.1 only.
	p := startProc(t, bin, envWith("PORT=0", "PROFILE=set2-server2"))
	_, port, err := net.SplitHostPort(p.addr)
	if err != nil || port == "0" {
		t.Fatalf("logged address %q, want a bound host:port", p.addr)
	}
	if host, _, _ := net.SplitHostPort(p.addr); host != "::" && host != "0.0.0.0" {
		t.Errorf("listening on %q, want all interfaces (\":$PORT\")", p.addr)
	}
	info := getInfo(t, "http://127.0.0.1:"+port+"/")
	if info.Profile != "set2-server2" || info.Version != "dev" {
		t.Errorf("GET / = %+v, want profile set2-server2 and the default version dev", info)
	}
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code := p.waitExit(t); code != 0 {
		t.Fatalf("exit code %d after SIGINT, want 0:\n%s", code, p.logs())
	}
}

func TestRunRejectsStrayArguments(t *testing.T) {
	var stderr bytes.Buffer
	getenv := func(string) string { return "" }
	if code := run([]string{"serve"}, getenv, &stderr); code != 2 {
		t.Errorf("run(serve) = %d, want 2", code)
	}
	if !strings.Contains(stderr.String(), `"serve"`) {
		t.Errorf("message %q does not name the stray argument", stderr.String())
	}
}
