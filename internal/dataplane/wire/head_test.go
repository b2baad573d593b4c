package wire

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

// TestParseRequestRejects covers every strictness rule: each head must be
// refused with the status nginx answers it with (or the documented one
// where cutover differs).
func TestParseRequestRejects(t *testing.T) {
	const h = "Host: example.com"
	cases := []struct {
		name   string
		head   []byte
		status int
	}{
		// Content-Length together with Transfer-Encoding.
		{"CL then TE", head("POST / HTTP/1.1", h, "Content-Length: 5", "Transfer-Encoding: chunked"), 400},
		{"TE then CL", head("POST / HTTP/1.1", h, "Transfer-Encoding: chunked", "Content-Length: 5"), 400},
		{"TE then CL 0", head("POST / HTTP/1.1", h, "Transfer-Encoding: chunked", "Content-Length: 0"), 400},
		// As nginx: an unknown coding is 501 even when CL is present too.
		{"CL and unknown TE", head("POST / HTTP/1.1", h, "Content-Length: 5", "Transfer-Encoding: gzip"), 501},

		// Duplicate or invalid Content-Length.
		{"duplicate CL same value", head("POST / HTTP/1.1", h, "Content-Length: 5", "Content-Length: 5"), 400},
		{"duplicate CL other value", head("POST / HTTP/1.1", h, "Content-Length: 5", "Content-Length: 6"), 400},
		{"duplicate CL case", head("POST / HTTP/1.1", h, "content-length: 5", "CONTENT-LENGTH: 5"), 400},
		{"CL plus sign", head("POST / HTTP/1.1", h, "Content-Length: +5"), 400},
		{"CL minus sign", head("POST / HTTP/1.1", h, "Content-Length: -5"), 400},
		{"CL minus zero", head("POST / HTTP/1.1", h, "Content-Length: -0"), 400},
		{"CL space inside", head("POST / HTTP/1.1", h, "Content-Length: 1 2"), 400},
		{"CL tab inside", head("POST / HTTP/1.1", h, "Content-Length: 1\t2"), 400},
		{"CL hex", head("POST / HTTP/1.1", h, "Content-Length: 0x10"), 400},
		{"CL hex letters", head("POST / HTTP/1.1", h, "Content-Length: 1a"), 400},
		{"CL exponent", head("POST / HTTP/1.1", h, "Content-Length: 1e3"), 400},
		{"CL decimal point", head("POST / HTTP/1.1", h, "Content-Length: 1.0"), 400},
		{"CL empty", head("POST / HTTP/1.1", h, "Content-Length:"), 400},
		{"CL only spaces", head("POST / HTTP/1.1", h, "Content-Length:   "), 400},
		{"CL list", head("POST / HTTP/1.1", h, "Content-Length: 1,1"), 400},
		{"CL list spaced", head("POST / HTTP/1.1", h, "Content-Length: 1, 1"), 400},
		{"CL trailing comma", head("POST / HTTP/1.1", h, "Content-Length: 5,"), 400},
		{"CL overflow int64", head("POST / HTTP/1.1", h, "Content-Length: 9223372036854775808"), 400},
		{"CL overflow 20 digits", head("POST / HTTP/1.1", h, "Content-Length: 99999999999999999999"), 400},
		{"CL 19 digits", head("POST / HTTP/1.1", h, "Content-Length: 1000000000000000000"), 400},
		{"CL unicode digit", head("POST / HTTP/1.1", h, "Content-Length: \u0661"), 400},
		{"CL NUL", head("POST / HTTP/1.1", h, "Content-Length: 5\x00"), 400},

		// Unknown Transfer-Encoding: 501 as nginx answers.
		{"TE gzip, chunked", head("POST / HTTP/1.1", h, "Transfer-Encoding: gzip, chunked"), 501},
		{"TE identity", head("POST / HTTP/1.1", h, "Transfer-Encoding: identity"), 501},
		{"TE chunked, chunked", head("POST / HTTP/1.1", h, "Transfer-Encoding: chunked, chunked"), 501},
		{"TE chunked, gzip", head("POST / HTTP/1.1", h, "Transfer-Encoding: chunked, gzip"), 501},
		{"TE gzip", head("POST / HTTP/1.1", h, "Transfer-Encoding: gzip"), 501},
		{"TE empty", head("POST / HTTP/1.1", h, "Transfer-Encoding:"), 501},
		{"TE chunked with param", head("POST / HTTP/1.1", h, "Transfer-Encoding: chunked;q=1"), 501},
		{"TE chunked quoted", head("POST / HTTP/1.1", h, `Transfer-Encoding: "chunked"`), 501},
		{"TE chunked vertical tab", head("POST / HTTP/1.1", h, "Transfer-Encoding: \x0bchunked"), 400},
		{"TE chunkedX", head("POST / HTTP/1.1", h, "Transfer-Encoding: chunkedX"), 501},
		// Two fields are a duplicate header line, as in nginx.
		{"TE twice", head("POST / HTTP/1.1", h, "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"), 400},

		// Transfer-Encoding in HTTP/1.0, whatever the coding.
		{"TE chunked in 1.0", head("POST / HTTP/1.0", "Transfer-Encoding: chunked"), 400},
		{"TE gzip in 1.0", head("POST / HTTP/1.0", "Transfer-Encoding: gzip"), 400},
		{"TE in 1.0 with Host", head("POST / HTTP/1.0", h, "Transfer-Encoding: chunked"), 400},

		// Whitespace before the colon.
		{"space before colon", head("GET / HTTP/1.1", "Host : example.com"), 400},
		{"tab before colon", head("GET / HTTP/1.1", h, "X-A\t: b"), 400},
		{"space before colon CL", head("POST / HTTP/1.1", h, "Content-Length : 5"), 400},
		{"space before colon TE", head("POST / HTTP/1.1", h, "Transfer-Encoding : chunked"), 400},
		{"space inside name", head("GET / HTTP/1.1", h, "X A: b"), 400},

		// obs-fold.
		{"obs-fold space", head("GET / HTTP/1.1", h, "X-A: b", " c"), 400},
		{"obs-fold tab", head("GET / HTTP/1.1", h, "X-A: b", "\tc"), 400},
		{"whitespace before first field", head("GET / HTTP/1.1", " "+h), 400},
		{"obs-fold in TE", head("POST / HTTP/1.1", h, "Transfer-Encoding:", " chunked"), 501},

		// Header lines that are not fields.
		{"no colon", head("GET / HTTP/1.1", h, "X-A b"), 400},
		{"empty name", head("GET / HTTP/1.1", h, ": b"), 400},
		{"name with slash", head("GET / HTTP/1.1", h, "X/A: b"), 400},
		{"name with high byte", head("GET / HTTP/1.1", h, "X-\xc3\xa9: b"), 400},

		// Host.
		{"missing Host in 1.1", head("GET / HTTP/1.1"), 400},
		{"missing Host in 1.1 absolute-form", head("GET http://example.com/ HTTP/1.1"), 400},
		{"duplicate Host", head("GET / HTTP/1.1", h, h), 400},
		{"duplicate Host differing", head("GET / HTTP/1.1", h, "host: other.example"), 400},
		{"duplicate Host in 1.0", head("GET / HTTP/1.0", h, h), 400},
		{"Host with space", head("GET / HTTP/1.1", "Host: exa mple.com"), 400},
		{"Host with slash", head("GET / HTTP/1.1", "Host: example.com/evil"), 400},
		{"Host with backslash", head("GET / HTTP/1.1", `Host: example.com\evil`), 400},
		{"Host with at", head("GET / HTTP/1.1", "Host: user@example.com"), 400},
		{"Host with quote", head("GET / HTTP/1.1", `Host: "example.com"`), 400},
		{"Host with angle", head("GET / HTTP/1.1", "Host: <example.com>"), 400},
		{"Host with question mark", head("GET / HTTP/1.1", "Host: example.com?x"), 400},
		{"Host with hash", head("GET / HTTP/1.1", "Host: example.com#x"), 400},
		{"Host with high byte", head("GET / HTTP/1.1", "Host: ex\xc3\xa4mple.com"), 400},
		{"Host with tab inside", head("GET / HTTP/1.1", "Host: exa\tmple.com"), 400},
		{"Host with NUL", head("GET / HTTP/1.1", "Host: example.com\x00"), 400},
		{"invalid Host in absolute-form", head("GET http://example.com/ HTTP/1.1", "Host: a/b"), 400},

		// NUL and control characters.
		{"NUL in value", head("GET / HTTP/1.1", h, "X-A: b\x00c"), 400},
		{"SOH in value", head("GET / HTTP/1.1", h, "X-A: \x01"), 400},
		{"ESC in value", head("GET / HTTP/1.1", h, "X-A: \x1b[31m"), 400},
		{"DEL in value", head("GET / HTTP/1.1", h, "X-A: b\x7f"), 400},
		{"CR in value", head("GET / HTTP/1.1", h, "X-A: b\rc"), 400},
		{"CR before CRLF", head("GET / HTTP/1.1", h, "X-A: b\r"), 400},
		{"NUL in name", head("GET / HTTP/1.1", h, "X\x00A: b"), 400},
		{"NUL in method", head("G\x00T / HTTP/1.1", h), 400},
		{"NUL in target", head("GET /\x00 HTTP/1.1", h), 400},
		{"DEL in target", head("GET /\x7f HTTP/1.1", h), 400},
		{"tab in target", head("GET /a\tb HTTP/1.1", h), 400},
		{"CR line alone", []byte("GET / HTTP/1.1\r\n" + h + "\r\n\r\r\n\r\n"), 400},

		// Versions.
		{"HTTP/2.0", head("GET / HTTP/2.0", h), 505},
		{"HTTP/1.2", head("GET / HTTP/1.2", h), 505},
		{"HTTP/1.9", head("GET / HTTP/1.9", h), 505},
		{"HTTP/0.9", head("GET / HTTP/0.9", h), 505},
		{"HTTP/3.0", head("GET / HTTP/3.0", h), 505},
		{"PRI preface", head("PRI * HTTP/2.0"), 505},
		{"lower-case http", head("GET / http/1.1", h), 400},
		{"HTTPS scheme", head("GET / HTTPS/1.1", h), 400},
		{"no minor", head("GET / HTTP/1", h), 400},
		{"HTTP/2", head("GET / HTTP/2", h), 400},
		{"two-digit minor", head("GET / HTTP/1.10", h), 400},
		{"two-digit major", head("GET / HTTP/11.1", h), 400},
		{"letters", head("GET / HTTP/a.b", h), 400},
		{"comma", head("GET / HTTP/1,1", h), 400},
		{"trailing space", head("GET / HTTP/1.1 ", h), 400},
		{"trailing garbage", head("GET / HTTP/1.1x", h), 400},
		{"missing version", head("GET /", h), 400},
		{"empty version", head("GET / ", h), 400},
		{"HTTP/0.9 style", head("GET /"), 400},

		// Request line shape.
		{"leading space", head(" GET / HTTP/1.1", h), 400},
		{"double space", head("GET  / HTTP/1.1", h), 400},
		{"double space before version", head("GET /  HTTP/1.1", h), 400},
		{"tab separator", head("GET\t/ HTTP/1.1", h), 400},
		{"method not a token", head("GE(T / HTTP/1.1", h), 400},
		{"method high byte", head("G\xc3\xa9T / HTTP/1.1", h), 400},
		{"empty line only", []byte("\r\n"), 400},
		{"no request line", head(h), 400},

		// Targets.
		{"CONNECT", head("CONNECT example.com:443 HTTP/1.1", "Host: example.com:443"), 405},
		{"CONNECT origin-form", head("CONNECT / HTTP/1.1", h), 405},
		{"asterisk with GET", head("GET * HTTP/1.1", h), 400},
		{"relative target", head("GET index.html HTTP/1.1", h), 400},
		{"authority-form", head("GET example.com:80 HTTP/1.1", h), 400},
		{"ftp scheme", head("GET ftp://example.com/ HTTP/1.1", h), 400},
		{"empty authority", head("GET http:///x HTTP/1.1", h), 400},
		{"scheme only", head("GET http:// HTTP/1.1", h), 400},
		{"userinfo", head("GET http://user@example.com/ HTTP/1.1", h), 400},
		{"userinfo with password", head("GET http://u:p@example.com/ HTTP/1.1", h), 400},
		{"port not digits", head("GET http://example.com:http/ HTTP/1.1", h), 400},
		{"two ports", head("GET http://example.com:80:81/ HTTP/1.1", h), 400},
		{"empty host with port", head("GET http://:80/ HTTP/1.1", h), 400},
		{"unclosed IPv6", head("GET http://[::1/ HTTP/1.1", h), 400},
		{"empty IPv6", head("GET http://[]/ HTTP/1.1", h), 400},
		{"IPv6 junk", head("GET http://[::g]/ HTTP/1.1", h), 400},
		{"IPv6 junk after", head("GET http://[::1]x/ HTTP/1.1", h), 400},
		{"IPv6 two ellipses", head("GET http://[1::2::3]/ HTTP/1.1", h), 400},
		{"IPv4 in brackets", head("GET http://[1.2.3.4]/ HTTP/1.1", h), 400},
		{"IPv6 one group", head("GET http://[ffff]/ HTTP/1.1", h), 400},
		{"IPv6 zone", head("GET http://[fe80::1%25eth0]/ HTTP/1.1", h), 400},
		{"IPvFuture", head("GET http://[v1.x]/ HTTP/1.1", h), 400},
		{"percent in authority", head("GET http://ex%41mple.com/ HTTP/1.1", h), 400},
		{"query without path", head("GET http://example.com?x HTTP/1.1", h), 400},
		{"bad escape", head("GET /a%zz HTTP/1.1", h), 400},
		{"short escape", head("GET /a%4 HTTP/1.1", h), 400},
		{"percent at end", head("GET /a% HTTP/1.1", h), 400},
		{"bad escape in absolute path", head("GET http://example.com/%g0 HTTP/1.1", h), 400},

		// Line ends (ReadHead never returns these; the parser still refuses).
		{"bare LF after request line", []byte("GET / HTTP/1.1\n" + h + "\r\n\r\n"), 400},
		{"bare LF after field", []byte("GET / HTTP/1.1\r\n" + h + "\n\r\n"), 400},
		{"bare LF as empty line", []byte("GET / HTTP/1.1\r\n" + h + "\r\n\n"), 400},
		{"no empty line", []byte("GET / HTTP/1.1\r\n" + h + "\r\n"), 400},
		{"no line end", []byte("GET / HTTP/1.1"), 400},
		{"empty", nil, 400},
	}
	var r Request
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := ParseRequest(c.head, &r)
			if err == nil {
				t.Fatalf("ParseRequest(%q) accepted it; want %d", c.head, c.status)
			}
			if !isWireError(err) {
				t.Fatalf("ParseRequest(%q) = %v, not an *Error", c.head, err)
			}
			if got := StatusFor(err); got != c.status {
				t.Fatalf("ParseRequest(%q) = %v: status %d, want %d", c.head, err, got, c.status)
			}
			// Through ReadHead too, where the head is one (bare-LF heads
			// are ReadHead's own error).
			rd := NewReader(bytes.NewReader(c.head), 64, 8192)
			got, err := rd.ReadHead(nil)
			if err != nil {
				if !errors.Is(err, ErrBareLF) && !errors.Is(err, io.ErrUnexpectedEOF) && err != ErrEmptyHead {
					t.Fatalf("ReadHead(%q): %v", c.head, err)
				}
				return
			}
			if err := ParseRequest(got, &r); StatusFor(err) != c.status {
				t.Fatalf("ReadHead+ParseRequest(%q) = %v, want status %d", c.head, err, c.status)
			}
		})
	}
}

