//go:build linux

package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"
	"unsafe"

	"github.com/cutover/cutover/internal/dataplane/forward"
	"github.com/cutover/cutover/internal/dataplane/route"
	"github.com/cutover/cutover/internal/dataplane/sock"
)

// TestLoopsTrimIdleTLSConnectionsAndHandThemOver: a TLS connection a loop
// serves drops crypto/tls's input buffers once it has been idle for
// ParkAfter, then reads its next request as before; a request the loop
// does not serve (here one for an unknown host) hands the connection, TLS
// state and all, to the goroutine engine, which answers it and the next.
func TestLoopsTrimIdleTLSConnectionsAndHandThemOver(t *testing.T) {
	p := New(Options{
		Router:    route.NewRouter(route.NewTable()),
		Trusted:   forward.NewTrusted(nil),
		ParkAfter: 20 * time.Millisecond,
		Logger:    slog.New(slog.DiscardHandler),
	})
	handedOver := make(chan bool, 1)
	e, err := p.NewLoops(LoopOptions{Loops: 1, Handoff: func(nc net.Conn, h *Handoff) {
		go func() {
			handedOver <- h.Socket() != nil
			p.ServeHandoff(nc, h, ConnInfo{})
		}()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.Shutdown(ctx)
	}()
	var pipe *TLSPipe
	srv, cli := tlsPairOver(t, func(nc net.Conn) net.Conn {
		pipe = NewTLSPipe(sock.Wrap(nc))
		return pipe
	})
	k := newTLSTrim()
	rawCap := func(tc *tls.Conn) int {
		return (*bytes.Buffer)(unsafe.Add(unsafe.Pointer(tc), k.rawInput)).Cap()
	}
	if rawCap(srv) == 0 {
		t.Fatal("after the handshake crypto/tls holds no record buffer; the test expects it to")
	}
	if err := e.AddTLS(srv, pipe); err != nil {
		t.Fatal(err)
	}
	if all, overTLS := e.Clients(); all != 1 || overTLS != 1 {
		t.Fatalf("the loops serve %d connections, %d over TLS; want 1 and 1", all, overTLS)
	}
	// What the loop's connection looks like, read on the loop.
	l := e.loops[0]
	onLoop := func() (trimmed bool, raw int) {
		l.onLoop(func() {
			for c := range l.clients {
				trimmed, raw = c.trimmed, rawCap(c.tc)
			}
		})
		return trimmed, raw
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		trimmed, raw := onLoop()
		if trimmed && raw == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("idle on the loop for 5s: trimmed %v, record buffer %d bytes; want trimmed and 0", trimmed, raw)
		}
		time.Sleep(10 * time.Millisecond)
	}

	br := bufio.NewReader(cli)
	for i, want := range []string{"after the trim, on the loop", "on the goroutine engine"} {
		io.WriteString(cli, "GET / HTTP/1.1\r\nHost: nowhere.test\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d (%s): %v", i+1, want, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 404 || !bytes.Contains(body, []byte("no service")) {
			t.Fatalf("request %d (%s): %d %q; want 404 no service", i+1, want, resp.StatusCode, body)
		}
		if i == 0 {
			select {
			case withSocket := <-handedOver:
				if !withSocket {
					t.Fatal("the hand-off of a TLS connection came without its socket")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the loop answered a request for an unknown host itself; want it handed over")
			}
		}
	}
	if all, overTLS := e.Clients(); all != 0 || overTLS != 0 {
		t.Fatalf("after the hand-off the loops serve %d connections, %d over TLS; want none", all, overTLS)
	}
}
