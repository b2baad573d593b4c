package h2

import (
	"context"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Stream is one request and its response. The request's parts are set
// before the Handler runs; the methods that read the body and write the
// response are for the handler's goroutine. A Stream is also the request's
// context: it is done when the client resets the stream or the connection
// closes before the response ends.
type Stream struct {
	c  *Conn
	id uint32

	// The request head. Fields are the regular fields, names in lower
	// case as HTTP/2 has them, validated by the Framer (RFC 9113 §8.2.1)
	// and by newStream (§8.2.2, §8.3.1).
	Method, Scheme, Authority, Path string
	Fields                          []hpack.HeaderField
	// HasBody is false when the HEADERS frame ended the stream.
	HasBody bool
	// ContentLength is the request's content-length field; -1 if none.
	ContentLength int64
	// Truncated: the header block was larger than MaxHeaderListSize and
	// its fields are incomplete; the request should be refused with 431.
	Truncated bool

	// Guarded by c.mu.
	sendWindow   int64
	recvWindow   int32
	recvUnsent   int32
	received     int64
	in           []byte
	inOff        int
	wake         chan struct{}
	readDeadline time.Time
	remoteDone   bool // END_STREAM came (or the stream ended)
	localDone    bool // END_STREAM went
	headersSent  bool
	trailers     bool
	inTable      bool
	// err is why the stream ended: errStreamDone after the handler, else
	// reset by the client or by the server, or the connection closed.
	err  error
	done chan struct{}
	// afterFuncs are the functions AfterFunc registered and not stopped;
	// a request has one or two at a time.
	afterFuncs []afterFunc
	nextAfter  int
}

type afterFunc struct {
	key int
	f   func()
}

// Errors a stream's reads and writes end with.
var (
	errStreamReset = errors.New("http2: the stream was reset")
	errStreamDone  = errors.New("http2: the stream is done")
	errNoResponse  = errors.New("http2: the handler wrote no response")
	errWindowWait  = errors.New("http2: the client did not open its flow-control window within the write timeout")
)

// newStream makes the stream of a request's HEADERS, or returns the error
// of a malformed request (RFC 9113 §8.1.1: a stream error PROTOCOL_ERROR).
func newStream(c *Conn, id uint32, f *http2.MetaHeadersFrame) (*Stream, error) {
	st := &Stream{
		c:             c,
		id:            id,
		sendWindow:    c.peerWindow,
		recvWindow:    c.o.StreamWindow,
		HasBody:       !f.StreamEnded(),
		remoteDone:    f.StreamEnded(),
		ContentLength: -1,
		Truncated:     f.Truncated,
		inTable:       true,
	}
	if c.unacked > 0 {
		// The client may not have applied the SETTINGS that make the
		// window smaller than RFC 9113's initial one yet.
		st.recvWindow = max(st.recvWindow, initialWindow)
	}
	for _, hf := range f.PseudoFields() {
		switch hf.Name {
		case ":method":
			st.Method = hf.Value
		case ":scheme":
			st.Scheme = hf.Value
		case ":authority":
			st.Authority = hf.Value
		case ":path":
			st.Path = hf.Value
		default:
			// :protocol (extended CONNECT) is not offered; :status is a
			// response's.
			return nil, errors.New("unexpected pseudo-header " + hf.Name)
		}
	}
	if st.Method == "CONNECT" {
		if st.Path != "" || st.Scheme != "" || st.Authority == "" {
			return nil, errors.New("malformed CONNECT")
		}
	} else if st.Method == "" || st.Path == "" || (st.Scheme != "https" && st.Scheme != "http") {
		return nil, errors.New("missing or malformed :method, :path or :scheme")
	}
	st.Fields = f.RegularFields()
	for _, hf := range st.Fields {
		switch hf.Name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			return nil, errors.New("connection-specific field " + hf.Name)
		case "te":
			if hf.Value != "trailers" {
				return nil, errors.New(`te other than "trailers"`)
			}
		case "content-length":
			if st.ContentLength >= 0 {
				// Two of them: left to the HTTP/1.1 rules, which refuse
				// them with 400 unless they agree.
				continue
			}
			if n, err := strconv.ParseUint(hf.Value, 10, 63); err == nil && !strings.HasPrefix(hf.Value, "+") {
				st.ContentLength = int64(n)
			}
		}
	}
	return st, nil
}

