// Package wire is cutover's HTTP/1.1 message framing: a buffered reader that
// finds message heads, a strict parser for request and response heads, and
// body framing (Content-Length, chunked, read-until-close).
//
// It is written for the proxy's hot path instead of using net/http's because
// net/http allocates a header map per message and its Transport spends most
// of a proxied request's CPU time in per-connection goroutines and channel
// hand-offs (see docs/benchmarks.md). Here a head is parsed in place: every
// field is a slice of the connection's read buffer, and nothing is allocated
// per request in steady state. The parser is at least as strict as nginx's;
// see Parse* for the rules.
package wire

import (
	"bytes"
	"errors"
	"io"
)

// Errors returned while reading a head. Their HTTP status for a client is
// given by StatusFor.
var (
	ErrHeadTooLarge = errors.New("message head too large")
	ErrBareLF       = errors.New("line ends in a bare LF, not CRLF")
	ErrEmptyHead    = errors.New("connection closed before a message head")
	// ErrWouldBlock is returned by a non-blocking source that has no data
	// now. A Reader passes it on without keeping it: the caller waits until
	// the source is readable and calls again, and nothing buffered is lost.
	ErrWouldBlock = errors.New("no data available now")
)

// Reader buffers a connection for head parsing and body relay. Unlike
// bufio.Reader its buffer grows, up to a limit, for heads larger than the
// usual few hundred bytes, and it hands out slices of its buffer so bodies
// can be relayed without a copy.
type Reader struct {
	rd   io.Reader
	buf  []byte
	r, w int
	// max is the largest head accepted; the buffer grows up to it.
	max int
	// base is the buffer size the reader shrinks back to after a large head.
	base int
	err  error
	// pool, when set, lends the buffer: it is taken when bytes are to be
	// read and given back by Release once nothing is buffered.
	pool Buffers
}

// Buffers lends Readers their buffers, so a connection that sits idle
// holds none (nginx frees an idle keep-alive connection's buffer the same
// way): with ten thousand idle clients that is the difference between
// megabytes and tens of megabytes.
type Buffers interface {
	// Get returns a buffer of the pool's size.
	Get() []byte
	// Put takes back a buffer Get returned.
	Put(buf []byte)
}

// NewReader returns a Reader with an initial buffer of size bytes that
// accepts heads up to max bytes.
func NewReader(rd io.Reader, size, max int) *Reader {
	if max < size {
		max = size
	}
	return &Reader{rd: rd, buf: make([]byte, size), max: max, base: size}
}

// NewPooledReader returns a Reader whose buffer of size bytes comes from
// pool when there is something to read and goes back at Release. It holds
// no buffer until its first read.
func NewPooledReader(rd io.Reader, pool Buffers, size, max int) *Reader {
	if max < size {
		max = size
	}
	return &Reader{rd: rd, max: max, base: size, pool: pool}
}

// SetPool makes the reader borrow from pool from now on, for a reader
// that moves to an engine with another pool. The buffer it holds goes to
// pool at the next Release; moved reports whether that buffer came from
// the old pool, which has lent it for good then.
func (b *Reader) SetPool(pool Buffers) (moved bool) {
	moved = b.pool != nil && b.buf != nil && len(b.buf) == b.base
	b.pool = pool
	return moved
}

// ensure gives a pooled reader that released its buffer one again.
func (b *Reader) ensure() {
	if b.buf == nil {
		if b.pool != nil {
			b.buf = b.pool.Get()[:b.base]
		} else {
			b.buf = make([]byte, b.base)
		}
	}
}

// Release gives a pooled reader's buffer back when nothing is buffered; a
// buffer grown for a large head is dropped rather than pooled. It reports
// whether the reader now holds no buffer.
func (b *Reader) Release() bool {
	if b.pool == nil || b.r != b.w {
		return b.buf == nil
	}
	if b.buf != nil && len(b.buf) == b.base {
		b.pool.Put(b.buf)
	}
	b.buf, b.r, b.w = nil, 0, 0
	return true
}

