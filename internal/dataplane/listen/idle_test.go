package listen

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/dataplane/proxy"
)

// TestIdleTLSConnectionsHoldNoBuffers: an HTTP/1.1 connection over TLS
// holds a read buffer and request state only while it serves a request or
// has bytes of one; waiting for the next request it holds neither, so ten
// thousand idle TLS clients cost crypto/tls's state each, not 8 KiB of
// buffers more. Both engines: the event loops and, where the loops are
// turned off, the goroutines.
func TestIdleTLSConnectionsHoldNoBuffers(t *testing.T) {
	for _, engine := range []string{EngineLoops, EngineGoroutines} {
		t.Run(engine, func(t *testing.T) {
			if engine == EngineLoops && !proxy.LoopsSupported {
				t.Skip("the event loops need Linux's epoll")
			}
			idleTLSHoldsNoBuffers(t, engine)
		})
	}
}

func idleTLSHoldsNoBuffers(t *testing.T, engine string) {
	s, px, cfg := tlsHTTP1Server(t, proxy.Options{}, engine)
	held := func() (int64, int64, string) {
		r, w := px.Held()
		if engine == EngineLoops {
			lr, lw := s.loops.Held()
			r, w = int64(lr), int64(lw)
		}
		return r, w, fmt.Sprintf("%d read buffers, %d request states", r, w)
	}
	waitHeld := func(what string, wantR, wantW int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			// The server returns them just after the response is written, so
			// the client can read it a moment before.
			r, w, msg := held()
			if r == wantR && w == wantW {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s; want %d and %d", what, msg, wantR, wantW)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	const conns, rounds = 30, 4
	clients := make([]*tls.Conn, conns)
	for i := range clients {
		clients[i] = dialTLS(t, s.HTTPSAddr().String(), cfg)
		clients[i].SetDeadline(time.Now().Add(20 * time.Second))
	}
	// Every connection carries requests at once, round after round: small
	// and large responses, and a pipelined pair; every response is checked.
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			br := bufio.NewReader(c)
			for n := range rounds {
				paths := []string{fmt.Sprintf("/c%d/r%d", i, n)}
				switch n {
				case 1:
					paths[0] = "/big"
				case 2:
					paths = append(paths, paths[0]+"/again")
				}
				var raw string
				for _, p := range paths {
					raw += "GET " + p + " HTTP/1.1\r\nHost: localhost\r\n\r\n"
				}
				if _, err := io.WriteString(c, raw); err != nil {
					errs <- err
					return
				}
				for _, p := range paths {
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						errs <- fmt.Errorf("%s: %w", p, err)
						return
					}
					got, _ := io.ReadAll(resp.Body)
					want := "ok " + p
					if p == "/big" {
						want = strings.Repeat("x", bigBodyLen)
					}
					if resp.StatusCode != 200 || string(got) != want {
						errs <- fmt.Errorf("%s: %d, %d bytes", p, resp.StatusCode, len(got))
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitHeld(fmt.Sprintf("%d idle TLS connections", conns), 0, 0)
	if got := httpsConns(s); got != conns {
		t.Errorf("%d HTTP/1.1-over-TLS connections counted, want %d", got, conns)
	}
	if engine == EngineLoops {
		if all, tls := s.loops.Clients(); all != conns || tls != conns {
			t.Errorf("the loops serve %d connections, %d over TLS; want %d of %d", all, tls, conns, conns)
		}
	}

	// Bytes of a head hold a read buffer until the request is served.
	c := clients[0]
	io.WriteString(c, "GET /part HTTP/1.1\r\nHo")
	waitHeld("half a head buffered", 1, 0)
	io.WriteString(c, "st: localhost\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := io.ReadAll(resp.Body); string(got) != "ok /part" {
		t.Errorf("the head cut in two: %q", got)
	}
	waitHeld("after the head cut in two", 0, 0)
	for _, c := range clients {
		c.Close()
	}
	waitHeld("closed", 0, 0)
}