// ID is the stream's identifier.
func (s *Stream) ID() uint32 { return s.id }

// endLocked ends the stream for err: it leaves the table, and whoever waits
// on it wakes. The stream's handler (if it still runs) sees err.
func (s *Stream) endLocked(err error) {
	c := s.c
	if s.err == nil {
		s.err = err
	}
	s.remoteDone = true
	if s.inTable {
		s.inTable = false
		delete(c.streams, s.id)
		// What the client sent and nobody will read is given back.
		c.consumedLocked(nil, int32(len(s.in)-s.inOff)+s.recvUnsent)
		s.in, s.inOff, s.recvUnsent = nil, 0, 0
		if len(c.streams) == 0 && c.handlers == 0 {
			c.becameIdleLocked()
		}
	}
	s.wakeLocked()
	if s.done != nil {
		select {
		case <-s.done:
		default:
			close(s.done)
		}
	}
	if err != errStreamDone {
		for _, a := range s.afterFuncs {
			go a.f()
		}
	}
	s.afterFuncs = nil
	c.cond.Broadcast()
}

func (s *Stream) wakeLocked() {
	if s.wake == nil {
		return
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// failed reports whether the stream ended before its response did.
func (s *Stream) failed() bool { return s.err != nil && s.err != errStreamDone }

// Deadline implements context.Context: a stream has none.
func (s *Stream) Deadline() (time.Time, bool) { return time.Time{}, false }

// Done implements context.Context.
func (s *Stream) Done() <-chan struct{} {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if s.done == nil {
		s.done = make(chan struct{})
		if s.failed() {
			close(s.done)
		}
	}
	return s.done
}

// Err implements context.Context: context.Canceled once the client reset
// the stream or the connection closed.
func (s *Stream) Err() error {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if s.failed() {
		return context.Canceled
	}
	return nil
}

// Value implements context.Context; a stream carries no values.
func (s *Stream) Value(any) any { return nil }

// AfterFunc runs f on a goroutine of its own when the stream fails (see
// Err). context.AfterFunc finds it, so waiting for a stream takes no
// goroutine.
func (s *Stream) AfterFunc(f func()) (stop func() bool) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.failed() {
		go f()
		return func() bool { return false }
	}
	k := s.nextAfter
	s.nextAfter++
	s.afterFuncs = append(s.afterFuncs, afterFunc{k, f})
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, a := range s.afterFuncs {
			if a.key == k {
				s.afterFuncs = append(s.afterFuncs[:i], s.afterFuncs[i+1:]...)
				return true
			}
		}
		return false
	}
}

// SetReadDeadline bounds the next body reads.
func (s *Stream) SetReadDeadline(t time.Time) error {
	s.c.mu.Lock()
	s.readDeadline = t
	s.c.mu.Unlock()
	return nil
}

// Read reads the request body; io.EOF at its end. A read that waits past
// the read deadline fails with os.ErrDeadlineExceeded.
func (s *Stream) Read(p []byte) (int, error) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for s.inOff == len(s.in) {
		if s.failed() {
			return 0, s.err
		}
		if s.remoteDone {
			return 0, io.EOF
		}
		if s.wake == nil {
			s.wake = make(chan struct{}, 1)
		}
		var expired <-chan time.Time
		if !s.readDeadline.IsZero() {
			d := time.Until(s.readDeadline)
			if d <= 0 {
				return 0, os.ErrDeadlineExceeded
			}
			if timer == nil {
				timer = time.NewTimer(d)
			} else {
				timer.Reset(d)
			}
			expired = timer.C
		}
		c.mu.Unlock()
		select {
		case <-s.wake:
		case <-expired:
		}
		c.mu.Lock()
	}
	n := copy(p, s.in[s.inOff:])
	s.inOff += n
	if s.inOff == len(s.in) {
		s.in, s.inOff = s.in[:0], 0
	}
	c.consumedLocked(s, int32(n))
	return n, nil
}

