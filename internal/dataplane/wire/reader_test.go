package wire

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// pipe returns the server end of a net.Pipe whose client end has written
// data and then nothing more, kept open: a read past data blocks until the
// server end's deadline, which is set to d.
func pipe(t *testing.T, data []byte, d time.Duration) net.Conn {
	t.Helper()
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		client.Write(data) // fails once the server end closes
	}()
	t.Cleanup(func() {
		server.Close()
		client.Close()
		<-done
	})
	server.SetReadDeadline(time.Now().Add(d))
	return server
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestReadHeadBareLFAtOnce: a bare LF is rejected as soon as it is in the
// buffer, not after waiting for the rest of a head that will never come.
// The source blocks after the data; waiting would end in the deadline's
// timeout instead of ErrBareLF.
func TestReadHeadBareLFAtOnce(t *testing.T) {
	cases := []struct{ name, data string }{
		{"in the request line", "GET / HTTP/1.1\nHost: a\r\n"},
		{"after a field", "GET / HTTP/1.1\r\nHost: a\nX-A: b"},
		{"as the empty line", "GET / HTTP/1.1\r\nHost: a\r\n\n"},
		{"leading", "\nGET / HTTP/1.1\r\n"},
		{"after leading CRLF", "\r\n\nGET"},
		{"LF only", "\n"},
		{"second head", "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\n"},
	}
	const deadline = 5 * time.Second
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			nc := pipe(t, []byte(c.data), deadline)
			rd := NewReader(nc, 4096, 8192)
			start := time.Now()
			var err error
			for err == nil {
				_, err = rd.ReadHead(nil)
			}
			if err != ErrBareLF {
				t.Fatalf("ReadHead(%q) = %v, want ErrBareLF", c.data, err)
			}
			if el := time.Since(start); el > deadline/2 {
				t.Fatalf("ReadHead took %v: it waited for more data", el)
			}
			if StatusFor(err) != 400 {
				t.Fatalf("StatusFor(ErrBareLF) = %d, want 400", StatusFor(err))
			}
		})
	}

	// The control: the same source with a correct but unfinished head does
	// block until the deadline, so the cases above could fail.
	nc := pipe(t, []byte("GET / HTTP/1.1\r\nHost: a\r\n"), 50*time.Millisecond)
	rd := NewReader(nc, 4096, 8192)
	if _, err := rd.ReadHead(nil); !isTimeout(err) {
		t.Fatalf("unfinished head: ReadHead = %v, want a timeout", err)
	}
	if rd.Buffered() == 0 {
		t.Fatal("unfinished head: Buffered() = 0 after a timeout, want the partial head kept")
	}
}

// TestReadHeadTooLarge: heads over the limit fail with ErrHeadTooLarge
// (431), at exactly the limit, whatever the initial buffer size.
func TestReadHeadTooLarge(t *testing.T) {
	const limit = 256
	mk := func(n int) []byte {
		h := head("GET / HTTP/1.1", "Host: a", "X-Pad: ")
		pad := n - len(h)
		return head("GET / HTTP/1.1", "Host: a", "X-Pad: "+strings.Repeat("p", pad))
	}
	for _, size := range []int{16, 100, limit, 4 * limit} {
		for _, n := range []int{limit - 1, limit, limit + 1, 2 * limit} {
			h := mk(n)
			if len(h) != n {
				t.Fatalf("test head is %d bytes, want %d", len(h), n)
			}
			rd := NewReader(bytes.NewReader(h), size, limit)
			got, err := rd.ReadHead(nil)
			lim := max(size, limit)
			switch {
			case n <= lim && (err != nil || !bytes.Equal(got, h)):
				t.Errorf("size %d: %d-byte head: %q, %v; want it read", size, n, got, err)
			case n > lim && err != ErrHeadTooLarge:
				t.Errorf("size %d: %d-byte head: %v; want ErrHeadTooLarge", size, n, err)
			}
		}
	}
	if got := StatusFor(ErrHeadTooLarge); got != 431 {
		t.Fatalf("StatusFor(ErrHeadTooLarge) = %d, want 431", got)
	}

	// Leading empty lines are not part of the head and do not count.
	h := append([]byte(strings.Repeat("\r\n", 100)), mk(limit)...)
	if got, err := NewReader(bytes.NewReader(h), 16, limit).ReadHead(nil); err != nil || len(got) != limit {
		t.Fatalf("head after empty lines: %d bytes, %v", len(got), err)
	}

	// A client streaming header lines for ever is cut at the limit, without
	// waiting for the deadline.
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		client.Write([]byte("GET / HTTP/1.1\r\n"))
		for i := 0; i < 1_000_000; i++ {
			if _, err := client.Write([]byte("X-Header: value\r\n")); err != nil {
				return
			}
		}
	}()
	defer func() { server.Close(); client.Close(); <-done }()
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := NewReader(server, 64, 4096).ReadHead(nil); err != ErrHeadTooLarge {
		t.Fatalf("endless head: ReadHead = %v, want ErrHeadTooLarge", err)
	}
}

