package upstream

import (
	"bufio"
	"context"
	"errors"
	"net"
	"sync/atomic"
	"time"

	"github.com/cutover/cutover/internal/dataplane/sock"
	"github.com/cutover/cutover/internal/dataplane/wire"
)

// ConnOptions configure connections to targets. One value is shared by all
// targets of a running proxy.
type ConnOptions struct {
	ConnectTimeout   time.Duration
	KeepaliveTimeout time.Duration // idle connections older than this are closed
	MaxIdle          int           // idle connections kept per target
	MaxHeadBytes     int           // largest response head accepted
	Outlier          OutlierOptions
}

// DefaultConnOptions are the defaults of the configuration file.
func DefaultConnOptions() *ConnOptions {
	return &ConnOptions{
		ConnectTimeout:   5 * time.Second,
		KeepaliveTimeout: 60 * time.Second,
		MaxIdle:          64,
		MaxHeadBytes:     64 << 10,
		Outlier:          DefaultOutlierOptions(),
	}
}

// Buffer sizes of an upstream connection. The read buffer is larger than a
// client connection's because it carries response bodies.
const (
	readBufSize  = 8 << 10
	writeBufSize = 4 << 10
)

// Conn is one connection to a target. A Conn is used by one request at a
// time; between requests it sits in its target's idle list.
type Conn struct {
	net.Conn
	R *wire.Reader
	W *bufio.Writer

	target    *Target
	idleSince time.Time
	// Reused is true when the connection served an earlier request, so a
	// failure before any response byte may be the target having closed it
	// while idle.
	Reused bool
	// ReadDL and WriteDL are the connection's deadlines, moved lazily.
	ReadDL, WriteDL Deadline
	// wait says whether the request waiting on the connection may move to
	// another target if this one goes down or is ejected (see AwaitMovable).
	wait atomic.Int32
}

// States of Conn.wait.
const (
	waitFixed   int32 = iota // not waiting, or must not move
	waitMovable              // waiting for a response head, may move
	waitMoved                // its target went down: the read was cut short
)

// AwaitMovable says the request about to wait for its response head on c
// may be sent to another target instead (idempotent, nothing of it or of a
// response consumed, and another healthy target exists): if c's target goes
// down or is ejected meanwhile, the wait is cut short (the read deadline is
// set to now) and Settle reports it.
func (c *Conn) AwaitMovable() {
	c.wait.Store(waitMovable)
	// The target may have gone down between the pick and now, its wake-up
	// run before the store above: then the wait ends at once.
	if !c.target.Healthy() && c.wait.CompareAndSwap(waitMovable, waitMoved) {
		c.Conn.SetReadDeadline(time.Now())
	}
}

// Settle ends the wait begun with AwaitMovable. It reports false when the
// target cut it short: whatever was read must be dropped and the request
// sent elsewhere.
func (c *Conn) Settle() (kept bool) { return c.wait.Swap(waitFixed) != waitMoved }

// wakeMovable cuts short the waits of requests that may move to another
// target. The caller holds t.mu.
func (t *Target) wakeMovable() {
	if len(t.conns.all) == 0 {
		return
	}
	if p := t.pool.Load(); p != nil && !p.HasOther(nil, t) {
		return
	}
	now := time.Now()
	for c := range t.conns.all {
		if c.wait.CompareAndSwap(waitMovable, waitMoved) {
			c.Conn.SetReadDeadline(now)
		}
	}
}

// Target returns the target the connection goes to.
func (c *Conn) Target() *Target { return c.target }

// connSet tracks a target's connections: the idle ones, for reuse, and all
// of them, so a retired pool's connections can be closed when its drain
// time is up.
type connSet struct {
	idle   []*Conn // the most recently returned last
	all    map[*Conn]struct{}
	closed bool
	// peak is the most connections in use at once since peakStart, and
	// prevPeak the most in the window of peakWindow before it: the idle
	// list keeps up to that many (see idleCap).
	peak, prevPeak int
	peakStart      time.Time
}

// peakWindow is how long the number of connections in use at once is
// remembered for sizing the idle list.
const peakWindow = 10 * time.Second

// notePeak records the number of connections in use now; the caller holds
// the target's lock.
func (s *connSet) notePeak(now time.Time) {
	s.roll(now)
	s.peak = max(s.peak, len(s.all)-len(s.idle))
}

