// Package h2 is cutover's HTTP/2 server: one connection's frames, its
// streams' states, flow control in both directions, and its writes (RFC
// 9113). Each stream's request is served by a Handler on a goroutine of its
// own; everything else about a connection runs on the goroutine that reads
// it, which decodes frames and HPACK with x/net's Framer and never waits
// for a stream.
//
// It replaces x/net/http2's server, whose structure cost cutover a third
// of its CPU per request on a proxy's workload (docs/benchmarks.md): a serve
// goroutine per connection that every frame and every response passes
// through over channels, a goroutine per flush, an http.Request, header
// map and contexts per stream. Here a response is encoded by its own
// stream's goroutine straight into the connection's write buffer, and
// whoever finds no write under way writes the buffer: responses that
// complete while a write is under way leave together in the next one.
package h2

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Options configure a connection. Zero values take the defaults named.
type Options struct {
	// MaxConcurrentStreams is the number of streams a client may have open
	// at once (default 128, nginx's http2_max_concurrent_streams).
	MaxConcurrentStreams uint32
	// MaxHeaderListSize bounds a request's header block, counted as RFC
	// 9113 §6.5.2 does (default 1 MiB); a larger one is handed to the
	// Handler with Stream.Truncated set, for a 431.
	MaxHeaderListSize uint32
	// StreamWindow and ConnWindow are the flow-control windows the server
	// gives a client for request bodies, per stream and in all (default 1
	// MiB each). They bound what one connection's bodies hold in memory.
	StreamWindow, ConnWindow int32
	// PrefaceTimeout bounds the wait for the client's preface (default 10s).
	PrefaceTimeout time.Duration
	// IdleTimeout closes a connection with no stream for this long, after
	// a GOAWAY (default 75s).
	IdleTimeout time.Duration
	// ReadIdleTimeout and PingTimeout find a dead peer and a header block
	// that never ends: after ReadIdleTimeout without a frame the server
	// sends a PING, and hangs up if nothing answers within PingTimeout. A
	// client in the middle of a header block cannot answer (any frame but
	// CONTINUATION is a connection error), one that is only idle can.
	// Default 10s each.
	ReadIdleTimeout, PingTimeout time.Duration
	// WriteTimeout bounds each write to the client and each wait for the
	// client to open its flow-control window (default 60s).
	WriteTimeout time.Duration
	Logger       *slog.Logger
}

