// Package listen owns the public listeners: plain HTTP (which redirects to
// HTTPS when HTTPS is on), HTTPS with HTTP/2 by ALPN, the certificates, and
// graceful shutdown. Connections are handed to the proxy's engines: HTTP/1.1
// (plain or TLS) to proxy.ServeConn, HTTP/2 to package h2 with the proxy's
// stream handler.
package listen

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http2"

	"github.com/cutover/cutover/internal/dataplane/h2"
	"github.com/cutover/cutover/internal/dataplane/proxy"
	"github.com/cutover/cutover/internal/dataplane/sock"
	"github.com/cutover/cutover/internal/human"
)

// Options configure a Server.
type Options struct {
	HTTP  string // plain HTTP address; "" for none
	HTTPS string // TLS address; "" for none
	// TLS is required with HTTPS; its NextProtos should offer h2.
	TLS   *tls.Config
	Proxy *proxy.Proxy
	// HandshakeTimeout bounds the TLS handshake (default 10s).
	HandshakeTimeout time.Duration
	// IdleTimeout closes idle HTTP/2 connections (default 75s).
	IdleTimeout time.Duration
	// RedirectPort overrides the port put in HTTP→HTTPS redirects, for when
	// HTTPS is published on another port than it listens on.
	RedirectPort string
	// HTTPChallenge answers ACME HTTP-01 requests on the plain-HTTP
	// listener ahead of its redirect to HTTPS (CertSource.HTTPChallenge);
	// nil for none.
	HTTPChallenge func(host, target string) (body string, ok bool)
	// Engine serves HTTP/1.1, plain and over TLS: "loops" (the default;
	// event loops on Linux, see proxy.Loops; TLS handshakes and HTTP/2
	// run on a goroutine per connection, and the plain listener that
	// redirects to HTTPS is served by goroutines) or "goroutines" (a
	// goroutine per connection, idle TLS ones parked: proxy.Parker).
	Engine string
	Logger *slog.Logger
	// Inherited holds listening sockets handed over by the cutover this
	// process upgrades; one bound for the same address is used instead of
	// binding it again (nil: bind everything).
	Inherited *Inherited
}

// Engines of Options.Engine.
const (
	EngineLoops      = "loops"
	EngineGoroutines = "goroutines"
)

// Server runs the public listeners.
type Server struct {
	o         Options
	httpLn    net.Listener
	httpsLn   net.Listener
	h2        h2.Options
	closing   atomic.Bool
	wg        sync.WaitGroup
	mu        sync.Mutex
	conns     map[*conn]struct{}
	serveOnce sync.Once
	// accepting counts the accept loops; graceful is set by Drain with an
	// idle grace.
	accepting sync.WaitGroup
	graceful  atomic.Bool
	// loops serve the plain-HTTP listener's connections when it does not
	// redirect; nil when the goroutine engine does.
	loops *proxy.Loops
	// TLS handshakes completed and failed, for the metrics endpoint.
	handshakes, handshakeFailures atomic.Uint64
}

// Counts are the listeners' numbers for the metrics endpoint.
type Counts struct {
	// Conns are the open client connections by listener ("http" or
	// "https") and protocol ("http/1.1" or "h2").
	Conns                         map[ConnKind]int
	Handshakes, HandshakeFailures uint64
}

// ConnKind is a listener and protocol.
type ConnKind struct{ Listener, Protocol string }

// Listener and protocol names of Counts.
const (
	ListenerHTTP  = "http"
	ListenerHTTPS = "https"
	ProtoHTTP1    = "http/1.1"
	ProtoH2       = "h2"
)

// Counts returns the open connections and handshake totals now.
func (s *Server) Counts() Counts {
	c := Counts{Conns: map[ConnKind]int{}, Handshakes: s.handshakes.Load(), HandshakeFailures: s.handshakeFailures.Load()}
	if s.httpLn != nil {
		c.Conns[ConnKind{ListenerHTTP, ProtoHTTP1}] += 0
	}
	if s.httpsLn != nil {
		c.Conns[ConnKind{ListenerHTTPS, ProtoHTTP1}] += 0
		c.Conns[ConnKind{ListenerHTTPS, ProtoH2}] += 0
	}
	if s.loops != nil {
		all, tls := s.loops.Clients()
		c.Conns[ConnKind{ListenerHTTP, ProtoHTTP1}] += int(all - tls)
		c.Conns[ConnKind{ListenerHTTPS, ProtoHTTP1}] += int(tls)
	}
	s.mu.Lock()
	for cn := range s.conns {
		k := ConnKind{ListenerHTTP, ProtoHTTP1}
		if cn.tls {
			k.Listener = ListenerHTTPS
		}
		if cn.h2.Load() {
			k.Protocol = ProtoH2
		}
		c.Conns[k]++
	}
	s.mu.Unlock()
	return c
}

