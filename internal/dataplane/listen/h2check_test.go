package listen

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/cutover/cutover/internal/dataplane/forward"
	"github.com/cutover/cutover/internal/dataplane/proxy"
	"github.com/cutover/cutover/internal/dataplane/upstream"
)

// What an HTTP/2 client sends must reach a target only in a shape the
// HTTP/1.1 parser accepts. These tests speak HTTP/2 frame by frame (the
// Go client would refuse to send most of these shapes) to the real HTTPS
// listener, in front of a raw target that records every request head it
// is sent.

// recordingTarget is a raw HTTP/1.1 target on 127.0.0.1: it records each
// request head, reads the body its framing announces and answers 200 "ok";
// a request for /hang it never answers.
// Nothing in it is lenient or strict on purpose: it shows what arrived.
type recordingTarget struct {
	ln    net.Listener
	heads chan string
	// closed is told when a connection from the proxy ends.
	closed chan struct{}
}

func startRecordingTarget(t *testing.T) *recordingTarget {
	t.Helper()
	rt := &recordingTarget{heads: make(chan string, 1024), closed: make(chan struct{}, 1024)}
	rt.ln = serveRaw(t, func(c net.Conn, _ int) {
		defer func() { c.Close(); rt.closed <- struct{}{} }()
		rt.serve(c)
	})
	return rt
}

func (rt *recordingTarget) serve(c net.Conn) {
	br := bufio.NewReader(c)
	tp := textproto.NewReader(br)
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		hdr, err := tp.ReadMIMEHeader()
		if err != nil {
			return
		}
		var head strings.Builder
		head.WriteString(line + "\r\n")
		for k, vv := range hdr {
			for _, v := range vv {
				head.WriteString(k + ": " + v + "\r\n")
			}
		}
		rt.heads <- head.String()
		if strings.HasPrefix(line, "GET /hang ") {
			io.Copy(io.Discard, br) // until the proxy closes the connection
			return
		}
		switch {
		case hdr.Get("Transfer-Encoding") == "chunked":
			for {
				sz, err := tp.ReadLine()
				if err != nil {
					return
				}
				n, err := strconv.ParseInt(sz, 16, 64)
				if err != nil {
					return
				}
				if _, err := io.CopyN(io.Discard, br, n+2); err != nil {
					return
				}
				if n == 0 {
					break
				}
			}
		case hdr.Get("Content-Length") != "":
			n, err := strconv.ParseInt(hdr.Get("Content-Length"), 10, 64)
			if err != nil {
				return
			}
			if _, err := io.CopyN(io.Discard, br, n); err != nil {
				return
			}
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Seen-Proto: %s\r\n\r\nok", hdr.Get("X-Forwarded-Proto"))
	}
}

// reached returns a head the target received since the last call, or ""
// when none did.
func (rt *recordingTarget) reached() string {
	select {
	case h := <-rt.heads:
		return h
	default:
		return ""
	}
}

// h2Front is the HTTPS listener in front of targets, with every request's
// Outcome passed on.
type h2Front struct {
	addr string
	leaf *x509.Certificate
	pool *upstream.Pool
	seen outcomes
}

