package wire

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
)

// The differential tests check wire against net/http's parser: on valid
// input both must read the same message. wire may refuse what net/http
// takes (it is stricter by design: obs-fold, bare LF, duplicate
// Content-Length, HTTP/1.2, and so on); it must not take what net/http
// refuses, except for the leniencies listed in knownLeniency.

// gen builds random valid HTTP/1.x messages.
type gen struct{ r *rand.Rand }

const (
	tchars  = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	alnum   = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	pchars  = alnum + "-._~!$&'()*+,;=:@/"
	hexDigs = "0123456789abcdefABCDEF"
)

func (g gen) pick(s string) byte       { return s[g.r.IntN(len(s))] }
func (g gen) oneOf(s ...string) string { return s[g.r.IntN(len(s))] }
func (g gen) chance(p float64) bool    { return g.r.Float64() < p }

func (g gen) token(maxLen int) string {
	b := make([]byte, 1+g.r.IntN(maxLen))
	for i := range b {
		b[i] = g.pick(tchars)
	}
	return string(b)
}

// randomCase flips the case of letters at random.
func (g gen) randomCase(s string) string {
	b := []byte(s)
	for i, c := range b {
		if g.chance(0.5) {
			switch {
			case 'a' <= c && c <= 'z':
				b[i] = c - 32
			case 'A' <= c && c <= 'Z':
				b[i] = c + 32
			}
		}
	}
	return string(b)
}

// fieldValue is a field value without surrounding whitespace: visible
// ASCII, obs-text and inner SP/HTAB.
func (g gen) fieldValue() string {
	n := g.r.IntN(40)
	b := make([]byte, 0, n)
	for i := 0; i < n; i++ {
		switch {
		case i > 0 && i < n-1 && g.chance(0.1):
			b = append(b, g.oneOf(" ", "\t", "  ")...)
		case g.chance(0.05):
			b = append(b, byte(0x80+g.r.IntN(0x80)))
		default:
			b = append(b, byte(0x21+g.r.IntN(0x7e-0x21+1)))
		}
	}
	return string(b)
}

func (g gen) ows() string { return g.oneOf("", "", " ", "\t", "  \t ") }

func (g gen) regName() string {
	var labels []string
	for range 1 + g.r.IntN(3) {
		b := make([]byte, 1+g.r.IntN(10))
		for i := range b {
			b[i] = g.pick(alnum)
			if i > 0 && i < len(b)-1 && g.chance(0.1) {
				b[i] = '-'
			}
		}
		labels = append(labels, string(b))
	}
	return strings.Join(labels, ".")
}

func (g gen) host() string {
	var h string
	switch g.r.IntN(6) {
	case 0:
		h = fmt.Sprintf("%d.%d.%d.%d", g.r.IntN(256), g.r.IntN(256), g.r.IntN(256), g.r.IntN(256))
	case 1:
		h = g.oneOf("[::1]", "[2001:db8::42]", "[fe80::1:2]", "[::ffff:192.0.2.1]")
	default:
		h = g.regName()
	}
	if g.chance(0.4) {
		h += ":" + strconv.Itoa(g.r.IntN(65536))
	}
	return h
}

// path is an origin-form path with an optional query; the path has only
// well-formed %-escapes, the query anything visible.
func (g gen) path() string {
	var b strings.Builder
	b.WriteByte('/')
	for range g.r.IntN(30) {
		switch {
		case g.chance(0.08):
			b.WriteByte('%')
			b.WriteByte(g.pick(hexDigs))
			b.WriteByte(g.pick(hexDigs))
		case g.chance(0.03):
			b.WriteByte(byte(0x80 + g.r.IntN(0x80)))
		default:
			b.WriteByte(g.pick(pchars))
		}
	}
	if g.chance(0.4) {
		b.WriteByte('?')
		for range g.r.IntN(30) {
			if g.chance(0.03) {
				b.WriteByte(byte(0x80 + g.r.IntN(0x80)))
			} else {
				b.WriteByte(byte(0x21 + g.r.IntN(0x7e-0x21+1)))
			}
		}
	}
	return b.String()
}

// avoidName reports field names the generator sets itself, or that
// net/http rewrites (Pragma adds Cache-Control).
func avoidName(n string) bool {
	switch strings.ToLower(n) {
	case "host", "content-length", "transfer-encoding", "trailer", "pragma", "cache-control", "connection":
		return true
	}
	return false
}

