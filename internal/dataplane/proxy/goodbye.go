package proxy

// Goodbyes: how long-lived exchanges (WebSocket connections, event streams)
// end when the pool they run on is drained. Closing their connections at
// the drain timeout, as is done to any request still running then, looks
// to a client like a network failure: a WebSocket gets no close frame, an
// event stream a truncated body. Instead each engine registers such an
// exchange on its target (upstream.Target.Hold) with a Goodbyer, and the
// drain tells them, spread over the end of its window
// (upstream.SayGoodbye), to end the way clients act on:
//
//   - a WebSocket gets a close frame (1001, going away) between two frames,
//     and the target one too, masked as a client's are;
//   - an event stream (text/event-stream) ends after the blank line that
//     ends an event, with the last chunk (HTTP/1.1) or END_STREAM (HTTP/2),
//     so EventSource reconnects. A stream with a Content-Length cannot end
//     early cleanly and is closed at the drain's end as before.

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"net"
	"sync"
	"time"

	"github.com/cutover/cutover/internal/dataplane/upstream"
	"github.com/cutover/cutover/internal/dataplane/wire"
)

// goodbyeGrace bounds what a goodbye waits for: the end of the event or
// frame under way, and the peers' answers to the close frames. Past it the
// connections are closed as before. The drain's end closes what is left
// anyway; this bound is for goodbyes said to a target that keeps serving
// (a pool kept warm), and is generous so a busy machine does not turn a
// clean close into a cut one.
const goodbyeGrace = 5 * time.Second

// A WebSocket told goodbye is closed with 1001 "going away" (RFC 6455
// section 7.4.1): every client library knows it, where 1012 (service
// restart) is only registered with IANA and some validating clients
// refuse it as a protocol error.
const (
	wsGoingAway   = 1001
	wsCloseReason = "going away: the service was redeployed"
)

// holdLongLived registers g on the exchange's target, so a drain of the
// target can say goodbye to it; end releases it.
func (x *exchange) holdLongLived(g upstream.Goodbyer) {
	x.held = g
	x.target.Hold(g)
}

// releaseLongLived ends holdLongLived; end calls it.
func (x *exchange) releaseLongLived() {
	if x.held != nil {
		x.target.Release(x.held)
		x.held = nil
	}
}

// aLongTimeAgo is a deadline that has passed: setting it wakes a blocked
// read at once.
var aLongTimeAgo = time.Unix(1, 0)

// byeWaker is the Goodbyer of an exchange relayed by goroutines blocked in
// reads (the goroutine engine, HTTP/2): Goodbye marks it and wakes the
// reads on conns by moving their deadline to the past; the relay sees the
// timeout, asks said, and ends at the next boundary.
//
// A relay checks said after it moved a read deadline and before it reads:
// Goodbye sets said before the deadline, under mu, so either the relay sees
// said or the deadline Goodbye sets comes after the relay's own.
type byeWaker struct {
	mu     sync.Mutex
	saidIt bool
	ended  bool
	conns  [2]net.Conn
}

func (b *byeWaker) Goodbye() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ended || b.saidIt {
		return
	}
	b.saidIt = true
	for _, c := range b.conns {
		if c != nil {
			c.SetReadDeadline(aLongTimeAgo)
		}
	}
}

func (b *byeWaker) said() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.saidIt
}

// end stops Goodbye from touching the connections, before the upstream
// connection is handed back; it reports whether goodbye was said, in which
// case the connection's deadline was moved and it must not be reused.
func (b *byeWaker) end() (said bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ended = true
	return b.saidIt
}

// eventStream follows an event stream as it is relayed, to know whether
// what was sent so far ends at an event boundary (after the blank line
// that ends an event), where the stream can end without cutting an event.
// Lines end in CRLF, LF or CR (the EventSource grammar).
type eventStream struct {
	inLine  bool // bytes of a line were sent since the last line end
	cr      bool // the last byte sent was a CR, which a LF may complete
	pending bool // lines of an event were sent since the last blank line
}

func (e *eventStream) atBoundary() bool { return !e.pending }