// TestReadHeadSplitReads: a stream of pipelined heads and bodies gives the
// same heads whatever the read sizes.
func TestReadHeadSplitReads(t *testing.T) {
	stream := "\r\nGET /a HTTP/1.1\r\nHost: a\r\n\r\n" +
		"POST /b HTTP/1.1\r\nHost: b\r\nContent-Length: 5\r\n\r\nhello" +
		"\r\nGET /c HTTP/1.1\r\nHost: c\r\nX-Long: " + strings.Repeat("x", 300) + "\r\n\r\n"
	for size := 1; size <= len(stream); size++ {
		rd := NewReader(&piecesReader{data: []byte(stream), sizes: []int{size}}, 16, 1024)
		var r Request
		var uris []string
		for {
			h, err := rd.ReadHead(nil)
			if err == ErrEmptyHead {
				break
			}
			if err != nil {
				t.Fatalf("piece size %d: ReadHead: %v", size, err)
			}
			if err := ParseRequest(h, &r); err != nil {
				t.Fatalf("piece size %d: ParseRequest(%q): %v", size, h, err)
			}
			uris = append(uris, string(r.URI))
			if r.ContentLength > 0 {
				var b Body
				b.Reset(rd, FrameLength, r.ContentLength)
				body, err := readAll(&b, 3)
				if err != nil || string(body) != "hello" {
					t.Fatalf("piece size %d: body %q, %v", size, body, err)
				}
			}
		}
		if got := strings.Join(uris, " "); got != "/a /b /c" {
			t.Fatalf("piece size %d: URIs %q", size, got)
		}
	}
}

func TestReadHeadEOF(t *testing.T) {
	cases := []struct {
		data string
		want error
	}{
		{"", ErrEmptyHead},
		{"\r\n", ErrEmptyHead},
		{"\r\n\r\n\r\n", ErrEmptyHead},
		{"\r", io.ErrUnexpectedEOF},
		{"G", io.ErrUnexpectedEOF},
		{"GET / HTTP/1.1\r\n", io.ErrUnexpectedEOF},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r", io.ErrUnexpectedEOF},
	}
	for _, c := range cases {
		for _, size := range []int{1, 1000} {
			rd := NewReader(&piecesReader{data: []byte(c.data), sizes: []int{size}}, 16, 1024)
			if _, err := rd.ReadHead(nil); err != c.want {
				t.Errorf("ReadHead(%q) in %d-byte reads = %v, want %v", c.data, size, err, c.want)
			}
		}
	}
}