// startH2Front serves HTTPS in front of targets; po sets the proxy's
// timeouts and limits (Router, Trusted, Logger and Observers are filled in).
func startH2Front(t *testing.T, po proxy.Options, targets ...string) *h2Front {
	t.Helper()
	router, pool := webService(targets...)
	seen := make(outcomes, 1024)
	po.Router = router
	po.Trusted = forward.NewTrusted(nil)
	po.Logger = quietLogger()
	po.Observers = []proxy.Observer{seen}
	certs, err := NewCertSource(CertOptions{SelfSigned: true, Hosts: []string{"localhost"}, StateDir: t.TempDir(), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	s := runServer(t, Options{HTTPS: "127.0.0.1:0", TLS: certs.TLSConfig(), Proxy: proxy.New(po), Logger: quietLogger()})
	return &h2Front{addr: s.HTTPSAddr().String(), leaf: certs.Leaf(), pool: pool, seen: seen}
}

// outcome waits for the next finished request.
func (f *h2Front) outcome(t *testing.T) proxy.Outcome {
	t.Helper()
	select {
	case o := <-f.seen:
		return o
	case <-time.After(10 * time.Second):
		t.Fatal("no request ended within 10s")
	}
	return proxy.Outcome{}
}

// targetsUp fails the test unless every target is up with no failure
// counted against it.
func (f *h2Front) targetsUp(t *testing.T, after string) {
	t.Helper()
	for _, tg := range f.pool.Targets() {
		if st := tg.Status(); st.State != "up" || st.Failures != 0 {
			t.Errorf("after %s, target %s is %s with %d failures (last error %q); want up with none", after, st.Addr, st.State, st.Failures, st.LastError)
		}
	}
}

// rawH2 is an HTTP/2 client that sends exactly the frames it is told to.
type rawH2 struct {
	t    *testing.T
	c    *tls.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
	next uint32
}

func dialH2(t *testing.T, f *h2Front) *rawH2 {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(f.leaf)
	c, err := tls.Dial("tcp", f.addr, &tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("negotiated %q, want h2", p)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	h := &rawH2{t: t, c: c, fr: http2.NewFramer(c, c), next: 1}
	h.enc = hpack.NewEncoder(&h.hbuf)
	h.enc.SetMaxDynamicTableSizeLimit(0)
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.fr.MaxHeaderListSize = 1 << 20
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := h.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	// A big connection window, so bodies are never held up by flow control.
	if err := h.fr.WriteWindowUpdate(0, 1<<30); err != nil {
		t.Fatal(err)
	}
	return h
}

// field is one header field as sent, pseudo-header fields included.
type field struct{ name, value string }

// request is a GET to https://localhost/ with extra fields appended;
// set replaces a field of the same name instead.
func request(method, path string, set ...field) []field {
	fs := []field{{":method", method}, {":scheme", "https"}, {":authority", "localhost"}, {":path", path}}
	for _, s := range set {
		replaced := false
		for i := range fs {
			if fs[i].name == s.name {
				fs[i].value, replaced = s.value, true
			}
		}
		if !replaced {
			fs = append(fs, s)
		}
	}
	return fs
}

// headers opens a stream with fields (split over CONTINUATION frames when
// large) and returns its ID.
func (h *rawH2) headers(fs []field, endStream bool) uint32 {
	h.t.Helper()
	h.hbuf.Reset()
	for _, f := range fs {
		if err := h.enc.WriteField(hpack.HeaderField{Name: f.name, Value: f.value}); err != nil {
			h.t.Fatal(err)
		}
	}
	block := h.hbuf.Bytes()
	id := h.next
	h.next += 2
	const frag = 16 << 10
	first := block[:min(frag, len(block))]
	rest := block[len(first):]
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: endStream, EndHeaders: len(rest) == 0}); err != nil {
		h.t.Fatal(err)
	}
	for len(rest) > 0 {
		n := min(frag, len(rest))
		if err := h.fr.WriteContinuation(id, n == len(rest), rest[:n]); err != nil {
			h.t.Fatal(err)
		}
		rest = rest[n:]
	}
	return id
}

func (h *rawH2) data(id uint32, b string, endStream bool) {
	h.t.Helper()
	if err := h.fr.WriteData(id, endStream, []byte(b)); err != nil {
		h.t.Fatal(err)
	}
}

func (h *rawH2) reset(id uint32) {
	h.t.Helper()
	if err := h.fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
		h.t.Fatal(err)
	}
}

// answer is how the server ended a stream: a response status, or a reset.
type answer struct {
	status int
	reset  http2.ErrCode
	isRST  bool
}

func (a answer) String() string {
	if a.isRST {
		return "RST_STREAM " + a.reset.String()
	}
	return strconv.Itoa(a.status)
}

