package listen

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// HTTP/2 through the proxy to an HTTP/1.1 target: concurrent streams with
// bodies both ways larger than the engine's 1 MiB windows, an event stream
// and Expect: 100-continue, with a strict client that counts every failed
// request; then a shutdown with a request in flight, which finishes.
func TestHTTP2ThroughTheProxy(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	s, leaf := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			once.Do(func() { close(entered) })
			<-release
			io.WriteString(w, "done")
		case "/events":
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range 3 {
				fmt.Fprintf(w, "data: %d\n\n", i)
				w.(http.Flusher).Flush()
			}
		case "/size":
			n, _ := strconv.Atoi(r.URL.Query().Get("n"))
			w.Write(pattern(n))
		default:
			// Read whole before the answer: net/http's HTTP/1.1 server
			// stops reading a body once the response is under way.
			b, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			w.Write(b)
		}
	})
	c := tlsClient(leaf, true)
	c.Transport.(*http.Transport).ExpectContinueTimeout = 5 * time.Second
	base := "https://" + s.HTTPSAddr().String()

	const workers, each = 8, 24
	var failed, sent atomic.Int64
	var firstErr atomic.Value
	fail := func(format string, args ...any) {
		failed.Add(1)
		firstErr.CompareAndSwap(nil, fmt.Sprintf(format, args...))
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				sent.Add(1)
				size := []int{0, 1000, 200 << 10, 3 << 19}[(w+i)%4]
				want := pattern(size)
				var req *http.Request
				if i%2 == 0 {
					req, _ = http.NewRequest("GET", base+"/size?n="+strconv.Itoa(size), nil)
				} else {
					req, _ = http.NewRequest("POST", base+"/echo", bytes.NewReader(want))
					if i%3 == 0 {
						req.Header.Set("Expect", "100-continue")
					}
				}
				resp, err := c.Do(req)
				if err != nil {
					fail("%s %s: %v", req.Method, req.URL.Path, err)
					continue
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || resp.ProtoMajor != 2 || !bytes.Equal(got, want) {
					fail("%s %s: %s %d, %d of %d bytes, %v", req.Method, req.URL.Path, resp.Proto, resp.StatusCode, len(got), len(want), err)
				}
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed; first: %v", n, sent.Load(), firstErr.Load())
	}
	t.Logf("%d requests over HTTP/2, 0 failed", sent.Load())

	resp, err := c.Get(base + "/events")
	if err != nil {
		t.Fatal(err)
	}
	ev, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(ev) != "data: 0\n\ndata: 1\n\ndata: 2\n\n" {
		t.Fatalf("event stream: %q", ev)
	}

	slow := getAsync(c, base+"/slow")
	<-entered
	shut := shutdownAsync(s)
	// The shutdown waits for the stream in flight.
	select {
	case err := <-shut:
		t.Fatalf("shutdown returned with a stream in flight: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if got := <-slow; got != "done" {
		t.Fatalf("request in flight at shutdown: %q, want it to complete", got)
	}
	if err := <-shut; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%23)
	}
	return b
}