// TestReadHeadStarted: the callback that switches to the header timeout runs
// once per head, when its first byte is in, and not for empty lines.
func TestReadHeadStarted(t *testing.T) {
	calls := 0
	started := func() { calls++ }
	in := "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n\r\n"
	rd := NewReader(&piecesReader{data: []byte(in), sizes: []int{1, 2, 3}}, 16, 1024)
	for i := 1; i <= 2; i++ {
		if _, err := rd.ReadHead(started); err != nil {
			t.Fatal(err)
		}
		if calls != i {
			t.Fatalf("after head %d: %d calls, want %d", i, calls, i)
		}
	}
	if _, err := rd.ReadHead(started); err != ErrEmptyHead {
		t.Fatalf("ReadHead at the end = %v, want ErrEmptyHead", err)
	}
	if calls != 2 {
		t.Fatalf("trailing CRLF then EOF: %d calls, want 2", calls)
	}
}

// noProgress returns nothing and no error, for ever.
type noProgress struct{}

func (noProgress) Read([]byte) (int, error) { return 0, nil }

func TestReadHeadNoProgress(t *testing.T) {
	if _, err := NewReader(noProgress{}, 16, 64).ReadHead(nil); err != io.ErrNoProgress {
		t.Fatalf("ReadHead from a source that never progresses = %v, want io.ErrNoProgress", err)
	}
}

// TestReaderAfterHead: the bytes after a head are the body, readable with
// Next and Read; Shrink and Reset drop a grown buffer.
func TestReaderAfterHead(t *testing.T) {
	big := head("POST / HTTP/1.1", "Host: a", "X-Pad: "+strings.Repeat("p", 500), "Content-Length: 10")
	in := append(append([]byte{}, big...), "0123456789"...)
	rd := NewReader(bytes.NewReader(in), 64, 1024)
	h, err := rd.ReadHead(nil)
	if err != nil || !bytes.Equal(h, big) {
		t.Fatalf("ReadHead: %q, %v", h, err)
	}
	if len(rd.buf) <= 64 {
		t.Fatalf("buffer did not grow for a %d-byte head", len(big))
	}
	rd.Shrink() // not empty yet: keeps the buffer and its data
	p, err := rd.Next(4)
	if err != nil || string(p) != "0123" {
		t.Fatalf("Next(4) = %q, %v", p, err)
	}
	buf := make([]byte, 3)
	if n, err := rd.Read(buf); err != nil || string(buf[:n]) != "456" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
	p, err = rd.Next(100)
	if err != nil || string(p) != "789" {
		t.Fatalf("Next(100) = %q, %v", p, err)
	}
	if _, err := rd.Next(1); err != io.EOF {
		t.Fatalf("Next at the end = %v, want io.EOF", err)
	}
	rd.Shrink()
	if len(rd.buf) != 64 {
		t.Fatalf("after Shrink the buffer is %d bytes, want 64", len(rd.buf))
	}

	// Reset drops buffered data and the sticky error.
	rd.Reset(strings.NewReader("GET / HTTP/1.0\r\n\r\n"))
	if h, err := rd.ReadHead(nil); err != nil || string(h) != "GET / HTTP/1.0\r\n\r\n" {
		t.Fatalf("after Reset: %q, %v", h, err)
	}

	// A large Read bypasses the buffer.
	rd.Reset(strings.NewReader(strings.Repeat("z", 200)))
	large := make([]byte, 128)
	if n, err := rd.Read(large); n != 128 || err != nil || rd.Buffered() != 0 {
		t.Fatalf("large Read: %d, %v, %d buffered", n, err, rd.Buffered())
	}
}

// TestReaderTimeoutIsNotKept: a read that failed because its deadline
// passed can be tried again once the deadline moved, and a chunked body
// read through it goes on where it was (a drain's goodbye wakes a blocked
// relay this way). Other errors are kept.
func TestReaderTimeoutIsNotKept(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	r := NewReader(server, 64, 64)
	var b Body
	b.Reset(r, FrameChunked, 0)
	go client.Write([]byte("5\r\nhel"))
	got, err := b.Next(64)
	for err == nil && len(got) < 3 {
		var more []byte
		more, err = b.Next(64)
		got = append(got, more...)
	}
	if string(got) != "hel" {
		t.Fatalf("first piece %q, %v", got, err)
	}
	server.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := b.Next(64); !isTimeout(err) {
		t.Fatalf("read past the data: %v, want a timeout", err)
	}
	server.SetReadDeadline(time.Time{})
	go client.Write([]byte("lo\r\n0\r\n\r\n"))
	var rest []byte
	for {
		p, err := b.Next(64)
		rest = append(rest, p...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after the timeout: %v (rest %q)", err, rest)
		}
	}
	if string(rest) != "lo" || !b.Done() {
		t.Fatalf("rest of the body %q, done %v; want \"lo\", done", rest, b.Done())
	}
	client.Close()
	if _, err := r.Next(1); err != io.EOF {
		t.Fatalf("after the peer closed: %v, want EOF", err)
	}
	if _, err := r.Next(1); err != io.EOF {
		t.Fatalf("EOF is kept: second read %v", err)
	}
}

