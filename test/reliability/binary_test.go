// Package reliability holds the suite that keeps the hardening found: h2spec
// against the HTTPS listener and a short soak through the real binary
// (switches, backend kills, reloads) with zero failed requests and bounded
// memory and file descriptors. Everything is bounded in time; the long soak
// is `bench/run -phases soak`.
package reliability

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/admin"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// tools are the programs the suite runs.
type tools struct{ cutover, backend, h2spec string }

// binaries builds cmd/cutover, bench/backend and h2spec once per test run.
func binaries(t *testing.T) tools {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "cutover-reliability-bin-")
		if buildErr != nil {
			return
		}
		// h2spec is a tool of the module (go.mod's tool directive), so the
		// module proxy serves it at the version go.sum pins.
		for _, pkg := range []string{"../../cmd/cutover", "../../bench/backend", "github.com/summerwind/h2spec/cmd/h2spec"} {
			out, err := exec.Command("go", "build", "-o", filepath.Join(buildDir, filepath.Base(pkg)), pkg).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return tools{
		cutover: filepath.Join(buildDir, "cutover"),
		backend: filepath.Join(buildDir, "backend"),
		h2spec:  filepath.Join(buildDir, "h2spec"),
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// serve starts `cutover serve -c cfg` and waits until its admin API on
// socket answers; the process is killed at the end of the test.
func serve(t *testing.T, bin, cfg, socket string) *exec.Cmd {
	t.Helper()
	out, err := os.Create(filepath.Join(filepath.Dir(cfg), "serve.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "-c", cfg)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		out.Close()
		close(done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			b, _ := os.ReadFile(out.Name())
			t.Logf("cutover serve output:\n%s", b)
		}
	})
	c := admin.NewUnixClient(socket)
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-done:
			b, _ := os.ReadFile(out.Name())
			t.Fatalf("cutover serve exited: %v\n%s", cmd.ProcessState, b)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Health(ctx)
		cancel()
		if err == nil {
			return cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("cutover serve's admin API did not answer within 20s: %v", err)
		}
		// Polling a child process's readiness: there is no signal to await.
		time.Sleep(20 * time.Millisecond)
	}
}
