// Package freeport finds 127.0.0.1 addresses for configurations that need a
// fixed port before the program that listens on it starts.
//
// A port the kernel hands out for ":0" comes from the ephemeral range, the
// same range it draws the local ports of outgoing connections from. Between
// the moment a test learns such a port and the moment the program under
// test binds it, any outgoing connection on the machine (the program's own
// connection to etcd, a load client's, another test package's) may take it
// as its local port, and the bind fails with "address already in use".
// Ports below the ephemeral range are never handed out that way, so this
// package picks from there.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// ephemeralLow is the lowest port of the kernel's ephemeral range, or
// Linux's default when the range cannot be read.
func ephemeralLow() int {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	return low
}

// firstUnprivileged is the lowest port a process without privileges binds.
const firstUnprivileged = 1024

// Addr returns a 127.0.0.1 address whose port was free a moment ago and
// lies below the ephemeral range. The port is chosen at random, so that
// test packages running at the same time rarely pick the same one; a
// clash shows as the listener's bind error naming the port.
func Addr() (string, error) {
	low := ephemeralLow()
	if low <= 2*firstUnprivileged {
		return ephemeral() // no room below the range
	}
	for range 200 {
		port := firstUnprivileged + rand.IntN(low-firstUnprivileged)
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		addr := ln.Addr().String()
		ln.Close()
		return addr, nil
	}
	return "", fmt.Errorf("no free port below %d on 127.0.0.1 after 200 tries", low)
}

// ephemeral asks the kernel for a port.
func ephemeral() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port on 127.0.0.1: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// For is Addr for tests: it fails t when no port is found.
func For(t testing.TB) string {
	t.Helper()
	addr, err := Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}