// fields appends random fields and returns them.
func (g gen) fields(b *bytes.Buffer) {
	for range g.r.IntN(12) {
		name := g.token(20)
		if avoidName(name) {
			continue
		}
		if g.chance(0.2) {
			name = g.randomCase(g.oneOf("Accept", "User-Agent", "Cookie", "X-Forwarded-For", "Expect", "Upgrade", "Keep-Alive", "TE", "X-Dup"))
		}
		fmt.Fprintf(b, "%s:%s%s%s\r\n", name, g.ows(), g.fieldValue(), g.ows())
	}
	if g.chance(0.3) {
		fmt.Fprintf(b, "%s: %s\r\n", g.randomCase("connection"),
			g.randomCase(g.oneOf("close", "keep-alive", "Upgrade", "close, X-Foo", "X-Foo ,keep-alive", "upgrade,  close")))
	}
}

// body appends a body with the chosen framing and returns its payload.
func (g gen) body(b *bytes.Buffer, head *bytes.Buffer, chunkedOK, closeOK bool) []byte {
	payload := make([]byte, g.r.IntN(200))
	for i := range payload {
		payload[i] = byte(g.r.IntN(256))
	}
	switch {
	case chunkedOK && g.chance(0.4):
		fmt.Fprintf(head, "%s:%schunked\r\n\r\n", g.randomCase("Transfer-Encoding"), g.ows())
		for p := payload; len(p) > 0; {
			n := min(len(p), 1+g.r.IntN(50))
			size := strconv.FormatInt(int64(n), 16)
			if g.chance(0.5) {
				size = strings.ToUpper(size)
			}
			ext := ""
			if g.chance(0.2) {
				ext = ";" + g.token(5) + "=" + g.token(5)
			}
			fmt.Fprintf(b, "%s%s\r\n%s\r\n", size, ext, p[:n])
			p = p[n:]
		}
		b.WriteString("0\r\n")
		if g.chance(0.2) {
			fmt.Fprintf(b, "X-Trailer-%s: %s\r\n", g.token(5), g.token(5))
		}
		b.WriteString("\r\n")
	case closeOK && g.chance(0.3):
		head.WriteString("\r\n")
		b.Write(payload)
	case g.chance(0.8):
		fmt.Fprintf(head, "%s:%s%d%s\r\n\r\n", g.randomCase("Content-Length"), g.ows(), len(payload), g.ows())
		b.Write(payload)
	default:
		head.WriteString("\r\n")
		payload = nil
	}
	return payload
}

// request returns a valid request and its body's payload.
func (g gen) request() ([]byte, []byte) {
	var h bytes.Buffer
	method := g.oneOf("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "PURGE", "get")
	if g.chance(0.1) {
		method = g.token(10)
		if method == "CONNECT" {
			method = "GET"
		}
	}
	target := g.path()
	switch {
	case method == "OPTIONS" && g.chance(0.2):
		target = "*"
	case g.chance(0.15):
		target = g.randomCase(g.oneOf("http", "https")) + "://" + g.host() + target
	}
	minor := g.r.IntN(2)
	fmt.Fprintf(&h, "%s %s HTTP/1.%d\r\n", method, target, minor)
	hostLine := minor == 1 || g.chance(0.5)
	if hostLine {
		fmt.Fprintf(&h, "%s:%s%s%s\r\n", g.randomCase("host"), g.ows(), g.host(), g.ows())
	}
	g.fields(&h)
	var body bytes.Buffer
	payload := g.body(&body, &h, minor == 1, false)
	return append(h.Bytes(), body.Bytes()...), payload
}

// response returns a valid response and its body's payload.
func (g gen) response() ([]byte, []byte) {
	var h bytes.Buffer
	minor := g.r.IntN(2)
	status := 100 + g.r.IntN(500)
	if g.chance(0.5) {
		status = []int{200, 204, 301, 304, 404, 500}[g.r.IntN(6)]
	}
	fmt.Fprintf(&h, "HTTP/1.%d %d", minor, status)
	switch g.r.IntN(4) {
	case 0:
	case 1:
		h.WriteString(" ")
	default:
		h.WriteString(" " + g.fieldValue())
	}
	h.WriteString("\r\n")
	g.fields(&h)
	var body bytes.Buffer
	payload := g.body(&body, &h, minor == 1, true)
	if status < 200 || status == 204 || status == 304 {
		return h.Bytes(), nil // no body whatever the fields say
	}
	return append(h.Bytes(), body.Bytes()...), payload
}

// goServerCheck adds the checks net/http's server makes after reading a
// request, so "net/http accepts" means what a net/http server would serve.
// http.ReadRequest drops Host from the header map, so the Host fields are
// read again from data with textproto.
func goServerCheck(data []byte, req *http.Request) error {
	if req.ProtoMajor != 1 {
		return errors.New("unsupported protocol version")
	}
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(data)))
	if _, err := tp.ReadLine(); err != nil {
		return err
	}
	mh, err := tp.ReadMIMEHeader()
	if err != nil {
		return err
	}
	hosts, haveHost := mh["Host"]
	if req.ProtoAtLeast(1, 1) && (!haveHost || len(hosts) == 0) && req.Method != "CONNECT" {
		return errors.New("missing required Host header")
	}
	if len(hosts) == 1 && !httpguts.ValidHostHeader(hosts[0]) {
		return errors.New("malformed Host header")
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return errors.New("invalid header name")
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return errors.New("invalid header value")
			}
		}
	}
	return nil
}