// New binds the listeners, so address problems are reported before
// anything serves.
func New(o Options) (*Server, error) {
	if o.HTTP == "" && o.HTTPS == "" {
		return nil, errors.New("no listener: set listen.http or listen.https")
	}
	if o.HTTPS != "" && o.TLS == nil {
		return nil, errors.New("listen.https needs a TLS configuration")
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 10 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 75 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	switch o.Engine {
	case "":
		o.Engine = EngineLoops
	case EngineLoops, EngineGoroutines:
	default:
		return nil, fmt.Errorf("engine %q: use %q or %q", o.Engine, EngineLoops, EngineGoroutines)
	}
	s := &Server{o: o, conns: make(map[*conn]struct{})}
	var err error
	if o.HTTP != "" {
		if s.httpLn, err = listenTCP(o.Inherited, NameHTTP, o.HTTP); err != nil {
			return nil, fmt.Errorf("listen.http %s: %w", o.HTTP, err)
		}
	}
	if o.HTTPS != "" {
		if s.httpsLn, err = listenTCP(o.Inherited, NameHTTPS, o.HTTPS); err != nil {
			if s.httpLn != nil {
				s.httpLn.Close()
			}
			return nil, fmt.Errorf("listen.https %s: %w", o.HTTPS, err)
		}
		s.h2 = o.Proxy.HTTP2Options()
		s.h2.IdleTimeout = o.IdleTimeout
		s.h2.Logger = o.Logger
	}
	if o.Engine == EngineLoops && proxy.LoopsSupported {
		if s.loops, err = o.Proxy.NewLoops(proxy.LoopOptions{Handoff: s.adopt}); err != nil {
			for _, ln := range []net.Listener{s.httpLn, s.httpsLn} {
				if ln != nil {
					ln.Close()
				}
			}
			return nil, fmt.Errorf("starting the event loops: %w", err)
		}
		// Without HTTPS the plain listener's connections go to the
		// loops, which get them straight from accept4.
		if s.httpLn != nil && s.httpsLn == nil {
			ll, err := newLoopListener(s.httpLn)
			if err != nil {
				s.httpLn.Close()
				s.loops.Shutdown(context.Background())
				return nil, fmt.Errorf("listen.http %s: %w", o.HTTP, err)
			}
			s.httpLn = ll
		}
	}
	return s, nil
}

// Loops is the number of event loops serving plain HTTP; 0 when the
// goroutine engine serves it.
func (s *Server) Loops() int {
	if s.loops == nil {
		return 0
	}
	return s.loops.Len()
}

// LoopConns is how many connections the event loops hold now (plain
// and TLS); 0 without loops.
func (s *Server) LoopConns() int64 {
	if s.loops == nil {
		return 0
	}
	all, _ := s.loops.Clients()
	return all
}

// adopt serves, with the goroutine engine, a connection the event loops
// handed over; it is tracked for Shutdown like any other.
func (s *Server) adopt(nc net.Conn, h *proxy.Handoff) {
	c := &conn{nc: nc, srv: s}
	if sc := h.Socket(); sc != nil {
		// Shutdown closes the socket, as it does for every TLS
		// connection: a goodbye from crypto/tls would race the reader.
		c.nc, c.tls = sc, true
	}
	if h.Begun() {
		c.state.Store(connActive)
	}
	if !s.track(c) {
		nc.Close()
		return
	}
	go func() {
		defer s.untrack(c)
		s.o.Proxy.ServeHandoff(sock.Wrap(nc), h, proxy.ConnInfo{Track: c})
	}()
}

// HTTPAddr is the bound plain-HTTP address (nil if none).
func (s *Server) HTTPAddr() net.Addr { return addrOf(s.httpLn) }

// HTTPSAddr is the bound HTTPS address (nil if none).
func (s *Server) HTTPSAddr() net.Addr { return addrOf(s.httpsLn) }

func addrOf(ln net.Listener) net.Addr {
	if ln == nil {
		return nil
	}
	return ln.Addr()
}

// Serve accepts connections until Shutdown. It returns after the accept
// loops end; connections may still be finishing (Shutdown waits for them).
func (s *Server) Serve() error {
	wg := &s.accepting
	errs := make(chan error, 2)
	if s.httpLn != nil {
		info := proxy.ConnInfo{}
		if s.httpsLn != nil {
			info.Redirect = true
			info.Challenge = s.o.HTTPChallenge
			info.HTTPSPort = s.o.RedirectPort
			if info.HTTPSPort == "" {
				_, info.HTTPSPort, _ = net.SplitHostPort(s.httpsLn.Addr().String())
			}
		}
		wg.Add(1)
		if ll, ok := s.httpLn.(*loopListener); ok {
			go func() { defer wg.Done(); errs <- s.acceptForLoops(ll) }()
		} else {
			go func() { defer wg.Done(); errs <- s.accept(s.httpLn, info) }()
		}
	}
	if s.httpsLn != nil {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- s.accept(s.httpsLn, proxy.ConnInfo{TLS: true}) }()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) accept(ln net.Listener, info proxy.ConnInfo) error {
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return nil
			}
			if errors.Is(err, syscall.ECONNABORTED) || s.backOff(&delay, err) {
				continue
			}
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
		delay = 0
		c := &conn{nc: nc, srv: s, tls: info.TLS}
		if !s.track(c) {
			nc.Close()
			return nil
		}
		go s.serve(c, info)
	}
}

