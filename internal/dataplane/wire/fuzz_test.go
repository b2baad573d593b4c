package wire

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
)

// Fuzz targets. Seeds are checked in under testdata/fuzz/<Name>/; CI runs
// each briefly, e.g.
//
//	go test -run=^$ -fuzz=FuzzParseRequest -fuzztime=10s ./internal/dataplane/wire/

// seedHeads are hand-written heads added to every head fuzzer's corpus.
var seedHeads = []string{
	"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.0\r\n\r\n",
	"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
	"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
	"GET http://example.com:80/p?q HTTP/1.1\r\nHost: b\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n",
	"GET / HTTP/1.1\nHost: a\n\n",
	"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
	"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-A\r\n\r\n",
	"GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n",
	"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/2.0\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1,1\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
	"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n",
	"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
	"HTTP/1.1 204\r\n\r\n",
}

// checkFields checks what must hold of any accepted head's fields.
func checkFields(f *Fields, request bool) error {
	if f.Minor != 0 && f.Minor != 1 {
		return fmt.Errorf("Minor = %d", f.Minor)
	}
	cls, tes := 0, 0
	for _, h := range f.Headers {
		if !isToken(h.Name) {
			return fmt.Errorf("header name %q is not a token", h.Name)
		}
		if h.Kind != KindOf(h.Name) {
			return fmt.Errorf("header %q has kind %d, want %d", h.Name, h.Kind, KindOf(h.Name))
		}
		for _, c := range h.Value {
			if c < ' ' && c != '\t' || c == 0x7f {
				return fmt.Errorf("header %q value %q has a control character", h.Name, h.Value)
			}
		}
		if len(h.Value) > 0 && (h.Value[0] == ' ' || h.Value[0] == '\t' || h.Value[len(h.Value)-1] == ' ' || h.Value[len(h.Value)-1] == '\t') {
			return fmt.Errorf("header %q value %q is not trimmed", h.Name, h.Value)
		}
		switch h.Kind {
		case KindContentLength:
			cls++
		case KindTransferEncoding:
			tes++
		}
	}
	switch {
	case f.ContentLength < -1:
		return fmt.Errorf("ContentLength = %d", f.ContentLength)
	case f.ContentLength >= 0 && f.Chunked:
		return errors.New("both ContentLength and Chunked")
	case cls > 1 || tes > 1:
		return fmt.Errorf("%d Content-Length and %d Transfer-Encoding fields accepted", cls, tes)
	case (cls == 1) != (f.ContentLength >= 0):
		return fmt.Errorf("%d Content-Length fields but ContentLength %d", cls, f.ContentLength)
	case (tes == 1) != f.Chunked:
		return fmt.Errorf("%d Transfer-Encoding fields but Chunked %v", tes, f.Chunked)
	case request && f.Chunked && f.Minor == 0:
		return errors.New("chunked HTTP/1.0 request")
	case f.Minor == 0 && !f.KeepAlive && !f.Close:
		return errors.New("HTTP/1.0 message without keep-alive is not Close")
	}
	return nil
}

// checkRequest checks what must hold of any accepted request head.
func checkRequest(r *Request) error {
	if !isToken(r.Method) {
		return fmt.Errorf("method %q is not a token", r.Method)
	}
	if string(r.Method) == "CONNECT" {
		return errors.New("CONNECT accepted")
	}
	if len(r.URI) == 0 {
		return errors.New("empty URI")
	}
	for _, c := range r.URI {
		if c <= ' ' || c == 0x7f {
			return fmt.Errorf("URI %q has a space or control character", r.URI)
		}
	}
	if r.URI[0] != '/' && !(string(r.URI) == "*" && string(r.Method) == "OPTIONS") {
		return fmt.Errorf("URI %q is neither origin-form nor OPTIONS *", r.URI)
	}
	if !validHost(r.Host) {
		return fmt.Errorf("Host %q is not valid", r.Host)
	}
	hosts := 0
	for _, h := range r.Headers {
		if h.Kind == KindHost {
			hosts++
		}
	}
	if hosts > 1 || r.Minor == 1 && hosts != 1 {
		return fmt.Errorf("HTTP/1.%d request with %d Host fields", r.Minor, hosts)
	}
	if r.ExpectContinue && r.Minor == 0 {
		return errors.New("ExpectContinue in HTTP/1.0")
	}
	return checkFields(&r.Fields, true)
}

