package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cutover/cutover/internal/dataplane/upstream"
)

// runValidate runs the real command tree with captured streams.
func runValidate(t *testing.T, args ...string) (stdout, stderr string, code int, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := NewRoot(Streams{In: strings.NewReader(""), Out: &out, Err: &errOut})
	root.SetArgs(append([]string{"validate"}, args...))
	err = root.Execute()
	code = 0
	if err != nil {
		code = ExitCode(err)
	}
	return out.String(), errOut.String(), code, err
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cutover.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestValidateGoodFile(t *testing.T) {
	t.Setenv("CUTOVER_TEST_HOST", "Example.com")
	path := writeConfig(t, `listen: {http: "127.0.0.1:8080"}
services:
  web:
    hosts: ["${CUTOVER_TEST_HOST}"]
    pools:
      blue: ["127.0.0.1:9001", "127.0.0.1:9002"]
      green: []
  api:
    pools: {v1: ["127.0.0.1:9101"]}
`)
	stdout, stderr, code, err := runValidate(t, "-c", path)
	if err != nil || code != 0 {
		t.Fatalf("validate failed: code %d, err %v, stderr %q", code, err, stderr)
	}
	if want := "ok: " + path + ": 2 services (web, api)\n"; stdout != want {
		t.Errorf("stdout = %q, want %q", stdout, want)
	}
	if stderr != "" {
		t.Errorf("stderr = %q, want nothing", stderr)
	}
}

func TestValidateBadFileListsEveryProblem(t *testing.T) {
	path := writeConfig(t, `listen: {http: "127.0.0.1:8080"}
services:
  web:
    hosts: ["${CUTOVER_TEST_UNSET_VAR}"]
    balance: random
    pools:
      blue: ["127.0.0.1:9001"]
    active: green
`)
	stdout, stderr, code, err := runValidate(t, "--config", path)
	if code != 1 || err == nil {
		t.Fatalf("code %d, err %v; want exit 1", code, err)
	}
	if stdout != "" {
		t.Errorf("stdout = %q, want nothing", stdout)
	}
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	want := []string{
		path + ":4: ${CUTOVER_TEST_UNSET_VAR}: environment variable CUTOVER_TEST_UNSET_VAR is not set — ",
		path + ":5: services.web.balance: \"random\" is not a balance policy — use " + upstream.BalanceChoices(),
		path + ":8: services.web.active: names pool \"green\", which service web does not have — use one of: blue",
	}
	if len(lines) != len(want) {
		t.Fatalf("stderr has %d lines, want %d:\n%s", len(lines), len(want), stderr)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d = %q, want prefix %q", i, lines[i], w)
		}
	}
	if got, want := err.Error(), path+": 3 problems"; got != want {
		t.Errorf("error = %q, want %q", got, want)
	}
}

func TestValidateUsageErrors(t *testing.T) {
	_, _, code, err := runValidate(t)
	if code != 2 || err == nil || !strings.Contains(err.Error(), "-c FILE") {
		t.Errorf("without -c: code %d, err %v; want exit 2 naming -c FILE", code, err)
	}
	_, _, code, err = runValidate(t, "cutover.yaml")
	if code != 2 || err == nil || !strings.Contains(err.Error(), "-c cutover.yaml") {
		t.Errorf("positional file: code %d, err %v; want exit 2 suggesting -c", code, err)
	}
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	_, stderr, code, err := runValidate(t, "-c", missing)
	if code != 1 || err == nil || !strings.Contains(err.Error(), "no such file") || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: code %d, err %v, stderr %q; want exit 1 naming the file", code, err, stderr)
	}
}
