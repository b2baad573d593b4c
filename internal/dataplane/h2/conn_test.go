package h2

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// echo answers with the request's body, and with a response of
// ?size= bytes of a pattern when there is none.
func echo(s *Stream) {
	body, err := io.ReadAll(s)
	if err != nil {
		s.Abort()
		return
	}
	if len(body) == 0 {
		if i := strings.Index(s.Path, "size="); i >= 0 {
			n, _ := strconv.Atoi(s.Path[i+len("size="):])
			body = pattern(n)
		}
	}
	fields := []hpack.HeaderField{{Name: "content-length", Value: strconv.Itoa(len(body))}}
	if strings.Contains(s.Path, "bighead") {
		// More than one frame of header block: CONTINUATION frames.
		fields = append(fields, hpack.HeaderField{Name: "x-big", Value: strings.Repeat("h", 40000)})
	}
	if err := s.WriteHead(200, fields, len(body) == 0); err != nil {
		return
	}
	for len(body) > 0 {
		n := min(len(body), 7000)
		if _, err := s.Write(body[:n]); err != nil {
			return
		}
		body = body[n:]
	}
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%23)
	}
	return b
}

// Concurrent streams on a few connections, with bodies both ways larger
// than every flow-control window (the server's 16 KiB per stream, 32 KiB in
// all; the client's own), and header blocks that need CONTINUATION: every
// response must arrive whole, and none may fail.
func TestStreamsUnderLoad(t *testing.T) {
	s := startServer(t, Options{StreamWindow: 16 << 10, ConnWindow: 32 << 10, MaxConcurrentStreams: 16}, handlerFunc(echo))
	c := client(t)
	const workers, each = 24, 40
	var failed, sent atomic.Int64
	var errs sync.Map
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				sent.Add(1)
				size := []int{0, 100, 70 << 10, 300 << 10}[(w+i)%4]
				var req *http.Request
				want := pattern(size)
				path := "/?size=" + strconv.Itoa(size)
				if i%5 == 0 {
					path = "/bighead?size=" + strconv.Itoa(size)
				}
				if i%2 == 0 {
					req, _ = http.NewRequest("GET", "http://"+s.addr()+path, nil)
				} else {
					req, _ = http.NewRequest("POST", "http://"+s.addr()+"/", bytes.NewReader(want))
				}
				resp, err := c.Do(req)
				if err != nil {
					failed.Add(1)
					errs.Store(err.Error(), true)
					continue
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || !bytes.Equal(got, want) {
					failed.Add(1)
					errs.Store(fmt.Sprintf("status %d, %d of %d bytes, %v", resp.StatusCode, len(got), len(want), err), true)
				}
			}
		}()
	}
	wg.Wait()
	if failed.Load() != 0 {
		var list []string
		errs.Range(func(k, _ any) bool { list = append(list, k.(string)); return true })
		t.Fatalf("%d of %d requests failed: %v", failed.Load(), sent.Load(), list)
	}
	t.Logf("%d requests, 0 failed", sent.Load())
}

// The server sends no more DATA than the client's windows allow, stream
// and connection, and the rest once they open.
func TestServerKeepsToTheClientsWindows(t *testing.T) {
	s := startServer(t, Options{}, handlerFunc(echo))
	const size = 200 << 10
	r := dialRaw(t, s, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1000})
	r.headers(1, true, r.block("GET", "/?size="+strconv.Itoa(size)))
	r.headers(3, true, r.block("GET", "/?size="+strconv.Itoa(size)))
	stream := map[uint32]int{1: 1000, 3: 1000} // what each may still send
	conn := 65535
	got := map[uint32]int{}
	for got[1] < size || got[3] < size {
		switch f := r.read().(type) {
		case *http2.DataFrame:
			n := len(f.Data())
			stream[f.StreamID] -= n
			conn -= n
			got[f.StreamID] += n
			if stream[f.StreamID] < 0 || conn < 0 {
				t.Fatalf("stream %d: DATA beyond the window (stream %d, connection %d left)", f.StreamID, stream[f.StreamID], conn)
			}
			if stream[f.StreamID] == 0 && got[f.StreamID] < size {
				r.fr.WriteWindowUpdate(f.StreamID, 1000)
				stream[f.StreamID] += 1000
			}
			if conn < 2000 {
				r.fr.WriteWindowUpdate(0, 30000)
				conn += 30000
			}
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v", f.ErrCode)
		}
	}
	if got[1] != size || got[3] != size {
		t.Fatalf("got %v bytes, want %d on each stream", got, size)
	}
}