// advance records b as sent and returns len(b); with stop it records only
// the bytes up to the first event boundary (0 when already at one) and
// returns their count. A CRLF is not split.
func (e *eventStream) advance(b []byte, stop bool) int {
	for i, c := range b {
		if stop && !e.pending {
			if e.cr && c == '\n' {
				e.cr = false
				return i + 1
			}
			return i
		}
		switch {
		case c == '\n' && e.cr:
			e.cr = false
		case c == '\r' || c == '\n':
			if !e.inLine {
				e.pending = false
			}
			e.inLine = false
			e.cr = c == '\r'
		default:
			e.inLine, e.pending, e.cr = true, true, false
		}
	}
	return len(b)
}

// isEventStream reports whether a response is an event stream.
func isEventStream(resp *wire.Response) bool {
	ct := resp.Get("Content-Type")
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return bytes.EqualFold(bytes.TrimSpace(ct), []byte("text/event-stream"))
}

// streamBye is an event stream relayed by a blocking goroutine that a
// drain may end (nextBody).
type streamBye struct {
	w     byeWaker
	es    eventStream
	grace time.Time // when the goodbye gives up waiting for the event's end
}

// holdEventStream makes x's response, when it is an event stream whose end
// the relay can mark (chunked or close-delimited towards the client),
// long-lived on its target, for nextBody to end it at a drain's goodbye.
func (x *exchange) holdEventStream(endable bool) {
	if !endable || !isEventStream(&x.resp) {
		return
	}
	s := &streamBye{}
	s.w.conns[0] = x.uc.Conn
	x.stream = s
	x.waker = &s.w
	x.holdLongLived(&s.w)
}

// nextBody returns the next piece of x's response body for a relay that
// blocks on the target's connection, moving the read deadline as it goes.
// For an event stream that was told goodbye it returns pieces up to the
// next event boundary, and then end: the relay ends the body there, as if
// the target had ended it.
func (p *Proxy) nextBody(x *exchange) (b []byte, end bool, err error) {
	uc := x.uc
	s := x.stream
	for {
		if s == nil || !s.w.said() {
			if !x.rbody.Buffered() {
				uc.ReadDL.Extend(time.Now(), p.o.UpstreamReadTimeout, uc.SetReadDeadline)
			}
			if s == nil {
				b, err = x.rbody.Next(64 << 10)
				return b, false, err
			}
			if !s.w.said() {
				b, err = x.rbody.Next(64 << 10)
				if err != nil && isTimeout(err) && s.w.said() {
					continue // woken by the goodbye
				}
				s.es.advance(b, false)
				return b, false, err
			}
		}
		if s.grace.IsZero() {
			s.grace = time.Now().Add(goodbyeGrace)
			uc.SetReadDeadline(s.grace)
		}
		if s.es.atBoundary() {
			return nil, true, nil
		}
		b, err = x.rbody.Next(64 << 10)
		if err != nil {
			if isTimeout(err) && time.Now().Before(s.grace) {
				uc.SetReadDeadline(s.grace)
				continue
			}
			return nil, false, err
		}
		return b[:s.es.advance(b, true)], false, nil
	}
}

// isWebSocket reports whether an upgrade is to the WebSocket protocol,
// whose frames the relay can follow.
func isWebSocket(resp *wire.Response) bool {
	return bytes.EqualFold(bytes.TrimSpace(resp.Get("Upgrade")), []byte("websocket"))
}

// wsFrames follows the frames of one direction of a WebSocket connection
// as they are relayed (RFC 6455 section 5.2), to know where one frame ends
// and the next begins: a close frame of the proxy's own may go only there.
// Control frames may come between the fragments of a message, so any
// frame boundary will do.
type wsFrames struct {
	hdr    [14]byte
	nhdr   int
	left   int64 // payload bytes of the current frame still to come
	opcode byte
	closed bool // a close frame went through
}

const wsOpClose = 0x8

func (f *wsFrames) atBoundary() bool { return f.nhdr == 0 && f.left == 0 }