// serializeRequest writes r back as a head, the way a proxy forwards it.
func serializeRequest(r *Request) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.%d\r\n", r.Method, r.URI, r.Minor)
	for _, h := range r.Headers {
		fmt.Fprintf(&b, "%s: %s\r\n", h.Name, h.Value)
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// sameRequest compares two parsed requests, Host included when both came
// from origin-form targets.
func sameRequest(a, b *Request, withHost bool) bool {
	type view struct {
		M, U, H               string
		F                     []hdr
		Minor                 int
		CL                    int64
		Ch, C, K, Up, T, Expc bool
	}
	v := func(r *Request) view {
		h := ""
		if withHost {
			h = string(r.Host)
		}
		return view{string(r.Method), string(r.URI), h, headersOf(&r.Fields), r.Minor, r.ContentLength,
			r.Chunked, r.Close, r.KeepAlive, r.Upgrade, r.ConnTokens, r.ExpectContinue}
	}
	return fmt.Sprint(v(a)) == fmt.Sprint(v(b))
}

func FuzzParseRequest(f *testing.F) {
	for _, s := range seedHeads {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r Request
		err := ParseRequest(data, &r)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not an *Error", err)
			}
			switch e.Status {
			case 400, 405, 501, 505:
			default:
				t.Fatalf("error %v has status %d", err, e.Status)
			}
		} else {
			if err := checkRequest(&r); err != nil {
				t.Fatalf("%q: %v", data, err)
			}
			// What the proxy forwards parses to the same request.
			out := serializeRequest(&r)
			var again Request
			if err := ParseRequest(out, &again); err != nil {
				t.Fatalf("%q forwarded as %q: %v", data, out, err)
			}
			// The target starts right after the method and its space.
			c := data[len(r.Method)+1]
			origin := c == '/' || c == '*'
			if !sameRequest(&r, &again, origin) {
				t.Fatalf("%q forwarded as %q parses differently", data, out)
			}
		}

		// ReadHead then ParseRequest agrees with ParseRequest on data that
		// does not start with an empty line (which ReadHead skips).
		if bytes.HasPrefix(data, []byte("\r\n")) {
			return
		}
		h, herr := NewReader(bytes.NewReader(data), 64, 1<<20).ReadHead(nil)
		if herr != nil {
			if err == nil {
				t.Fatalf("%q: ParseRequest accepts it but ReadHead says %v", data, herr)
			}
			return
		}
		if !bytes.HasPrefix(data, h) {
			t.Fatalf("ReadHead returned %q, not a prefix of %q", h, data)
		}
		var r2 Request
		err2 := ParseRequest(h, &r2)
		if (err == nil) != (err2 == nil) || err != nil && StatusFor(err) != StatusFor(err2) {
			t.Fatalf("%q: ParseRequest = %v, after ReadHead = %v", data, err, err2)
		}
		if err == nil && !sameRequest(&r, &r2, true) {
			t.Fatalf("%q: parses differently after ReadHead", data)
		}
	})
}

func FuzzParseResponse(f *testing.F) {
	for _, s := range seedHeads {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r Response
		err := ParseResponse(data, &r)
		if err != nil {
			if !isWireError(err) {
				t.Fatalf("error %v is not an *Error", err)
			}
			return
		}
		if r.Status < 100 || r.Status > 999 {
			t.Fatalf("%q: status %d", data, r.Status)
		}
		for _, c := range r.Reason {
			if c < ' ' && c != '\t' || c == 0x7f {
				t.Fatalf("%q: reason %q has a control character", data, r.Reason)
			}
		}
		if err := checkFields(&r.Fields, false); err != nil {
			t.Fatalf("%q: %v", data, err)
		}
		if r.Minor == 0 && r.Chunked && !r.Close {
			t.Fatalf("%q: chunked HTTP/1.0 response not Close", data)
		}
	})
}

// readHeadResult is the outcome of reading heads from a stream until an
// error: every head, then the error.
// With release, the reader gives its buffer back after each head when
// nothing more is buffered, as an event loop's does while waiting.
func readHeads(rd *Reader, limit int, release bool) ([]string, error) {
	var heads []string
	for i := 0; ; i++ {
		if i > limit {
			return heads, errors.New("more heads than bytes: ReadHead does not progress")
		}
		h, err := rd.ReadHead(nil)
		if err != nil {
			return heads, err
		}
		heads = append(heads, string(h))
		if release {
			rd.Release()
		}
	}
}