// wireHeaders maps lower-cased names to values in order, leaving out the
// names net/http moves out of its Header map.
func wireHeaders(f *Fields, skip ...string) map[string][]string {
	m := map[string][]string{}
	for _, h := range f.Headers {
		n := strings.ToLower(string(h.Name))
		if !slices.Contains(skip, n) {
			m[n] = append(m[n], string(h.Value))
		}
	}
	return m
}

func goHeaders(h http.Header, skip ...string) map[string][]string {
	m := map[string][]string{}
	for k, vv := range h {
		n := strings.ToLower(k)
		if !slices.Contains(skip, n) {
			m[n] = append(m[n], vv...)
		}
	}
	return m
}

// compareRequest reports how wire's and net/http's readings of the same
// head differ.
func compareRequest(data []byte, r *Request, g *http.Request) error {
	var diffs []string
	d := func(what string, w, n any) {
		diffs = append(diffs, fmt.Sprintf("%s: wire %q, net/http %q", what, w, n))
	}
	if string(r.Method) != g.Method {
		d("method", r.Method, g.Method)
	}
	if g.URL.Scheme == "" {
		if string(r.URI) != g.RequestURI {
			d("URI", r.URI, g.RequestURI)
		}
	} else {
		// absolute-form: wire keeps what follows the authority.
		rest := g.RequestURI[len(g.URL.Scheme)+len("://")+len(g.URL.Host):]
		if rest == "" {
			rest = "/"
		}
		if string(r.URI) != rest {
			d("URI (absolute-form)", r.URI, rest)
		}
	}
	if string(r.Host) != g.Host {
		d("host", r.Host, g.Host)
	}
	if r.Minor != g.ProtoMinor {
		d("minor version", r.Minor, g.ProtoMinor)
	}
	wh := wireHeaders(&r.Fields, "host", "transfer-encoding")
	gh := goHeaders(g.Header, "host")
	if _, ok := wh["pragma"]; ok && wh["cache-control"] == nil && slices.Equal(gh["cache-control"], []string{"no-cache"}) {
		delete(gh, "cache-control") // net/http's Pragma fix-up
	}
	if r.Chunked {
		delete(wh, "trailer") // net/http moves it to Trailer
	}
	if fmt.Sprint(wh) != fmt.Sprint(gh) {
		d("headers", fmt.Sprint(wh), fmt.Sprint(gh))
	}
	wantCL := r.ContentLength
	if wantCL < 0 && !r.Chunked {
		wantCL = 0 // net/http: a request without framing has no body
	}
	if wantCL != g.ContentLength {
		d("content length", wantCL, g.ContentLength)
	}
	if r.Chunked != slices.Equal(g.TransferEncoding, []string{"chunked"}) {
		d("chunked", r.Chunked, g.TransferEncoding)
	}
	if r.Close != g.Close {
		d("close", r.Close, g.Close)
	}
	if diffs != nil {
		return fmt.Errorf("%q:\n\t%s", data, strings.Join(diffs, "\n\t"))
	}
	return nil
}

func bodyAllowedForStatus(s int) bool { return s >= 200 && s != 204 && s != 304 }

