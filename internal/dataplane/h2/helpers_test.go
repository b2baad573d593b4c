package h2

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// handlerFunc adapts a function to Handler.
type handlerFunc func(*Stream)

func (f handlerFunc) ServeStream(s *Stream) { f(s) }

// server serves package h2 over plain TCP on loopback (h2 with prior
// knowledge): what the engine does is the same over TLS.
type server struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []*Conn
	wg    sync.WaitGroup
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func startServer(t *testing.T, o Options, h Handler) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if o.Logger == nil {
		o.Logger = quiet()
	}
	s := &server{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			c := NewConn(nc, o, h)
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() { defer s.wg.Done(); c.Serve(); nc.Close() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.mu.Lock()
			c.closeLocked(errConnClosed)
			c.mu.Unlock()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *server) addr() string { return s.ln.Addr().String() }

// conn returns the i'th connection the server accepted.
func (s *server) conn(i int) *Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[i]
}

// client is x/net's HTTP/2 client over plain TCP.
func client(t *testing.T) *http.Client {
	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// raw is a client that writes and reads frames itself.
type raw struct {
	t    *testing.T
	c    net.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	henc *hpack.Encoder
}

// dialRaw connects, sends the preface and settings, and reads the
// server's SETTINGS (acknowledging them) up to the ACK of its own.
func dialRaw(t *testing.T, s *server, settings ...http2.Setting) *raw {
	t.Helper()
	c, err := net.Dial("tcp", s.addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r := &raw{t: t, c: c, fr: http2.NewFramer(c, c)}
	r.henc = hpack.NewEncoder(&r.hbuf)
	r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := r.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	for acked, got := false, false; !acked || !got; {
		f := r.read()
		if sf, ok := f.(*http2.SettingsFrame); ok {
			if sf.IsAck() {
				acked = true
			} else {
				got = true
				r.fr.WriteSettingsAck()
			}
		}
	}
	return r
}

func (r *raw) read() http2.Frame {
	r.t.Helper()
	f, err := r.fr.ReadFrame()
	if err != nil {
		r.t.Fatalf("reading a frame: %v", err)
	}
	return f
}

// block encodes a request's header block.
func (r *raw) block(method, path string, extra ...string) []byte {
	r.hbuf.Reset()
	r.henc.WriteField(hpack.HeaderField{Name: ":method", Value: method})
	r.henc.WriteField(hpack.HeaderField{Name: ":scheme", Value: "https"})
	r.henc.WriteField(hpack.HeaderField{Name: ":authority", Value: "example.test"})
	r.henc.WriteField(hpack.HeaderField{Name: ":path", Value: path})
	for i := 0; i+1 < len(extra); i += 2 {
		r.henc.WriteField(hpack.HeaderField{Name: extra[i], Value: extra[i+1]})
	}
	return append([]byte(nil), r.hbuf.Bytes()...)
}

func (r *raw) headers(id uint32, end bool, block []byte) {
	r.t.Helper()
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: end, EndHeaders: true}); err != nil {
		r.t.Fatal(err)
	}
}

// outcome is how the server answered a stream, or the connection.
type outcome struct {
	status   string
	body     []byte
	ended    bool
	reset    http2.ErrCode
	wasReset bool
	goAway   *http2.GoAwayFrame
}

// await reads frames until stream id ends (END_STREAM or RST_STREAM) or
// the server says GOAWAY, answering PINGs and granting no window.
func (r *raw) await(id uint32) outcome {
	r.t.Helper()
	var o outcome
	for {
		switch f := r.read().(type) {
		case *http2.MetaHeadersFrame:
			if f.StreamID == id {
				o.status = f.PseudoValue("status")
				if f.StreamEnded() {
					o.ended = true
					return o
				}
			}
		case *http2.DataFrame:
			if f.StreamID == id {
				o.body = append(o.body, f.Data()...)
				if f.StreamEnded() {
					o.ended = true
					return o
				}
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				o.reset, o.wasReset = f.ErrCode, true
				return o
			}
		case *http2.GoAwayFrame:
			o.goAway = f
			return o
		case *http2.PingFrame:
			if !f.IsAck() {
				r.fr.WritePing(true, f.Data)
			}
		}
	}
}

// awaitAll reads frames until every stream of ids ended, and returns
// how each did.
func (r *raw) awaitAll(ids ...uint32) map[uint32]*outcome {
	r.t.Helper()
	out := map[uint32]*outcome{}
	for _, id := range ids {
		out[id] = &outcome{}
	}
	for left := len(ids); left > 0; {
		switch f := r.read().(type) {
		case *http2.MetaHeadersFrame:
			if o := out[f.StreamID]; o != nil {
				o.status = f.PseudoValue("status")
				if f.StreamEnded() {
					o.ended = true
					left--
				}
			}
		case *http2.DataFrame:
			if o := out[f.StreamID]; o != nil {
				o.body = append(o.body, f.Data()...)
				if f.StreamEnded() {
					o.ended = true
					left--
				}
			}
		case *http2.RSTStreamFrame:
			if o := out[f.StreamID]; o != nil {
				o.reset, o.wasReset = f.ErrCode, true
				left--
			}
		}
	}
	return out
}

// awaitClose reads until the server closes the connection, and returns
// the last GOAWAY it sent.
func (r *raw) awaitClose() *http2.GoAwayFrame {
	r.t.Helper()
	var g *http2.GoAwayFrame
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				r.t.Fatalf("the server did not close the connection")
			}
			return g
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			g = ga
		}
	}
}
