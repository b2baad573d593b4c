package proxy_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/cutover/cutover/internal/dataplane/accesslog"
	"github.com/cutover/cutover/internal/dataplane/proxy"
	"github.com/cutover/cutover/internal/dataplane/route"
	"github.com/cutover/cutover/internal/dataplane/stats"
	"github.com/cutover/cutover/internal/dataplane/upstream"
)

// rawBackend is a minimal keep-alive HTTP/1.1 server answering every
// request with a 100-byte body, so the benchmark measures the proxy and
// not net/http's server.
func rawBackend(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n" + strings.Repeat("x", 100))
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					// Read a head (no bodies in this benchmark).
					for {
						line, err := br.ReadSlice('\n')
						if err != nil {
							return
						}
						if len(line) <= 2 {
							break
						}
					}
					if _, err := c.Write(resp); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// BenchmarkProxyGET measures one keep-alive GET through the HTTP/1.1
// engine with the real features on: routing, forwarding headers, request
// IDs, pool accounting, balancing over two targets, passive health.
func BenchmarkProxyGET(b *testing.B) {
	benchProxy(b, nil)
}

// BenchmarkProxyGETAccessLog is BenchmarkProxyGET with the combined access
// log written to a file.
func BenchmarkProxyGETAccessLog(b *testing.B) {
	l, err := accesslog.New(accesslog.Options{Path: b.TempDir() + "/access.log", Format: "combined"})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	benchProxy(b, l)
}

// BenchmarkProxyGETStats is BenchmarkProxyGET with the stats observer on,
// as cutover serve runs it (metrics, status, dashboard, guard).
func BenchmarkProxyGETStats(b *testing.B) {
	benchProxy(b, nil, stats.New())
}

// TestRequestPathAllocatesNothing: a keep-alive GET through the proxy with
// the stats observer on (what metrics, status and the guard read)
// allocates nothing per request. The access log is left out: when its
// writer falls behind on a loaded machine it may take a fresh buffer, which
// says nothing about the request path.
func TestRequestPathAllocatesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a benchmark")
	}
	r := testing.Benchmark(func(b *testing.B) { benchProxy(b, nil, stats.New()) })
	if r.N == 0 {
		t.Fatal("the benchmark did not run")
	}
	// A few allocations over the whole run (connection set-up, a map
	// growing once) round to 0 per request; one per request does not.
	if a := r.AllocsPerOp(); a != 0 {
		t.Fatalf("%d allocations per request over %d requests (%s), want 0", a, r.N, r.MemString())
	}
}

func benchProxy(b *testing.B, al *accesslog.Logger, observers ...proxy.Observer) {
	svc := route.NewService("web")
	p := upstream.NewPool("blue", upstream.RoundRobin)
	p.SetTargets([]upstream.TargetSpec{{Addr: rawBackend(b)}, {Addr: rawBackend(b)}}, func(s upstream.TargetSpec) *upstream.Target {
		return upstream.NewTarget(upstream.TargetOptions{Addr: s.Addr, Initial: upstream.Up})
	})
	svc.Apply(&route.Routes{Stable: p})
	tbl := route.NewTable()
	tbl.Add(svc, nil)
	ps := startProxy(b, proxy.Options{Router: route.NewRouter(tbl), AccessLog: al, Observers: observers}, proxy.ConnInfo{})
	ln := ps.ln
	req := []byte("GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	b.ReportAllocs()
	b.SetParallelism(8)
	var mu sync.Mutex
	var firstErr error
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			mu.Lock()
			firstErr = err
			mu.Unlock()
			return
		}
		defer c.Close()
		br := bufio.NewReaderSize(c, 4096)
		for pb.Next() {
			if _, err := c.Write(req); err != nil {
				mu.Lock()
				firstErr = err
				mu.Unlock()
				return
			}
			if err := readResponse(br); err != nil {
				mu.Lock()
				firstErr = err
				mu.Unlock()
				return
			}
		}
	})
	if firstErr != nil {
		b.Fatal(firstErr)
	}
}

func readResponse(br *bufio.Reader) error {
	length := -1
	line, err := br.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 200")) {
		return io.ErrUnexpectedEOF
	}
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			break
		}
		if len(line) > 15 && bytes.EqualFold(line[:15], []byte("content-length:")) {
			length, _ = strconv.Atoi(string(bytes.TrimSpace(line[15:])))
		}
	}
	_, err = br.Discard(length)
	return err
}