// Free gives a pooled reader's buffer back whatever it holds, for a
// reader whose connection is closed.
func (b *Reader) Free() {
	b.r = b.w
	b.Release()
}

// Preload adds p, bytes the caller read from the source itself, to what
// is buffered. p must fit in the reader's free space (a pooled reader
// that released its buffer has all of it).
func (b *Reader) Preload(p []byte) {
	b.ensure()
	if b.r > 0 && len(b.buf)-b.w < len(p) {
		copy(b.buf, b.buf[b.r:b.w])
		b.w -= b.r
		b.r = 0
	}
	b.w += copy(b.buf[b.w:], p)
}

// Holding reports whether the reader holds a buffer now.
func (b *Reader) Holding() bool { return b.buf != nil }

// Reset points the reader at a new source and drops buffered data.
func (b *Reader) Reset(rd io.Reader) {
	b.rd = rd
	b.r, b.w = 0, 0
	b.err = nil
	if len(b.buf) > b.base {
		b.buf = nil
		if b.pool == nil {
			b.buf = make([]byte, b.base)
		}
	}
}

// SetSource points the reader at a new source and keeps what is buffered,
// for a connection that moves from one engine to another mid-stream.
func (b *Reader) SetSource(rd io.Reader) { b.rd = rd }

// Buffered returns the number of bytes that can be read without a read from
// the underlying source.
func (b *Reader) Buffered() int { return b.w - b.r }

// fill reads once from the source into free buffer space, first moving
// unread bytes to the front.
func (b *Reader) fill() error {
	if b.err != nil {
		return b.err
	}
	if b.r > 0 {
		copy(b.buf, b.buf[b.r:b.w])
		b.w -= b.r
		b.r = 0
	}
	if b.w == len(b.buf) {
		return ErrHeadTooLarge
	}
	// A source that keeps returning nothing and no error would make
	// ReadHead spin; give up after as many tries as bufio.Reader does.
	for range maxEmptyReads {
		n, err := b.rd.Read(b.buf[b.w:])
		b.w += n
		if err == ErrWouldBlock {
			if n > 0 {
				return nil
			}
			return err
		}
		if err != nil {
			b.keep(err)
			if n > 0 {
				return nil
			}
			return err
		}
		if n > 0 {
			return nil
		}
	}
	b.err = io.ErrNoProgress
	return b.err
}

// keep records a read error, which every later read returns, unless it is
// a deadline that passed: a deadline can be moved and the read tried again
// with nothing lost (a drain's goodbye wakes a relay blocked in a read
// this way, and the relay reads on to the end of an event or a frame).
func (b *Reader) keep(err error) {
	var te interface{ Timeout() bool }
	if errors.As(err, &te) && te.Timeout() {
		return
	}
	b.err = err
}

// maxEmptyReads is how many (0, nil) reads fill tolerates in a row.
const maxEmptyReads = 100

