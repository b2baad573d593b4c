package refused

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

func TestAddrRefusesAndCannotBeTaken(t *testing.T) {
	a := Addr(t)
	for range 3 {
		c, err := net.DialTimeout("tcp", a, 2*time.Second)
		if err == nil {
			c.Close()
			t.Fatalf("a connection to %s was accepted", a)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial %s: %v, want connection refused", a, err)
		}
	}
	if l, err := net.Listen("tcp", a); err == nil {
		l.Close()
		t.Fatalf("another listener took %s while it was held", a)
	}
}