func (o *Options) defaults() {
	set := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	set(&o.PrefaceTimeout, 10*time.Second)
	set(&o.IdleTimeout, 75*time.Second)
	set(&o.ReadIdleTimeout, 10*time.Second)
	set(&o.PingTimeout, 10*time.Second)
	set(&o.WriteTimeout, 60*time.Second)
	if o.MaxConcurrentStreams == 0 {
		o.MaxConcurrentStreams = 128
	}
	if o.MaxHeaderListSize == 0 {
		o.MaxHeaderListSize = 1 << 20
	}
	if o.StreamWindow <= 0 {
		o.StreamWindow = 1 << 20
	}
	if o.ConnWindow <= 0 {
		o.ConnWindow = 1 << 20
	}
	// A connection's window starts at 65,535 and only a WINDOW_UPDATE
	// changes it, which cannot make it smaller.
	o.ConnWindow = max(o.ConnWindow, initialWindow)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Handler serves the streams of a connection, each on its own goroutine.
// The stream is the handler's until ServeStream returns; the engine then
// ends it (END_STREAM if the response was not ended, RST_STREAM if the
// request body was not read to its end).
type Handler interface {
	ServeStream(s *Stream)
}

// Limits on what a connection queues, so a client that reads nothing
// cannot make it hold more.
const (
	// A stream's Write waits while this much is queued and being written.
	maxQueuedWrite = 256 << 10
	// Control frames (SETTINGS and PING acks, RST_STREAM) beyond this,
	// queued behind a write that does not finish, end the connection.
	maxQueuedControl = 1 << 20
	// initialWindow is RFC 9113's initial flow-control window.
	initialWindow = 65535
	maxWindow     = 1<<31 - 1
	defaultFrame  = 16384
)

// Conn is one HTTP/2 connection.
type Conn struct {
	nc net.Conn
	o  Options
	h  Handler
	br *bufio.Reader
	fr *http2.Framer
	// lastRead is when the last frame arrived, in Unix nanoseconds; the
	// timer reads it, so the read loop does not touch a timer per frame.
	lastRead atomic.Int64
	// timer runs tick at nextTick (guarded by mu).
	timer    *time.Timer
	nextTick time.Time

	mu sync.Mutex
	// cond is signalled when a write ends, a window opens, a stream's
	// handler ends or the connection closes.
	cond sync.Cond

	// The write side: frames queued in wbuf, written by whoever finds
	// writing false.
	wbuf, spare []byte
	writing     bool
	henc        *hpack.Encoder
	hbuf        bytes.Buffer
	// sendWindow is the connection's flow-control window the client gave;
	// peerWindow the initial window of its streams; peerMaxFrame its
	// SETTINGS_MAX_FRAME_SIZE.
	sendWindow   int64
	peerWindow   int64
	peerMaxFrame int

	// The read side's flow control: recvWindow is what the client may
	// still send in all; recvUnsent what was consumed and not announced.
	recvWindow, recvUnsent int32

	streams map[uint32]*Stream
	// maxID is the highest stream the client opened.
	maxID uint32
	// handlers are the streams whose Handler has not returned, counted
	// apart from streams: a stream the client reset leaves the table at
	// once, its handler winds down on its own.
	handlers int
	// idleSince is when the last stream ended (or the connection began).
	idleSince time.Time
	// goingAway: a GOAWAY was sent; streams above lastID are ignored.
	goingAway bool
	lastID    uint32
	// unacked counts the SETTINGS frames sent and not acknowledged.
	unacked     int
	sawSettings bool
	pingSent    bool
	pingAt      time.Time
	pingData    [8]byte
	closed      bool
	closeErr    error
}

// NewConn returns a connection served by h over nc, which has negotiated
// h2 (the client's preface is still to come). Serve runs it.
func NewConn(nc net.Conn, o Options, h Handler) *Conn {
	o.defaults()
	c := &Conn{
		nc:           nc,
		o:            o,
		h:            h,
		br:           bufio.NewReaderSize(nc, 16<<10),
		sendWindow:   initialWindow,
		peerWindow:   initialWindow,
		peerMaxFrame: defaultFrame,
		recvWindow:   o.ConnWindow,
		streams:      make(map[uint32]*Stream),
		idleSince:    time.Now(),
	}
	c.cond.L = &c.mu
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.fr = http2.NewFramer(nil, c.br)
	c.fr.SetMaxReadFrameSize(defaultFrame)
	c.fr.MaxHeaderListSize = o.MaxHeaderListSize
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.SetReuseFrames()
	return c
}

// errConnClosed ends the streams of a connection that closed under them.
var errConnClosed = errors.New("http2: the client connection closed")

// Serve serves the connection until it ends, closes it, and returns once
// every stream's handler has returned.
func (c *Conn) Serve() {
	c.mu.Lock()
	c.wbuf = appendSettings(c.wbuf,
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.o.MaxConcurrentStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(c.o.StreamWindow)},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: c.o.MaxHeaderListSize},
	)
	if d := c.o.ConnWindow - initialWindow; d > 0 {
		c.wbuf = appendWindowUpdate(c.wbuf, 0, uint32(d))
	}
	c.unacked++
	c.lastRead.Store(time.Now().UnixNano())
	c.nextTick = time.Now().Add(min(c.o.ReadIdleTimeout, c.o.IdleTimeout))
	c.timer = time.AfterFunc(time.Until(c.nextTick), c.tick)
	c.flushLocked()
	c.mu.Unlock()

	err := c.readLoop()
	c.mu.Lock()
	if errors.Is(err, io.EOF) {
		err = errConnClosed
	}
	c.closeLocked(err)
	for c.handlers > 0 {
		c.cond.Wait()
	}
	c.mu.Unlock()
	c.timer.Stop()
}

// Shutdown starts a graceful close: a GOAWAY tells the client that no new
// stream will be served, and the connection closes when the streams it has
// are done.
func (c *Conn) Shutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.goAwayLocked(http2.ErrCodeNo)
	c.flushLocked()
	c.closeIfDoneLocked()
}

// Streams is the number of streams whose handlers run.
func (c *Conn) Streams() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.handlers
}

