package wire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"
)

// readAll reads a body to its end in pieces of at most max bytes.
func readAll(b *Body, max int) ([]byte, error) {
	var out []byte
	for i := 0; ; i++ {
		p, err := b.Next(max)
		if len(p) > max {
			return out, errors.New("Next returned more than max bytes")
		}
		out = append(out, p...)
		if err == io.EOF {
			if !b.Done() {
				return out, errors.New("io.EOF but not Done")
			}
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if i > 1<<20 {
			return out, errors.New("body never ends")
		}
	}
}

// TestChunked decodes valid chunked bodies and checks the Reader is left at
// the byte after the body.
func TestChunked(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"one chunk", "5\r\nhello\r\n0\r\n\r\n", "hello"},
		{"two chunks", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world"},
		{"empty body", "0\r\n\r\n", ""},
		{"hex lower", "a\r\n0123456789\r\n0\r\n\r\n", "0123456789"},
		{"hex upper", "A\r\n0123456789\r\n0\r\n\r\n", "0123456789"},
		{"hex mixed", "1f\r\n" + strings.Repeat("x", 31) + "\r\n1F\r\n" + strings.Repeat("y", 31) + "\r\n0\r\n\r\n", strings.Repeat("x", 31) + strings.Repeat("y", 31)},
		{"leading zeros", "0005\r\nhello\r\n000\r\n\r\n", "hello"},
		{"many leading zeros", strings.Repeat("0", 40) + "5\r\nhello\r\n0\r\n\r\n", "hello"},
		{"extension", "5;name=value\r\nhello\r\n0;last\r\n\r\n", "hello"},
		{"quoted extension", "5;a=\"b c;d\"\r\nhello\r\n0\r\n\r\n", "hello"},
		{"extensions with BWS", "5 ;a\r\nhello\r\n5\t;b=1;c\r\nworld\r\n0\r\n\r\n", "helloworld"},
		{"trailers", "5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n", "hello"},
		{"most trailers", "5\r\nhello\r\n0\r\n" + strings.Repeat("X: y\r\n", maxTrailerLines) + "\r\n", "hello"},
		{"data with CRLF inside", "4\r\n\r\n\r\n\r\n0\r\n\r\n", "\r\n\r\n"},
		{"binary data", "3\r\n\x00\xff\n\r\n0\r\n\r\n", "\x00\xff\n"},
	}
	for _, c := range cases {
		for _, piece := range []int{1, 2, 7, 1 << 20} {
			for _, max := range []int{1, 3, 1 << 16} {
				in := c.in + "NEXT"
				rd := NewReader(&piecesReader{data: []byte(in), sizes: []int{piece}}, 64, 64)
				var b Body
				b.Reset(rd, FrameChunked, 0)
				if b.Framing() != FrameChunked {
					t.Fatalf("Framing() = %v", b.Framing())
				}
				got, err := readAll(&b, max)
				if err != nil || string(got) != c.want {
					t.Fatalf("%s (reads of %d, Next(%d)): %q, %v; want %q", c.name, piece, max, got, err, c.want)
				}
				if _, err := b.Next(max); err != io.EOF {
					t.Fatalf("%s: Next after the end = %v, want io.EOF", c.name, err)
				}
				rest, _ := io.ReadAll(rd)
				if string(rest) != "NEXT" {
					t.Fatalf("%s: after the body the reader holds %q, want NEXT", c.name, rest)
				}
			}
		}
	}
}

