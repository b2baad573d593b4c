package loadclient

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestReadResponse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Response
		wantErr error // nil, errProtocol or io.ErrUnexpectedEOF
	}{
		{
			name: "content-length keep-alive",
			in:   "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Backend: blue-1\r\n\r\nhello",
			want: Response{Status: 200, Backend: "blue-1", BodyLen: 5},
		},
		{
			name: "header names are case-insensitive, bare LF accepted",
			in:   "HTTP/1.1 201 Created\ncontent-length: 2\nx-backend:  green-2 \n\nok",
			want: Response{Status: 201, Backend: "green-2", BodyLen: 2},
		},
		{
			name: "connection close",
			in:   "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive, Close\r\n\r\n",
			want: Response{Status: 200, Close: true},
		},
		{
			name: "chunked with extension and trailer",
			in:   "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\nA\r\n0123456789\r\n0\r\nTrailer: v\r\n\r\n",
			want: Response{Status: 200, BodyLen: 13},
		},
		{
			name: "http/1.0 closes unless keep-alive",
			in:   "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
			want: Response{Status: 200, Close: true, BodyLen: 1},
		},
		{
			name: "no length: body until close",
			in:   "HTTP/1.1 200 OK\r\n\r\nabcdef",
			want: Response{Status: 200, Close: true, BodyLen: 6},
		},
		{
			name: "204 has no body",
			in:   "HTTP/1.1 204 No Content\r\n\r\n",
			want: Response{Status: 204},
		},
		{
			name:    "502 is parsed, status kept",
			in:      "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 3\r\n\r\nbad",
			want:    Response{Status: 502, BodyLen: 3},
			wantErr: nil,
		},
		{
			name:    "truncated body",
			in:      "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
			want:    Response{Status: 200, BodyLen: 3},
			wantErr: io.ErrUnexpectedEOF,
		},
		{
			name:    "truncated head",
			in:      "HTTP/1.1 200 OK\r\nContent-Len",
			want:    Response{Status: 200},
			wantErr: io.ErrUnexpectedEOF,
		},
		{
			name:    "garbage status line",
			in:      "HTTP/1.1 2x0 OK\r\n\r\n",
			wantErr: errProtocol,
		},
		{
			name:    "bad content-length",
			in:      "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
			want:    Response{Status: 200},
			wantErr: errProtocol,
		},
		{
			name:    "unknown transfer-encoding",
			in:      "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
			want:    Response{Status: 200},
			wantErr: errProtocol,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tt.in))
			got, err := ReadResponse(br, []byte("X-Backend"), map[string]string{})
			if tt.wantErr == nil && err != nil {
				t.Fatalf("ReadResponse: unexpected error %v", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("ReadResponse error = %v; want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ReadResponse = %+v; want %+v", got, tt.want)
			}
		})
	}
}

func TestReadResponseEmptyStreamIsEOF(t *testing.T) {
	_, err := ReadResponse(bufio.NewReader(strings.NewReader("")), nil, nil)
	if !errors.Is(err, io.EOF) || classify(err, ErrRead) != ErrEOF {
		t.Fatalf("empty stream: err = %v (kind %q); want io.EOF (kind eof)", err, classify(err, ErrRead))
	}
}

