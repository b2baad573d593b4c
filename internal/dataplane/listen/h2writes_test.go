package listen

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// writeLog records each Write it gets, and signals it.
type writeLog struct {
	mu     sync.Mutex
	writes [][]byte
	err    error
	wrote  chan struct{}
}

func newWriteLog() *writeLog { return &writeLog{wrote: make(chan struct{}, 16)} }

func (l *writeLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.writes = append(l.writes, bytes.Clone(p))
	err := l.err
	l.mu.Unlock()
	l.wrote <- struct{}{}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

func (l *writeLog) got() [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.writes
}

// sized is a frame of stream 1 with n bytes of payload.
func sized(typ, flags byte, n int) []byte {
	return frame(typ, flags, 1, bytes.Repeat([]byte{'x'}, n))
}

const (
	flagEndHeaders = byte(http2.FlagHeadersEndHeaders)
	frameData      = byte(http2.FrameData)
)

func TestHeaderHoldSendsHeadWithBody(t *testing.T) {
	l := newWriteLog()
	h := newHeaderHold(l, func() { t.Error("no write failed") })
	defer h.stop()
	head := sized(frameHeaders, flagEndHeaders, 20)
	body := sized(frameData, flagEndStream, 100)
	if n, err := h.Write(head); n != len(head) || err != nil {
		t.Fatalf("Write(HEADERS) = %d, %v", n, err)
	}
	if len(l.got()) != 0 {
		t.Fatal("the head of a response that goes on was written before its body")
	}
	if n, err := h.Write(body); n != len(body) || err != nil {
		t.Fatalf("Write(DATA) = %d, %v", n, err)
	}
	w := l.got()
	if len(w) != 1 || !bytes.Equal(w[0], append(bytes.Clone(head), body...)) {
		t.Fatalf("writes = %d; want one with the head and the body in order", len(w))
	}
}

func TestHeaderHoldPassesOtherWrites(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    []byte
	}{
		{"HEADERS with END_STREAM", sized(frameHeaders, flagEndHeaders|flagEndStream, 20)},
		{"DATA", sized(frameData, 0, 50)},
		{"SETTINGS", sized(frameSettings, 0, 12)},
		{"HEADERS then DATA", append(sized(frameHeaders, flagEndHeaders, 20), sized(frameData, flagEndStream, 5)...)},
		{"half a HEADERS frame", sized(frameHeaders, flagEndHeaders, 20)[:15]},
	} {
		l := newWriteLog()
		h := newHeaderHold(l, func() {})
		h.Write(tc.p)
		if w := l.got(); len(w) != 1 || !bytes.Equal(w[0], tc.p) {
			t.Errorf("%s: writes = %q; want it written at once", tc.name, w)
		}
		h.stop()
	}
}

// A head whose body does not follow (an event stream, a slow target) goes
// out on its own after headerHoldDelay.
func TestHeaderHoldReleasesAlone(t *testing.T) {
	l := newWriteLog()
	h := newHeaderHold(l, func() { t.Error("no write failed") })
	defer h.stop()
	head := sized(frameHeaders, flagEndHeaders, 20)
	start := time.Now()
	h.Write(head)
	select {
	case <-l.wrote:
	case <-time.After(10 * time.Second):
		t.Fatal("a held head was never written")
	}
	if w := l.got(); len(w) != 1 || !bytes.Equal(w[0], head) {
		t.Fatalf("writes = %q; want the head", w)
	}
	if d := time.Since(start); d < headerHoldDelay {
		t.Errorf("released after %v; want the hold of %v", d, headerHoldDelay)
	}
	// The next response is tracked from the right place in the stream.
	next := sized(frameHeaders, flagEndHeaders, 7)
	h.Write(next)
	if len(l.got()) != 1 {
		t.Fatal("the next head was not held")
	}
	h.Write(sized(frameData, flagEndStream, 3))
	if w := l.got(); len(w) != 2 || !bytes.HasPrefix(w[1], next) {
		t.Fatalf("writes = %d; want the second head sent with its body", len(w))
	}
}

// Frames split across writes, and a head in CONTINUATION frames, are
// followed.
func TestHeaderHoldTracksSplitFrames(t *testing.T) {
	l := newWriteLog()
	h := newHeaderHold(l, func() {})
	defer h.stop()
	data := sized(frameData, 0, 300)
	h.Write(data[:100])
	h.Write(data[100:200])
	// The rest of the DATA frame and a HEADERS (trailers would carry
	// END_STREAM; this one starts a new response and is split too).
	head := sized(frameHeaders, 0, 10)
	cont := sized(frameContinuation, flagEndHeaders, 10)
	h.Write(append(bytes.Clone(data[200:]), head[:4]...))
	h.Write(head[4:])
	h.Write(cont)
	w := l.got()
	if len(w) != 3 {
		t.Fatalf("writes = %d; want the DATA frame's three written, the rest of the head held", len(w))
	}
	h.Write(sized(frameData, flagEndStream, 1))
	w = l.got()
	if len(w) != 4 || !bytes.HasPrefix(w[3], append(bytes.Clone(head[4:]), cont...)) {
		t.Fatal("the HEADERS and CONTINUATION ending the head were not sent with the body")
	}
}

func TestHeaderHoldReportsFailedRelease(t *testing.T) {
	l := newWriteLog()
	l.err = errors.New("broken pipe")
	failed := make(chan struct{})
	h := newHeaderHold(l, func() { close(failed) })
	defer h.stop()
	h.Write(sized(frameHeaders, flagEndHeaders, 20))
	select {
	case <-failed:
	case <-time.After(10 * time.Second):
		t.Fatal("a failed write of a held head was not reported")
	}
	if _, err := h.Write(sized(frameData, flagEndStream, 1)); err == nil {
		t.Error("a write after a failed release succeeded")
	}
}

func TestHeaderHoldStopDropsHeld(t *testing.T) {
	l := newWriteLog()
	h := newHeaderHold(l, func() {})
	h.Write(sized(frameHeaders, flagEndHeaders, 20))
	h.stop()
	h.release() // as the timer would, had it fired meanwhile
	if len(l.got()) != 0 {
		t.Fatal("a stopped hold wrote")
	}
}

// Closing a connection whose held head is being written to a client that
// reads nothing ends the write instead of waiting for it.
func TestSettingsConnCloseEndsStuckRelease(t *testing.T) {
	cert, _, _, err := generateSelfSigned([]string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	// net.Pipe has no buffer: a write blocks until the other side reads.
	sp, cp := net.Pipe()
	srv := tls.Server(sp, &tls.Config{Certificates: []tls.Certificate{*cert}})
	cl := tls.Client(cp, clientConfig(cert.Leaf))
	errc := make(chan error, 1)
	go func() { errc <- cl.Handshake() }()
	if err := srv.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// Wait until the hold's timer has its write under way (it holds the
	// lock while it writes).
	c := newSettingsConn(srv)
	c.Write(sized(frameHeaders, flagEndHeaders, 20))
	for c.out.mu.TryLock() {
		c.out.mu.Unlock()
		runtime.Gosched()
	}
	closed := make(chan struct{})
	go func() {
		c.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for a write the client never reads")
	}
	cl.Close()
}
