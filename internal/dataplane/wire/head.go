package wire

import (
	"bytes"
	"errors"
	"fmt"
)

// Error is a malformed message, with the status a server answers it with.
type Error struct {
	Status int
	Reason string
}

func (e *Error) Error() string { return fmt.Sprintf("%d: %s", e.Status, e.Reason) }

func bad(reason string) error { return &Error{Status: 400, Reason: reason} }

// StatusFor is the HTTP status a server answers a head-reading error with.
// It looks through wrapping, so a caller may add context with %w.
func StatusFor(err error) int {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e.Status
	case errors.Is(err, ErrHeadTooLarge):
		return 431
	}
	return 400
}

// Kind classifies a header field name once at parse time, so forwarding
// decisions need no further string comparisons.
type Kind uint8

// Header kinds. KindOther is any field cutover forwards untouched.
const (
	KindOther Kind = iota
	KindHost
	KindContentLength
	KindTransferEncoding
	KindConnection
	KindKeepAlive
	KindProxyConnection
	KindTE
	KindTrailer
	KindUpgrade
	KindExpect
	KindXForwardedFor
	KindXRealIP
	KindXForwardedProto
	KindXForwardedHost
	KindXRequestID
	KindReferer
	KindUserAgent
	KindProxyAuthenticate
	KindProxyAuthorization
	// KindUnderscored is a name with an underscore. Such fields are not
	// forwarded (nginx's underscores_in_headers off): CGI-style backends,
	// Django among them, map "_" and "-" to the same variable, so a client
	// could send X_Forwarded_For to override the X-Forwarded-For the proxy
	// sets.
	KindUnderscored
)

// HopByHop reports whether a field of this kind applies to one connection
// only and must not be forwarded (RFC 9110 section 7.6.1).
func (k Kind) HopByHop() bool {
	switch k {
	case KindConnection, KindKeepAlive, KindProxyConnection, KindTE, KindTrailer,
		KindTransferEncoding, KindUpgrade, KindProxyAuthenticate, KindProxyAuthorization:
		return true
	}
	return false
}

// Header is one header field; Name and Value point into the head buffer.
// Value has surrounding whitespace removed.
type Header struct {
	Name, Value []byte
	Kind        Kind
}

// Fields is what request and response heads share.
type Fields struct {
	Minor   int // HTTP/1.Minor: 0 or 1
	Headers []Header
	// ContentLength is the body length, or -1 when the head gives none.
	ContentLength int64
	Chunked       bool
	// Close: the sender will close, or asks to close, after this message.
	Close bool
	// KeepAlive: an HTTP/1.0 sender asked to keep the connection.
	KeepAlive bool
	// Upgrade: "upgrade" is among the Connection tokens.
	Upgrade bool
	// ConnTokens: Connection names fields other than close/keep-alive/upgrade,
	// which are then hop-by-hop too (see Listed).
	ConnTokens bool
}

// Request is a parsed request head.
type Request struct {
	Fields
	Method []byte
	URI    []byte
	Host   []byte
	// ExpectContinue: the client waits for 100 Continue before its body.
	ExpectContinue bool
}

// Response is a parsed response head.
type Response struct {
	Fields
	Status int
	Reason []byte
}

func (f *Fields) reset() {
	f.Minor = 1
	f.Headers = f.Headers[:0]
	f.ContentLength = -1
	f.Chunked = false
	f.Close = false
	f.KeepAlive = false
	f.Upgrade = false
	f.ConnTokens = false
}

// Get returns the first value of the named field; name is matched ASCII
// case-insensitively, whatever its case.
func (f *Fields) Get(name string) []byte {
	for i := range f.Headers {
		if equalFoldString(f.Headers[i].Name, name) {
			return f.Headers[i].Value
		}
	}
	return nil
}