// backOff sleeps and reports true when an accept failed for want of file
// descriptors or memory, as net/http does: the listener is still good and
// connections close meanwhile. delay is the previous sleep (0 after a
// success).
func (s *Server) backOff(delay *time.Duration, err error) bool {
	if !sock.Shortage(err) {
		return false
	}
	*delay = sock.NextBackOff(*delay)
	s.o.Logger.Warn("accept failed; retrying", "err", err, "delay", *delay)
	time.Sleep(*delay)
	return true
}

func (s *Server) serve(c *conn, info proxy.ConnInfo) {
	// untracked: Closed untracks a connection served with info.Park.
	untracked := false
	defer func() {
		if !untracked {
			s.untrack(c)
		}
	}()
	info.Track = c
	// c.nc stays the plain connection, for Shutdown to close; the engines
	// get it with raw-syscall reads and writes.
	nc := sock.Wrap(c.nc)
	if !info.TLS {
		s.o.Proxy.ServeConn(nc, info)
		return
	}
	// With the event loops, crypto/tls runs over a pipe that lets a loop
	// take over an HTTP/1.1 connection once its handshake is done.
	var pipe *proxy.TLSPipe
	var tc *tls.Conn
	if s.loops != nil {
		pipe = proxy.NewTLSPipe(nc)
		tc = tls.Server(pipe, s.o.TLS)
	} else {
		tc = tls.Server(nc, s.o.TLS)
	}
	tc.SetDeadline(time.Now().Add(s.o.HandshakeTimeout))
	if err := tc.Handshake(); err != nil {
		s.handshakeFailures.Add(1)
		s.o.Logger.Debug("TLS handshake failed", "remote", c.nc.RemoteAddr(), "err", err)
		tc.Close()
		return
	}
	s.handshakes.Add(1)
	tc.SetDeadline(time.Time{})
	switch tc.ConnectionState().NegotiatedProtocol {
	case ACMETLSProtocol:
		// A TLS-ALPN-01 validation: the handshake was the answer.
		tc.Close()
		return
	case http2.NextProtoTLS:
		c.h2.Store(true)
		c.state.Store(connActive)
		hc := h2.NewConn(tc, s.h2, s.o.Proxy.HTTP2Handler(c.nc.RemoteAddr()))
		// Drain says GOAWAY to the connections it finds; one that began
		// after it looked is told here.
		s.mu.Lock()
		c.h2c = hc
		closing := s.closing.Load()
		s.mu.Unlock()
		if closing {
			hc.Shutdown()
		}
		hc.Serve()
		tc.Close()
		return
	}
	if pipe != nil {
		// A keep-alive connection moves to the event loops once it has
		// answered a request; they count it and shut it down from then on.
		info.Handover = func() bool {
			if err := s.loops.AddTLS(tc, pipe); err != nil {
				s.o.Logger.Warn("event loops refused a TLS connection; serving it with a goroutine", "err", err)
				return false
			}
			s.untrack(c)
			return true
		}
	}
	// An idle HTTP/1.1 connection parks without a goroutine (proxy.Parker);
	// ServeConn may return while it is open, and c.Closed untracks it.
	info.Park = c
	untracked = true
	s.o.Proxy.ServeConn(tc, info)
}

// Connection states for graceful shutdown.
const (
	connIdle int32 = iota
	connActive
	connClosed
)

// conn tracks one client connection; it is the proxy's Tracker.
type conn struct {
	nc    net.Conn
	srv   *Server
	state atomic.Int32
	tls   bool
	h2    atomic.Bool
	// h2c is the HTTP/2 connection once one is served (guarded by the
	// server's mu).
	h2c *h2.Conn
	// idleSince is when the connection last became idle (accepted or
	// answered), in Unix nanoseconds; Drain closes it after a grace.
	idleSince atomic.Int64
	// wake wakes the connection if it is parked (proxy.Parker); nil until
	// it first parks.
	wake atomic.Pointer[func()]
}

