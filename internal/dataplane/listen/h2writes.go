package listen

import (
	"io"
	"sync"
	"time"
)

// x/net/http2's server writes a response with a body as two frame writes
// with a wait in between: the handler hands over the HEADERS frame and
// waits until it is in the connection's buffer, and only then the DATA.
// Meanwhile the server's write queue is empty, so it flushes the buffer:
// the HEADERS frame goes out alone, in a TLS record and a write system
// call of its own, and the DATA follows in another. Under load that is
// most of the TLS writes (measured: 1.9 per response with 100-byte bodies,
// see docs/benchmarks.md). headerHold coalesces them: a write that ends
// with the HEADERS of a stream that goes on (no END_STREAM) is held back
// until the next write, which is then sent together with it, or for at
// most headerHoldDelay, so a response whose body comes later (an event
// stream, a slow target) still has its head sent almost at once.
//
// Nothing is reordered and nothing is written that x/net did not write;
// the bytes of a held write are copied, as x/net reuses its buffer.
type headerHold struct {
	w io.Writer
	// onErr is called, outside the lock, when writing held bytes from the
	// timer failed: nobody else would learn of it, so the connection is
	// closed, which ends x/net's reads and with them the connection.
	onErr func()

	mu     sync.Mutex
	frames frameTracker
	held   []byte
	timer  *time.Timer
	err    error // a failed write of held bytes, returned by the next Write
	closed bool
}

// headerHoldDelay bounds how long the head of a response waits for its
// body to be written with it.
const headerHoldDelay = time.Millisecond

// maxHeld bounds the bytes held back (a larger header block is sent as it
// is): what x/net's write buffer holds.
const maxHeld = 16 << 10

func newHeaderHold(w io.Writer, onErr func()) *headerHold {
	h := &headerHold{w: w, onErr: onErr}
	h.timer = time.AfterFunc(time.Hour, h.release)
	h.timer.Stop()
	return h
}

func (h *headerHold) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return 0, h.err
	}
	hold := h.frames.scan(p) && len(h.held)+len(p) <= maxHeld && !h.closed
	if hold {
		if len(h.held) == 0 {
			h.timer.Reset(headerHoldDelay)
		}
		h.held = append(h.held, p...)
		return len(p), nil
	}
	if len(h.held) == 0 {
		return h.w.Write(p)
	}
	h.timer.Stop()
	before := len(h.held)
	h.held = append(h.held, p...)
	n, err := h.w.Write(h.held)
	h.reset()
	if err != nil {
		return max(0, n-before), err
	}
	return len(p), nil
}

// keptHoldBuffer is the largest buffer kept between two held writes: a
// head and a small body; a larger one (a large first DATA frame was
// appended) is left to the garbage collector rather than held by an idle
// connection.
const keptHoldBuffer = 2 << 10

func (h *headerHold) reset() {
	if cap(h.held) > keptHoldBuffer {
		h.held = nil
		return
	}
	h.held = h.held[:0]
}

// release writes the held bytes when no write came to take them along.
func (h *headerHold) release() {
	h.mu.Lock()
	if len(h.held) == 0 || h.closed {
		h.mu.Unlock()
		return
	}
	_, err := h.w.Write(h.held)
	h.reset()
	if err != nil {
		h.err = err
	}
	h.mu.Unlock()
	if err != nil {
		h.onErr()
	}
}

// stop drops the held bytes and the timer, for a connection being closed.
func (h *headerHold) stop() {
	h.mu.Lock()
	h.closed = true
	h.held = nil
	h.timer.Stop()
	h.mu.Unlock()
}

// frameTracker follows the frames of the server-to-client byte stream of
// an HTTP/2 connection through the writes that carry them.
type frameTracker struct {
	hdr  [frameHeaderLen]byte
	nhdr int // bytes of a frame header split across writes gathered in hdr
	left int // payload bytes of the current frame still to come
	// last is the type and flags of the last frame whose header was seen;
	// open says the last HEADERS frame did not end its stream.
	lastType, lastFlags byte
	open                bool
}

// HTTP/2 frame types and flags (RFC 9113 6) the tracker looks at.
const (
	frameHeaders      = 0x1
	frameContinuation = 0x9
	flagEndStream     = 0x1
)

// scan follows the frames in p and reports whether p ends exactly where a
// response head ends whose stream goes on: a HEADERS frame without
// END_STREAM, or a CONTINUATION of one.
func (t *frameTracker) scan(p []byte) bool {
	for len(p) > 0 {
		if t.left > 0 {
			k := min(t.left, len(p))
			t.left -= k
			p = p[k:]
			continue
		}
		k := copy(t.hdr[t.nhdr:], p)
		t.nhdr += k
		p = p[k:]
		if t.nhdr < frameHeaderLen {
			return false
		}
		t.nhdr = 0
		t.left = int(t.hdr[0])<<16 | int(t.hdr[1])<<8 | int(t.hdr[2])
		t.lastType, t.lastFlags = t.hdr[3], t.hdr[4]
		if t.lastType == frameHeaders {
			t.open = t.lastFlags&flagEndStream == 0
		}
	}
	if t.left > 0 || t.nhdr > 0 {
		return false
	}
	return (t.lastType == frameHeaders || t.lastType == frameContinuation) && t.open
}