// A request body may not exceed the windows the server gave; what the
// handler reads is given back, so bodies far larger than the connection's
// window pass one after another.
func TestRequestBodiesReturnTheWindow(t *testing.T) {
	s := startServer(t, Options{StreamWindow: 4096, ConnWindow: 8192}, handlerFunc(echo))
	c := client(t)
	for i := range 20 {
		want := pattern(50000 + i)
		resp, err := c.Post("http://"+s.addr()+"/", "application/octet-stream", bytes.NewReader(want))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("request %d: %d of %d bytes back, %v", i, len(got), len(want), err)
		}
	}

	// A client that sends beyond the stream's window is reset.
	r := dialRaw(t, s)
	r.headers(1, false, r.block("POST", "/"))
	if err := r.fr.WriteData(1, false, make([]byte, 4097)); err == nil {
		if o := r.await(1); !o.wasReset || o.reset != http2.ErrCodeFlowControl {
			t.Fatalf("DATA beyond the stream window: %+v, want RST_STREAM FLOW_CONTROL_ERROR", o)
		}
	}
}

// A client's RST_STREAM ends the stream's context: Done, Err and the
// functions registered with context.AfterFunc.
func TestClientResetEndsTheStreamContext(t *testing.T) {
	started := make(chan *Stream, 1)
	ended := make(chan error, 1)
	afterRan := make(chan struct{})
	s := startServer(t, Options{}, handlerFunc(func(st *Stream) {
		if st.ID() == 1 {
			context.AfterFunc(st, func() { close(afterRan) })
		}
		started <- st
		<-st.Done()
		ended <- st.Err()
	}))
	r := dialRaw(t, s)
	r.headers(1, true, r.block("GET", "/"))
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler did not start")
	}
	r.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	select {
	case err := <-ended:
		if err != context.Canceled {
			t.Fatalf("Err after the reset: %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the reset did not end the stream's context")
	}
	select {
	case <-afterRan:
	case <-time.After(10 * time.Second):
		t.Fatal("the AfterFunc did not run")
	}
	// The connection goes on.
	r.headers(3, true, r.block("GET", "/"))
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the next stream did not start")
	}
}

// Shutdown says GOAWAY naming the last stream taken, lets that stream
// finish, ignores newer ones, and closes the connection after.
func TestShutdownFinishesStreamsAndCloses(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 3)
	var served atomic.Int32
	s := startServer(t, Options{}, handlerFunc(func(st *Stream) {
		served.Add(1)
		started <- struct{}{}
		<-release
		st.WriteHead(200, nil, false)
		st.Write([]byte("done"))
	}))
	r := dialRaw(t, s)
	r.headers(1, true, r.block("GET", "/"))
	r.headers(3, true, r.block("GET", "/"))
	for range 2 {
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatal("the streams did not start")
		}
	}
	go s.conn(0).Shutdown()
	o := r.await(1)
	if o.goAway == nil || o.goAway.ErrCode != http2.ErrCodeNo || o.goAway.LastStreamID != 3 {
		t.Fatalf("after Shutdown: %+v, want GOAWAY NO_ERROR last stream 3", o)
	}
	r.headers(5, true, r.block("GET", "/")) // after the GOAWAY: not served
	close(release)
	for id, o := range r.awaitAll(1, 3) {
		if !o.ended || string(o.body) != "done" {
			t.Fatalf("stream %d after GOAWAY: %+v, want its response", id, o)
		}
	}
	r.awaitClose()
	if n := served.Load(); n != 2 {
		t.Fatalf("%d streams served, want 2 (stream 5 came after the GOAWAY)", n)
	}
}