// await reads frames until the server answers stream id with a response
// head or resets it.
func (h *rawH2) await(id uint32) answer {
	h.t.Helper()
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			h.t.Fatalf("reading the answer to stream %d: %v", id, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				h.fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				h.fr.WritePing(true, f.Data)
			}
		case *http2.GoAwayFrame:
			h.t.Fatalf("GOAWAY %v (%q) while waiting on stream %d", f.ErrCode, f.DebugData(), id)
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return answer{reset: f.ErrCode, isRST: true}
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == id {
				st, err := strconv.Atoi(f.PseudoValue("status"))
				if err != nil {
					h.t.Fatalf("stream %d: bad :status %q", id, f.PseudoValue("status"))
				}
				if st >= 200 {
					return answer{status: st}
				}
			}
		}
	}
}

// TestHTTP2RefusesWhatHTTP1Refuses: every request shape the HTTP/1.1
// parser refuses is refused over HTTP/2 too, with the same status, before
// anything reaches a target; a well-formed request still does.
func TestHTTP2RefusesWhatHTTP1Refuses(t *testing.T) {
	rt := startRecordingTarget(t)
	f := startH2Front(t, proxy.Options{}, rt.ln.Addr().String())
	big := strings.Repeat("a", 300<<10)
	cases := []struct {
		name   string
		fields []field
		body   string // sent as DATA when not ""
		open   bool   // HEADERS leave the stream open, with no DATA
		want   int
	}{
		// Before: reached the target as "GET /admin? /public HTTP/1.1".
		{name: "space in :method", fields: request("GET /admin?", "/public"), want: 400},
		// Before: reached the target as "GET /a b HTTP/1.1".
		{name: "space in :path", fields: request("GET", "/a b"), want: 400},
		// Before: reached the target as "GET * HTTP/1.1".
		{name: "asterisk :path with GET", fields: request("GET", "*"), want: 400},
		// Before: reached the target as "CONNECT localhost:443 HTTP/1.1".
		{name: "CONNECT", fields: []field{{":method", "CONNECT"}, {":authority", "localhost:443"}}, want: 405},
		// Before: forwarded, 300 KB of header (limits.max_header_bytes is 32 KB).
		{name: "300 KB header field", fields: request("GET", "/", field{"x-big", big}), want: 431},
		// Before: reached the target as a POST without a body. No DATA
		// is sent: x/net takes the unparsable length for 0 and would reset
		// the stream on the first DATA frame, maybe before the 400.
		{name: "content-length +5", fields: request("POST", "/", field{"content-length", "+5"}), open: true, want: 400},
		// Before: the first was forwarded, the second dropped.
		{name: "two different content-lengths", fields: append(request("POST", "/", field{"content-length", "5"}), field{"content-length", "6"}), body: "hello", want: 400},
		// Before: reached the target as a POST without a body.
		{name: "content-length without a body", fields: request("POST", "/", field{"content-length", "5"}), want: 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := dialH2(t, f)
			id := h.headers(c.fields, c.body == "" && !c.open)
			if c.body != "" {
				h.data(id, c.body, true)
			}
			got := h.await(id)
			if got.isRST || got.status != c.want {
				t.Errorf("answered %v; want %d", got, c.want)
			}
			if head := rt.reached(); head != "" {
				t.Errorf("reached the target as:\n%.300s", head)
			}
			o := f.outcome(t)
			if o.Status != c.want || !o.Local || o.Failure.Upstream() {
				t.Errorf("recorded as status %d local %v failure %q; want a local %d, no upstream failure", o.Status, o.Local, o.Failure, c.want)
			}
		})
	}
	t.Run("well-formed request", func(t *testing.T) {
		h := dialH2(t, f)
		id := h.headers(request("POST", "/ok?q=1", field{"content-length", "5"}), false)
		h.data(id, "hello", true)
		if got := h.await(id); got.status != 200 {
			t.Fatalf("answered %v; want 200", got)
		}
		head := rt.reached()
		if !strings.HasPrefix(head, "POST /ok?q=1 HTTP/1.1\r\n") || !strings.Contains(head, "Content-Length: 5\r\n") {
			t.Errorf("reached the target as:\n%s", head)
		}
		f.outcome(t)
	})
	f.targetsUp(t, "refused requests")
}