// TestChunkedRejects: malformed chunked bodies fail with a 400 error, cut
// ones with io.ErrUnexpectedEOF; the data before the fault may be returned.
func TestChunkedRejects(t *testing.T) {
	cases := []struct {
		name, in string
		want     error
	}{
		{"empty size", "\r\nhello\r\n0\r\n\r\n", errBadChunk},
		{"plus sign", "+5\r\nhello\r\n0\r\n\r\n", errBadChunk},
		{"minus sign", "-5\r\nhello\r\n0\r\n\r\n", errBadChunk},
		{"0x prefix", "0x5\r\nhello\r\n0\r\n\r\n", errBadChunk},
		{"not hex", "g\r\n", errBadChunk},
		{"space before size", " 5\r\nhello\r\n0\r\n\r\n", errBadChunk},
		{"space after size", "5 \r\nhello\r\n0\r\n\r\n", errBadChunk},
		{"space inside size", "1 0\r\n", errBadChunk},
		{"junk after size", "5x\r\nhello\r\n0\r\n\r\n", errBadChunk},
		{"CTL in extension", "5;a=\x01\r\nhello\r\n0\r\n\r\n", errBadChunk},
		{"NUL in extension", "5;\x00\r\nhello\r\n0\r\n\r\n", errBadChunk},
		{"DEL in extension", "5;\x7f\r\nhello\r\n0\r\n\r\n", errBadChunk},
		{"bare CR in size line", "5\r\r\nhello\r\n0\r\n\r\n", errBadChunk},
		{"overflow", "8000000000000000\r\n", errBadChunk},
		{"overflow long", "10000000000000000\r\n", errBadChunk},
		{"missing CRLF after data", "5\r\nhelloX\r\n0\r\n\r\n", errBadChunk},
		{"next size right after data", "5\r\nhello0\r\n\r\n", errBadChunk},
		{"data longer than size", "3\r\nhello\r\n0\r\n\r\n", errBadChunk},
		{"bare LF after size", "5\nhello\r\n0\r\n\r\n", ErrBareLF},
		{"bare LF after data", "5\r\nhello\n0\r\n\r\n", ErrBareLF},
		{"bare LF ending trailers", "0\r\nX: y\r\n\n", ErrBareLF},
		{"too many trailers", "0\r\n" + strings.Repeat("X: y\r\n", maxTrailerLines+1) + "\r\n", errBadChunk},
		{"size line too long", "5;" + strings.Repeat("e", 100) + "\r\nhello\r\n0\r\n\r\n", errChunkLineTooLong},
		{"trailer too long", "0\r\nX: " + strings.Repeat("e", 100) + "\r\n\r\n", errChunkLineTooLong},

		{"nothing", "", io.ErrUnexpectedEOF},
		{"cut in size", "5", io.ErrUnexpectedEOF},
		{"cut after size", "5\r\n", io.ErrUnexpectedEOF},
		{"cut in data", "5\r\nhel", io.ErrUnexpectedEOF},
		{"cut after data", "5\r\nhello", io.ErrUnexpectedEOF},
		{"cut after data CR", "5\r\nhello\r", io.ErrUnexpectedEOF},
		{"cut after chunk", "5\r\nhello\r\n", io.ErrUnexpectedEOF},
		{"cut after last chunk", "5\r\nhello\r\n0\r\n", io.ErrUnexpectedEOF},
		{"cut in trailers", "0\r\nX: y\r\n", io.ErrUnexpectedEOF},
		{"huge size then cut", "7fffffffffffffff\r\nabc", io.ErrUnexpectedEOF},
	}
	for _, c := range cases {
		for _, piece := range []int{1, 1 << 20} {
			rd := NewReader(&piecesReader{data: []byte(c.in), sizes: []int{piece}}, 64, 64)
			var b Body
			b.Reset(rd, FrameChunked, 0)
			_, err := readAll(&b, 16)
			if !errors.Is(err, c.want) {
				t.Errorf("%s (reads of %d): %v, want %v", c.name, piece, err, c.want)
				continue
			}
			if c.want != io.ErrUnexpectedEOF && StatusFor(err) != 400 {
				t.Errorf("%s: StatusFor(%v) = %d, want 400", c.name, err, StatusFor(err))
			}
			if b.Done() {
				t.Errorf("%s: Done() after an error", c.name)
			}
		}
	}
}

func TestFrameLength(t *testing.T) {
	rd := NewReader(strings.NewReader("helloworldNEXT"), 4, 4)
	var b Body
	b.Reset(rd, FrameLength, 10)
	if b.Done() || b.Framing() != FrameLength {
		t.Fatal("fresh FrameLength body is Done or has the wrong framing")
	}
	got, err := readAll(&b, 3)
	if err != nil || string(got) != "helloworld" {
		t.Fatalf("body %q, %v", got, err)
	}
	if rest, _ := io.ReadAll(rd); string(rest) != "NEXT" {
		t.Fatalf("after the body the reader holds %q", rest)
	}

	// Zero length and no body are done at once, without reading.
	for _, f := range []Framing{FrameLength, FrameNone} {
		b.Reset(NewReader(noProgress{}, 4, 4), f, 0)
		if !b.Done() {
			t.Fatalf("framing %v, length 0: not Done", f)
		}
		if p, err := b.Next(10); p != nil || err != io.EOF {
			t.Fatalf("framing %v, length 0: Next = %q, %v", f, p, err)
		}
	}

	// A body shorter than its length is cut.
	b.Reset(NewReader(strings.NewReader("hel"), 4, 4), FrameLength, 5)
	if got, err := readAll(&b, 10); err != io.ErrUnexpectedEOF || string(got) != "hel" {
		t.Fatalf("short body: %q, %v; want hel and io.ErrUnexpectedEOF", got, err)
	}
}

func TestFrameClose(t *testing.T) {
	data := strings.Repeat("0123456789", 100)
	var b Body
	b.Reset(NewReader(&piecesReader{data: []byte(data), sizes: []int{7, 300}}, 64, 64), FrameClose, -1)
	got, err := readAll(&b, 50)
	if err != nil || string(got) != data {
		t.Fatalf("body of %d bytes, %v; want %d bytes", len(got), err, len(data))
	}
	if !b.Done() {
		t.Fatal("not Done after the source closed")
	}
	// An empty body is read to EOF too.
	b.Reset(NewReader(strings.NewReader(""), 64, 64), FrameClose, -1)
	if got, err := readAll(&b, 50); err != nil || len(got) != 0 {
		t.Fatalf("empty body: %q, %v", got, err)
	}
}