// Listed reports whether name is one of the tokens of a Connection field,
// which makes the field hop-by-hop.
func (f *Fields) Listed(name []byte) bool {
	if !f.ConnTokens {
		return false
	}
	for i := range f.Headers {
		if f.Headers[i].Kind != KindConnection {
			continue
		}
		v := f.Headers[i].Value
		for len(v) > 0 {
			var tok []byte
			tok, v = nextToken(v)
			if len(tok) == len(name) && equalFoldBytes(tok, name) {
				return true
			}
		}
	}
	return false
}

// HasBody reports whether a request with this head carries a body.
func (r *Request) HasBody() bool { return r.Chunked || r.ContentLength > 0 }

// Idempotent reports whether the method may be sent twice (RFC 9110 9.2.2).
func (r *Request) Idempotent() bool {
	switch string(r.Method) {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

// IsHead reports whether the method is HEAD (whose responses have no body).
func (r *Request) IsHead() bool { return string(r.Method) == "HEAD" }

// ParseRequest parses a request head as returned by Reader.ReadHead into r,
// reusing r's header slice. Fields of r point into head. Bytes after the
// empty line that ends the head are not looked at.
//
// Rules (each violation is an *Error with the status a server answers):
// every line ends in CRLF and the head ends in an empty line (400); the
// request line is METHOD SP TARGET SP HTTP/1.0|1.1 with single spaces
// (other versions 505, a malformed version 400); the method is a token; the
// target has no control characters or spaces, its path has only well-formed
// %XX escapes, and it is origin-form ("/..."), absolute-form
// ("http://host[:port]/..."), or "*" for OPTIONS (400); CONNECT is 405;
// header names are tokens followed directly by a colon (whitespace before
// the colon 400); no obs-fold continuation lines (400); no control
// characters other than tab in values (400); Content-Length is digits only
// and appears once (400); Transfer-Encoding appears once and is exactly
// "chunked" (other codings 501), is never in an HTTP/1.0 request (400) and
// never together with Content-Length (400); an HTTP/1.1 request has exactly
// one Host, and any Host holds only host and port characters (400).
//
// Where this differs from nginx or net/http, on purpose: HTTP/1.2 is 505
// (both treat it as 1.1); a bare LF is refused (both accept LF-only lines);
// duplicate identical Content-Length fields are refused (net/http merges
// them); "OPTIONS *" is accepted (nginx refuses it); an empty Host is
// accepted as RFC 9112 3.2 allows (nginx refuses it); an absolute-form
// target needs a path before any query ("http://h?q" is refused).
func ParseRequest(head []byte, r *Request) error {
	r.reset()
	r.Method, r.URI, r.Host = nil, nil, nil
	r.ExpectContinue = false

	line, rest, ok := cutLine(head)
	if !ok {
		return bad("request line does not end in CRLF")
	}
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 {
		return bad("malformed request line")
	}
	r.Method = line[:sp]
	if err := checkMethod(r.Method); err != nil {
		return err
	}
	line = line[sp+1:]
	sp = bytes.IndexByte(line, ' ')
	if sp <= 0 {
		return bad("malformed request line")
	}
	r.URI = line[:sp]
	if err := checkTarget(r.URI); err != nil {
		return err
	}
	minor, err := parseVersion(line[sp+1:])
	if err != nil {
		return err
	}
	r.Minor = minor
	if err := r.checkForm(); err != nil {
		return err
	}
	hosts := hostRule{fromURI: r.Host != nil}
	if err := parseFields(rest, &r.Fields, true, func(h *Header) error {
		return r.requestField(h, &hosts)
	}); err != nil {
		return err
	}
	return r.finishRequest(&hosts)
}

// The request rules, one function each, shared by ParseRequest and
// RequestBuilder.

func checkMethod(m []byte) error {
	if !isToken(m) {
		return bad("invalid method")
	}
	return nil
}

// checkForm refuses CONNECT and checks the target's form: origin-form,
// "*" for OPTIONS only, or absolute-form, which it splits into Host and an
// origin-form URI.
func (r *Request) checkForm() error {
	if string(r.Method) == "CONNECT" {
		return &Error{Status: 405, Reason: "CONNECT is not supported"}
	}
	switch {
	case r.URI[0] == '/':
	case len(r.URI) == 1 && r.URI[0] == '*':
		// Asterisk-form is for a server-wide OPTIONS only (RFC 9112 3.2.4).
		if string(r.Method) != "OPTIONS" {
			return bad("request target * with a method other than OPTIONS")
		}
	default:
		return r.absoluteForm()
	}
	return nil
}

// hostRule follows the Host fields of one request.
type hostRule struct {
	n int
	// fromURI: the host came with an absolute-form target and wins over
	// any Host field.
	fromURI bool
}

// requestField applies the request-only rules to one field, after the
// rules every field meets (fieldRules.add).
func (r *Request) requestField(h *Header, hosts *hostRule) error {
	switch h.Kind {
	case KindHost:
		hosts.n++
		if hosts.n > 1 {
			return bad("duplicate Host header")
		}
		if !validHost(h.Value) {
			return bad("invalid Host header")
		}
		if !hosts.fromURI {
			r.Host = h.Value
		}
	case KindExpect:
		// HTTP/1.0 clients know no 100 Continue (RFC 9110 10.1.1).
		if r.Minor == 1 && equalFold(h.Value, "100-continue") {
			r.ExpectContinue = true
		}
	}
	return nil
}

// finishRequest applies the rules that need the whole head.
func (r *Request) finishRequest(hosts *hostRule) error {
	if r.Minor == 1 && hosts.n == 0 {
		return bad("HTTP/1.1 request without Host header")
	}
	if r.Minor == 0 && !r.KeepAlive {
		r.Close = true
	}
	return nil
}

// checkTarget rejects a request target with spaces or control characters,
// or a path (the part before '?') with a '%' not followed by two hex
// digits, which nginx and net/http reject as well.
func checkTarget(u []byte) error {
	inPath := true
	for i := 0; i < len(u); i++ {
		c := u[i]
		switch {
		case c <= ' ' || c == 0x7f:
			return bad("invalid character in request target")
		case c == '?':
			inPath = false
		case c == '%' && inPath:
			if i+2 >= len(u) || !isHex(u[i+1]) || !isHex(u[i+2]) {
				return bad("invalid percent-encoding in request target")
			}
		}
	}
	return nil
}

// absoluteForm splits an absolute-form target ("http://host/path") into
// Host and an origin-form URI, as RFC 9112 section 3.2.2 requires of a
// server that receives one.
func (r *Request) absoluteForm() error {
	u := r.URI
	var rest []byte
	switch {
	case hasPrefixFold(u, "http://"):
		rest = u[len("http://"):]
	case hasPrefixFold(u, "https://"):
		rest = u[len("https://"):]
	default:
		return bad("invalid request target")
	}
	slash := bytes.IndexAny(rest, "/?")
	authority := rest
	// A target without a path means "/": take it from the scheme's "//",
	// which needs no allocation.
	path := u[len(u)-len(rest)-1 : len(u)-len(rest)]
	if slash >= 0 {
		authority = rest[:slash]
		path = rest[slash:]
		if path[0] == '?' {
			// "http://h?q" would need a "/" inserted before the query,
			// which cannot be done in place; such targets are rare enough
			// to refuse.
			return bad("absolute-form target without a path")
		}
	}
	if !validAuthority(authority) {
		return bad("invalid authority in request target")
	}
	r.Host = authority
	r.URI = path
	return nil
}

// ParseResponse parses a response head into r. The rules are those of
// ParseRequest where they apply; a response violating them is treated by the
// proxy as a failed upstream (502), never relayed. An HTTP/1.0 response with
// Transfer-Encoding is decoded as chunked but marked Close, as RFC 9112
// section 6.1 requires.
func ParseResponse(head []byte, r *Response) error {
	r.reset()
	r.Status = 0
	r.Reason = nil
	line, rest, ok := cutLine(head)
	if !ok {
		return bad("status line does not end in CRLF")
	}
	if len(line) < 12 || line[8] != ' ' {
		return bad("malformed status line")
	}
	minor, err := parseVersion(line[:8])
	if err != nil {
		return err
	}
	r.Minor = minor
	code := line[9:12]
	if !isDigit(code[0]) || !isDigit(code[1]) || !isDigit(code[2]) || code[0] == '0' {
		return bad("malformed status code")
	}
	r.Status = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	if len(line) > 12 {
		if line[12] != ' ' {
			return bad("malformed status line")
		}
		r.Reason = line[13:]
		for _, c := range r.Reason {
			if c < ' ' && c != '\t' || c == 0x7f {
				return bad("invalid character in reason phrase")
			}
		}
	}
	if err := parseFields(rest, &r.Fields, false, nil); err != nil {
		return err
	}
	if r.Minor == 0 && (!r.KeepAlive || r.Chunked) {
		r.Close = true
	}
	return nil
}

// BodyAllowed reports whether a response with this status to a request with
// this method has a body (RFC 9110 section 6.4.1).
func (r *Response) BodyAllowed(head bool) bool {
	if head || r.Status < 200 || r.Status == 204 || r.Status == 304 {
		return false
	}
	return true
}

// parseFields parses header lines (each ending in CRLF, the last being the
// empty line) into f, whose Minor is already set. request selects the rules
// for a request. each is called for every field after the framing fields
// are interpreted.
func parseFields(rest []byte, f *Fields, request bool, each func(*Header) error) error {
	var rules fieldRules
	for {
		line, next, ok := cutLine(rest)
		if !ok {
			return bad("header line does not end in CRLF, or no empty line ends the head")
		}
		rest = next
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return bad("obsolete line folding in header")
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return bad("header line without a colon")
		}
		h, err := rules.add(f, line[:colon], trimOWS(line[colon+1:]), request)
		if err != nil {
			return err
		}
		if each != nil {
			if err := each(h); err != nil {
				return err
			}
		}
	}
	return rules.end()
}

// fieldRules applies the rules every header field meets, and follows the
// framing fields across one head for the rules that span fields.
type fieldRules struct {
	sawCL, sawTE bool
}

// add checks a field whose value has surrounding whitespace removed,
// appends it to f and interprets the framing and Connection fields.
func (fr *fieldRules) add(f *Fields, name, value []byte, request bool) (*Header, error) {
	if !isToken(name) {
		// This also catches whitespace before the colon.
		return nil, bad("invalid header name")
	}
	for _, c := range value {
		if c < ' ' && c != '\t' || c == 0x7f {
			return nil, bad("invalid character in header value")
		}
	}
	f.Headers = append(f.Headers, Header{Name: name, Value: value, Kind: KindOf(name)})
	h := &f.Headers[len(f.Headers)-1]
	switch h.Kind {
	case KindContentLength:
		if fr.sawCL {
			return nil, bad("duplicate Content-Length header")
		}
		fr.sawCL = true
		n, ok := parseContentLength(value)
		if !ok {
			return nil, bad("invalid Content-Length header")
		}
		f.ContentLength = n
	case KindTransferEncoding:
		if request && f.Minor == 0 {
			// As nginx: an HTTP/1.0 client cannot mean it, whatever
			// the coding, and a 1.0 hop before us may have ignored it.
			return nil, bad("Transfer-Encoding in an HTTP/1.0 request")
		}
		if fr.sawTE {
			return nil, bad("duplicate Transfer-Encoding header")
		}
		fr.sawTE = true
		if !equalFold(value, "chunked") {
			return nil, &Error{Status: 501, Reason: "unsupported Transfer-Encoding"}
		}
		f.Chunked = true
	case KindConnection:
		v := value
		for len(v) > 0 {
			var tok []byte
			tok, v = nextToken(v)
			switch {
			case len(tok) == 0:
			case equalFold(tok, "close"):
				f.Close = true
			case equalFold(tok, "keep-alive"):
				f.KeepAlive = true
			case equalFold(tok, "upgrade"):
				f.Upgrade = true
			default:
				f.ConnTokens = true
			}
		}
	}
	return h, nil
}

// end applies the rules that need all of a head's fields.
func (fr *fieldRules) end() error {
	if fr.sawCL && fr.sawTE {
		return bad("both Content-Length and Transfer-Encoding")
	}
	return nil
}

func parseVersion(v []byte) (int, error) {
	if len(v) != 8 || string(v[:5]) != "HTTP/" || !isDigit(v[5]) || v[6] != '.' || !isDigit(v[7]) {
		return 0, bad("malformed HTTP version")
	}
	if v[5] != '1' || v[7] > '1' {
		return 0, &Error{Status: 505, Reason: "HTTP version not supported"}
	}
	return int(v[7] - '0'), nil
}

func parseContentLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// cutLine splits off the first line. ok is false when there is no line end
// or the line ends in a bare LF: ReadHead never returns such a head, but
// heads may come from elsewhere and a lenient split here would let a bare LF
// be read differently by the next hop.
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i <= 0 || b[i-1] != '\r' {
		return nil, nil, false
	}
	return b[:i-1], b[i+1:], true
}

