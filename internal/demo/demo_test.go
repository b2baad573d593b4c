package demo

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestDemoSwitchesWithoutFailures runs the built-in demonstration: both
// colours must serve, every switch must happen and no request may fail.
func TestDemoSwitchesWithoutFailures(t *testing.T) {
	var out bytes.Buffer
	rep, err := Run(context.Background(), Options{Listen: freeAddr(t), Switches: 4, Clients: 8, Once: true, StateDir: t.TempDir(), Out: &out})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if rep.Failed != 0 || rep.Switches != 4 || rep.Requests == 0 {
		t.Fatalf("report %+v", rep)
	}
	for _, p := range []string{"blue-1", "blue-2", "green-1", "green-2"} {
		if rep.ByProfile[p] == 0 {
			t.Errorf("no response from %s: %v", p, rep.ByProfile)
		}
	}
	if !strings.Contains(out.String(), "0 failed, 4 switches") {
		t.Errorf("output does not report the result:\n%s", out.String())
	}
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