// A connection with no stream for IdleTimeout is told GOAWAY and closed;
// one with a stream open is not.
func TestIdleTimeoutClosesOnlyIdleConnections(t *testing.T) {
	release := make(chan struct{})
	s := startServer(t, Options{IdleTimeout: 300 * time.Millisecond, ReadIdleTimeout: time.Hour}, handlerFunc(func(st *Stream) {
		if st.Path == "/wait" {
			<-release
		}
		st.WriteHead(204, nil, true)
	}))
	r := dialRaw(t, s)
	r.headers(1, true, r.block("GET", "/wait"))
	time.Sleep(600 * time.Millisecond) // twice the idle timeout, with a stream open
	close(release)
	if o := r.await(1); o.status != "204" {
		t.Fatalf("the stream open past the idle timeout: %+v, want 204", o)
	}
	start := time.Now()
	g := r.awaitClose()
	if g == nil || g.ErrCode != http2.ErrCodeNo {
		t.Fatalf("idle close: GOAWAY %v, want NO_ERROR", g)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("closed %v after the last stream, idle timeout 300ms", d)
	}
}

// A client that neither sends frames nor answers the server's PING is
// hung up on after ReadIdleTimeout + PingTimeout.
func TestSilentClientIsHungUpOn(t *testing.T) {
	s := startServer(t, Options{ReadIdleTimeout: 100 * time.Millisecond, PingTimeout: 100 * time.Millisecond}, handlerFunc(echo))
	r := dialRaw(t, s)
	pinged := false
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			break
		}
		if p, ok := f.(*http2.PingFrame); ok && !p.IsAck() {
			pinged = true // and not answered
		}
	}
	if !pinged {
		t.Fatal("the server closed without a PING first")
	}
}

