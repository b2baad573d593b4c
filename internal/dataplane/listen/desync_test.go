package listen

import (
	"bufio"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/dataplane/forward"
	"github.com/cutover/cutover/internal/dataplane/proxy"
)

// The response-desynchronisation suite: a target that writes more than the
// response to the request it was sent must never make the proxy give those
// bytes to another client. Each case has the target misbehave once, then
// sends unrelated requests, each of which must get its own answer.

// forged is what a misbehaving target writes where no response belongs: a
// complete response, so a proxy that reused the connection would hand it to
// the next request as that request's answer.
const forged = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-Forged: 1\r\n\r\nFORGED"

// desyncMode is one way of writing bytes that belong to no request.
type desyncMode struct {
	name string
	// trigger is the method of the request the target misbehaves on.
	trigger string
	// respond writes the answer to the trigger request and returns what to
	// write later, after the proxy has passed the answer on.
	respond func(w io.Writer) (late string)
	// preface writes forged bytes on the target's first connection before
	// any request was read.
	preface bool
}

var desyncModes = []desyncMode{
	{name: "second response", trigger: "GET", respond: func(w io.Writer) string {
		io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\npath=/trigger")
		return forged
	}},
	{name: "late body of HEAD", trigger: "HEAD", respond: func(w io.Writer) string {
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(forged))
		return forged
	}},
	{name: "late body of 304", trigger: "GET", respond: func(w io.Writer) string {
		io.WriteString(w, "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n")
		return forged
	}},
	{name: "body longer than Content-Length", trigger: "GET", respond: func(w io.Writer) string {
		io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return forged
	}},
	{name: "bytes before any request", trigger: "GET", preface: true, respond: func(w io.Writer) string {
		io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\npath=/trigger")
		return ""
	}},
}

// rawTarget is a misbehaving HTTP/1.1 target on 127.0.0.1: it answers
// every request with "path=<path>", except the trigger request, which it
// answers as mode says.
type rawTarget struct {
	ln   net.Listener
	mode desyncMode
	// passedOn is signalled by the test once the trigger's answer reached
	// the client; the target then writes the late bytes and signals wrote.
	passedOn, wrote chan struct{}
}

func startRawTarget(t *testing.T, mode desyncMode) *rawTarget {
	t.Helper()
	rt := &rawTarget{mode: mode, passedOn: make(chan struct{}), wrote: make(chan struct{}, 1)}
	rt.ln = serveRaw(t, func(c net.Conn, n int) {
		defer c.Close()
		rt.serve(c, n == 0 && mode.preface)
	})
	return rt
}

func (rt *rawTarget) serve(c net.Conn, preface bool) {
	if preface {
		io.WriteString(c, forged)
	}
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		if req.URL.Path != "/trigger" {
			body := "path=" + req.URL.Path
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			continue
		}
		late := rt.mode.respond(c)
		if late == "" {
			if preface {
				// The answer to the trigger is what is stray here: the
				// forged preface was taken for it. It is written now.
				rt.wrote <- struct{}{}
			}
			continue
		}
		<-rt.passedOn
		io.WriteString(c, late)
		rt.wrote <- struct{}{}
	}
}

func (rt *rawTarget) addr() string { return rt.ln.Addr().String() }

// desyncFront is a proxy in front of one raw target, served the way one
// of the cases needs: plain HTTP/1.1 on an engine, or HTTPS.
type desyncFront struct {
	name   string
	engine string
	https  bool
	h2     bool
}

var desyncFronts = []desyncFront{
	{name: "http1/loops", engine: EngineLoops},
	{name: "http1/goroutines", engine: EngineGoroutines},
	{name: "https-http1", https: true},
	{name: "https-http2", https: true, h2: true},
}

func startDesyncFront(t *testing.T, f desyncFront, target string) (base string, c *http.Client) {
	t.Helper()
	router, _ := webService(target)
	px := proxy.New(proxy.Options{Router: router, Trusted: forward.NewTrusted(nil), Logger: quietLogger()})
	o := Options{Proxy: px, Engine: f.engine, Logger: quietLogger()}
	var leaf *x509.Certificate
	if f.https {
		certs, err := NewCertSource(CertOptions{SelfSigned: true, Hosts: []string{"localhost", "127.0.0.1"}, StateDir: t.TempDir(), Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		o.HTTPS, o.TLS, leaf = "127.0.0.1:0", certs.TLSConfig(), certs.Leaf()
	} else {
		o.HTTP = "127.0.0.1:0"
	}
	s := runServer(t, o)
	if f.https {
		return "https://" + s.HTTPSAddr().String(), tlsClient(leaf, f.h2)
	}
	return "http://" + s.HTTPAddr().String(), &http.Client{Timeout: 10 * time.Second}
}

// TestNoResponseReachesAnotherClient runs every misbehaviour against every
// front end, with the followers' requests on the path each engine takes
// for them: GET (which the event loops serve themselves) and PUT with a
// body (which they hand to the goroutine engine).
func TestNoResponseReachesAnotherClient(t *testing.T) {
	for _, f := range desyncFronts {
		for _, mode := range desyncModes {
			for _, method := range []string{"GET", "PUT"} {
				t.Run(f.name+"/"+mode.name+"/"+method, func(t *testing.T) {
					t.Parallel()
					checkNoDesync(t, f, mode, method)
				})
			}
		}
	}
}

func checkNoDesync(t *testing.T, f desyncFront, mode desyncMode, method string) {
	rt := startRawTarget(t, mode)
	base, client := startDesyncFront(t, f, rt.addr())
	do := func(method, path string) (int, string, error) {
		var body io.Reader
		if method == "PUT" {
			body = strings.NewReader("payload")
		}
		req, err := http.NewRequest(method, base+path, body)
		if err != nil {
			return 0, "", err
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}

	trigger := mode.trigger
	if trigger == "GET" && method == "PUT" {
		trigger = "PUT"
	}
	if _, _, err := do(trigger, "/trigger"); err != nil {
		t.Fatalf("trigger request: %v", err)
	}
	if !mode.preface {
		close(rt.passedOn)
	}
	select {
	case <-rt.wrote:
	case <-time.After(10 * time.Second):
		t.Fatal("the target never wrote its stray bytes")
	}
	// On loopback a write is in the receiver's socket when it returns: the
	// stray bytes now wait on the proxy's idle connection.
	wrong := 0
	var first string
	for i := range 20 {
		path := fmt.Sprintf("/client-%d", i)
		status, body, err := do(method, path)
		if err != nil || status != 200 || body != "path="+path {
			wrong++
			if first == "" {
				first = fmt.Sprintf("%s %s: status %d body %q err %v", method, path, status, body, err)
			}
		}
	}
	if wrong > 0 {
		t.Fatalf("%d of 20 unrelated requests did not get their own response; first: %s", wrong, first)
	}
}