func compareResponse(data []byte, r *Response, g *http.Response) error {
	var diffs []string
	d := func(what string, w, n any) {
		diffs = append(diffs, fmt.Sprintf("%s: wire %q, net/http %q", what, w, n))
	}
	if r.Status != g.StatusCode {
		d("status", r.Status, g.StatusCode)
	}
	reason := strings.TrimPrefix(g.Status, strconv.Itoa(g.StatusCode))
	reason = strings.TrimPrefix(reason, " ")
	if string(r.Reason) != reason {
		d("reason", r.Reason, reason)
	}
	if r.Minor != g.ProtoMinor {
		d("minor version", r.Minor, g.ProtoMinor)
	}
	// net/http ignores Transfer-Encoding in HTTP/1.0; wire decodes it and
	// closes (RFC 9112 6.1). Framing is not compared there.
	te10 := r.Minor == 0 && r.Chunked
	skip := []string{"transfer-encoding"}
	goClose := r.Close || r.ContentLength < 0 && !r.Chunked && bodyAllowedForStatus(r.Status)
	if goClose {
		skip = append(skip, "connection") // net/http drops it on close
	}
	if r.Chunked {
		skip = append(skip, "trailer")
	}
	wh := wireHeaders(&r.Fields, skip...)
	gh := goHeaders(g.Header, skip...)
	if fmt.Sprint(wh) != fmt.Sprint(gh) {
		d("headers", fmt.Sprint(wh), fmt.Sprint(gh))
	}
	if !te10 {
		wantCL := r.ContentLength
		if !bodyAllowedForStatus(r.Status) {
			wantCL = 0
		}
		if wantCL != g.ContentLength {
			d("content length", wantCL, g.ContentLength)
		}
		if r.Chunked != slices.Equal(g.TransferEncoding, []string{"chunked"}) {
			d("chunked", r.Chunked, g.TransferEncoding)
		}
		if goClose != g.Close {
			d("close", goClose, g.Close)
		}
	}
	if diffs != nil {
		return fmt.Errorf("%q:\n\t%s", data, strings.Join(diffs, "\n\t"))
	}
	return nil
}

// readWireRequest reads one request and its body with wire.
func readWireRequest(data []byte, r *Request) ([]byte, error) {
	rd := NewReader(bytes.NewReader(data), 4096, 1<<16)
	h, err := rd.ReadHead(nil)
	if err != nil {
		return nil, err
	}
	if err := ParseRequest(h, r); err != nil {
		return nil, err
	}
	var b Body
	switch {
	case r.Chunked:
		b.Reset(rd, FrameChunked, 0)
	case r.ContentLength > 0:
		b.Reset(rd, FrameLength, r.ContentLength)
	default:
		b.Reset(rd, FrameNone, 0)
	}
	return readAll(&b, 1+len(data)%97)
}

func readWireResponse(data []byte, r *Response) ([]byte, error) {
	rd := NewReader(bytes.NewReader(data), 4096, 1<<16)
	h, err := rd.ReadHead(nil)
	if err != nil {
		return nil, err
	}
	if err := ParseResponse(h, r); err != nil {
		return nil, err
	}
	var b Body
	switch {
	case !r.BodyAllowed(false):
		b.Reset(rd, FrameNone, 0)
	case r.Chunked:
		b.Reset(rd, FrameChunked, 0)
	case r.ContentLength >= 0:
		b.Reset(rd, FrameLength, r.ContentLength)
	default:
		b.Reset(rd, FrameClose, -1)
	}
	return readAll(&b, 1+len(data)%97)
}

// TestDifferentialRequests: thousands of random valid requests read the
// same, head and body, by wire and by net/http.
func TestDifferentialRequests(t *testing.T) {
	g := gen{rand.New(rand.NewPCG(1, 2))}
	var r Request
	for i := range 5000 {
		data, payload := g.request()
		body, err := readWireRequest(data, &r)
		if err != nil {
			t.Fatalf("request %d: wire refused a valid request %q: %v", i, data, err)
		}
		if !bytes.Equal(body, payload) {
			t.Fatalf("request %d: wire read body %q, want %q", i, body, payload)
		}
		gr, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(data)))
		if err == nil {
			err = goServerCheck(data, gr)
		}
		if err != nil {
			t.Fatalf("request %d: net/http refused %q: %v", i, data, err)
		}
		if err := compareRequest(data, &r, gr); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		gbody, err := io.ReadAll(gr.Body)
		if err != nil || !bytes.Equal(gbody, payload) {
			t.Fatalf("request %d: net/http read body %q, %v; want %q", i, gbody, err, payload)
		}
	}
}