// hdr is a header as a test expects it.
type hdr struct {
	name, value string
	kind        Kind
}

func headersOf(f *Fields) []hdr {
	var out []hdr
	for _, h := range f.Headers {
		out = append(out, hdr{string(h.Name), string(h.Value), h.Kind})
	}
	return out
}

// TestParseRequestFields checks that valid heads parse to the right fields.
func TestParseRequestFields(t *testing.T) {
	type want struct {
		method, uri, host string
		minor             int
		headers           []hdr
		cl                int64
		chunked           bool
		close, keepAlive  bool
		upgrade, tokens   bool
		expect            bool
		listed, notListed []string
	}
	cases := []struct {
		name string
		head []byte
		want want
	}{
		{"simple GET", head("GET / HTTP/1.1", "Host: example.com"), want{
			method: "GET", uri: "/", host: "example.com", minor: 1, cl: -1,
			headers: []hdr{{"Host", "example.com", KindHost}},
		}},
		{"path and query kept byte for byte", head("GET /a/b%2Fc;p?x=1&y=%zz&z=/?#f HTTP/1.1", "Host: example.com"), want{
			method: "GET", uri: "/a/b%2Fc;p?x=1&y=%zz&z=/?#f", host: "example.com", minor: 1, cl: -1,
			headers: []hdr{{"Host", "example.com", KindHost}},
		}},
		{"high bytes in target", head("GET /caf\xc3\xa9 HTTP/1.1", "Host: example.com"), want{
			method: "GET", uri: "/caf\xc3\xa9", host: "example.com", minor: 1, cl: -1,
			headers: []hdr{{"Host", "example.com", KindHost}},
		}},
		{"POST with Content-Length", head("POST /form HTTP/1.1", "Host: a", "Content-Length: 12", "Content-Type: text/plain"), want{
			method: "POST", uri: "/form", host: "a", minor: 1, cl: 12,
			headers: []hdr{{"Host", "a", KindHost}, {"Content-Length", "12", KindContentLength}, {"Content-Type", "text/plain", KindOther}},
		}},
		{"Content-Length zero", head("POST / HTTP/1.1", "Host: a", "Content-Length: 0"), want{
			method: "POST", uri: "/", host: "a", minor: 1, cl: 0,
			headers: []hdr{{"Host", "a", KindHost}, {"Content-Length", "0", KindContentLength}},
		}},
		{"Content-Length leading zeros and OWS", head("POST / HTTP/1.1", "Host: a", "content-length: \t007 "), want{
			method: "POST", uri: "/", host: "a", minor: 1, cl: 7,
			headers: []hdr{{"Host", "a", KindHost}, {"content-length", "007", KindContentLength}},
		}},
		{"Content-Length 18 digits", head("POST / HTTP/1.1", "Host: a", "Content-Length: 999999999999999999"), want{
			method: "POST", uri: "/", host: "a", minor: 1, cl: 999999999999999999,
			headers: []hdr{{"Host", "a", KindHost}, {"Content-Length", "999999999999999999", KindContentLength}},
		}},
		{"chunked any case", head("PUT /x HTTP/1.1", "Host: a", "Transfer-Encoding: ChUnKeD"), want{
			method: "PUT", uri: "/x", host: "a", minor: 1, cl: -1, chunked: true,
			headers: []hdr{{"Host", "a", KindHost}, {"Transfer-Encoding", "ChUnKeD", KindTransferEncoding}},
		}},
		{"HTTP/1.0 without Host closes", head("GET / HTTP/1.0"), want{
			method: "GET", uri: "/", minor: 0, cl: -1, close: true,
		}},
		{"HTTP/1.0 keep-alive", head("GET / HTTP/1.0", "Connection: Keep-Alive", "Host: a"), want{
			method: "GET", uri: "/", host: "a", minor: 0, cl: -1, keepAlive: true,
			headers: []hdr{{"Connection", "Keep-Alive", KindConnection}, {"Host", "a", KindHost}},
		}},
		{"HTTP/1.0 Expect ignored", head("POST / HTTP/1.0", "Expect: 100-continue", "Content-Length: 1"), want{
			method: "POST", uri: "/", minor: 0, cl: 1, close: true,
			headers: []hdr{{"Expect", "100-continue", KindExpect}, {"Content-Length", "1", KindContentLength}},
		}},
		{"Expect 100-continue", head("POST / HTTP/1.1", "Host: a", "Expect: 100-Continue", "Content-Length: 1"), want{
			method: "POST", uri: "/", host: "a", minor: 1, cl: 1, expect: true,
			headers: []hdr{{"Host", "a", KindHost}, {"Expect", "100-Continue", KindExpect}, {"Content-Length", "1", KindContentLength}},
		}},
		{"Connection close", head("GET / HTTP/1.1", "Host: a", "Connection: close"), want{
			method: "GET", uri: "/", host: "a", minor: 1, cl: -1, close: true,
			headers: []hdr{{"Host", "a", KindHost}, {"Connection", "close", KindConnection}},
		}},
		{"Connection upgrade", head("GET /ws HTTP/1.1", "Host: a", "Connection: Upgrade", "Upgrade: websocket"), want{
			method: "GET", uri: "/ws", host: "a", minor: 1, cl: -1, upgrade: true,
			headers:   []hdr{{"Host", "a", KindHost}, {"Connection", "Upgrade", KindConnection}, {"Upgrade", "websocket", KindUpgrade}},
			notListed: []string{"Upgrade-Insecure-Requests", "Host"},
		}},
		{"Connection tokens over two fields", head("GET / HTTP/1.1", "Host: a", "Connection: keep-alive, X-Secret ,, ", "connection: x-other", "X-Secret: 1"), want{
			method: "GET", uri: "/", host: "a", minor: 1, cl: -1, keepAlive: true, tokens: true,
			headers: []hdr{
				{"Host", "a", KindHost},
				{"Connection", "keep-alive, X-Secret ,,", KindConnection},
				{"connection", "x-other", KindConnection},
				{"X-Secret", "1", KindOther},
			},
			listed:    []string{"X-Secret", "x-secret", "X-OTHER"},
			notListed: []string{"X-Secre", "X-Secret2", "keep", "Host"},
		}},
		{"Connection close and upgrade", head("GET / HTTP/1.1", "Host: a", "Connection: Upgrade,close"), want{
			method: "GET", uri: "/", host: "a", minor: 1, cl: -1, upgrade: true, close: true,
			headers:   []hdr{{"Host", "a", KindHost}, {"Connection", "Upgrade,close", KindConnection}},
			notListed: []string{"close"},
		}},
		{"leading CRLFs are not the parser's", append([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), "junk after the head"...), want{
			method: "GET", uri: "/", host: "a", minor: 1, cl: -1,
			headers: []hdr{{"Host", "a", KindHost}},
		}},
		{"absolute-form", head("GET http://Example.COM:8080/a/b?c=d HTTP/1.1", "Host: other.example"), want{
			method: "GET", uri: "/a/b?c=d", host: "Example.COM:8080", minor: 1, cl: -1,
			headers: []hdr{{"Host", "other.example", KindHost}},
		}},
		{"absolute-form https upper-case scheme", head("GET HTTPS://example.com/ HTTP/1.1", "Host: x"), want{
			method: "GET", uri: "/", host: "example.com", minor: 1, cl: -1,
			headers: []hdr{{"Host", "x", KindHost}},
		}},
		{"absolute-form without path", head("GET http://example.com HTTP/1.1", "Host: example.com"), want{
			method: "GET", uri: "/", host: "example.com", minor: 1, cl: -1,
			headers: []hdr{{"Host", "example.com", KindHost}},
		}},
		{"absolute-form IPv6 and empty port", head("GET http://[::1]:/x HTTP/1.1", "Host: [::1]"), want{
			method: "GET", uri: "/x", host: "[::1]:", minor: 1, cl: -1,
			headers: []hdr{{"Host", "[::1]", KindHost}},
		}},
		{"absolute-form IPv4-mapped IPv6", head("GET http://[::ffff:192.0.2.1]:8080/x HTTP/1.1", "Host: a"), want{
			method: "GET", uri: "/x", host: "[::ffff:192.0.2.1]:8080", minor: 1, cl: -1,
			headers: []hdr{{"Host", "a", KindHost}},
		}},
		{"absolute-form in HTTP/1.0 without Host", head("GET http://example.com/x HTTP/1.0"), want{
			method: "GET", uri: "/x", host: "example.com", minor: 0, cl: -1, close: true,
		}},
		{"OPTIONS asterisk", head("OPTIONS * HTTP/1.1", "Host: a"), want{
			method: "OPTIONS", uri: "*", host: "a", minor: 1, cl: -1,
			headers: []hdr{{"Host", "a", KindHost}},
		}},
		{"extension and lower-case methods", head("purge /x HTTP/1.1", "Host: a"), want{
			method: "purge", uri: "/x", host: "a", minor: 1, cl: -1,
			headers: []hdr{{"Host", "a", KindHost}},
		}},
		{"empty Host is allowed in 1.1", head("GET / HTTP/1.1", "Host:"), want{
			method: "GET", uri: "/", host: "", minor: 1, cl: -1,
			headers: []hdr{{"Host", "", KindHost}},
		}},
		{"Host with port and IPv6", head("GET / HTTP/1.1", "Host: [2001:db8::1]:8443"), want{
			method: "GET", uri: "/", host: "[2001:db8::1]:8443", minor: 1, cl: -1,
			headers: []hdr{{"Host", "[2001:db8::1]:8443", KindHost}},
		}},
		{"values: OWS trimmed, inner kept, obs-text and tab allowed", head("GET / HTTP/1.1", "Host: \t a \t", "X-A:b", "X-B:  two  words\t", "X-C: caf\xc3\xa9\tx", "X-Empty:", "X-Spaces:    "), want{
			method: "GET", uri: "/", host: "a", minor: 1, cl: -1,
			headers: []hdr{
				{"Host", "a", KindHost},
				{"X-A", "b", KindOther},
				{"X-B", "two  words", KindOther},
				{"X-C", "caf\xc3\xa9\tx", KindOther},
				{"X-Empty", "", KindOther},
				{"X-Spaces", "", KindOther},
			},
		}},
		{"header kinds", head("GET / HTTP/1.1", "HOST: a", "te: trailers", "Trailer: X", "Keep-Alive: 5", "Proxy-Connection: keep-alive",
			"X-Forwarded-For: 1.2.3.4", "X-Real-IP: 1.2.3.4", "X-Forwarded-Proto: https", "X-Forwarded-Host: b",
			"X-Request-ID: r", "Referer: /", "User-Agent: u", "Proxy-Authorization: p", "Proxy-Authenticate: q", "Upgrade: h2c", "Expect: x"), want{
			method: "GET", uri: "/", host: "a", minor: 1, cl: -1,
			headers: []hdr{
				{"HOST", "a", KindHost},
				{"te", "trailers", KindTE},
				{"Trailer", "X", KindTrailer},
				{"Keep-Alive", "5", KindKeepAlive},
				{"Proxy-Connection", "keep-alive", KindProxyConnection},
				{"X-Forwarded-For", "1.2.3.4", KindXForwardedFor},
				{"X-Real-IP", "1.2.3.4", KindXRealIP},
				{"X-Forwarded-Proto", "https", KindXForwardedProto},
				{"X-Forwarded-Host", "b", KindXForwardedHost},
				{"X-Request-ID", "r", KindXRequestID},
				{"Referer", "/", KindReferer},
				{"User-Agent", "u", KindUserAgent},
				{"Proxy-Authorization", "p", KindProxyAuthorization},
				{"Proxy-Authenticate", "q", KindProxyAuthenticate},
				{"Upgrade", "h2c", KindUpgrade},
				{"Expect", "x", KindExpect},
			},
		}},
	}
	var r Request
	// A large head first, so every case also checks that reuse resets r.
	big := head("POST http://x/ HTTP/1.0", "Content-Length: 5", "Connection: close, upgrade, foo", "Expect: 100-continue", "A: 1", "B: 2", "C: 3")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := ParseRequest(big, &r); err != nil {
				t.Fatalf("big head: %v", err)
			}
			if err := ParseRequest(c.head, &r); err != nil {
				t.Fatalf("ParseRequest(%q): %v", c.head, err)
			}
			w := c.want
			got := want{
				method: string(r.Method), uri: string(r.URI), host: string(r.Host), minor: r.Minor,
				headers: headersOf(&r.Fields), cl: r.ContentLength, chunked: r.Chunked,
				close: r.Close, keepAlive: r.KeepAlive, upgrade: r.Upgrade, tokens: r.ConnTokens,
				expect: r.ExpectContinue, listed: w.listed, notListed: w.notListed,
			}
			if fmt.Sprint(got) != fmt.Sprint(w) {
				t.Fatalf("ParseRequest(%q):\n got %+v\nwant %+v", c.head, got, w)
			}
			if w.host == "" && w.minor == 0 && r.Host != nil {
				t.Errorf("Host = %q, want nil when absent", r.Host)
			}
			for _, n := range w.listed {
				if !r.Listed([]byte(n)) {
					t.Errorf("Listed(%q) = false, want true", n)
				}
			}
			for _, n := range w.notListed {
				if r.Listed([]byte(n)) {
					t.Errorf("Listed(%q) = true, want false", n)
				}
			}
			if got, want := r.HasBody(), w.chunked || w.cl > 0; got != want {
				t.Errorf("HasBody() = %v, want %v", got, want)
			}
		})
	}
}