func (c *Conn) readLoop() error {
	c.nc.SetReadDeadline(time.Now().Add(c.o.PrefaceTimeout))
	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(c.br, preface[:]); err != nil {
		return fmt.Errorf("reading the client preface: %w", err)
	}
	if string(preface[:]) != http2.ClientPreface {
		return errors.New("the client did not send the HTTP/2 preface")
	}
	c.nc.SetReadDeadline(time.Time{})
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				c.lastRead.Store(time.Now().UnixNano())
				c.mu.Lock()
				if se.StreamID%2 == 1 && se.StreamID > c.maxID {
					// A request whose header block was malformed: its
					// stream is used, and closed by the reset.
					c.maxID = se.StreamID
				}
				c.streamErrorLocked(se.StreamID, se.Code)
				c.mu.Unlock()
				continue
			}
			var ce http2.ConnectionError
			switch {
			case errors.As(err, &ce):
				return c.connError(http2.ErrCode(ce), err)
			case errors.Is(err, http2.ErrFrameTooLarge):
				return c.connError(http2.ErrCodeFrameSize, err)
			}
			return err
		}
		c.lastRead.Store(time.Now().UnixNano())
		if err := c.process(f); err != nil {
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				return c.connError(http2.ErrCode(ce), err)
			}
			return err
		}
	}
}

// connError sends GOAWAY with code, waits for it to be written, and
// returns err for Serve to close the connection with.
func (c *Conn) connError(code http2.ErrCode, err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.goingAway = false // a GOAWAY with an error follows a graceful one
	c.goAwayLocked(code)
	c.flushAllLocked()
	return fmt.Errorf("http2 connection error %v: %w", code, err)
}

func connError(code http2.ErrCode) error { return http2.ConnectionError(code) }

// process handles one frame on the read loop.
func (c *Conn) process(f http2.Frame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errConnClosed
	}
	if !c.sawSettings {
		if _, ok := f.(*http2.SettingsFrame); !ok {
			return connError(http2.ErrCodeProtocol)
		}
		c.sawSettings = true
	}
	if c.goingAway && f.Header().StreamID > c.lastID {
		// RFC 9113 §6.8: frames on streams the GOAWAY did not take are
		// ignored, but for what they cost the connection's window.
		if d, ok := f.(*http2.DataFrame); ok {
			if int64(d.Length) > int64(c.recvWindow) {
				return connError(http2.ErrCodeFlowControl)
			}
			c.recvWindow -= int32(d.Length)
			c.consumedLocked(nil, int32(d.Length))
		}
		if _, ok := f.(*http2.MetaHeadersFrame); !ok {
			return nil
		}
	}
	switch f := f.(type) {
	case *http2.SettingsFrame:
		return c.processSettings(f)
	case *http2.MetaHeadersFrame:
		return c.processHeaders(f)
	case *http2.DataFrame:
		return c.processData(f)
	case *http2.WindowUpdateFrame:
		return c.processWindowUpdate(f)
	case *http2.RSTStreamFrame:
		return c.processReset(f)
	case *http2.PingFrame:
		return c.processPing(f)
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			c.streamErrorLocked(f.StreamID, http2.ErrCodeProtocol)
		}
		return nil
	case *http2.GoAwayFrame:
		// The client will open no more streams: the connection ends once
		// those it has are answered.
		c.goAwayLocked(http2.ErrCodeNo)
		c.flushLocked()
		c.closeIfDoneLocked()
		return nil
	case *http2.PushPromiseFrame:
		return connError(http2.ErrCodeProtocol)
	}
	// Unknown frame types and PRIORITY_UPDATE are ignored (RFC 9113 §4.1,
	// RFC 9218 is advice a proxy that answers in arrival order can skip).
	return nil
}

func (c *Conn) processSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		if c.unacked > 0 {
			c.unacked--
		}
		return nil
	}
	// Each setting in order, so a setting named twice takes its last
	// value (RFC 9113 §6.5.3).
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingHeaderTableSize:
			c.henc.SetMaxDynamicTableSizeLimit(s.Val)
		case http2.SettingInitialWindowSize:
			d := int64(s.Val) - c.peerWindow
			c.peerWindow = int64(s.Val)
			for _, st := range c.streams {
				st.sendWindow += d
				if st.sendWindow > maxWindow {
					return connError(http2.ErrCodeFlowControl)
				}
			}
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = int(s.Val)
		case http2.SettingNoRFC7540Priorities:
			if s.Val > 1 {
				return connError(http2.ErrCodeProtocol)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.wbuf = appendSettingsAck(c.wbuf)
	c.cond.Broadcast()
	return c.queuedControlLocked()
}