// ReadHead returns the next message head: the start line and header lines
// up to and including the blank line that ends it. The slice is valid until
// the next call on the Reader. Empty lines before the start line are
// skipped, as RFC 9112 section 2.2 allows. A line ending in a bare LF is
// rejected at once rather than waited on.
//
// started is called once, when the first byte of the head is in the buffer;
// the server uses it to switch from the idle timeout to the header timeout.
func (b *Reader) ReadHead(started func()) ([]byte, error) {
	b.ensure()
	scan := 0 // bytes of b.buf[b.r:] already checked for line ends
	notified := false
	for {
		// Skip leading CRLFs (a client may send one after a POST body).
		for scan == 0 && b.scanLeadingEmpty() {
		}
		// A lone CR may be the first half of an empty line, not a head.
		if b.w > b.r && !notified && !(b.w-b.r == 1 && b.buf[b.r] == '\r') {
			notified = true
			if started != nil {
				started()
			}
		}
		data := b.buf[b.r:b.w]
		for scan < len(data) {
			i := bytes.IndexByte(data[scan:], '\n')
			if i < 0 {
				scan = len(data)
				if len(data) == 1 && data[0] == '\r' {
					scan = 0 // may be the first half of a leading empty line
				}
				break
			}
			end := scan + i
			if end == 0 || data[end-1] != '\r' {
				return nil, ErrBareLF
			}
			// An empty line (CRLF right after the previous LF) ends the head.
			if end >= 3 && data[end-2] == '\n' && data[end-3] == '\r' {
				head := data[:end+1]
				b.r += end + 1
				return head, nil
			}
			scan = end + 1
		}
		if b.w-b.r >= b.max {
			return nil, ErrHeadTooLarge
		}
		if b.w == len(b.buf) {
			if b.r > 0 {
				// fill moves the unread bytes to the front; scan is relative to b.r.
			} else if len(b.buf) < b.max {
				nb := make([]byte, min(2*len(b.buf), b.max))
				copy(nb, b.buf[:b.w])
				if b.pool != nil && len(b.buf) == b.base {
					b.pool.Put(b.buf)
				}
				b.buf = nb
			}
		}
		if err := b.fill(); err != nil {
			if err == io.EOF && b.w == b.r {
				return nil, ErrEmptyHead
			}
			if err == io.EOF {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// scanLeadingEmpty drops one leading CRLF and reports whether it did.
func (b *Reader) scanLeadingEmpty() bool {
	if b.w-b.r >= 2 && b.buf[b.r] == '\r' && b.buf[b.r+1] == '\n' {
		b.r += 2
		return true
	}
	return false
}

// Shrink drops a buffer that grew for a large head once it is empty, so a
// connection that once sent a big head does not hold the memory for ever.
func (b *Reader) Shrink() {
	if len(b.buf) > b.base && b.r == b.w {
		b.buf = nil
		if b.pool == nil {
			b.buf = make([]byte, b.base)
		}
		b.r, b.w = 0, 0
	}
}

// Next returns up to n buffered bytes, reading from the source first when
// the buffer is empty. The bytes are consumed; the slice is valid until the
// next call on the Reader.
func (b *Reader) Next(n int) ([]byte, error) {
	if b.r == b.w {
		if b.err != nil {
			return nil, b.err
		}
		b.ensure()
		b.r, b.w = 0, 0
		m, err := b.rd.Read(b.buf)
		b.w = m
		if err == ErrWouldBlock && m == 0 {
			return nil, err
		}
		if err != nil && err != ErrWouldBlock {
			b.keep(err)
			if m == 0 {
				return nil, err
			}
		}
	}
	if avail := b.w - b.r; n > avail {
		n = avail
	}
	p := b.buf[b.r : b.r+n]
	b.r += n
	return p, nil
}

// Read implements io.Reader over the buffered source.
func (b *Reader) Read(p []byte) (int, error) {
	if b.r == b.w {
		if b.err != nil {
			return 0, b.err
		}
		if len(p) >= max(len(b.buf), b.base) {
			// Large reads bypass the buffer.
			n, err := b.rd.Read(p)
			if err != nil && err != ErrWouldBlock {
				b.keep(err)
			}
			return n, err
		}
		b.r, b.w = 0, 0
		b.ensure()
		if err := b.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, b.buf[b.r:b.w])
	b.r += n
	return n, nil
}

// hasLine reports whether a whole line is buffered.
func (b *Reader) hasLine() bool {
	return bytes.IndexByte(b.buf[b.r:b.w], '\n') >= 0
}

// readLine returns the next CRLF-terminated line without its CRLF, for
// chunk framing. Lines longer than the buffer are an error.
func (b *Reader) readLine() ([]byte, error) {
	b.ensure()
	scan := 0
	for {
		data := b.buf[b.r:b.w]
		if i := bytes.IndexByte(data[scan:], '\n'); i >= 0 {
			end := scan + i
			if end == 0 || data[end-1] != '\r' {
				return nil, ErrBareLF
			}
			line := data[:end-1]
			b.r += end + 1
			return line, nil
		}
		scan = len(data)
		if b.r == 0 && b.w == len(b.buf) {
			return nil, errChunkLineTooLong
		}
		if err := b.fill(); err != nil {
			if err == io.EOF {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}