// What RFC 9113 calls a stream error is answered with RST_STREAM and the
// code it names; a connection error with GOAWAY and that code.
func TestProtocolErrors(t *testing.T) {
	s := startServer(t, Options{MaxConcurrentStreams: 2}, handlerFunc(func(st *Stream) {
		if st.Path == "/hold" {
			<-st.Done()
			return
		}
		echo(st)
	}))
	cases := []struct {
		name   string
		send   func(r *raw)
		stream http2.ErrCode // on stream 1, or
		conn   http2.ErrCode // GOAWAY
		isConn bool
	}{
		{name: "connection-specific field", send: func(r *raw) {
			r.headers(1, true, r.block("GET", "/", "connection", "keep-alive"))
		}, stream: http2.ErrCodeProtocol},
		{name: "te other than trailers", send: func(r *raw) {
			r.headers(1, true, r.block("GET", "/", "te", "gzip"))
		}, stream: http2.ErrCodeProtocol},
		{name: "no :path", send: func(r *raw) {
			r.hbuf.Reset()
			r.henc.WriteField(hpack.HeaderField{Name: ":method", Value: "GET"})
			r.henc.WriteField(hpack.HeaderField{Name: ":scheme", Value: "https"})
			r.headers(1, true, r.hbuf.Bytes())
		}, stream: http2.ErrCodeProtocol},
		{name: "body longer than content-length", send: func(r *raw) {
			r.headers(1, false, r.block("POST", "/", "content-length", "3"))
			r.fr.WriteData(1, true, []byte("four"))
		}, stream: http2.ErrCodeProtocol},
		{name: "body shorter than content-length", send: func(r *raw) {
			r.headers(1, false, r.block("POST", "/", "content-length", "5"))
			r.fr.WriteData(1, true, []byte("four"))
		}, stream: http2.ErrCodeProtocol},
		{name: "trailers without END_STREAM", send: func(r *raw) {
			r.headers(1, false, r.block("POST", "/"))
			r.hbuf.Reset()
			r.henc.WriteField(hpack.HeaderField{Name: "x-trailer", Value: "1"})
			r.headers(1, false, r.hbuf.Bytes())
		}, stream: http2.ErrCodeProtocol},
		{name: "depends on itself", send: func(r *raw) {
			r.fr.WritePriority(1, http2.PriorityParam{StreamDep: 1, Weight: 1})
		}, stream: http2.ErrCodeProtocol},
		{name: "DATA after END_STREAM", send: func(r *raw) {
			r.headers(1, true, r.block("GET", "/hold"))
			r.fr.WriteData(1, true, []byte("x"))
		}, stream: http2.ErrCodeStreamClosed},
		{name: "HEADERS below a stream opened", send: func(r *raw) {
			r.headers(3, true, r.block("GET", "/hold"))
			r.headers(5, true, r.block("GET", "/hold"))
			r.headers(1, true, r.block("GET", "/hold")) // below 5: a closed stream
		}, conn: http2.ErrCodeProtocol, isConn: true},
		{name: "DATA on an idle stream", send: func(r *raw) {
			r.fr.WriteData(1, true, []byte("x"))
		}, conn: http2.ErrCodeProtocol, isConn: true},
		{name: "even stream", send: func(r *raw) {
			r.headers(2, true, r.block("GET", "/"))
		}, conn: http2.ErrCodeProtocol, isConn: true},
		{name: "connection window overflow", send: func(r *raw) {
			r.fr.WriteWindowUpdate(0, 1<<31-1)
		}, conn: http2.ErrCodeFlowControl, isConn: true},
		{name: "RST_STREAM on an idle stream", send: func(r *raw) {
			r.fr.WriteRSTStream(1, http2.ErrCodeCancel)
		}, conn: http2.ErrCodeProtocol, isConn: true},
		{name: "PUSH_PROMISE", send: func(r *raw) {
			r.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: r.block("GET", "/"), EndHeaders: true})
		}, conn: http2.ErrCodeProtocol, isConn: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := dialRaw(t, s)
			c.send(r)
			o := r.await(1)
			if c.isConn {
				if o.goAway == nil || o.goAway.ErrCode != c.conn {
					t.Fatalf("got %+v, want GOAWAY %v", o, c.conn)
				}
				return
			}
			if !o.wasReset || o.reset != c.stream {
				t.Fatalf("got %+v, want RST_STREAM %v", o, c.stream)
			}
		})
	}

	t.Run("over the stream limit", func(t *testing.T) {
		r := dialRaw(t, s)
		r.headers(1, true, r.block("GET", "/hold"))
		r.headers(3, true, r.block("GET", "/hold"))
		r.headers(5, true, r.block("GET", "/hold"))
		if o := r.await(5); !o.wasReset || o.reset != http2.ErrCodeProtocol {
			t.Fatalf("a third stream over a limit of 2: %+v, want RST_STREAM PROTOCOL_ERROR", o)
		}
	})
}

// Streams a client resets while their handlers still run do not count as
// open, but their handlers are bounded: past twice the stream limit new
// streams are refused (rapid reset, CVE-2023-44487).
func TestRapidResetIsBounded(t *testing.T) {
	release := make(chan struct{})
	var running, most atomic.Int32
	s := startServer(t, Options{MaxConcurrentStreams: 4}, handlerFunc(func(st *Stream) {
		n := running.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-release
		running.Add(-1)
	}))
	defer close(release)
	r := dialRaw(t, s)
	refused := 0
	for id := uint32(1); id < 80; id += 2 {
		r.headers(id, true, r.block("GET", "/"))
		r.fr.WriteRSTStream(id, http2.ErrCodeCancel)
	}
	r.headers(81, true, r.block("GET", "/"))
	for {
		f := r.read()
		if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.ErrCode == http2.ErrCodeRefusedStream {
			refused++
			if rst.StreamID == 81 {
				break
			}
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			t.Fatalf("GOAWAY %v", g.ErrCode)
		}
	}
	if m := most.Load(); m > 8 {
		t.Fatalf("%d handlers ran at once with a stream limit of 4; want at most 8", m)
	}
	if refused == 0 {
		t.Fatal("no stream was refused")
	}
}

