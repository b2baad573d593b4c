package reliability

import (
	"bufio"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cutover/cutover/internal/testutil/freeport"
)

// knownH2specFailures are the cases nginx passes and cutover does not yet,
// each with why. A case leaves this list when it passes (the test says so).
// None now.
var knownH2specFailures = map[string]string{}

// TestH2specAgainstHTTPS runs h2spec (every case, 2 s timeout each) against
// cutover's HTTPS listener with a real backend behind it: every case that
// nginx passes (testdata/h2spec-nginx.txt) must pass, but for the known
// failures listed above.
func TestH2specAgainstHTTPS(t *testing.T) {
	tl := binaries(t)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok\n")
	}))
	t.Cleanup(be.Close)

	dir := t.TempDir()
	https := freeport.For(t)
	socket := filepath.Join(dir, "admin.sock")
	cfg := filepath.Join(dir, "cutover.yaml")
	text := fmt.Sprintf(`listen:
  http: "%s"
  https: "%s"
tls:
  self_signed: true
  hosts: [localhost]
state_dir: %s
admin: {socket: %s}
log: {access: "off"}
services:
  web:
    pools:
      blue: ["%s"]
`, freeport.For(t), https, dir, socket, be.Listener.Addr())
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	serve(t, tl.cutover, cfg, socket)

	_, port, _ := net.SplitHostPort(https)
	report := filepath.Join(dir, "h2spec.xml")
	cmd := exec.Command(tl.h2spec, "-t", "-k", "-h", "127.0.0.1", "-p", port, "-o", "2", "-j", report)
	out, err := cmd.CombinedOutput()
	// h2spec exits 1 when a case fails; the report says which.
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("run h2spec: %v", err)
	}
	got, err := readJUnit(report)
	if err != nil {
		t.Fatalf("%v\nh2spec output:\n%s", err, out)
	}
	ref := readReference(t, "testdata/h2spec-nginx.txt")
	if len(got) != len(ref) {
		t.Fatalf("h2spec ran %d cases, the nginx reference has %d; is the h2spec version the reference names in use?\n%s", len(got), len(ref), out)
	}

	passed := 0
	for id, c := range got {
		if c.outcome == "pass" {
			passed++
		}
		why, known := knownH2specFailures[id]
		switch {
		case c.outcome == "pass" && known:
			t.Errorf("h2spec %s (%s) passes now: remove it from knownH2specFailures", id, c.desc)
		case c.outcome != "pass" && ref[id] == "pass" && known:
			t.Logf("known failure h2spec %s (%s): %s", id, c.desc, why)
		case c.outcome != "pass" && ref[id] == "pass":
			t.Errorf("h2spec %s (%s) %ss, nginx passes it:\n%s", id, c.desc, c.outcome, c.detail)
		case c.outcome == "fail":
			t.Logf("h2spec %s (%s) fails, as it does with nginx", id, c.desc)
		}
	}
	t.Logf("h2spec: %d of %d cases passed (nginx: %d)", passed, len(got), countPass(ref))
}

type h2case struct{ outcome, desc, detail string }

// readJUnit reads h2spec's JUnit report into h2spec ID → outcome. An ID is
// the group's ID and the case's 1-based position in it ("http2/6.5.3/1"),
// as h2spec names cases on its command line.
func readJUnit(path string) (map[string]h2case, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("h2spec wrote no report: %w", err)
	}
	var rep struct {
		Suites []struct {
			Cases []struct {
				Package   string `xml:"package,attr"`
				ClassName string `xml:"classname,attr"`
				Failure   *struct {
					Text string `xml:",innerxml"`
				} `xml:"failure"`
				Error *struct {
					Text string `xml:",innerxml"`
				} `xml:"error"`
				Skipped *struct{} `xml:"skipped"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(b, &rep); err != nil {
		return nil, fmt.Errorf("parse h2spec report %s: %w", path, err)
	}
	out := map[string]h2case{}
	for _, s := range rep.Suites {
		for i, c := range s.Cases {
			hc := h2case{outcome: "pass", desc: c.ClassName}
			switch {
			case c.Skipped != nil:
				hc.outcome = "skip"
			case c.Failure != nil:
				hc.outcome, hc.detail = "fail", c.Failure.Text
			case c.Error != nil:
				hc.outcome, hc.detail = "fail", c.Error.Text
			}
			out[fmt.Sprintf("%s/%d", c.Package, i+1)] = hc
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("h2spec report %s holds no cases", path)
	}
	return out, nil
}

// readReference reads "ID outcome" lines; # starts a comment.
func readReference(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ref := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id, outcome, ok := strings.Cut(line, " ")
		if !ok {
			t.Fatalf("%s: line %q is not \"ID outcome\"", path, line)
		}
		ref[id] = outcome
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return ref
}

func countPass(m map[string]string) int {
	n := 0
	for _, o := range m {
		if o == "pass" {
			n++
		}
	}
	return n
}