// advance records b as relayed and returns len(b); with stop it records
// only the bytes up to the first frame boundary (0 when already at one)
// and returns their count.
func (f *wsFrames) advance(b []byte, stop bool) int {
	i := 0
	for i < len(b) {
		if stop && f.atBoundary() {
			return i
		}
		if f.left > 0 {
			n := int(min(f.left, int64(len(b)-i)))
			i += n
			f.left -= int64(n)
			if f.left == 0 {
				f.frameEnd()
			}
			continue
		}
		f.hdr[f.nhdr] = b[i]
		f.nhdr++
		i++
		if f.nhdr < 2 || f.nhdr < wsHeaderLen(f.hdr[1]) {
			continue
		}
		f.opcode = f.hdr[0] & 0x0f
		switch n := f.hdr[1] & 0x7f; n {
		case 126:
			f.left = int64(binary.BigEndian.Uint16(f.hdr[2:4]))
		case 127:
			// The most significant bit must be 0 (RFC 6455 5.2).
			f.left = int64(binary.BigEndian.Uint64(f.hdr[2:10]) &^ (1 << 63))
		default:
			f.left = int64(n)
		}
		f.nhdr = 0
		if f.left == 0 {
			f.frameEnd()
		}
	}
	return i
}

func (f *wsFrames) frameEnd() {
	if f.opcode == wsOpClose {
		f.closed = true
	}
}

// wsHeaderLen is the length of a frame header from its second byte: the
// extended payload length and the masking key follow it.
func wsHeaderLen(b1 byte) int {
	n := 2
	switch b1 & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 {
		n += 4
	}
	return n
}

// wsCloseFrame returns a close frame with status 1001. Frames to a server
// are masked with a fresh random key (RFC 6455 5.3); frames to a client
// are not.
func wsCloseFrame(masked bool) []byte {
	payload := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(wsCloseReason)), wsGoingAway)
	payload = append(payload, wsCloseReason...)
	f := []byte{0x80 | wsOpClose, byte(len(payload))}
	if masked {
		var key [4]byte
		rand.Read(key[:])
		f[1] |= 0x80
		f = append(f, key[:]...)
		for i := range payload {
			payload[i] ^= key[i%4]
		}
	}
	return append(f, payload...)
}

// wsRelay relays one direction of a WebSocket connection: from src (which
// reads from) to dst. Told goodbye, it stops at the next frame boundary,
// sends a close frame of its own (masked when dst is the target), and then
// drops what comes until the peer's close frame, its answer to the close
// the other direction sent it; clean reports that all of this happened.
// Otherwise it ends like a byte pipe, at an error or the end of src, and
// the caller closes both connections. When a close frame went through
// before the goodbye, the endpoints are closing by themselves and the
// relay goes on as a pipe.
func wsRelay(dst net.Conn, src *wire.Reader, from net.Conn, bye *byeWaker, toTarget bool) (n int64, clean bool) {
	var fr wsFrames
	var grace time.Time
	sent, dropping := false, false
	// closeHere is called at the boundary the goodbye waited for.
	closeHere := func() error {
		sent = true
		if fr.closed {
			return nil
		}
		dropping = true
		_, err := dst.Write(wsCloseFrame(toTarget))
		return err
	}
	// notice enters the goodbye once it was said. It is asked again after
	// each read: a read woken by the goodbye's deadline may return data
	// instead, the peer's answer to the close the other direction sent
	// among it, which must not go through as if no goodbye had been said.
	notice := func() {
		if grace.IsZero() && bye.said() {
			grace = time.Now().Add(goodbyeGrace)
			from.SetReadDeadline(grace)
			dst.SetWriteDeadline(grace)
		}
	}
	for {
		notice()
		if !grace.IsZero() && !sent && fr.atBoundary() {
			if err := closeHere(); err != nil {
				return n, false
			}
		}
		b, err := src.Next(32 << 10)
		if len(b) > 0 {
			notice()
		}
		for len(b) > 0 {
			k := len(b)
			switch {
			case dropping:
				fr.advance(b, false)
				if fr.closed {
					return n, true
				}
				b = nil
				continue
			case !grace.IsZero() && !sent:
				k = fr.advance(b, true)
			default:
				fr.advance(b, false)
			}
			m, werr := dst.Write(b[:k])
			n += int64(m)
			if werr != nil {
				return n, false
			}
			b = b[k:]
			if len(b) > 0 {
				if err := closeHere(); err != nil {
					return n, false
				}
			}
		}
		if err != nil {
			if isTimeout(err) && (grace.IsZero() && bye.said() || time.Now().Before(grace)) {
				if !grace.IsZero() {
					from.SetReadDeadline(grace)
				}
				continue
			}
			return n, false
		}
	}
}
