// Command backend is the benchmark's upstream: a tiny HTTP/1.1 server that
// answers GET / with a fixed 100-byte body and GET /healthz with 200. Every
// response names the instance in an X-Backend header (e.g. "blue-1") so the
// switch run can tell which pool served each request.
//
// The backends share the two cores with the proxy under test and the load
// generator, so every cycle they spend is taken from the proxy. The default
// server (-impl raw) is therefore a minimal keep-alive loop over net.Conn
// with precomputed responses. With net/http backends (-impl nethttp, kept
// for cross-checks) nginx reached about 31k req/s on the 2-core benchmark
// machine; with these, 43k: the backends no longer take the proxy's CPU.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// bodySize is the response body length the benchmark workload is defined by.
const bodySize = 100

// Timeouts of both implementations.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 120 * time.Second
	writeTimeout      = 30 * time.Second
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9001", "listen address (host:port)")
	name := flag.String("name", "blue-1", "instance name sent in the X-Backend header; the part before '-' is the pool colour")
	impl := flag.String("impl", "raw", "server implementation: raw (minimal, cheapest) or nethttp")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	switch *impl {
	case "raw":
		err = runRaw(ctx, *addr, *name)
	case "nethttp":
		err = runNetHTTP(ctx, *addr, *name)
	default:
		err = fmt.Errorf("-impl %q: use raw or nethttp", *impl)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "backend:", err)
		os.Exit(1)
	}
}

func body() []byte {
	b := make([]byte, bodySize)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	b[len(b)-1] = '\n'
	return b
}

// responses are the precomputed replies of the raw server.
type responses struct {
	root, rootClose, health, healthClose, badRequest []byte
}

func newResponses(name string) responses {
	head := func(status, length string, close bool) string {
		h := "HTTP/1.1 " + status + "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: " + length + "\r\nX-Backend: " + name + "\r\n"
		if close {
			h += "Connection: close\r\n"
		}
		return h + "\r\n"
	}
	b := string(body())
	n := strconv.Itoa(len(b))
	return responses{
		root:        []byte(head("200 OK", n, false) + b),
		rootClose:   []byte(head("200 OK", n, true) + b),
		health:      []byte(head("200 OK", "0", false)),
		healthClose: []byte(head("200 OK", "0", true)),
		badRequest:  []byte(head("400 Bad Request", "0", true)),
	}
}

// runRaw serves until ctx is done, then closes the listener and every
// connection.
func runRaw(ctx context.Context, addr, name string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("serve %s: %w", name, err)
	}
	srv := &rawServer{resp: newResponses(name), conns: map[net.Conn]struct{}{}}
	go func() {
		<-ctx.Done()
		_ = ln.Close()
		srv.closeAll()
	}()
	err = srv.serve(ln)
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("serve %s on %s: %w", name, addr, err)
}

type rawServer struct {
	resp  responses
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (s *rawServer) serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		go func() {
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				_ = c.Close()
			}()
			s.handle(c)
		}()
	}
}

func (s *rawServer) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		_ = c.Close()
	}
}

// handle serves the requests of one connection: heads are read strictly
// enough for the benchmark's clients (proxies, health checks); request bodies
// with Content-Length are skipped; chunked request bodies get 400 and close.
// Responses are flushed when no further pipelined request is buffered.
func (s *rawServer) handle(c net.Conn) {
	br := bufio.NewReaderSize(c, 4096)
	bw := bufio.NewWriterSize(c, 4096)
	for {
		_ = c.SetReadDeadline(time.Now().Add(idleTimeout))
		req, err := readRequestHead(br)
		if err != nil {
			if errors.Is(err, errBadRequest) {
				_ = c.SetWriteDeadline(time.Now().Add(writeTimeout))
				_, _ = c.Write(s.resp.badRequest)
			}
			return
		}
		if req.contentLength > 0 {
			if _, err := io.CopyN(io.Discard, br, req.contentLength); err != nil {
				return
			}
		}
		var out []byte
		switch {
		case req.health && req.close:
			out = s.resp.healthClose
		case req.health:
			out = s.resp.health
		case req.close:
			out = s.resp.rootClose
		default:
			out = s.resp.root
		}
		_ = c.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := bw.Write(out); err != nil {
			return
		}
		if br.Buffered() == 0 || req.close {
			if err := bw.Flush(); err != nil {
				return
			}
		}
		if req.close {
			return
		}
	}
}

var errBadRequest = errors.New("bad request")

type requestHead struct {
	health        bool // GET /healthz
	close         bool // the connection ends after this response
	contentLength int64
}

// readRequestHead reads a request line and headers.
func readRequestHead(br *bufio.Reader) (requestHead, error) {
	var req requestHead
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return req, errBadRequest
		}
		return req, err
	}
	// METHOD SP TARGET SP HTTP/1.x
	sp1 := bytes.IndexByte(line, ' ')
	sp2 := bytes.LastIndexByte(line, ' ')
	if sp1 <= 0 || sp2 <= sp1 {
		return req, errBadRequest
	}
	target := line[sp1+1 : sp2]
	version := bytes.TrimRight(line[sp2+1:], "\r\n")
	switch {
	case bytes.Equal(version, []byte("HTTP/1.1")):
	case bytes.Equal(version, []byte("HTTP/1.0")):
		req.close = true
	default:
		return req, errBadRequest
	}
	path, _, _ := bytes.Cut(target, []byte("?"))
	req.health = bytes.Equal(path, []byte("/healthz"))

	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return req, errBadRequest
			}
			if errors.Is(err, io.EOF) {
				return req, io.ErrUnexpectedEOF
			}
			return req, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			return req, nil
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return req, errBadRequest
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 {
				return req, errBadRequest
			}
			req.contentLength = n
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return req, errBadRequest
		case bytes.EqualFold(name, []byte("Connection")):
			for tok := range bytes.SplitSeq(value, []byte(",")) {
				tok = bytes.TrimSpace(tok)
				if bytes.EqualFold(tok, []byte("close")) {
					req.close = true
				} else if bytes.EqualFold(tok, []byte("keep-alive")) && bytes.Equal(version, []byte("HTTP/1.0")) {
					req.close = false
				}
			}
		}
	}
}

// runNetHTTP serves the same responses with net/http.
func runNetHTTP(ctx context.Context, addr, name string) error {
	b := body()
	contentLength := []string{strconv.Itoa(len(b))}
	backend := []string{name}
	contentType := []string{"text/plain; charset=utf-8"}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header()["X-Backend"] = backend
		w.WriteHeader(http.StatusOK)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		// Assigning the header slices directly skips canonicalising and
		// allocating per request.
		h := w.Header()
		h["Content-Type"] = contentType
		h["Content-Length"] = contentLength
		h["X-Backend"] = backend
		_, _ = w.Write(b)
	})
	srv := &http.Server{
		Addr:              addr,
		Handler:           mux,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       writeTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          log.New(os.Stderr, "backend "+name+": ", 0),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s on %s: %w", name, addr, err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shut down %s: %w", name, err)
	}
	return nil
}
