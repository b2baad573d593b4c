package wire

import (
	"strings"
	"testing"
)

// TestRequestBuilderAgreesWithParseRequest: a request assembled from parts
// (as from HTTP/2) is refused exactly when the same request as HTTP/1.1
// text is, with the same status, and otherwise comes out the same.
func TestRequestBuilderAgreesWithParseRequest(t *testing.T) {
	type part struct{ name, value string }
	cases := []struct {
		name                 string
		method, target, host string
		fields               []part
	}{
		{name: "plain GET", method: "GET", target: "/a?b=c", host: "example.com"},
		{name: "POST with length", method: "POST", target: "/", host: "example.com", fields: []part{{"Content-Length", "5"}, {"X-A", " v "}}},
		{name: "space in method", method: "GET /admin?", target: "/public", host: "example.com"},
		{name: "space in target", method: "GET", target: "/a b", host: "example.com"},
		{name: "tab in target", method: "GET", target: "/a\tb", host: "example.com"},
		{name: "bad percent-escape", method: "GET", target: "/%zz", host: "example.com"},
		{name: "asterisk with GET", method: "GET", target: "*", host: "example.com"},
		{name: "asterisk with OPTIONS", method: "OPTIONS", target: "*", host: "example.com"},
		{name: "CONNECT", method: "CONNECT", target: "example.com:443", host: "example.com:443"},
		{name: "absolute-form", method: "GET", target: "http://other.example/x", host: "example.com"},
		{name: "no host", method: "GET", target: "/"},
		{name: "bad host", method: "GET", target: "/", host: "a b"},
		{name: "content-length plus", method: "POST", target: "/", host: "example.com", fields: []part{{"Content-Length", "+5"}}},
		{name: "two content-lengths", method: "POST", target: "/", host: "example.com", fields: []part{{"Content-Length", "5"}, {"Content-Length", "6"}}},
		{name: "two equal content-lengths", method: "POST", target: "/", host: "example.com", fields: []part{{"Content-Length", "5"}, {"Content-Length", "5"}}},
		{name: "length and chunked", method: "POST", target: "/", host: "example.com", fields: []part{{"Content-Length", "5"}, {"Transfer-Encoding", "chunked"}}},
		{name: "gzip coding", method: "POST", target: "/", host: "example.com", fields: []part{{"Transfer-Encoding", "gzip"}}},
		{name: "bad field name", method: "GET", target: "/", host: "example.com", fields: []part{{"a b", "v"}}},
		{name: "control in value", method: "GET", target: "/", host: "example.com", fields: []part{{"X-A", "a\x01b"}}},
		{name: "expect continue", method: "POST", target: "/", host: "example.com", fields: []part{{"Expect", "100-continue"}, {"Content-Length", "1"}}},
		{name: "host field too", method: "GET", target: "/", host: "example.com", fields: []part{{"Host", "example.com"}}},
		{name: "head too large", method: "GET", target: "/", host: "example.com", fields: []part{{"X-Big", strings.Repeat("a", 600)}}},
	}
	const maxHead = 512
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			lines := []string{c.method + " " + c.target + " HTTP/1.1"}
			if c.host != "" {
				lines = append(lines, "Host: "+c.host)
			}
			var b RequestBuilder
			var built Request
			b.Start(&built, []byte(c.method), []byte(c.target), []byte(c.host))
			for _, f := range c.fields {
				lines = append(lines, f.name+": "+f.value)
				b.Add([]byte(f.name), []byte(f.value))
			}
			buildErr := b.Finish(maxHead)

			text := head(lines...)
			var parsed Request
			parseErr := ParseRequest(text, &parsed)
			if len(text) > maxHead {
				parseErr = ErrHeadTooLarge // what a Reader with this max says
			}
			if statusOf(buildErr) != statusOf(parseErr) {
				t.Fatalf("built: %v; parsed as text: %v", buildErr, parseErr)
			}
			if parseErr != nil {
				return
			}
			// The host is a field of the text but a part of the built request.
			hostFields := 0
			if c.host != "" {
				hostFields = 1
			}
			if string(built.Method) != string(parsed.Method) || string(built.URI) != string(parsed.URI) ||
				string(built.Host) != string(parsed.Host) || built.ContentLength != parsed.ContentLength ||
				built.Chunked != parsed.Chunked || built.ExpectContinue != parsed.ExpectContinue ||
				len(built.Headers) != len(parsed.Headers)-hostFields {
				t.Fatalf("built %q %q host %q length %d chunked %v continue %v, %d fields; parsed %q %q host %q length %d chunked %v continue %v, %d fields",
					built.Method, built.URI, built.Host, built.ContentLength, built.Chunked, built.ExpectContinue, len(built.Headers),
					parsed.Method, parsed.URI, parsed.Host, parsed.ContentLength, parsed.Chunked, parsed.ExpectContinue, len(parsed.Headers)-hostFields)
			}
		})
	}
}

// FuzzRequestBuilder: whatever the builder accepts, written as HTTP/1.1
// text (as the proxy forwards it), parses back as the same request. So no
// part of an HTTP/2 request can change the meaning of the request line or
// the head it is forwarded in.
func FuzzRequestBuilder(f *testing.F) {
	f.Add("GET", "/a?b", "example.com", "X-A", "v")
	f.Add("GET /admin?", "/public", "example.com", "X-A", "v")
	f.Add("POST", "/a b", "h", "Content-Length", "+5")
	f.Add("OPTIONS", "*", "h:80", "Expect", "100-continue")
	f.Add("GET", "http://h/x", "other", "Host", "h")
	f.Add("GET", "/", "h", "Transfer-Encoding", "chunked")
	f.Fuzz(func(t *testing.T, method, target, host, name, value string) {
		var b RequestBuilder
		var built Request
		b.Start(&built, []byte(method), []byte(target), []byte(host))
		b.Add([]byte(name), []byte(value))
		if b.Finish(1<<20) != nil {
			return
		}
		text := method + " " + target + " HTTP/1.1\r\n"
		if host != "" {
			text += "Host: " + host + "\r\n"
		}
		text += name + ": " + value + "\r\n\r\n"
		var parsed Request
		if err := ParseRequest([]byte(text), &parsed); err != nil {
			t.Fatalf("built %q %q %q %q: %q, but its text %q does not parse: %v", method, target, host, name, value, text, err)
		}
		if string(built.Method) != string(parsed.Method) || string(built.URI) != string(parsed.URI) ||
			string(built.Host) != string(parsed.Host) || built.ContentLength != parsed.ContentLength ||
			built.Chunked != parsed.Chunked {
			t.Fatalf("built %q %q host %q length %d chunked %v; its text %q parses as %q %q host %q length %d chunked %v",
				built.Method, built.URI, built.Host, built.ContentLength, built.Chunked, text,
				parsed.Method, parsed.URI, parsed.Host, parsed.ContentLength, parsed.Chunked)
		}
	})
}