func TestRunCountsSuccessesAndBackends(t *testing.T) {
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		w.Header().Set("X-Backend", "blue-1")
		_, _ = io.WriteString(w, "hello")
	}))
	defer srv.Close()

	res, err := Run(context.Background(), Options{
		Addr:        strings.TrimPrefix(srv.URL, "http://"),
		Connections: 4,
		Duration:    300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	s := res.Summarize()
	if s.Requests == 0 || s.Failed != 0 {
		t.Fatalf("summary = %+v; want requests > 0 and no failures", s)
	}
	if got := s.ByBackend["blue-1"]; got != s.Requests {
		t.Errorf("blue-1 answered %d of %d requests; want all", got, s.Requests)
	}
	if int64(s.Requests) != served.Load() {
		t.Errorf("client recorded %d requests, server served %d; want equal", s.Requests, served.Load())
	}
	for i := 1; i < len(res.Records); i++ {
		if res.Records[i].Sent < res.Records[i-1].Sent {
			t.Fatalf("records not ordered by send time at %d", i)
		}
	}
}

func TestRunCountsNon2xx(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusBadGateway)
	}))
	defer srv.Close()
	res, err := Run(context.Background(), Options{Addr: strings.TrimPrefix(srv.URL, "http://"), Connections: 2, Duration: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s := res.Summarize()
	if s.Requests == 0 || s.Non2xx != s.Requests || s.Failed != s.Requests || s.SocketErrors != 0 {
		t.Fatalf("summary = %+v; want every request counted as non-2xx", s)
	}
}

// A server that closes each keep-alive connection after one response without
// saying so is what a proxy reload looks like to a client: the next request on
// that connection fails. It must be counted, and never re-sent.
func TestRunCountsClosedKeepAliveWithoutRetry(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var received atomic.Int64
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if line == "\r\n" {
						break
					}
				}
				received.Add(1)
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Backend: blue-1\r\n\r\nok")
				// Close without "Connection: close": the client keeps the connection.
			}()
		}
	}()

	res, err := Run(context.Background(), Options{Addr: ln.Addr().String(), Connections: 2, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s := res.Summarize()
	if s.SocketErrors == 0 {
		t.Fatalf("summary = %+v; want socket errors for requests on closed connections", s)
	}
	successes := s.Requests - s.Failed
	// Each received request was answered; a failed request may or may not have
	// reached the server before it closed, but none may be sent twice.
	if got := received.Load(); got < int64(successes) || got > int64(s.Requests) {
		t.Errorf("server received %d requests; client sent %d with %d successes", got, s.Requests, successes)
	}
	if successes == 0 {
		t.Errorf("summary = %+v; want first requests on fresh connections to succeed", s)
	}
}

func TestRunCountsConnectErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now

	res, err := Run(context.Background(), Options{Addr: addr, Connections: 1, Duration: 100 * time.Millisecond, ConnectPause: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s := res.Summarize()
	if s.ErrorKinds[ErrConnect] == 0 || s.ErrorKinds[ErrConnect] != s.Requests {
		t.Fatalf("summary = %+v; want only connect errors", s)
	}
	// A failed connect ends when the dial returned, not at the run's start:
	// latency and failure-window reports read Done.
	for i, rec := range res.Records {
		if rec.Done < rec.Sent || rec.Done == 0 {
			t.Fatalf("record %d: Sent %v, Done %v; want Done at or after Sent", i, rec.Sent, rec.Done)
		}
	}
	// The pause keeps a refused port from becoming a busy loop.
	if s.Requests > 10 {
		t.Errorf("%d connect attempts in 100ms with a 20ms pause; want at most 10", s.Requests)
	}
}

func TestRunRejectsBadOptions(t *testing.T) {
	if _, err := Run(context.Background(), Options{Addr: "127.0.0.1:1", Duration: time.Second}); err == nil {
		t.Fatal("Run with 0 connections: want an error")
	}
}

func TestOpenIdle(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	defer srv.Close()
	set, err := OpenIdle(context.Background(), IdleOptions{Addr: strings.TrimPrefix(srv.URL, "http://"), Connections: 50})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	if set.Len() != 50 {
		t.Fatalf("Len = %d; want 50", set.Len())
	}
	if got := set.StillOpen(); got != 50 {
		t.Errorf("StillOpen = %d; want 50", got)
	}
	awaitAllClosed(t, srv, set)
}

// awaitAllClosed closes srv's client connections and waits, bounded, until
// set sees every one of them closed.
func awaitAllClosed(t *testing.T, srv *httptest.Server, set *IdleSet) {
	t.Helper()
	srv.CloseClientConnections()
	// Closing is asynchronous on the server side; wait for the EOFs, bounded.
	deadline := time.Now().Add(5 * time.Second)
	for set.StillOpen() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := set.StillOpen(); got != 0 {
		t.Errorf("after the server closed them, StillOpen = %d; want 0", got)
	}
}

func TestOpenIdleOverTLS(t *testing.T) {
	var overTLS atomic.Int64
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			overTLS.Add(1)
		}
		_, _ = io.WriteString(w, "ok")
	}))
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	cfg := &tls.Config{RootCAs: pool, ServerName: "example.com", NextProtos: []string{"http/1.1"}}
	set, err := OpenIdle(context.Background(), IdleOptions{Addr: strings.TrimPrefix(srv.URL, "https://"), Connections: 20, TLS: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	if set.Len() != 20 || overTLS.Load() != 20 {
		t.Fatalf("Len = %d, requests over TLS = %d; want 20 and 20", set.Len(), overTLS.Load())
	}
	if got := set.StillOpen(); got != 20 {
		t.Errorf("StillOpen = %d; want 20", got)
	}
	awaitAllClosed(t, srv, set)

	// A client that does not trust the certificate fails at the handshake.
	_, err = OpenIdle(context.Background(), IdleOptions{Addr: strings.TrimPrefix(srv.URL, "https://"), Connections: 1, TLS: &tls.Config{ServerName: "example.com"}})
	if err == nil || !strings.Contains(err.Error(), "TLS handshake") {
		t.Errorf("untrusted certificate: err = %v; want a TLS handshake error", err)
	}
}

func TestOpenIdleFailsOnNon2xx(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	_, err := OpenIdle(context.Background(), IdleOptions{Addr: strings.TrimPrefix(srv.URL, "http://"), Connections: 3})
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("OpenIdle against a 503 server: err = %v; want one naming status 503", err)
	}
}
