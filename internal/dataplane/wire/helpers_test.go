package wire

import (
	"errors"
	"io"
	"strings"
)

// head joins lines with CRLF and ends them with the empty line.
func head(lines ...string) []byte {
	return []byte(strings.Join(lines, "\r\n") + "\r\n\r\n")
}

// piecesReader returns its data in pieces of the given sizes (cycling
// through them), then io.EOF: a stream split arbitrarily across reads.
type piecesReader struct {
	data  []byte
	sizes []int
	i     int
}

func (p *piecesReader) Read(b []byte) (int, error) {
	if len(p.data) == 0 {
		return 0, io.EOF
	}
	n := len(p.data)
	if len(p.sizes) > 0 {
		n = max(p.sizes[p.i%len(p.sizes)], 1)
		p.i++
	}
	n = min(n, len(b), len(p.data))
	copy(b, p.data[:n])
	p.data = p.data[n:]
	return n, nil
}

// statusOf is the status an error maps to, or 0 for nil.
func statusOf(err error) int {
	if err == nil {
		return 0
	}
	return StatusFor(err)
}

// isWireError reports whether err is a parse error with a status.
func isWireError(err error) bool {
	var e *Error
	return errors.As(err, &e)
}
