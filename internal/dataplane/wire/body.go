package wire

import (
	"bufio"
	"errors"
	"io"
	"math"
	"strconv"
)

var (
	errChunkLineTooLong = &Error{Status: 400, Reason: "chunk size line too long"}
	errBadChunk         = &Error{Status: 400, Reason: "malformed chunked encoding"}
)

// Framing is how a message body's end is found.
type Framing uint8

// Framings.
const (
	FrameNone    Framing = iota // no body
	FrameLength                 // Content-Length bytes
	FrameChunked                // chunked transfer coding
	FrameClose                  // until the connection closes (responses only)
)

// Body reads one message body from a Reader with the framing removed. It
// hands out slices of the Reader's buffer, so relaying a body copies it only
// into the destination's buffer.
type Body struct {
	r       *Reader
	framing Framing
	// left is the byte count still to come: of the body for FrameLength, of
	// the current chunk for FrameChunked.
	left  int64
	state chunkState
	// trailers counts the trailer lines of a chunked body read so far.
	trailers int
	done     bool
}

type chunkState uint8

const (
	chunkSize    chunkState = iota // next is a chunk-size line
	chunkData                      // inside chunk data
	chunkEnd                       // next is the CRLF after chunk data
	chunkTrailer                   // in the trailer section after the last chunk
)

// maxTrailerLines bounds a chunked body's trailer section, which is read
// and dropped.
const maxTrailerLines = 64

// Reset prepares b to read a body of the given framing; length is used for
// FrameLength.
func (b *Body) Reset(r *Reader, f Framing, length int64) {
	*b = Body{r: r, framing: f, left: length}
	if f == FrameNone || (f == FrameLength && length == 0) {
		b.done = true
	}
}

// Framing returns the body's framing.
func (b *Body) Framing() Framing { return b.framing }

// Done reports whether the whole body has been read.
func (b *Body) Done() bool { return b.done }

// Buffered reports whether Next can return without reading from the
// source: body bytes, a whole framing line, the end of the body or an
// error are buffered. When it is false Next may block, so a relay flushes
// what it has written first.
func (b *Body) Buffered() bool {
	switch {
	case b.done:
		return true
	case b.framing == FrameChunked && b.state != chunkData:
		return b.r.hasLine()
	}
	return b.r.Buffered() > 0
}

// Next returns the next piece of the body, at most max bytes, or io.EOF once
// the body is complete. A chunked body may return an empty piece (and no
// error) after consuming framing, when the next read would block; the
// caller flushes what it has and calls Next again. A body cut short returns
// io.ErrUnexpectedEOF. The slice is valid until the next call on b or its
// Reader.
func (b *Body) Next(max int) ([]byte, error) {
	if b.done {
		return nil, io.EOF
	}
	switch b.framing {
	case FrameLength:
		p, err := b.r.Next(int(min(int64(max), b.left)))
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		b.left -= int64(len(p))
		if b.left == 0 {
			b.done = true
		}
		return p, nil
	case FrameClose:
		p, err := b.r.Next(max)
		if err == io.EOF {
			b.done = true
		}
		return p, err
	case FrameChunked:
		return b.nextChunked(max)
	}
	return nil, io.EOF
}

func (b *Body) nextChunked(max int) ([]byte, error) {
	// progressed: framing was consumed in this call. Before a read that
	// would block on the next framing line or chunk data, return what we
	// have (nothing) so the caller can flush the data it already has: a
	// streamed response (SSE) must reach the client while the target is
	// quiet.
	progressed := false
	for {
		if progressed && b.state != chunkData && !b.r.hasLine() {
			return nil, nil
		}
		switch b.state {
		case chunkSize:
			line, err := b.r.readLine()
			if err != nil {
				return nil, err
			}
			n, err := parseChunkSize(line)
			if err != nil {
				return nil, err
			}
			if n == 0 {
				b.state = chunkTrailer
			} else {
				b.left = n
				b.state = chunkData
			}
			progressed = true
		case chunkData:
			if progressed && b.r.Buffered() == 0 {
				return nil, nil
			}
			p, err := b.r.Next(int(min(int64(max), b.left)))
			if err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return nil, err
			}
			b.left -= int64(len(p))
			if b.left == 0 {
				b.state = chunkEnd
			}
			return p, nil
		case chunkEnd:
			line, err := b.r.readLine()
			if err != nil {
				return nil, err
			}
			if len(line) != 0 {
				return nil, errBadChunk
			}
			b.state = chunkSize
			progressed = true
		case chunkTrailer:
			// Trailers are read and dropped, not forwarded: few clients
			// use them and forwarding them safely needs the same vetting
			// as headers, after the head has been sent.
			line, err := b.r.readLine()
			if err != nil {
				return nil, err
			}
			if len(line) == 0 {
				b.done = true
				return nil, io.EOF
			}
			b.trailers++
			if b.trailers > maxTrailerLines {
				return nil, errBadChunk
			}
			progressed = true
		}
	}
}

// parseChunkSize parses "HEX[;ext]" strictly: hex digits only, no sign, no
// whitespace other than before the ';' of an extension, and a value that
// fits in an int64 (leading zeros are allowed, as nginx allows them).
func parseChunkSize(line []byte) (int64, error) {
	var n int64
	i := 0
	for ; i < len(line); i++ {
		c := line[i]
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			goto ext
		}
		if n > math.MaxInt64>>4 {
			return 0, errBadChunk
		}
		n = n<<4 | int64(d)
	}
ext:
	if i == 0 {
		return 0, errBadChunk
	}
	if i < len(line) {
		// Allow BWS then ';' extensions, which are dropped when relayed.
		rest := line[i:]
		for len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
			rest = rest[1:]
		}
		if len(rest) == 0 || rest[0] != ';' {
			return 0, errBadChunk
		}
		for _, c := range rest {
			if c < ' ' && c != '\t' || c == 0x7f {
				return 0, errBadChunk
			}
		}
	}
	return n, nil
}

// WriteChunk writes p as one chunk of a chunked body.
func WriteChunk(w *bufio.Writer, p []byte) error {
	if len(p) == 0 {
		return nil
	}
	w.Write(strconv.AppendInt(w.AvailableBuffer(), int64(len(p)), 16))
	w.WriteString("\r\n")
	w.Write(p)
	_, err := w.WriteString("\r\n")
	return err
}

// WriteLastChunk ends a chunked body.
func WriteLastChunk(w *bufio.Writer) error {
	_, err := w.WriteString("0\r\n\r\n")
	return err
}

// ErrBodyTooShort is returned when a body ends before its declared length.
var ErrBodyTooShort = errors.New("body shorter than its Content-Length")