// TestParseRequestReadHeadSkipsLeadingEmptyLines: RFC 9112 2.2 lets a
// server skip empty lines before the request line (clients send a stray
// CRLF after a POST body).
func TestParseRequestReadHeadSkipsLeadingEmptyLines(t *testing.T) {
	in := "\r\n\r\n\r\nGET /a HTTP/1.1\r\nHost: a\r\n\r\n\r\nGET /b HTTP/1.1\r\nHost: b\r\n\r\n"
	rd := NewReader(strings.NewReader(in), 16, 1024)
	var r Request
	for _, want := range []string{"/a", "/b"} {
		h, err := rd.ReadHead(nil)
		if err != nil {
			t.Fatalf("ReadHead: %v", err)
		}
		if err := ParseRequest(h, &r); err != nil {
			t.Fatalf("ParseRequest(%q): %v", h, err)
		}
		if string(r.URI) != want {
			t.Fatalf("URI = %q, want %q", r.URI, want)
		}
	}
	if _, err := rd.ReadHead(nil); err != ErrEmptyHead {
		t.Fatalf("ReadHead at the end = %v, want ErrEmptyHead", err)
	}
}

func TestRequestMethods(t *testing.T) {
	cases := []struct {
		method     string
		idempotent bool
	}{
		{"GET", true}, {"HEAD", true}, {"OPTIONS", true}, {"TRACE", true}, {"PUT", true}, {"DELETE", true},
		{"POST", false}, {"PATCH", false}, {"get", false}, {"PURGE", false},
	}
	var r Request
	for _, c := range cases {
		target := "/"
		if c.method == "OPTIONS" {
			target = "*"
		}
		if err := ParseRequest(head(c.method+" "+target+" HTTP/1.1", "Host: a"), &r); err != nil {
			t.Fatalf("%s: %v", c.method, err)
		}
		if r.Idempotent() != c.idempotent {
			t.Errorf("%s: Idempotent() = %v, want %v", c.method, r.Idempotent(), c.idempotent)
		}
		if r.IsHead() != (c.method == "HEAD") {
			t.Errorf("%s: IsHead() = %v", c.method, r.IsHead())
		}
	}
}