func (c *Conn) processPing(f *http2.PingFrame) error {
	if f.IsAck() {
		if c.pingSent && f.Data == c.pingData {
			c.pingSent = false
		}
		return nil
	}
	c.wbuf = appendPing(c.wbuf, true, f.Data)
	return c.queuedControlLocked()
}

// queuedControlLocked writes the control frames just queued, unless a
// write is under way (its writer takes them), and ends a connection whose
// client lets them pile up unread.
func (c *Conn) queuedControlLocked() error {
	if len(c.wbuf) > maxQueuedControl {
		return connError(http2.ErrCodeEnhanceYourCalm)
	}
	c.flushLocked()
	return nil
}

func (c *Conn) processWindowUpdate(f *http2.WindowUpdateFrame) error {
	if f.StreamID == 0 {
		c.sendWindow += int64(f.Increment)
		if c.sendWindow > maxWindow {
			return connError(http2.ErrCodeFlowControl)
		}
		c.cond.Broadcast()
		return nil
	}
	st := c.streams[f.StreamID]
	if st == nil {
		if f.StreamID > c.maxID {
			return connError(http2.ErrCodeProtocol)
		}
		return nil
	}
	st.sendWindow += int64(f.Increment)
	if st.sendWindow > maxWindow {
		c.streamErrorLocked(f.StreamID, http2.ErrCodeFlowControl)
		return nil
	}
	c.cond.Broadcast()
	return nil
}

func (c *Conn) processReset(f *http2.RSTStreamFrame) error {
	st := c.streams[f.StreamID]
	if st == nil {
		if f.StreamID > c.maxID {
			return connError(http2.ErrCodeProtocol)
		}
		return nil
	}
	st.endLocked(errStreamReset)
	return nil
}

func (c *Conn) processData(f *http2.DataFrame) error {
	id, n := f.StreamID, int32(f.Length)
	if id > c.maxID {
		return connError(http2.ErrCodeProtocol) // DATA on an idle stream
	}
	if n > c.recvWindow {
		return connError(http2.ErrCodeFlowControl)
	}
	c.recvWindow -= n
	st := c.streams[id]
	if st == nil || st.remoteDone {
		c.consumedLocked(nil, n)
		c.streamErrorLocked(id, http2.ErrCodeStreamClosed)
		return nil
	}
	if n > st.recvWindow {
		c.consumedLocked(nil, n)
		c.streamErrorLocked(id, http2.ErrCodeFlowControl)
		return nil
	}
	st.recvWindow -= n
	data := f.Data()
	if st.ContentLength >= 0 && st.received+int64(len(data)) > st.ContentLength {
		c.consumedLocked(nil, n)
		c.streamErrorLocked(id, http2.ErrCodeProtocol)
		return nil
	}
	st.received += int64(len(data))
	st.in = append(st.in, data...)
	if pad := n - int32(len(data)); pad > 0 {
		c.consumedLocked(st, pad)
	}
	if f.StreamEnded() {
		if st.ContentLength >= 0 && st.received != st.ContentLength {
			c.consumedLocked(nil, int32(len(st.in)))
			c.streamErrorLocked(id, http2.ErrCodeProtocol)
			return nil
		}
		st.remoteDone = true
	}
	st.wakeLocked()
	return nil
}

