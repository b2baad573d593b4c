package demo

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"

	"github.com/cutover/cutover/internal/testutil/freeport"
)

// TestDemoSwitchesWithoutFailures runs the built-in demonstration: both
// colours must serve, every switch must happen and no request may fail.
func TestDemoSwitchesWithoutFailures(t *testing.T) {
	var out bytes.Buffer
	rep, err := Run(context.Background(), Options{Listen: freeport.For(t), Switches: 4, Clients: 8, Once: true, StateDir: t.TempDir(), Out: &out})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if rep.Failed != 0 || rep.Switches != 4 || rep.Requests == 0 {
		t.Fatalf("report %+v", rep)
	}
	for _, p := range []string{"blue-1", "blue-2", "green-1", "green-2"} { // red only takes part in the canary
		if rep.ByProfile[p] == 0 {
			t.Errorf("no response from %s: %v", p, rep.ByProfile)
		}
	}
	if !strings.Contains(out.String(), "0 failed, 4 switches") {
		t.Errorf("output does not report the result:\n%s", out.String())
	}
	c := rep.Canary
	if c.Breach == "" || c.Failed != 0 || c.BrokenRequests == 0 || c.BrokenErrors == 0 || c.BreachToRollback <= 0 {
		t.Errorf("canary part: %+v; want a guard rollback of the broken version, with no failed request but its own 500s", c)
	}
	if !strings.Contains(out.String(), "rolled back") {
		t.Errorf("output does not report the guard's rollback:\n%s", out.String())
	}
	t.Logf("canary: %d requests, %d failed, red %d (%d own 500s); %s; breach to rollback %s", c.Requests, c.Failed, c.BrokenRequests, c.BrokenErrors, c.Breach, c.BreachToRollback)
	t.Logf("%d requests, %d failed, %d switches", rep.Requests, rep.Failed, rep.Switches)
}

func TestDemoReportsBusyAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = Run(context.Background(), Options{Listen: ln.Addr().String(), Once: true, StateDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "--listen") {
		t.Fatalf("err = %v, want it to name the address and --listen", err)
	}
}