// roll starts a new peak window when the current one is over.
func (s *connSet) roll(now time.Time) {
	since := now.Sub(s.peakStart)
	if since < peakWindow {
		return
	}
	s.prevPeak = s.peak
	if since >= 2*peakWindow {
		s.prevPeak = 0
	}
	s.peak = len(s.all) - len(s.idle)
	s.peakStart = now
}

// idleCap is how many idle connections the target keeps: at least
// maxIdle, and as many as were in use at once over the last one or two
// peak windows. A fixed cap below the concurrency the target sees closes
// connections on their way back only to dial new ones a moment later
// (HTTP/2 clients multiplex hundreds of streams onto a few connections,
// each an upstream request of its own); this keeps what steady load
// needs and gives back what a burst left once it is over. maxIdle 0 keeps
// none.
func (s *connSet) idleCap(now time.Time, maxIdle int) int {
	if maxIdle <= 0 {
		return 0
	}
	s.roll(now)
	return max(maxIdle, s.peak, s.prevPeak)
}

// trim takes out of the idle list, oldest first, the connections idle for
// longer than keepalive and those beyond limit, and returns them for the
// caller to close once it released the target's lock.
func (s *connSet) trim(now time.Time, keepalive time.Duration, limit int) []*Conn {
	k := 0
	for k < len(s.idle) && (len(s.idle)-k > limit || now.Sub(s.idle[k].idleSince) >= keepalive) {
		k++
	}
	if k == 0 {
		return nil
	}
	out := make([]*Conn, k)
	copy(out, s.idle[:k])
	clear(s.idle[:k])
	s.idle = s.idle[k:]
	for _, c := range out {
		delete(s.all, c)
	}
	return out
}

// ErrTargetClosed is returned when a connection is asked of a target whose
// connections were closed for good.
var ErrTargetClosed = errors.New("target retired")

// DialError is a failure to connect: the request was never sent, so it is
// always safe to try another target.
type DialError struct{ Err error }

func (e *DialError) Error() string { return "connect: " + e.Err.Error() }
func (e *DialError) Unwrap() error { return e.Err }

// Get returns an idle connection to the target or dials a new one.
func (t *Target) Get(ctx context.Context) (*Conn, error) {
	now := time.Now()
	t.mu.Lock()
	for n := len(t.conns.idle); n > 0; n = len(t.conns.idle) {
		c := t.conns.idle[n-1]
		t.conns.idle = t.conns.idle[:n-1]
		if now.Sub(c.idleSince) < t.opts.KeepaliveTimeout {
			t.conns.notePeak(now)
			t.mu.Unlock()
			// Checked again on the way out: bytes that arrived while the
			// connection sat idle (a late second response) belong to no
			// request, and the target may have closed it.
			if sock.Quiet(c.Conn) {
				c.Reused = true
				return c, nil
			}
			t.Discard(c)
			t.mu.Lock()
			continue
		}
		delete(t.conns.all, c)
		c.Conn.Close()
	}
	closed := t.conns.closed
	t.mu.Unlock()
	if closed {
		return nil, &DialError{Err: ErrTargetClosed}
	}
	return t.dial(ctx)
}

func (t *Target) dial(ctx context.Context) (*Conn, error) {
	d := net.Dialer{Timeout: t.opts.ConnectTimeout, KeepAlive: 30 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, &DialError{Err: err}
	}
	nc = sock.Wrap(nc)
	c := &Conn{
		Conn:   nc,
		R:      wire.NewReader(nc, readBufSize, t.opts.MaxHeadBytes),
		W:      bufio.NewWriterSize(nc, writeBufSize),
		target: t,
	}
	t.mu.Lock()
	if t.conns.closed {
		t.mu.Unlock()
		nc.Close()
		return nil, &DialError{Err: ErrTargetClosed}
	}
	if t.conns.all == nil {
		t.conns.all = make(map[*Conn]struct{})
	}
	t.conns.all[c] = struct{}{}
	t.conns.notePeak(time.Now())
	t.mu.Unlock()
	return c, nil
}