func (c *Conn) processHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 == 0 {
		return connError(http2.ErrCodeProtocol)
	}
	if st := c.streams[id]; st != nil {
		if st.remoteDone {
			c.streamErrorLocked(id, http2.ErrCodeStreamClosed)
			return nil
		}
		// Trailers: they end the body, carry no pseudo-header, and are
		// not forwarded (an HTTP/1.1 target gets a body that ends).
		if st.trailers {
			return connError(http2.ErrCodeProtocol)
		}
		st.trailers = true
		if !f.StreamEnded() || len(f.PseudoFields()) > 0 {
			c.streamErrorLocked(id, http2.ErrCodeProtocol)
			return nil
		}
		if st.ContentLength >= 0 && st.received != st.ContentLength {
			c.streamErrorLocked(id, http2.ErrCodeProtocol)
			return nil
		}
		st.remoteDone = true
		st.wakeLocked()
		return nil
	}
	if id <= c.maxID {
		return connError(http2.ErrCodeProtocol) // a closed stream
	}
	c.maxID = id
	if c.goingAway {
		return nil
	}
	if f.HasPriority() && f.Priority.StreamDep == id {
		c.streamErrorLocked(id, http2.ErrCodeProtocol)
		return nil
	}
	if uint32(len(c.streams)) >= c.o.MaxConcurrentStreams {
		// Over the limit it announced: an error, unless the client may not
		// have seen the SETTINGS that say so yet.
		code := http2.ErrCodeProtocol
		if c.unacked > 0 {
			code = http2.ErrCodeRefusedStream
		}
		c.streamErrorLocked(id, code)
		return nil
	}
	if c.handlers >= 2*int(c.o.MaxConcurrentStreams) {
		// Streams the client reset still wind down: a client resetting
		// streams as fast as it opens them gets refused ones, not more
		// work (CVE-2023-44487).
		c.streamErrorLocked(id, http2.ErrCodeRefusedStream)
		return nil
	}
	st, err := newStream(c, id, f)
	if err != nil {
		c.streamErrorLocked(id, http2.ErrCodeProtocol)
		return nil
	}
	c.streams[id] = st
	c.handlers++
	go c.serveStream(st)
	return nil
}

// serveStream runs the handler of st and ends the stream after it.
func (c *Conn) serveStream(st *Stream) {
	defer func() {
		if r := recover(); r != nil {
			c.o.Logger.Error("HTTP/2 stream handler panicked", "stream", st.id, "panic", r)
			st.Abort()
		}
		c.finishStream(st)
	}()
	c.h.ServeStream(st)
}

// finishStream ends st after its handler returned.
func (c *Conn) finishStream(st *Stream) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.err == nil {
		if !st.headersSent {
			st.err = errNoResponse
			c.wbuf = appendRSTStream(c.wbuf, st.id, http2.ErrCodeInternal)
		} else if !st.localDone {
			c.wbuf = appendData(c.wbuf, st.id, nil, true)
			st.localDone = true
		}
		if !st.remoteDone && st.err == nil {
			// The response is complete before the request's body: the rest
			// of it is not wanted (RFC 9113 §8.1).
			c.wbuf = appendRSTStream(c.wbuf, st.id, http2.ErrCodeNo)
		}
		// Closed before the END_STREAM goes out: a client that answers it
		// at once finds the stream closed (RFC 9113 §5.1).
		st.endLocked(errStreamDone)
		c.flushLocked()
	}
	c.handlers--
	if c.handlers == 0 && len(c.streams) == 0 {
		c.becameIdleLocked()
	}
	c.cond.Broadcast()
	c.closeIfDoneLocked()
}

// streamErrorLocked resets stream id with code (RFC 9113 §5.4.2).
func (c *Conn) streamErrorLocked(id uint32, code http2.ErrCode) {
	c.wbuf = appendRSTStream(c.wbuf, id, code)
	if st := c.streams[id]; st != nil {
		st.endLocked(errStreamReset)
	}
	c.flushLocked()
}

// consumedLocked notes n bytes of flow-controlled data consumed, of st
// (nil: of no stream that still reads), and announces the windows when
// enough was consumed: a WINDOW_UPDATE per stream read, not per frame.
func (c *Conn) consumedLocked(st *Stream, n int32) {
	if n <= 0 {
		return
	}
	c.recvUnsent += n
	queued := false
	if c.recvUnsent >= c.o.ConnWindow/4 {
		c.wbuf = appendWindowUpdate(c.wbuf, 0, uint32(c.recvUnsent))
		c.recvWindow += c.recvUnsent
		c.recvUnsent = 0
		queued = true
	}
	if st != nil && !st.remoteDone {
		st.recvUnsent += n
		if st.recvUnsent >= c.o.StreamWindow/4 {
			c.wbuf = appendWindowUpdate(c.wbuf, st.id, uint32(st.recvUnsent))
			st.recvWindow += st.recvUnsent
			st.recvUnsent = 0
			queued = true
		}
	}
	if queued {
		c.flushLocked()
	}
}