// TestHTTP2ForwardedProtoIsTheConnections: X-Forwarded-Proto says how the
// client connected, whatever :scheme it sent.
func TestHTTP2ForwardedProtoIsTheConnections(t *testing.T) {
	rt := startRecordingTarget(t)
	f := startH2Front(t, proxy.Options{}, rt.ln.Addr().String())
	for _, scheme := range []string{"http", "https"} {
		h := dialH2(t, f)
		id := h.headers(request("GET", "/", field{":scheme", scheme}), true)
		if got := h.await(id); got.status != 200 {
			t.Fatalf(":scheme %s answered %v; want 200", scheme, got)
		}
		// Before: ":scheme http" over TLS reached the target with
		// "X-Forwarded-Proto: http".
		if head := rt.reached(); !strings.Contains(head, "X-Forwarded-Proto: https\r\n") {
			t.Errorf(":scheme %s over TLS reached the target as:\n%s", scheme, head)
		}
		f.outcome(t)
	}
}

// TestHTTP2BodyStallEndsAtReadTimeout: a stream whose request body stops
// arriving is ended after timeouts.read, as the client's failure, and the
// connection to the target it held is closed; the target stays up.
func TestHTTP2BodyStallEndsAtReadTimeout(t *testing.T) {
	cases := []struct {
		name   string
		fields []field
		data   string // sent before the stall when not ""
	}{
		// Before: still open after 110 s, holding the target connection.
		{name: "HEADERS without END_STREAM and no DATA", fields: request("POST", "/upload")},
		{name: "part of a body, then nothing", fields: request("POST", "/upload", field{"content-length", "10"}), data: "hello"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rt := startRecordingTarget(t)
			f := startH2Front(t, proxy.Options{ReadTimeout: 300 * time.Millisecond}, rt.ln.Addr().String())
			h := dialH2(t, f)
			id := h.headers(c.fields, false)
			if c.data != "" {
				h.data(id, c.data, false)
			}
			if got := h.await(id); got.status != 408 {
				t.Errorf("a stalled body was answered %v; want 408", got)
			}
			o := f.outcome(t)
			if o.Status != 408 || o.Failure != proxy.FailClientBody {
				t.Errorf("recorded as status %d failure %q; want 408 %q", o.Status, o.Failure, proxy.FailClientBody)
			}
			// The target connection was made for the request (its head
			// waits in the write buffer for the body) and must be closed.
			select {
			case <-rt.closed:
			case <-time.After(10 * time.Second):
				t.Error("the connection to the target is still open")
			}
			f.targetsUp(t, "a stalled request body")
		})
	}
}

// TestHTTP2CancelledStreamsLeaveTargetsUp: streams that the client resets
// at once (rapid reset), resets in the middle of a body, or makes
// malformed with a Content-Length of "+5" followed by DATA (which x/net
// answers with a reset) say nothing about the targets: every target stays
// up with no failure counted, and no request is recorded as failed by one.
func TestHTTP2CancelledStreamsLeaveTargetsUp(t *testing.T) {
	a, b := startRecordingTarget(t), startRecordingTarget(t)
	f := startH2Front(t, proxy.Options{}, a.ln.Addr().String(), b.ln.Addr().String())
	h := dialH2(t, f)
	const each = 30
	for range each {
		id := h.headers(request("GET", "/rapid"), true)
		h.reset(id)
	}
	for range each {
		id := h.headers(request("POST", "/body", field{"content-length", "10"}), false)
		h.data(id, "hello", false)
		h.reset(id)
	}
	for range each {
		id := h.headers(request("POST", "/length", field{"content-length", "+5"}), false)
		h.data(id, "hello", true)
	}
	// The connection is still served, and a request on it is answered.
	id := h.headers(request("GET", "/after"), true)
	if got := h.await(id); got.status != 200 {
		t.Fatalf("a request after the cancellations was answered %v; want 200", got)
	}
	for range 3*each + 1 {
		o := f.outcome(t)
		if o.Failure.Upstream() || len(o.Failed) > 0 {
			t.Errorf("a cancelled request was recorded as failure %q with failed tries %v", o.Failure, o.Failed)
		}
	}
	f.targetsUp(t, "cancelled streams")
}