func TestFieldsGet(t *testing.T) {
	var r Request
	if err := ParseRequest(head("GET / HTTP/1.1", "Host: a", "Content-Type: text/html", "X-Dup: 1", "x-dup: 2"), &r); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, want string }{
		{"content-type", "text/html"},
		{"Content-Type", "text/html"},
		{"CONTENT-TYPE", "text/html"},
		{"X-DUP", "1"},
		{"Host", "a"},
	} {
		if got := r.Get(c.name); string(got) != c.want {
			t.Errorf("Get(%q) = %q, want %q", c.name, got, c.want)
		}
	}
	if got := r.Get("Content-Typ"); got != nil {
		t.Errorf("Get(Content-Typ) = %q, want nil", got)
	}
}

// TestParseResponse covers status lines and the shared field rules.
func TestParseResponse(t *testing.T) {
	type want struct {
		status           int
		reason           string
		minor            int
		cl               int64
		chunked          bool
		close, keepAlive bool
		upgrade          bool
		headers          []hdr
	}
	ok := []struct {
		name string
		head []byte
		want want
	}{
		{"200 OK", head("HTTP/1.1 200 OK", "Content-Length: 3", "Content-Type: text/plain"), want{
			status: 200, reason: "OK", minor: 1, cl: 3,
			headers: []hdr{{"Content-Length", "3", KindContentLength}, {"Content-Type", "text/plain", KindOther}},
		}},
		{"no reason", head("HTTP/1.1 204"), want{status: 204, minor: 1, cl: -1}},
		{"empty reason", head("HTTP/1.1 404 "), want{status: 404, minor: 1, cl: -1}},
		{"reason with spaces, tab, obs-text", head("HTTP/1.1 500 Internal\tServer  Err\xc3\xb6r"), want{
			status: 500, reason: "Internal\tServer  Err\xc3\xb6r", minor: 1, cl: -1,
		}},
		{"chunked", head("HTTP/1.1 200 OK", "Transfer-Encoding: chunked"), want{
			status: 200, reason: "OK", minor: 1, cl: -1, chunked: true,
			headers: []hdr{{"Transfer-Encoding", "chunked", KindTransferEncoding}},
		}},
		{"1.0 closes", head("HTTP/1.0 200 OK"), want{status: 200, reason: "OK", minor: 0, cl: -1, close: true}},
		{"1.0 keep-alive", head("HTTP/1.0 200 OK", "Connection: keep-alive", "Content-Length: 0"), want{
			status: 200, reason: "OK", minor: 0, cl: 0, keepAlive: true,
			headers: []hdr{{"Connection", "keep-alive", KindConnection}, {"Content-Length", "0", KindContentLength}},
		}},
		// RFC 9112 6.1: decode it, but the framing is suspect: close after.
		{"1.0 chunked closes even with keep-alive", head("HTTP/1.0 200 OK", "Connection: keep-alive", "Transfer-Encoding: chunked"), want{
			status: 200, reason: "OK", minor: 0, cl: -1, chunked: true, keepAlive: true, close: true,
			headers: []hdr{{"Connection", "keep-alive", KindConnection}, {"Transfer-Encoding", "chunked", KindTransferEncoding}},
		}},
		{"101 upgrade", head("HTTP/1.1 101 Switching Protocols", "Connection: Upgrade", "Upgrade: websocket"), want{
			status: 101, reason: "Switching Protocols", minor: 1, cl: -1, upgrade: true,
			headers: []hdr{{"Connection", "Upgrade", KindConnection}, {"Upgrade", "websocket", KindUpgrade}},
		}},
		{"999", head("HTTP/1.1 999 Whatever"), want{status: 999, reason: "Whatever", minor: 1, cl: -1}},
		{"close", head("HTTP/1.1 200 OK", "Connection: close"), want{
			status: 200, reason: "OK", minor: 1, cl: -1, close: true,
			headers: []hdr{{"Connection", "close", KindConnection}},
		}},
	}
	var r Response
	for _, c := range ok {
		t.Run(c.name, func(t *testing.T) {
			if err := ParseResponse(c.head, &r); err != nil {
				t.Fatalf("ParseResponse(%q): %v", c.head, err)
			}
			got := want{
				status: r.Status, reason: string(r.Reason), minor: r.Minor, cl: r.ContentLength,
				chunked: r.Chunked, close: r.Close, keepAlive: r.KeepAlive, upgrade: r.Upgrade,
				headers: headersOf(&r.Fields),
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Fatalf("ParseResponse(%q):\n got %+v\nwant %+v", c.head, got, c.want)
			}
		})
	}

	bad := []struct {
		name   string
		head   []byte
		status int
	}{
		{"HTTP/2.0", head("HTTP/2.0 200 OK"), 505},
		{"HTTP/1.2", head("HTTP/1.2 200 OK"), 505},
		{"HTTP/2", head("HTTP/2 200 OK"), 400},
		{"lower-case", head("http/1.1 200 OK"), 400},
		{"two-digit status", head("HTTP/1.1 20 OK"), 400},
		{"four-digit status", head("HTTP/1.1 2000 OK"), 400},
		{"leading zero status", head("HTTP/1.1 099 OK"), 400},
		{"letters in status", head("HTTP/1.1 2x0 OK"), 400},
		{"no status", head("HTTP/1.1"), 400},
		{"double space", head("HTTP/1.1  200 OK"), 400},
		{"tab separator", head("HTTP/1.1\t200 OK"), 400},
		{"CTL in reason", head("HTTP/1.1 200 O\x01K"), 400},
		{"NUL in reason", head("HTTP/1.1 200 O\x00K"), 400},
		{"CL and TE", head("HTTP/1.1 200 OK", "Content-Length: 3", "Transfer-Encoding: chunked"), 400},
		{"duplicate CL", head("HTTP/1.1 200 OK", "Content-Length: 3", "Content-Length: 3"), 400},
		{"invalid CL", head("HTTP/1.1 200 OK", "Content-Length: -1"), 400},
		{"TE gzip, chunked", head("HTTP/1.1 200 OK", "Transfer-Encoding: gzip, chunked"), 501},
		{"TE identity", head("HTTP/1.1 200 OK", "Transfer-Encoding: identity"), 501},
		{"TE twice", head("HTTP/1.1 200 OK", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"), 400},
		{"obs-fold", head("HTTP/1.1 200 OK", "X-A: b", " c"), 400},
		{"space before colon", head("HTTP/1.1 200 OK", "X-A : b"), 400},
		{"NUL in value", head("HTTP/1.1 200 OK", "X-A: \x00"), 400},
		{"bare LF", []byte("HTTP/1.1 200 OK\nX-A: b\r\n\r\n"), 400},
		{"no empty line", []byte("HTTP/1.1 200 OK\r\n"), 400},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			err := ParseResponse(c.head, &r)
			if err == nil {
				t.Fatalf("ParseResponse(%q) accepted it", c.head)
			}
			if got := StatusFor(err); got != c.status || !isWireError(err) {
				t.Fatalf("ParseResponse(%q) = %v (status %d), want an *Error with %d", c.head, err, got, c.status)
			}
		})
	}
}

