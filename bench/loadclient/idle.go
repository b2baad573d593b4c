package loadclient

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"
)

// IdleOptions configure OpenIdle.
type IdleOptions struct {
	// Addr is the host:port to connect to.
	Addr string
	// Connections is how many idle keep-alive connections to hold open.
	Connections int
	// Timeout bounds each connect and each request; default 5s.
	Timeout time.Duration
	// Host is the Host header; default "bench".
	Host string
	// TLS, when set, makes each connection a TLS client with this
	// configuration (the handshake is done before the request).
	TLS *tls.Config
}

// IdleSet is a set of open keep-alive connections that each carried one
// successful request and now sit idle.
type IdleSet struct {
	conns []net.Conn
}

// Len is the number of open connections.
func (s *IdleSet) Len() int { return len(s.conns) }

// Close closes every connection.
func (s *IdleSet) Close() {
	for _, c := range s.conns {
		_ = c.Close()
	}
	s.conns = nil
}

// StillOpen counts the connections the server has not closed, by checking
// each for a pending EOF without waiting. Call it only while no responses are
// expected.
func (s *IdleSet) StillOpen() int {
	open := 0
	buf := make([]byte, 1)
	for _, c := range s.conns {
		_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
		_, err := c.Read(buf)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			open++
		}
	}
	return open
}

// OpenIdle opens opts.Connections connections one after another, sends one
// GET / on each and reads its 2xx response, and leaves them open. On any
// failure it closes what it opened and returns an error naming the
// connection's number.
func OpenIdle(ctx context.Context, opts IdleOptions) (*IdleSet, error) {
	if opts.Addr == "" || opts.Connections <= 0 {
		return nil, fmt.Errorf("loadclient: OpenIdle needs Addr and a positive Connections (got %q, %d)", opts.Addr, opts.Connections)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.Host == "" {
		opts.Host = "bench"
	}
	request := []byte("GET / HTTP/1.1\r\nHost: " + opts.Host + "\r\nUser-Agent: cutover-bench-idle\r\n\r\n")
	set := &IdleSet{conns: make([]net.Conn, 0, opts.Connections)}
	dialer := net.Dialer{Timeout: opts.Timeout}
	for i := range opts.Connections {
		c, err := dialer.DialContext(ctx, "tcp", opts.Addr)
		if err != nil {
			set.Close()
			return nil, fmt.Errorf("idle connection %d of %d to %s: %w", i+1, opts.Connections, opts.Addr, err)
		}
		_ = c.SetDeadline(time.Now().Add(opts.Timeout))
		if opts.TLS != nil {
			tc := tls.Client(c, opts.TLS)
			if err := tc.HandshakeContext(ctx); err != nil {
				_ = c.Close()
				set.Close()
				return nil, fmt.Errorf("idle connection %d of %d to %s: TLS handshake: %w", i+1, opts.Connections, opts.Addr, err)
			}
			c = tc
		}
		set.conns = append(set.conns, c)
		if _, err := c.Write(request); err != nil {
			set.Close()
			return nil, fmt.Errorf("idle connection %d of %d to %s: write request: %w", i+1, opts.Connections, opts.Addr, err)
		}
		// The reader is dropped after the response: nothing else is expected
		// on the connection until it is closed.
		resp, err := ReadResponse(bufio.NewReaderSize(c, 4096), nil, nil)
		if err != nil {
			set.Close()
			return nil, fmt.Errorf("idle connection %d of %d to %s: read response: %w", i+1, opts.Connections, opts.Addr, err)
		}
		if resp.Status < 200 || resp.Status > 299 || resp.Close {
			set.Close()
			return nil, fmt.Errorf("idle connection %d of %d to %s: got status %d (close=%v); want a 2xx keep-alive response", i+1, opts.Connections, opts.Addr, resp.Status, resp.Close)
		}
		_ = c.SetDeadline(time.Time{})
	}
	return set, nil
}