// nextToken returns the next comma-separated element of a list field.
func nextToken(v []byte) (tok, rest []byte) {
	i := bytes.IndexByte(v, ',')
	if i < 0 {
		return trimOWS(v), nil
	}
	return trimOWS(v[:i]), v[i+1:]
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// tchar from RFC 9110 section 5.6.2, as a table for the hot path.
var tcharTable = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tcharTable[c] {
			return false
		}
	}
	return true
}

// validHost accepts what RFC 3986's host [":" port] allows, which rules out
// the characters used to smuggle a different target through Host.
func validHost(h []byte) bool {
	for _, c := range h {
		if !hostChar(c) && c != ':' && c != '[' && c != ']' && c != '%' {
			return false
		}
	}
	return true
}

// hostChar reports whether c may appear in a reg-name (RFC 3986 3.2.2)
// other than in a percent-escape.
func hostChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	case c == '-' || c == '.' || c == '_' || c == '~':
		return true
	case c == '!' || c == '$' || c == '&' || c == '\'' || c == '(' || c == ')' || c == '*' || c == '+' || c == ',' || c == ';' || c == '=':
		return true
	}
	return false
}

// validIPv6 reports whether s is an IPv6 address in RFC 4291 text form:
// eight groups of one to four hex digits, at most one "::" standing for
// one or more zero groups, and optionally a dotted IPv4 address as the last
// two groups. Zones and IPvFuture literals are refused.
func validIPv6(s []byte) bool {
	groups, ellipsis := 0, false
	if len(s) >= 2 && s[0] == ':' && s[1] == ':' {
		ellipsis, s = true, s[2:]
	}
	for len(s) > 0 {
		n := 0
		for n < len(s) && isHex(s[n]) {
			n++
		}
		if n < len(s) && s[n] == '.' {
			if !validIPv4(s) {
				return false
			}
			groups += 2
			break
		}
		if n == 0 || n > 4 {
			return false
		}
		groups++
		s = s[n:]
		if len(s) == 0 {
			break
		}
		if s[0] != ':' || len(s) == 1 {
			return false // not a separator, or a single trailing colon
		}
		s = s[1:]
		if s[0] == ':' {
			if ellipsis {
				return false
			}
			ellipsis, s = true, s[1:]
		}
	}
	if ellipsis {
		return groups < 8
	}
	return groups == 8
}