func TestResponseBodyAllowed(t *testing.T) {
	cases := []struct {
		status int
		head   bool
		want   bool
	}{
		{100, false, false}, {101, false, false}, {199, false, false},
		{200, false, true}, {200, true, false}, {204, false, false}, {205, false, true},
		{304, false, false}, {404, false, true}, {404, true, false}, {500, false, true},
	}
	for _, c := range cases {
		r := Response{Status: c.status}
		if got := r.BodyAllowed(c.head); got != c.want {
			t.Errorf("BodyAllowed(status %d, head %v) = %v, want %v", c.status, c.head, got, c.want)
		}
	}
}

func TestStatusFor(t *testing.T) {
	cases := []struct {
		err  error
		want int
	}{
		{&Error{Status: 501, Reason: "x"}, 501},
		{fmt.Errorf("client 1.2.3.4: %w", &Error{Status: 505, Reason: "x"}), 505},
		{ErrHeadTooLarge, 431},
		{fmt.Errorf("reading head: %w", ErrHeadTooLarge), 431},
		{ErrBareLF, 400},
		{io.ErrUnexpectedEOF, 400},
		{errBadChunk, 400},
	}
	for _, c := range cases {
		if got := StatusFor(c.err); got != c.want {
			t.Errorf("StatusFor(%v) = %d, want %d", c.err, got, c.want)
		}
	}
	if s := (&Error{Status: 400, Reason: "duplicate Host header"}).Error(); s != "400: duplicate Host header" {
		t.Errorf("Error() = %q", s)
	}
}