// Parking implements proxy.Parker.
func (c *conn) Parking(wake func()) { c.wake.Store(&wake) }

// Closed implements proxy.Parker.
func (c *conn) Closed() { c.srv.untrack(c) }

// close closes the connection's socket; a parked connection is woken to
// find it closed, as closing drops it from the epoll set it waits in.
func (c *conn) close() {
	c.nc.Close()
	if w := c.wake.Load(); w != nil {
		(*w)()
	}
}

// Begin implements proxy.Tracker.
func (c *conn) Begin() bool { return c.state.CompareAndSwap(connIdle, connActive) }

// End implements proxy.Tracker.
func (c *conn) End() bool {
	c.idleSince.Store(time.Now().UnixNano())
	c.state.Store(connIdle)
	// Draining gracefully, the connection stays open unless its response
	// said Connection: close (a head sent before the drain began did not);
	// it is closed when idle for the grace.
	return !c.srv.closing.Load() || c.srv.graceful.Load()
}

// Closing implements proxy.Tracker.
func (c *conn) Closing() bool { return c.srv.closing.Load() }

func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() && !s.graceful.Load() {
		return false
	}
	c.idleSince.Store(time.Now().UnixNano())
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// Shutdown stops accepting, closes idle connections at once, lets requests
// in flight finish and then closes their connections, until ctx ends; then
// it closes whatever is left. HTTP/2 clients get a GOAWAY.
func (s *Server) Shutdown(ctx context.Context) error { return s.Drain(ctx, 0) }

// Drain is Shutdown for a hand-over to another process that keeps the
// listening sockets open: a connection is closed once it has been idle for
// idleGrace (at once if it already was), and a request that arrives on it
// before that is answered, with Connection: close. Closing an idle
// keep-alive connection races with the client's next request, which then
// fails; the grace lets clients that are busy send it and be told to
// reconnect, so only connections really left idle take that risk, as at
// any idle timeout.
func (s *Server) Drain(ctx context.Context, idleGrace time.Duration) error {
	s.graceful.Store(idleGrace > 0)
	s.mu.Lock()
	s.closing.Store(true)
	s.mu.Unlock()
	if s.httpLn != nil {
		s.httpLn.Close()
	}
	if s.httpsLn != nil {
		s.httpsLn.Close()
	}
	// A connection accepted just before the listener closed is served too
	// when draining gracefully (its client has sent or is sending a
	// request); once the accept loops are done, all of them are tracked.
	s.accepting.Wait()
	// HTTP/2 connections get a GOAWAY; they close after their streams.
	// Each on its own goroutine: saying it may wait for a client's write.
	s.mu.Lock()
	for c := range s.conns {
		if c.h2c != nil {
			go c.h2c.Shutdown()
		}
	}
	s.mu.Unlock()
	// The loops hand connections to the goroutine engine until they stop
	// (a request with a body, a target named by host name: in a container
	// every first request), and each handed-over connection is tracked in
	// s.wg only then. So s.wg is waited for once the loops are done: waited
	// for earlier, it could reach zero, end the drain, and let the process
	// exit under a request the loops had just handed over.
	loopsDone := make(chan struct{})
	var loopsErr error
	go func() {
		defer close(loopsDone)
		if s.loops != nil {
			loopsErr = s.loops.Drain(ctx, idleGrace)
		}
	}()
	s.closeIdle(idleGrace)
	done := make(chan struct{})
	go func() { <-loopsDone; s.wg.Wait(); close(done) }()
	var tick <-chan time.Time
	if idleGrace > 0 {
		t := time.NewTicker(min(idleGrace/4, 100*time.Millisecond))
		defer t.Stop()
		tick = t.C
	}
wait:
	for {
		select {
		case <-done:
			return loopsErr
		case <-tick:
			s.closeIdle(idleGrace)
		case <-ctx.Done():
			break wait
		}
	}
	// The loops end at ctx too; once they have, nothing more is handed
	// over, so the close below reaches every connection.
	<-loopsDone
	s.mu.Lock()
	n := len(s.conns)
	for c := range s.conns {
		c.close()
	}
	s.mu.Unlock()
	<-done
	if loopsErr != nil {
		return loopsErr
	}
	return fmt.Errorf("shutdown: closed %s with requests in flight: %w", human.Count(int(n), "connection"), ctx.Err())
}

// closeIdle closes the connections idle for at least grace.
func (s *Server) closeIdle(grace time.Duration) {
	cut := time.Now().Add(-grace).UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.idleSince.Load() <= cut && c.state.CompareAndSwap(connIdle, connClosed) {
			c.close()
		}
	}
}