// WriteHead queues the response head: status and fields, whose names must
// be in lower case. end: the response has no body.
func (s *Stream) WriteHead(status int, fields []hpack.HeaderField, end bool) error {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.failed() || c.closed {
		return s.writeErrLocked()
	}
	if s.headersSent {
		return errors.New("http2: the response head was already written")
	}
	c.hbuf.Reset()
	c.henc.WriteField(hpack.HeaderField{Name: ":status", Value: statusValue(status)})
	for _, f := range fields {
		c.henc.WriteField(f)
	}
	c.wbuf = appendHeaderBlock(c.wbuf, s.id, c.hbuf.Bytes(), end, c.peerMaxFrame)
	s.headersSent = true
	if end {
		s.localDone = true
	}
	return nil
}

// Continue sends an interim 100 (Continue) response, for a client that
// waits for one before it sends its body.
func (s *Stream) Continue() error {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.failed() || c.closed || s.headersSent {
		return s.writeErrLocked()
	}
	c.hbuf.Reset()
	c.henc.WriteField(hpack.HeaderField{Name: ":status", Value: "100"})
	c.wbuf = appendHeaderBlock(c.wbuf, s.id, c.hbuf.Bytes(), false, c.peerMaxFrame)
	c.flushLocked()
	return nil
}

func statusValue(code int) string {
	switch code {
	case 200:
		return "200"
	case 204:
		return "204"
	case 304:
		return "304"
	case 404:
		return "404"
	}
	return strconv.Itoa(code)
}

func (s *Stream) writeErrLocked() error {
	if s.err != nil && s.err != errStreamDone {
		return s.err
	}
	if s.c.closed {
		return errConnClosed
	}
	return errStreamDone
}

// Write queues b as the response body's next DATA frames, as far as the
// client's flow-control windows let it, waiting for them to open. What is
// queued goes out with the next write of the connection (see Flush).
func (s *Stream) Write(b []byte) (int, error) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	var timedOut bool
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	n := 0
	for len(b) > 0 {
		if s.failed() || c.closed || s.localDone {
			return n, s.writeErrLocked()
		}
		if len(c.wbuf) >= maxQueuedWrite {
			if !c.writing {
				c.flushLocked()
				continue
			}
			c.cond.Wait()
			continue
		}
		w := min(int64(len(b)), s.sendWindow, c.sendWindow, int64(c.peerMaxFrame))
		if w <= 0 {
			if timedOut {
				return n, errWindowWait
			}
			if len(c.wbuf) > 0 && !c.writing {
				// The client must see what it has to send a WINDOW_UPDATE;
				// one may come while it is written, so look again after.
				c.flushLocked()
				continue
			}
			if timer == nil {
				timer = time.AfterFunc(c.o.WriteTimeout, func() {
					c.mu.Lock()
					timedOut = true
					c.cond.Broadcast()
					c.mu.Unlock()
				})
			}
			c.cond.Wait()
			continue
		}
		c.wbuf = appendData(c.wbuf, s.id, b[:w], false)
		s.sendWindow -= w
		c.sendWindow -= w
		b = b[w:]
		n += int(w)
	}
	return n, nil
}

// Flush has what the stream queued written: at once, or by the write
// under way when it ends.
func (s *Stream) Flush() error {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.failed() || c.closed {
		return s.writeErrLocked()
	}
	c.flushLocked()
	if c.closed {
		return errConnClosed
	}
	return nil
}

// Abort ends the stream with RST_STREAM INTERNAL_ERROR, so the client
// sees a response that broke off is incomplete.
func (s *Stream) Abort() {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.err == nil {
		c.streamErrorLocked(s.id, http2.ErrCodeInternal)
	}
}