func TestKindOf(t *testing.T) {
	cases := []struct {
		name string
		kind Kind
		hop  bool
	}{
		{"Host", KindHost, false}, {"hOsT", KindHost, false},
		{"Content-Length", KindContentLength, false},
		{"TRANSFER-ENCODING", KindTransferEncoding, true},
		{"Connection", KindConnection, true}, {"Keep-Alive", KindKeepAlive, true},
		{"Proxy-Connection", KindProxyConnection, true}, {"TE", KindTE, true},
		{"Trailer", KindTrailer, true}, {"Upgrade", KindUpgrade, true},
		{"Proxy-Authenticate", KindProxyAuthenticate, true}, {"Proxy-Authorization", KindProxyAuthorization, true},
		{"Expect", KindExpect, false}, {"X-Forwarded-For", KindXForwardedFor, false},
		{"X-Real-Ip", KindXRealIP, false}, {"X-Forwarded-Proto", KindXForwardedProto, false},
		{"X-Forwarded-Host", KindXForwardedHost, false}, {"X-Request-Id", KindXRequestID, false},
		{"Referer", KindReferer, false}, {"User-Agent", KindUserAgent, false},
		{"Hostx", KindOther, false}, {"Content-Lengt", KindOther, false}, {"Content_Length", KindUnderscored, false}, {"X_Forwarded_For", KindUnderscored, false},
		{"Te-", KindOther, false}, {"", KindOther, false}, {"Authorization", KindOther, false},
	}
	for _, c := range cases {
		k := KindOf([]byte(c.name))
		if k != c.kind {
			t.Errorf("KindOf(%q) = %d, want %d", c.name, k, c.kind)
		}
		if k.HopByHop() != c.hop {
			t.Errorf("KindOf(%q).HopByHop() = %v, want %v", c.name, k.HopByHop(), c.hop)
		}
	}
}