// goAwayLocked queues a GOAWAY with code naming the last stream served;
// once one with NO_ERROR is out, no new stream is taken.
func (c *Conn) goAwayLocked(code http2.ErrCode) {
	if c.goingAway || c.closed {
		return
	}
	c.goingAway = true
	c.lastID = c.maxID
	c.wbuf = appendGoAway(c.wbuf, c.lastID, code)
}

// closeIfDoneLocked closes a connection that said GOAWAY once its last
// stream is done.
func (c *Conn) closeIfDoneLocked() {
	if c.goingAway && len(c.streams) == 0 && c.handlers == 0 && !c.closed {
		c.flushAllLocked()
		c.closeLocked(errGoingAway)
	}
}

var errGoingAway = errors.New("http2: the connection went away")

// closeLocked closes the connection and ends every stream on it.
func (c *Conn) closeLocked(err error) {
	if c.closed {
		return
	}
	c.closed = true
	c.closeErr = err
	// Not under c.mu: crypto/tls's Close sends close_notify, which may
	// wait for a client that reads nothing.
	go c.nc.Close()
	for _, st := range c.streams {
		st.endLocked(errConnClosed)
	}
	c.cond.Broadcast()
}

// flushLocked writes what is queued, unless a write is under way: its
// writer takes what was queued meanwhile before it stops. c.mu is let go
// during the write.
func (c *Conn) flushLocked() {
	if c.writing {
		return
	}
	c.writing = true
	for len(c.wbuf) > 0 && !c.closed {
		buf := c.wbuf
		c.wbuf = c.spare[:0]
		c.mu.Unlock()
		c.nc.SetWriteDeadline(time.Now().Add(c.o.WriteTimeout))
		_, err := c.nc.Write(buf)
		c.mu.Lock()
		c.spare = buf[:0]
		if err != nil {
			c.closeLocked(fmt.Errorf("writing to the client: %w", err))
		}
	}
	if c.closed {
		c.wbuf = c.wbuf[:0]
	}
	c.writing = false
	c.cond.Broadcast()
}

// flushAllLocked returns once everything queued is written (or the
// connection is closed).
func (c *Conn) flushAllLocked() {
	for !c.closed && (c.writing || len(c.wbuf) > 0) {
		if c.writing {
			c.cond.Wait()
			continue
		}
		c.flushLocked()
	}
}

// tick runs the connection's timeouts: idle with no stream, and a read
// side that went quiet (see Options.ReadIdleTimeout). It re-arms itself
// for the earliest next one.
func (c *Conn) tick() {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	next := now.Add(c.o.ReadIdleTimeout)
	if len(c.streams) == 0 && c.handlers == 0 {
		end := c.idleSince.Add(c.o.IdleTimeout)
		if !now.Before(end) {
			c.goAwayLocked(http2.ErrCodeNo)
			c.flushAllLocked()
			c.closeLocked(errors.New("http2: idle timeout"))
			return
		}
		next = minTime(next, end)
	}
	if c.pingSent {
		end := c.pingAt.Add(c.o.PingTimeout)
		if !now.Before(end) {
			c.closeLocked(errors.New("http2: no answer to a PING"))
			return
		}
		next = minTime(next, end)
	} else if last := time.Unix(0, c.lastRead.Load()); now.Sub(last) >= c.o.ReadIdleTimeout {
		c.pingSent, c.pingAt = true, now
		c.pingData = [8]byte{'c', 'u', 't', 'o', 'v', 'e', 'r', byte(now.UnixNano())}
		c.wbuf = appendPing(c.wbuf, false, c.pingData)
		c.flushLocked()
		next = minTime(next, now.Add(c.o.PingTimeout))
	} else {
		next = minTime(next, last.Add(c.o.ReadIdleTimeout))
	}
	c.nextTick = next
	c.timer.Reset(max(next.Sub(now), time.Millisecond))
}

// becameIdleLocked notes that the last stream ended, and has the timer
// look at the connection when the idle timeout ends, if that is sooner
// than it would.
func (c *Conn) becameIdleLocked() {
	now := time.Now()
	c.idleSince = now
	if end := now.Add(c.o.IdleTimeout); c.timer != nil && end.Before(c.nextTick) {
		c.nextTick = end
		c.timer.Reset(c.o.IdleTimeout)
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