// validIPv4 reports whether s is a dotted-quad IPv4 address with no
// leading zeros (which some parsers read as octal).
func validIPv4(s []byte) bool {
	for field := 0; field < 4; field++ {
		if field > 0 {
			if len(s) == 0 || s[0] != '.' {
				return false
			}
			s = s[1:]
		}
		n, v := 0, 0
		for n < len(s) && n < 4 && isDigit(s[n]) {
			v = v*10 + int(s[n]-'0')
			n++
		}
		if n == 0 || n > 3 || v > 255 || n > 1 && s[0] == '0' {
			return false
		}
		s = s[n:]
	}
	return len(s) == 0
}

// validAuthority checks the authority of an absolute-form target more
// closely than validHost checks a Host field, because it replaces Host:
// a non-empty reg-name or a bracketed IPv6 literal, then an optional
// ":port" of digits; no userinfo, no percent-escapes.
func validAuthority(a []byte) bool {
	if len(a) == 0 {
		return false
	}
	host, port := a, []byte(nil)
	if a[0] == '[' {
		end := bytes.IndexByte(a, ']')
		if end < 0 || !validIPv6(a[1:end]) {
			return false
		}
		host, port = nil, a[end+1:]
	} else if i := bytes.IndexByte(a, ':'); i >= 0 {
		host, port = a[:i], a[i:]
		if i == 0 {
			return false
		}
	}
	for _, c := range host {
		if !hostChar(c) {
			return false
		}
	}
	if len(port) > 0 {
		if port[0] != ':' {
			return false
		}
		for _, c := range port[1:] {
			if !isDigit(c) {
				return false
			}
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// equalFold compares b with a lower-case ASCII string, ignoring case in b.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		if lower(b[i]) != s[i] {
			return false
		}
	}
	return true
}