// A client that never opens its window leaves the handler's write waiting
// only WriteTimeout.
func TestClosedWindowEndsTheWriteAtWriteTimeout(t *testing.T) {
	got := make(chan error, 1)
	s := startServer(t, Options{WriteTimeout: 200 * time.Millisecond}, handlerFunc(func(st *Stream) {
		st.WriteHead(200, nil, false)
		_, err := st.Write(make([]byte, 10))
		got <- err
	}))
	r := dialRaw(t, s, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	r.headers(1, true, r.block("GET", "/"))
	select {
	case err := <-got:
		if err != errWindowWait {
			t.Fatalf("write: %v, want %v", err, errWindowWait)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the write waited past the write timeout")
	}
}

// A handler that panics resets its stream; the connection goes on.
func TestHandlerPanicResetsItsStream(t *testing.T) {
	s := startServer(t, Options{}, handlerFunc(func(st *Stream) {
		if st.Path == "/panic" {
			panic("boom")
		}
		echo(st)
	}))
	r := dialRaw(t, s)
	r.headers(1, true, r.block("GET", "/panic"))
	if o := r.await(1); !o.wasReset || o.reset != http2.ErrCodeInternal {
		t.Fatalf("a panicking handler: %+v, want RST_STREAM INTERNAL_ERROR", o)
	}
	r.headers(3, true, r.block("GET", "/?size=5"))
	if o := r.await(3); o.status != "200" || string(o.body) != "abcde" {
		t.Fatalf("after the panic: %+v, want 200 abcde", o)
	}
}

// Padding counts against the windows and is given back at once; a
// request's cookie fields and trailers reach the handler as sent.
func TestPaddingAndTrailers(t *testing.T) {
	bodies := make(chan string, 1)
	s := startServer(t, Options{StreamWindow: 1000, ConnWindow: 1000}, handlerFunc(func(st *Stream) {
		b, _ := io.ReadAll(st)
		bodies <- string(b)
		st.WriteHead(204, nil, true)
	}))
	r := dialRaw(t, s)
	for id := uint32(1); id < 12; id += 2 {
		r.headers(id, false, r.block("POST", "/"))
		// 200 bytes of padding and 10 of data: six of these are more
		// than the windows, unless the padding is given back.
		if err := r.fr.WriteDataPadded(id, false, []byte("0123456789"), make([]byte, 200)); err != nil {
			t.Fatal(err)
		}
		r.hbuf.Reset()
		r.henc.WriteField(hpack.HeaderField{Name: "x-checksum", Value: "1"})
		r.headers(id, true, r.hbuf.Bytes())
		if o := r.await(id); o.status != "204" {
			t.Fatalf("stream %d: %+v, want 204", id, o)
		}
		if b := <-bodies; b != "0123456789" {
			t.Fatalf("stream %d: body %q", id, b)
		}
	}
}

// Continue sends an interim 100 before the final response.
func TestContinueIsAnInterimResponse(t *testing.T) {
	s := startServer(t, Options{}, handlerFunc(func(st *Stream) {
		if err := st.Continue(); err != nil {
			t.Errorf("Continue: %v", err)
		}
		echo(st)
	}))
	r := dialRaw(t, s)
	r.headers(1, false, r.block("POST", "/", "expect", "100-continue"))
	f := r.read()
	for {
		if _, ok := f.(*http2.MetaHeadersFrame); ok {
			break
		}
		f = r.read()
	}
	if h := f.(*http2.MetaHeadersFrame); h.PseudoValue("status") != "100" || h.StreamEnded() {
		t.Fatalf("first head: status %q, ended %v; want 100, not ended", h.PseudoValue("status"), h.StreamEnded())
	}
	r.fr.WriteData(1, true, []byte("body"))
	if o := r.await(1); o.status != "200" || string(o.body) != "body" {
		t.Fatalf("after 100: %+v, want 200 with the body", o)
	}
}