// TestWriteChunk: WriteChunk and WriteLastChunk produce what Body decodes,
// and skip empty chunks (a zero-size chunk would end the body).
func TestWriteChunk(t *testing.T) {
	var out bytes.Buffer
	w := bufio.NewWriter(&out)
	pieces := []string{"hello", "", strings.Repeat("x", 4096), "!"}
	for _, p := range pieces {
		if err := WriteChunk(w, []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := WriteLastChunk(w); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	want := "5\r\nhello\r\n1000\r\n" + strings.Repeat("x", 4096) + "\r\n1\r\n!\r\n0\r\n\r\n"
	if out.String() != want {
		t.Fatalf("encoded %q...", out.String()[:min(out.Len(), 40)])
	}
	var b Body
	b.Reset(NewReader(&out, 64, 64), FrameChunked, 0)
	got, err := readAll(&b, 1000)
	if err != nil || string(got) != strings.Join(pieces, "") {
		t.Fatalf("decoded %d bytes, %v", len(got), err)
	}
}

// TestChunkedAllocs: decoding a chunked body allocates nothing.
func TestChunkedAllocs(t *testing.T) {
	in := []byte("5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nT: 1\r\n\r\n")
	src := bytes.NewReader(in)
	rd := NewReader(src, 4096, 4096)
	var b Body
	n := testing.AllocsPerRun(100, func() {
		src.Reset(in)
		rd.Reset(src)
		b.Reset(rd, FrameChunked, 0)
		for {
			_, err := b.Next(1 << 16)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	})
	if n != 0 {
		t.Fatalf("%v allocations per chunked body, want 0", n)
	}
}

func BenchmarkChunked(b *testing.B) {
	var enc bytes.Buffer
	w := bufio.NewWriter(&enc)
	for range 16 {
		WriteChunk(w, bytes.Repeat([]byte("x"), 1024))
	}
	WriteLastChunk(w)
	w.Flush()
	in := enc.Bytes()
	src := bytes.NewReader(in)
	rd := NewReader(src, 4096, 4096)
	var body Body
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		src.Reset(in)
		rd.Reset(src)
		body.Reset(rd, FrameChunked, 0)
		for {
			_, err := body.Next(1 << 16)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}

// TestChunkedFlushPoint: a relay calls Next while Buffered is true and
// flushes when it turns false, before a Next that may block. After a
// chunk's data, that flush point must come without blocking: Next consumes
// the buffered framing and returns an empty piece rather than waiting for
// the next chunk, so a streamed response (SSE) reaches the client while the
// target is quiet.
func TestChunkedFlushPoint(t *testing.T) {
	for _, data := range []string{
		"5\r\nhello\r\n",          // the next size line has not started
		"5\r\nhello\r\n3",         // ... is partial
		"5\r\nhello\r\n3;x\r",     // ... lacks its LF
		"5\r\nhello\r\n3\r\n",     // size line there, data not yet
		"5\r\nhello\r",            // the CRLF after the data is partial
		"5\r\nhello\r\n0\r\n",     // last chunk, trailer section not ended
		"5\r\nhello\r\n0\r\nX: 1", // ... partial trailer
	} {
		t.Run(strconv.Quote(data), func(t *testing.T) {
			t.Parallel() // each waits out its deadline once
			flushPoint(t, data)
		})
	}

	// A whole body in the buffer is Buffered to its end.
	var b Body
	b.Reset(NewReader(strings.NewReader("5\r\nhello\r\n0\r\nX: 1\r\n\r\n"), 64, 64), FrameChunked, 0)
	b.Next(100)
	if !b.Buffered() {
		t.Fatal("a buffered body's end is not Buffered")
	}
	if p, err := b.Next(100); len(p) != 0 || err != io.EOF || !b.Done() || !b.Buffered() {
		t.Fatalf("end of a buffered body: %q, %v, Done %v", p, err, b.Done())
	}
}

// flushPoint relays data, which a source sends and then goes quiet, up to
// the flush point and checks that Next blocks only after it.
func flushPoint(t *testing.T, data string) {
	nc := pipe(t, []byte(data), 300*time.Millisecond)
	var b Body
	b.Reset(NewReader(nc, 64, 64), FrameChunked, 0)
	if p, err := b.Next(100); err != nil || string(p) != "hello" {
		t.Fatalf("%q: first Next = %q, %v", data, p, err)
	}
	start := time.Now()
	for i := 0; b.Buffered(); i++ {
		if i > 3 {
			t.Fatalf("%q: Buffered stays true", data)
		}
		p, err := b.Next(100)
		if err != nil || len(p) != 0 {
			t.Fatalf("%q: Next while Buffered = %q, %v; want an empty piece", data, p, err)
		}
	}
	if el := time.Since(start); el > 150*time.Millisecond {
		t.Fatalf("%q: reaching the flush point took %v: Next blocked", data, el)
	}
	if b.Done() {
		t.Fatalf("%q: Done before the body's end", data)
	}
	// Nothing more is coming: past the flush point Next waits.
	if _, err := b.Next(100); !isTimeout(err) {
		t.Fatalf("%q: Next past the flush point = %v, want the deadline's timeout", data, err)
	}
}