// equalFoldString compares b with s ignoring ASCII case in both.
func equalFoldString(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		if lower(b[i]) != lower(s[i]) {
			return false
		}
	}
	return true
}

func equalFoldBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}

func hasPrefixFold(b []byte, s string) bool {
	return len(b) >= len(s) && equalFold(b[:len(s)], s)
}

// KindOf classifies a header name, switching on length first so most names
// are settled by one comparison.
func KindOf(n []byte) Kind {
	switch len(n) {
	case 2:
		if equalFold(n, "te") {
			return KindTE
		}
	case 4:
		if equalFold(n, "host") {
			return KindHost
		}
	case 6:
		if equalFold(n, "expect") {
			return KindExpect
		}
	case 7:
		if equalFold(n, "upgrade") {
			return KindUpgrade
		}
		if equalFold(n, "trailer") {
			return KindTrailer
		}
		if equalFold(n, "referer") {
			return KindReferer
		}
	case 9:
		if equalFold(n, "x-real-ip") {
			return KindXRealIP
		}
	case 10:
		if equalFold(n, "connection") {
			return KindConnection
		}
		if equalFold(n, "keep-alive") {
			return KindKeepAlive
		}
		if equalFold(n, "user-agent") {
			return KindUserAgent
		}
	case 12:
		if equalFold(n, "x-request-id") {
			return KindXRequestID
		}
	case 14:
		if equalFold(n, "content-length") {
			return KindContentLength
		}
	case 15:
		if equalFold(n, "x-forwarded-for") {
			return KindXForwardedFor
		}
	case 16:
		if equalFold(n, "x-forwarded-host") {
			return KindXForwardedHost
		}
		if equalFold(n, "proxy-connection") {
			return KindProxyConnection
		}
	case 17:
		if equalFold(n, "transfer-encoding") {
			return KindTransferEncoding
		}
		if equalFold(n, "x-forwarded-proto") {
			return KindXForwardedProto
		}
	case 18:
		if equalFold(n, "proxy-authenticate") {
			return KindProxyAuthenticate
		}
	case 19:
		if equalFold(n, "proxy-authorization") {
			return KindProxyAuthorization
		}
	}
	if bytes.IndexByte(n, '_') >= 0 {
		return KindUnderscored
	}
	return KindOther
}