// TestDifferentialResponses does the same for responses.
func TestDifferentialResponses(t *testing.T) {
	g := gen{rand.New(rand.NewPCG(3, 4))}
	var r Response
	for i := range 5000 {
		data, payload := g.response()
		body, err := readWireResponse(data, &r)
		if err != nil {
			t.Fatalf("response %d: wire refused a valid response %q: %v", i, data, err)
		}
		if !bytes.Equal(body, payload) {
			t.Fatalf("response %d: wire read body %q, want %q", i, body, payload)
		}
		gr, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(data)), nil)
		if err != nil {
			t.Fatalf("response %d: net/http refused %q: %v", i, data, err)
		}
		if err := compareResponse(data, &r, gr); err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		gbody, err := io.ReadAll(gr.Body)
		if err != nil || !bytes.Equal(gbody, payload) {
			t.Fatalf("response %d: net/http read body %q, %v; want %q", i, gbody, err, payload)
		}
	}
}

// knownLeniency names the documented cases where wire accepts a head that
// net/http refuses, or "" when there is none.
func knownLeniency(r *Fields, goErr error) string {
	msg := goErr.Error()
	switch {
	case strings.Contains(msg, "bad trailer key"):
		// wire does not vet the Trailer field: it is hop-by-hop, never
		// forwarded, and trailers themselves are dropped.
		return "Trailer field contents"
	}
	return ""
}

// FuzzDifferential: for a head both parsers accept, the fields agree; wire
// must not accept a head net/http refuses unless knownLeniency explains it.
func FuzzDifferential(f *testing.F) {
	g := gen{rand.New(rand.NewPCG(5, 6))}
	for range 20 {
		data, _ := g.request()
		f.Add(data)
	}
	for _, target := range []string{
		"http://[::1]:/x", "http://[1::2::3]/", "http://[1.2.3.4]/", "http://a:/?%zz", "https://[::ffff:1.2.3.4]:80/a",
		"http://a/%zz", "http:///", "http://a_b.c~d:0//x#y", "/a#b%41", "*",
	} {
		f.Add([]byte("OPTIONS " + target + " HTTP/1.1\r\nHost: h\r\n\r\n"))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r Request
		werr := ParseRequest(data, &r)
		gr, gerr := http.ReadRequest(bufio.NewReader(bytes.NewReader(data)))
		if gerr == nil {
			gerr = goServerCheck(data, gr)
		}
		switch {
		case werr != nil:
			return // wire may be stricter
		case gerr != nil:
			if knownLeniency(&r.Fields, gerr) == "" {
				t.Fatalf("wire accepts what net/http refuses (%v): %q", gerr, data)
			}
			return
		}
		if err := compareRequest(data, &r, gr); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzDifferentialResponse is FuzzDifferential for response heads.
func FuzzDifferentialResponse(f *testing.F) {
	g := gen{rand.New(rand.NewPCG(7, 8))}
	for range 20 {
		data, _ := g.response()
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r Response
		werr := ParseResponse(data, &r)
		gr, gerr := http.ReadResponse(bufio.NewReader(bytes.NewReader(data)), nil)
		switch {
		case werr != nil:
			return
		case gerr != nil:
			if knownLeniency(&r.Fields, gerr) == "" {
				t.Fatalf("wire accepts what net/http refuses (%v): %q", gerr, data)
			}
			return
		}
		if err := compareResponse(data, &r, gr); err != nil {
			t.Fatal(err)
		}
	})
}

// chunkedGoLeniency names where net/http's chunked reader refuses what
// wire decodes, by design, or "".
func chunkedGoLeniency(goErr error) string {
	switch msg := goErr.Error(); {
	case strings.Contains(msg, "too much non-data"):
		// wire bounds a chunk line by its buffer instead of by a ratio.
		return "chunk overhead"
	case strings.Contains(msg, "http chunk length too large"):
		// wire allows leading zeros beyond 16 digits, as nginx does.
		return "leading zeros"
	}
	return ""
}

// decodeGoChunked decodes with net/http's chunked reader.
func decodeGoChunked(data []byte) ([]byte, error) {
	return io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(data)))
}
