package wire

// RequestBuilder assembles a Request from the parts of a request that did
// not arrive as HTTP/1.1 text — an HTTP/2 request's :method, :path,
// :authority and header fields — under the same rules ParseRequest applies
// to those parts, one function per rule, so that what the proxy forwards
// as HTTP/1.1 is always a request its own parser would have accepted. A
// space in a method or a target, for one, would otherwise end up in the
// forwarded request line and change its meaning.
//
// It also counts the size the head would have as HTTP/1.1 text, so the
// limit on a head (a Reader's max) applies whatever the protocol.
type RequestBuilder struct {
	r     *Request
	rules fieldRules
	hosts hostRule
	size  int
	err   error // the first rule broken
}

// Start resets r for a request with this method, target (":path") and
// host (":authority", nil for none), which r keeps: they must stay valid
// as long as r is used. The request is HTTP/1.1 for the rules.
func (b *RequestBuilder) Start(r *Request, method, target, host []byte) {
	r.reset()
	r.Method, r.URI, r.Host = method, target, nil
	r.ExpectContinue = false
	*b = RequestBuilder{r: r}
	b.size = len(method) + 1 + len(target) + len(" HTTP/1.1\r\n") + len("\r\n")
	b.err = checkMethod(method)
	if b.err == nil && len(target) == 0 {
		b.err = bad("malformed request line")
	}
	if b.err == nil {
		b.err = checkTarget(target)
	}
	if b.err == nil {
		b.err = r.checkForm()
	}
	b.hosts.fromURI = r.Host != nil
	if len(host) > 0 {
		b.size += len("Host: \r\n") + len(host)
		if b.err == nil {
			b.err = r.requestField(&Header{Name: hostName, Value: host, Kind: KindHost}, &b.hosts)
		}
	}
}

var hostName = []byte("Host")

// Add adds a header field, which the request keeps like Start's parts.
func (b *RequestBuilder) Add(name, value []byte) {
	b.size += len(name) + len(": \r\n") + len(value)
	if b.err != nil {
		return
	}
	h, err := b.rules.add(&b.r.Fields, name, trimOWS(value), true)
	if err == nil {
		err = b.r.requestField(h, &b.hosts)
	}
	b.err = err
}

// Finish returns what ParseRequest would have returned for the request
// as HTTP/1.1 text: ErrHeadTooLarge first when that head would be larger
// than maxHead (a Reader refuses such a head before it is parsed), else
// the first rule broken, else nil with the request complete.
func (b *RequestBuilder) Finish(maxHead int) error {
	if b.size > maxHead {
		return ErrHeadTooLarge
	}
	if b.err != nil {
		return b.err
	}
	if err := b.rules.end(); err != nil {
		return err
	}
	return b.r.finishRequest(&b.hosts)
}
