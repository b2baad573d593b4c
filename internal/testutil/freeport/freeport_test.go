package freeport

import (
	"net"
	"strconv"
	"testing"
)

// TestAddrIsBelowTheEphemeralRangeAndBindable: the address binds, and its
// port is one no outgoing connection is given.
func TestAddrIsBelowTheEphemeralRangeAndBindable(t *testing.T) {
	low := ephemeralLow()
	if low <= 2*firstUnprivileged {
		t.Skipf("the ephemeral range starts at %d: no room below it on this machine", low)
	}
	for range 20 {
		addr := For(t)
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		port, _ := strconv.Atoi(p)
		if port < firstUnprivileged || port >= low {
			t.Fatalf("port %d is outside [%d, %d)", port, firstUnprivileged, low)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("bind %s: %v", addr, err)
		}
		ln.Close()
	}
}