// TestPooledReaderHoldsABufferOnlyWithBytes: a pooled reader takes a buffer
// when it reads and gives it back at Release once nothing is buffered; a
// buffer grown for a large head is dropped, not pooled; the pool counts
// exactly what is out.
func TestPooledReaderHoldsABufferOnlyWithBytes(t *testing.T) {
	pool := &FreeList{Size: 64, Max: 4}
	big := "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", 100) + "\r\n\r\n"
	src := &piecesReader{data: []byte("GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n" + big + "body")}
	rd := NewPooledReader(src, pool, 64, 256)
	if rd.Holding() || pool.Lent() != 0 {
		t.Fatalf("a new pooled reader holds a buffer (lent %d)", pool.Lent())
	}
	h, err := rd.ReadHead(nil)
	if err != nil || string(h) != "GET /1 HTTP/1.1\r\n\r\n" || pool.Lent() != 1 {
		t.Fatalf("first head %q, %v, lent %d", h, err, pool.Lent())
	}
	// The second head is buffered: the buffer stays.
	if rd.Release() || !rd.Holding() || pool.Lent() != 1 {
		t.Fatalf("Release with %d bytes buffered gave the buffer back (lent %d)", rd.Buffered(), pool.Lent())
	}
	if h, err := rd.ReadHead(nil); err != nil || string(h) != "GET /2 HTTP/1.1\r\n\r\n" {
		t.Fatalf("second head %q, %v", h, err)
	}
	// The large head grows the buffer past the pool's size: the pooled one
	// goes back at once, the grown one is not the pool's.
	if h, err := rd.ReadHead(nil); err != nil || string(h) != big {
		t.Fatalf("large head %q, %v", h, err)
	}
	if pool.Lent() != 0 || !rd.Holding() {
		t.Fatalf("after growing: lent %d, holding %v; want 0, true", pool.Lent(), rd.Holding())
	}
	rd.Shrink() // "body" is buffered: nothing changes
	b := make([]byte, 10)
	if n, err := rd.Read(b); err != nil || string(b[:n]) != "body" {
		t.Fatalf("Read: %q, %v", b[:n], err)
	}
	if !rd.Release() || rd.Holding() || pool.Lent() != 0 || pool.Spare() != 1 {
		t.Fatalf("after Release: holding %v, lent %d, spare %d; want false, 0, 1", rd.Holding(), pool.Lent(), pool.Spare())
	}
	// At the end of the stream a released reader reads again with a buffer
	// from the pool.
	if _, err := rd.ReadHead(nil); err != ErrEmptyHead || pool.Lent() != 1 || pool.Spare() != 0 {
		t.Fatalf("ReadHead at EOF: %v, lent %d, spare %d", err, pool.Lent(), pool.Spare())
	}
	// A reader moved to another pool reports the buffer it takes along.
	other := NewSyncBuffers(64)
	if !rd.SetPool(other) {
		t.Error("SetPool did not report the buffer that moved")
	}
	pool.Disown()
	rd.Free()
	if pool.Lent() != 0 || rd.Holding() {
		t.Errorf("after the move and Free: lent %d, holding %v", pool.Lent(), rd.Holding())
	}
	if got := len(other.Get()); got != 64 {
		t.Errorf("the other pool lends %d-byte buffers, want 64", got)
	}
}