// typicalRequest is a browser-like request head, the hot path's input.
var typicalRequest = head(
	"GET /assets/app.js?v=3 HTTP/1.1",
	"Host: shop.example.com",
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
	"Accept: */*",
	"Accept-Language: en-US,en;q=0.5",
	"Accept-Encoding: gzip, deflate, br",
	"Referer: https://shop.example.com/",
	"Connection: keep-alive",
	"Cookie: session=0123456789abcdef; theme=dark",
	"X-Forwarded-For: 203.0.113.7",
)

var typicalResponse = head(
	"HTTP/1.1 200 OK",
	"Content-Type: application/javascript",
	"Content-Length: 1024",
	"Cache-Control: max-age=3600",
	"Date: Tue, 01 Jul 2025 10:00:00 GMT",
	"Server: app",
)

// TestParseAllocs holds the hot path to zero allocations per message once
// the Request's header slice has grown.
func TestParseAllocs(t *testing.T) {
	var req Request
	var resp Response
	abs := head("POST http://shop.example.com HTTP/1.1", "Host: shop.example.com", "Transfer-Encoding: chunked", "Expect: 100-continue")
	cases := []struct {
		name string
		fn   func() error
	}{
		{"ParseRequest", func() error { return ParseRequest(typicalRequest, &req) }},
		{"ParseRequest absolute-form", func() error { return ParseRequest(abs, &req) }},
		{"ParseResponse", func() error { return ParseResponse(typicalResponse, &resp) }},
	}
	for _, c := range cases {
		if err := c.fn(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var err error
		if n := testing.AllocsPerRun(100, func() { err = c.fn() }); n != 0 || err != nil {
			t.Errorf("%s: %v allocations per run (err %v), want 0", c.name, n, err)
		}
	}

	// ReadHead and ParseRequest together, over a reused Reader.
	src := bytes.NewReader(typicalRequest)
	rd := NewReader(src, 4096, 8192)
	n := testing.AllocsPerRun(100, func() {
		src.Reset(typicalRequest)
		rd.Reset(src)
		h, err := rd.ReadHead(nil)
		if err == nil {
			err = ParseRequest(h, &req)
		}
		if err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Errorf("ReadHead+ParseRequest: %v allocations per run, want 0", n)
	}
}

func BenchmarkParseRequest(b *testing.B) {
	var r Request
	b.ReportAllocs()
	b.SetBytes(int64(len(typicalRequest)))
	for b.Loop() {
		if err := ParseRequest(typicalRequest, &r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseResponse(b *testing.B) {
	var r Response
	b.ReportAllocs()
	b.SetBytes(int64(len(typicalResponse)))
	for b.Loop() {
		if err := ParseResponse(typicalResponse, &r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadHeadParseRequest is the whole per-request head cost: finding
// the head in the connection's buffer and parsing it.
func BenchmarkReadHeadParseRequest(b *testing.B) {
	var r Request
	src := bytes.NewReader(typicalRequest)
	rd := NewReader(src, 4096, 8192)
	b.ReportAllocs()
	b.SetBytes(int64(len(typicalRequest)))
	for b.Loop() {
		src.Reset(typicalRequest)
		rd.Reset(src)
		h, err := rd.ReadHead(nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := ParseRequest(h, &r); err != nil {
			b.Fatal(err)
		}
	}
}

// TestValidIPv6 holds the absolute-form IPv6 literal check to what
// net/netip parses (zones aside, which cutover refuses): a table, then
// random strings over the literal's alphabet.
func TestValidIPv6(t *testing.T) {
	for _, c := range []struct {
		s    string
		want bool
	}{
		{"::", true}, {"::1", true}, {"1::", true}, {"2001:db8::1", true}, {"1:2:3:4:5:6:7:8", true},
		{"::ffff:192.0.2.1", true}, {"1:2:3:4:5:6:1.2.3.4", true}, {"fe80::1:2", true},
		{"", false}, {":", false}, {":::", false}, {"1::2::3", false}, {"1:2:3:4:5:6:7", false},
		{"1:2:3:4:5:6:7:8:9", false}, {"1:2:3:4:5:6:7::8", false}, {"12345::", false}, {"1:", false},
		{":1", false}, {"1.2.3.4", false}, {"::1.2.3", false}, {"::1.2.3.256", false}, {"::01.2.3.4", false},
		{"::1.2.3.4.5", false}, {"g::", false}, {"fe80::1%25eth0", false}, {"v1.x", false},
	} {
		if got := validIPv6([]byte(c.s)); got != c.want {
			t.Errorf("validIPv6(%q) = %v, want %v", c.s, got, c.want)
		}
	}
	// Random literals built from plausible pieces, so that many are valid.
	rng := rand.New(rand.NewPCG(9, 10))
	pieces := []string{"0", "1", "ff", "abcd", "ABCD", "12345", "g", ":", ":", "::", ".", "1.2.3.4", "255", "256", "01"}
	valid := 0
	for range 300_000 {
		var b []byte
		for range rng.IntN(12) {
			b = append(b, pieces[rng.IntN(len(pieces))]...)
		}
		a, err := netip.ParseAddr(string(b))
		want := err == nil && a.Is6()
		if got := validIPv6(b); got != want {
			t.Fatalf("validIPv6(%q) = %v, net/netip says %v (%v)", b, got, want, err)
		}
		if want {
			valid++
		}
	}
	if valid < 1000 {
		t.Fatalf("only %d valid literals generated: the comparison proves little", valid)
	}
}