// refReadHeads is the specification ReadHead is held to, written plainly:
// skip CRLF pairs; within the next max bytes the first LF either is bare
// (ErrBareLF), ends an empty line (the head), or there is none (ErrHeadTooLarge
// when max bytes are there, else the stream ended early).
func refReadHeads(data []byte, max int) ([]string, error) {
	var heads []string
	for {
		for bytes.HasPrefix(data, []byte("\r\n")) {
			data = data[2:]
		}
		if len(data) == 0 {
			return heads, ErrEmptyHead
		}
		win := data[:min(len(data), max)]
		found := false
		for i, c := range win {
			if c != '\n' {
				continue
			}
			if i == 0 || win[i-1] != '\r' {
				return heads, ErrBareLF
			}
			if i >= 3 && win[i-2] == '\n' && win[i-3] == '\r' {
				heads = append(heads, string(data[:i+1]))
				data = data[i+1:]
				found = true
				break
			}
		}
		if !found {
			if len(data) >= max {
				return heads, ErrHeadTooLarge
			}
			return heads, io.ErrUnexpectedEOF
		}
	}
}

// FuzzReadHead: a byte stream split arbitrarily across reads gives the same
// heads and final error as the plain specification, for several buffer
// sizes; ReadHead always ends.
func FuzzReadHead(f *testing.F) {
	for _, s := range seedHeads {
		f.Add([]byte(s), []byte{1})
		f.Add([]byte(s+s), []byte{3, 1, 7})
	}
	f.Add([]byte("\r"), []byte{1})
	f.Add([]byte("\r\n\r"), []byte{1, 2})
	f.Add([]byte("GET / HTTP/1.1\r\nX: "+strings.Repeat("a", 200)+"\r\n\r\n"), []byte{5})
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		const max = 128
		sizes := make([]int, len(cuts))
		for i, c := range cuts {
			sizes[i] = int(c)%40 + 1
		}
		for _, cfg := range []struct {
			size   int
			split  bool
			pooled bool
		}{{max, false, false}, {16, true, false}, {1, true, false}, {max * 4, true, false}, {16, true, true}} {
			// A buffer larger than max raises the limit to its size.
			lim := cfg.size
			if lim < max {
				lim = max
			}
			wantHeads, wantErr := refReadHeads(data, lim)
			src := &piecesReader{data: data}
			if cfg.split {
				src.sizes = sizes
			}
			rd := NewReader(src, cfg.size, max)
			pool := &FreeList{Size: cfg.size, Max: 1}
			if cfg.pooled {
				rd = NewPooledReader(src, pool, cfg.size, max)
			}
			heads, err := readHeads(rd, len(data)+1, cfg.pooled)
			if err != wantErr || fmt.Sprint(heads) != fmt.Sprint(wantHeads) {
				t.Fatalf("%q in reads of %v, buffer %d, limit %d, pooled %v:\n got %q, %v\nwant %q, %v",
					data, sizes, cfg.size, lim, cfg.pooled, heads, err, wantHeads, wantErr)
			}
			if rd.Free(); pool.Lent() != 0 {
				t.Fatalf("%q: the pooled reader kept %d buffers after Free", data, pool.Lent())
			}
		}
	})
}

