package listen

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/dataplane/proxy"
)

// outcomes is an Observer passing each request's failure and status on.
type outcomes chan proxy.Outcome

func (c outcomes) Observe(o *proxy.Outcome) { c <- *o }

// TestHTTP2StreamResetIsTheClientsDoing: an HTTP/2 client that resets its
// stream while the request body is on its way is recorded as having left
// (499, client_gone), never as a 502, and the target, which did nothing
// wrong, stays up with no failure counted.
func TestHTTP2StreamResetIsTheClientsDoing(t *testing.T) {
	got := make(chan struct{}, 1)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- struct{}{}
		io.Copy(io.Discard, r.Body)
	}))
	t.Cleanup(backend.Close)
	f := startH2Front(t, proxy.Options{}, strings.TrimPrefix(backend.URL, "http://"))
	seen, pool := f.seen, f.pool

	client := tlsClient(f.leaf, true)
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", "https://"+f.addr+"/upload", pr)
	req.ContentLength = 1 << 20
	done := make(chan error, 1)
	go func() {
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	pw.Write(make([]byte, 40<<10)) // more than the upstream write buffer, so it is sent on
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the target")
	}
	cancel() // RST_STREAM
	pw.CloseWithError(context.Canceled)
	<-done

	var o proxy.Outcome
	select {
	case o = <-seen:
	case <-time.After(10 * time.Second):
		t.Fatal("the reset request never ended")
	}
	if o.Failure != proxy.FailClientGone || o.Status != proxy.StatusClientClosed {
		t.Fatalf("reset stream recorded as status %d failure %q; want %d %q", o.Status, o.Failure, proxy.StatusClientClosed, proxy.FailClientGone)
	}
	if st := pool.Targets()[0].Status(); st.State != "up" || st.Failures != 0 {
		t.Fatalf("target after a client reset: state %s, %d failures; want up with none", st.State, st.Failures)
	}
}
