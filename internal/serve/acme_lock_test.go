package serve_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/dataplane/listen"
	"github.com/cutover/cutover/internal/testutil/lockedbuf"
)

// helperEnv carries a helper process's instructions (JSON).
const helperEnv = "CUTOVER_ACME_HELPER"

type helperSpec struct {
	Directory, CARoots, Storage, Backend string
	Hosts                                []string
}

// TestACMEHelperProcess is not a test: it is one of the cutover processes
// TestACMEProcessesShareStorage starts. It serves until its stdin closes,
// printing its listener and then, per host, the certificate it serves.
func TestACMEHelperProcess(t *testing.T) {
	raw := os.Getenv(helperEnv)
	if raw == "" {
		t.Skip("helper process for TestACMEProcessesShareStorage")
	}
	var spec helperSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		t.Fatal(err)
	}
	p := &pebbleCA{dir: spec.Directory, rootsFile: spec.CARoots}
	// Each process has its own state_dir (a cutover holds a lease on
	// it); the ACME storage is what they share.
	in := startACMEInstance(t, p, acmeSetup{
		stateDir: t.TempDir(), storage: spec.Storage, challenge: config.ChallengeHTTP01, hosts: spec.Hosts,
		backend: spec.Backend, logs: &lockedbuf.Buffer{},
	})
	fmt.Printf("HTTP %d\n", portOf(t, in.HTTPAddr()))
	for _, h := range spec.Hosts {
		waitState(t, in, h, listen.CertValid, time.Now(), 90*time.Second)
		for _, s := range in.Certificates().Status() {
			if s.Host == h {
				fmt.Printf("VALID %s %s\n", h, s.NotAfter.Format(time.RFC3339Nano))
			}
		}
	}
	io.Copy(io.Discard, os.Stdin)
}

// Two cutover processes sharing tls.acme.storage start at once: each host is
// ordered from the CA once (the storage lock), the one account is shared,
// the CA's HTTP-01 request reaches only the first process yet is answered
// whichever process placed the order (challenge state in the storage),
// and both end up serving the same certificate.
func TestACMEProcessesShareStorage(t *testing.T) {
	if os.Getenv(helperEnv) != "" {
		t.Skip("inside a helper")
	}
	p := newPebble(t, 24*time.Hour)
	hosts := []string{"x.example.com", "y.example.com"}
	spec, err := json.Marshal(helperSpec{
		Directory: p.dir, CARoots: p.rootsFile, Storage: t.TempDir(), Backend: okBackend(t), Hosts: hosts,
	})
	if err != nil {
		t.Fatal(err)
	}
	type proc struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		lines chan string
	}
	var procs []*proc
	for range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		t.Cleanup(cancel)
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestACMEHelperProcess$", "-test.v")
		cmd.Env = append(os.Environ(), helperEnv+"="+string(spec))
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		var output lockedbuf.Buffer
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pr := &proc{cmd: cmd, stdin: stdin, lines: make(chan string, 64)}
		go func() {
			defer close(pr.lines)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				output.Write([]byte(sc.Text() + "\n"))
				pr.lines <- sc.Text()
			}
		}()
		t.Cleanup(func() {
			stdin.Close()
			cmd.Wait()
			if t.Failed() {
				t.Logf("helper output:\n%s\nhelper stderr:\n%s", output.String(), stderr.String())
			}
		})
		procs = append(procs, pr)
	}
	next := func(pr *proc, prefix string) string {
		t.Helper()
		timeout := time.After(90 * time.Second)
		for {
			select {
			case l, ok := <-pr.lines:
				if !ok {
					t.Fatalf("helper ended before printing %q", prefix)
				}
				if rest, ok := strings.CutPrefix(l, prefix+" "); ok {
					return rest
				}
			case <-timeout:
				t.Fatalf("helper printed no %q", prefix)
			}
		}
	}
	// The CA checks HTTP-01 at the first process's port only.
	var firstPort int
	fmt.Sscan(next(procs[0], "HTTP"), &firstPort)
	p.startPorts(t, firstPort, 0)
	next(procs[1], "HTTP")

	served := make([]map[string]string, 2)
	for i, pr := range procs {
		served[i] = map[string]string{}
		for range hosts {
			host, notAfter, _ := strings.Cut(next(pr, "VALID"), " ")
			served[i][host] = notAfter
		}
	}
	for _, h := range hosts {
		if served[0][h] == "" || served[0][h] != served[1][h] {
			t.Errorf("%s: the processes serve different certificates (expiring %q and %q)", h, served[0][h], served[1][h])
		}
	}
	if n := p.orders.Load(); n != int64(len(hosts)) {
		t.Errorf("the CA got %d orders for %d hosts from two processes, want one per host", n, len(hosts))
	}
	var spec2 helperSpec
	json.Unmarshal(spec, &spec2)
	assertKeysPrivate(t, spec2.Storage)
}