// refChunked is the chunked grammar wire implements, written plainly, for
// a Reader whose buffer is bufSize bytes: the payload, whether a chunk-size
// line had whitespace before its ';' (RFC 9112 7.1.1 allows it, net/http
// does not), and the error wire must return.
func refChunked(data []byte, bufSize int) (payload []byte, bws bool, err error) {
	line := func() ([]byte, error) {
		win := data[:min(len(data), bufSize)]
		i := bytes.IndexByte(win, '\n')
		switch {
		case i < 0 && len(data) >= bufSize:
			return nil, errChunkLineTooLong
		case i < 0:
			return nil, io.ErrUnexpectedEOF
		case i == 0 || win[i-1] != '\r':
			return nil, ErrBareLF
		}
		l := data[:i-1]
		data = data[i+1:]
		return l, nil
	}
	for {
		l, err := line()
		if err != nil {
			return payload, bws, err
		}
		digits := 0
		for digits < len(l) && isHex(l[digits]) {
			digits++
		}
		if digits == 0 {
			return payload, bws, errBadChunk
		}
		hex := bytes.TrimLeft(l[:digits], "0")
		if len(hex) > 16 || len(hex) == 16 && hex[0] > '7' {
			return payload, bws, errBadChunk // over math.MaxInt64
		}
		var size int64
		for _, c := range hex {
			v, _ := strconv.ParseUint(string(c), 16, 8)
			size = size<<4 | int64(v)
		}
		if ext := l[digits:]; len(ext) > 0 {
			t := bytes.TrimLeft(ext, " \t")
			if len(t) == 0 || t[0] != ';' {
				return payload, bws, errBadChunk
			}
			if len(t) < len(ext) {
				bws = true
			}
			for _, c := range t {
				if c < ' ' && c != '\t' || c == 0x7f {
					return payload, bws, errBadChunk
				}
			}
		}
		if size == 0 {
			for i := 0; ; i++ {
				t, err := line()
				if err != nil {
					return payload, bws, err
				}
				if len(t) == 0 {
					return payload, bws, nil
				}
				if i >= maxTrailerLines {
					return payload, bws, errBadChunk
				}
			}
		}
		if int64(len(data)) < size {
			return append(payload, data...), bws, io.ErrUnexpectedEOF
		}
		payload = append(payload, data[:size]...)
		data = data[size:]
		t, err := line()
		if err != nil {
			return payload, bws, err
		}
		if len(t) != 0 {
			return payload, bws, errBadChunk
		}
	}
}

// FuzzChunked: decoding arbitrary input split arbitrarily across reads
// never panics, never returns more than asked, and gives the payload and
// error of the plain grammar (refChunked); what decodes, net/http's chunked
// reader decodes to the same bytes (but for documented leniencies), and
// re-encoding it with WriteChunk decodes back to it.
func FuzzChunked(f *testing.F) {
	for _, s := range []string{
		"5\r\nhello\r\n0\r\n\r\n",
		"a;ext=1\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n",
		"0\r\n\r\n",
		"5\r\nhelloX\r\n",
		"ffffffffffffffff\r\n",
		"5\nhello\n0\n\n",
		"00000000000000000005\r\nhello\r\n0\r\n\r\n",
		"5 ;a=b\r\nhello\r\n0\r\n\r\n",
	} {
		f.Add([]byte(s), uint16(7), []byte{3})
	}
	f.Fuzz(func(t *testing.T, data []byte, max uint16, cuts []byte) {
		const bufSize = 256
		n := int(max)%1000 + 1
		sizes := make([]int, len(cuts))
		for i, c := range cuts {
			sizes[i] = int(c) + 1
		}
		var b Body
		b.Reset(NewReader(&piecesReader{data: data, sizes: sizes}, bufSize, bufSize), FrameChunked, 0)
		payload, err := readAll(&b, n)
		want, bws, wantErr := refChunked(data, bufSize)
		if !errors.Is(err, wantErr) || !bytes.Equal(payload, want) {
			t.Fatalf("%q in reads of %v: %q, %v; want %q, %v", data, sizes, payload, err, want, wantErr)
		}
		if err != nil {
			return
		}

		goPayload, goErr := decodeGoChunked(data)
		switch {
		case goErr != nil && !bws && chunkedGoLeniency(goErr) == "":
			t.Fatalf("%q: wire decodes %q, net/http refuses: %v", data, payload, goErr)
		case goErr == nil && !bytes.Equal(goPayload, payload):
			t.Fatalf("%q: wire decodes %q, net/http %q", data, payload, goPayload)
		}

		var enc bytes.Buffer
		w := bufio.NewWriter(&enc)
		for p, i := payload, 0; len(p) > 0; i++ {
			k := len(p)
			if len(sizes) > 0 {
				k = min(k, sizes[i%len(sizes)])
			}
			WriteChunk(w, p[:k])
			p = p[k:]
		}
		WriteLastChunk(w)
		w.Flush()
		b.Reset(NewReader(bytes.NewReader(enc.Bytes()), 64, 64), FrameChunked, 0)
		again, err := readAll(&b, n)
		if err != nil || !bytes.Equal(again, payload) {
			t.Fatalf("re-encoded %q as %q: decodes to %q, %v", payload, enc.Bytes(), again, err)
		}
	})
}