// TestHTTP2ResetWhileTheTargetThinks: a stream reset while its request
// waits on the target's response ends at once as the client's doing, and
// the connection to the target is closed rather than left waiting for
// upstream.response_timeout.
func TestHTTP2ResetWhileTheTargetThinks(t *testing.T) {
	rt := startRecordingTarget(t)
	f := startH2Front(t, proxy.Options{ResponseTimeout: time.Minute}, rt.ln.Addr().String())
	h := dialH2(t, f)
	id := h.headers(request("GET", "/hang"), true)
	select {
	case <-rt.heads:
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the target")
	}
	h.reset(id)
	// Before: the request ended, and the target connection closed, only
	// at upstream.response_timeout.
	o := f.outcome(t)
	if o.Failure != proxy.FailClientGone || o.Status != proxy.StatusClientClosed || len(o.Failed) > 0 {
		t.Errorf("recorded as status %d failure %q failed tries %v; want %d %q and none", o.Status, o.Failure, o.Failed, proxy.StatusClientClosed, proxy.FailClientGone)
	}
	select {
	case <-rt.closed:
	case <-time.After(10 * time.Second):
		t.Error("the connection to the target is still open")
	}
	f.targetsUp(t, "a reset while the target was answering")
}

// TestHTTP2UnfinishedHeaderBlockEndsAtReadHeaderTimeout: a header block
// whose CONTINUATION never comes (which stops the whole connection) is
// ended after about twice timeouts.read_header: a PING the client cannot
// answer, then the connection is closed.
func TestHTTP2UnfinishedHeaderBlockEndsAtReadHeaderTimeout(t *testing.T) {
	rt := startRecordingTarget(t)
	f := startH2Front(t, proxy.Options{ReadHeaderTimeout: 200 * time.Millisecond}, rt.ln.Addr().String())
	h := dialH2(t, f)
	h.hbuf.Reset()
	h.enc.WriteField(hpack.HeaderField{Name: ":method", Value: "GET"})
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.hbuf.Bytes()}); err != nil {
		t.Fatal(err)
	}
	// Before: still open when the client gave up, 20 s later.
	h.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, err := h.fr.ReadFrame()
		if err == nil {
			continue // the server's SETTINGS, its PING
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("the connection is still open 10 s after an unfinished header block")
		}
		break
	}
	if head := rt.reached(); head != "" {
		t.Errorf("an unfinished header block reached the target as %q", head)
	}
}

// TestHTTP2IdleClientThatAnswersPingsStays: the PING that ends unfinished
// header blocks does not end a connection whose client is only idle.
func TestHTTP2IdleClientThatAnswersPingsStays(t *testing.T) {
	rt := startRecordingTarget(t)
	f := startH2Front(t, proxy.Options{ReadHeaderTimeout: 100 * time.Millisecond}, rt.ln.Addr().String())
	h := dialH2(t, f)
	pings := 0
	for pings < 3 {
		fr, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %d pings: %v", pings, err)
		}
		if p, ok := fr.(*http2.PingFrame); ok && !p.IsAck() {
			pings++
			h.fr.WritePing(true, p.Data)
		}
	}
	id := h.headers(request("GET", "/"), true)
	if got := h.await(id); got.status != 200 {
		t.Fatalf("after 3 pings answered, a request got %v; want 200", got)
	}
	f.outcome(t)
}