// Put returns a connection whose last response was read completely, for
// reuse by the next request. It is kept only when nothing more has arrived
// on it: bytes beyond the response mean the target broke the framing, and
// the next request would read them as its response. Bytes the reader has
// buffered are seen here; those still in the socket, and a close, are seen
// by Get's peek before the connection is used again, which also sees what
// arrives while it sits idle, so one peek per request serves both. A
// connection that CloseAll closed while its request ran is not kept
// either: the next request would get a dead connection.
func (t *Target) Put(c *Conn) {
	if c.R.Buffered() > 0 {
		t.Discard(c)
		return
	}
	now := time.Now()
	c.idleSince = now
	t.mu.Lock()
	_, open := t.conns.all[c]
	limit := t.conns.idleCap(now, t.opts.MaxIdle)
	if !open || t.conns.closed || len(t.conns.idle) >= limit {
		delete(t.conns.all, c)
		t.mu.Unlock()
		c.Conn.Close()
		return
	}
	t.conns.idle = append(t.conns.idle, c)
	old := t.conns.trim(now, t.opts.KeepaliveTimeout, limit)
	t.mu.Unlock()
	for _, c := range old {
		c.Conn.Close()
	}
}

// SweepIdle closes the idle connections that were idle for longer than
// the keep-alive timeout and those beyond what the target keeps now
// (idleCap), so that a target whose traffic stopped gives them back too;
// Put and Get only look at the connections they move. The health checker
// calls it on every probe.
func (t *Target) SweepIdle() {
	now := time.Now()
	t.mu.Lock()
	old := t.conns.trim(now, t.opts.KeepaliveTimeout, t.conns.idleCap(now, t.opts.MaxIdle))
	t.mu.Unlock()
	for _, c := range old {
		c.Conn.Close()
	}
}

// Discard closes a connection that cannot be reused (an error, a response
// delimited by close, or an upgraded connection that ended).
func (t *Target) Discard(c *Conn) {
	t.mu.Lock()
	delete(t.conns.all, c)
	t.mu.Unlock()
	c.Conn.Close()
}

// CloseIdle closes the target's idle connections. New ones are dialed on
// demand, so this is safe on a target that may serve again (a retired pool
// kept warm for rollback).
func (t *Target) CloseIdle() int {
	t.idleGen.Add(1)
	t.mu.Lock()
	idle := t.conns.idle
	t.conns.idle = nil
	for _, c := range idle {
		delete(t.conns.all, c)
	}
	t.mu.Unlock()
	for _, c := range idle {
		c.Conn.Close()
	}
	return len(idle) + int(t.extIdle.Load())
}

// CloseAll closes every connection of the target, including those carrying
// requests now; those requests fail. Used when a drain's time is up.
func (t *Target) CloseAll() int {
	t.idleGen.Add(1)
	t.allGen.Add(1)
	t.mu.Lock()
	all := make([]*Conn, 0, len(t.conns.all))
	for c := range t.conns.all {
		all = append(all, c)
	}
	t.conns.all = nil
	t.conns.idle = nil
	t.mu.Unlock()
	for _, c := range all {
		c.Conn.Close()
	}
	return len(all) + int(t.extOpen.Load())
}

// Retire closes every connection and refuses new ones, for a target that
// left its pool for good.
func (t *Target) Retire() {
	t.mu.Lock()
	t.conns.closed = true
	t.mu.Unlock()
	t.retired.Store(true)
	t.CloseAll()
}

// Conns returns the number of open and idle connections.
func (t *Target) Conns() (open, idle int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns.all) + int(t.extOpen.Load()), len(t.conns.idle) + int(t.extIdle.Load())
}

// ExtConns is for connections to the target that a caller holds itself
// (the event loops' own). It counts them for Conns: open and idle are
// changes to add. It returns the generations a holder compares with those
// it saw when it opened (all) or parked (idle) a connection: a change means
// CloseAll or CloseIdle was called since, and the connection must be
// closed. retired reports that the target left its pool for good and no
// new connection may be opened.
func (t *Target) ExtConns(open, idle int64) (idleGen, allGen uint64, retired bool) {
	if open != 0 {
		t.extOpen.Add(open)
	}
	if idle != 0 {
		t.extIdle.Add(idle)
	}
	return t.idleGen.Load(), t.allGen.Load(), t.retired.Load()
}

// KeepaliveTimeout is how long an idle connection to the target is kept.
func (t *Target) KeepaliveTimeout() time.Duration { return t.opts.KeepaliveTimeout }

// ConnectTimeout bounds connecting to the target.
func (t *Target) ConnectTimeout() time.Duration { return t.opts.ConnectTimeout }

// MaxIdle is how many idle connections to the target a holder keeps.
func (t *Target) MaxIdle() int { return t.opts.MaxIdle }

// MaxHeadBytes is the largest response head accepted from the target.
func (t *Target) MaxHeadBytes() int { return t.opts.MaxHeadBytes }
