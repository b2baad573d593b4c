package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/cutover/cutover/bench/loadclient"
	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/dataplane/listen"
)

// wsEnd is how one WebSocket client's connection to the old pool ended.
type wsEnd struct {
	status websocket.StatusCode // -1: no close frame
	err    error
	at     time.Time
	echoes int
}

// sseEnd is how one event-stream client's stream from the old pool ended.
type sseEnd struct {
	front  string
	err    error // nil: the stream ended cleanly (last chunk / END_STREAM)
	body   string
	at     time.Time
	events int
}

// TestDrainSaysGoodbyeToLongLivedConnections drains a pool that carries
// WebSockets and event streams on every engine (WebSockets through the
// event loops' hand-off to the goroutine engine; event streams on the
// loops, the goroutine engine and HTTP/2) while ordinary traffic runs.
// Each WebSocket client must get a close frame 1001 and each target the
// proxy's close frame too; each event stream must end cleanly, after a
// whole event; the goodbyes must be spread over the drain_close_spread
// rather than come in one instant; the clients reconnect to the new pool;
// and no ordinary request fails.
func TestDrainSaysGoodbyeToLongLivedConnections(t *testing.T) {
	const (
		drain      = 4 * time.Second
		spread     = 2 * time.Second
		wsClients  = 16
		ssePerEnd  = 6
		loadConns  = 8
		frontLoops = "http1/loops"
	)
	st := startStack(t, stackOptions{drainTimeout: drain, closeSpread: spread})
	goroutines := st.listen(t, listen.Options{HTTP: "127.0.0.1:0", Engine: listen.EngineGoroutines})
	certs, err := listen.NewCertSource(listen.CertOptions{SelfSigned: true, Hosts: []string{"localhost"}, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	tlsFront := st.listen(t, listen.Options{HTTPS: "127.0.0.1:0", TLS: certs.TLSConfig()})
	roots := x509.NewCertPool()
	roots.AddCert(certs.Leaf())
	h2Client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots, ServerName: "localhost"},
		ForceAttemptHTTP2: true,
	}}
	defer h2Client.CloseIdleConnections()
	h1Client := &http.Client{Transport: &http.Transport{}}
	defer h1Client.CloseIdleConnections()
	fronts := []struct {
		name string
		url  string
		c    *http.Client
	}{
		{frontLoops, "http://" + st.proxyAddr, h1Client},
		{"http1/goroutines", "http://" + goroutines.HTTPAddr().String(), h1Client},
		{"http2", "https://" + tlsFront.HTTPSAddr().String(), h2Client},
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	// opened counts long-lived exchanges known to run on blue.
	opened := make(chan struct{}, wsClients+ssePerEnd*len(fronts))

	wsEnds := make([]wsEnd, wsClients)
	for i := range wsEnds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wsEnds[i] = runWebSocket(ctx, "ws://"+st.proxyAddr+"/ws", i, opened)
		}()
	}
	var sseEnds []sseEnd
	var sseMu sync.Mutex
	for _, f := range fronts {
		for range ssePerEnd {
			wg.Add(1)
			go func() {
				defer wg.Done()
				e := readEvents(ctx, f.c, f.url+"/events", opened)
				e.front = f.name
				sseMu.Lock()
				sseEnds = append(sseEnds, e)
				sseMu.Unlock()
			}()
		}
	}
	for range cap(opened) {
		select {
		case <-opened:
		case <-ctx.Done():
			t.Fatal("the long-lived connections did not open")
		}
	}

	// Ordinary traffic through the whole drain, counted strictly.
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	loadDone := make(chan *loadclient.Result, 1)
	go func() {
		res, err := loadclient.Run(loadCtx, loadclient.Options{
			Addr: st.proxyAddr, Connections: loadConns, Duration: 30 * time.Second,
			Host: "app.example", BackendHeader: "X-Backend", Timeout: requestTimeout,
		})
		if err != nil {
			t.Error(err)
		}
		loadDone <- res
	}()

	res, err := st.client.Deploy(ctx, admin.DeployRequest{Pool: "green"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	switchedAt := res.SwitchedAt
	ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	deployed := time.Now()
	wg.Wait()
	stopLoad()
	load := <-loadDone
	t.Logf("deploy returned %s after the switch; the clients were done %s later", ms(deployed.Sub(switchedAt)), ms(time.Since(deployed)))

	// The clients saw goodbyes they act on.
	var ends []time.Duration
	for i, e := range wsEnds {
		if e.status != websocket.StatusGoingAway {
			t.Errorf("WebSocket %d ended with close status %d (%v) after %d echoes, want a close frame %d", i, e.status, e.err, e.echoes, websocket.StatusGoingAway)
		}
		ends = append(ends, e.at.Sub(switchedAt))
	}
	wsOK := 0
	for _, e := range wsEnds {
		if e.status == websocket.StatusGoingAway {
			wsOK++
		}
	}
	cleanPerFront := map[string]int{}
	for _, e := range sseEnds {
		switch {
		case e.err != nil:
			t.Errorf("%s: event stream ended with %v after %d events, want a clean end", e.front, e.err, e.events)
		case !strings.HasSuffix(e.body, "\n\n"):
			t.Errorf("%s: event stream ended mid-event: %q", e.front, tail(e.body))
		case e.events < 1:
			t.Errorf("%s: event stream had no whole event: %q", e.front, tail(e.body))
		default:
			cleanPerFront[e.front]++
		}
		ends = append(ends, e.at.Sub(switchedAt))
	}
	// The targets got close frames too.
	closedOK := 0
	for _, b := range st.backends["blue"] {
	drainCodes:
		for {
			select {
			case code := <-b.wsClosed:
				if code == websocket.StatusGoingAway {
					closedOK++
				} else {
					t.Errorf("backend %s: a WebSocket ended with close status %d, want %d from the proxy", b.name, code, websocket.StatusGoingAway)
				}
			case <-time.After(time.Second):
				break drainCodes
			}
		}
	}
	if closedOK != wsClients {
		t.Errorf("the blue backends got %d close frames 1001, want %d (one per WebSocket)", closedOK, wsClients)
	}

	// Spread over the window, not in one instant, and all before the
	// drain's end cuts what is left. Loose bounds: the machine is busy.
	// The middle 80% of them are measured, so one straggler does not make
	// a burst look spread.
	slices.Sort(ends)
	first, last := ends[0], ends[len(ends)-1]
	p10, p90 := ends[len(ends)/10], ends[len(ends)*9/10]
	if first < drain-spread-200*time.Millisecond {
		t.Errorf("the first goodbye came %s after the switch, before the window (%s before the %s drain timeout) opened", first, spread, drain)
	}
	if span := p90 - p10; span < spread/3 {
		t.Errorf("the middle 80%% of the goodbyes span %s (from %s to %s after the switch), want them spread over about %s", span, p10, p90, spread)
	}
	if want := int64(wsClients + ssePerEnd*len(fronts)); res.Goodbyes != want {
		t.Errorf("deploy result: %d goodbyes, want %d", res.Goodbyes, want)
	}
	sum := load.Summarize()
	if sum.Requests == 0 || sum.Failed != 0 {
		t.Errorf("ordinary traffic during the drain: %d requests, %d failed (%v), want none failed", sum.Requests, sum.Failed, sum.ErrorKinds)
	}

	// The clients reconnect, to the new pool.
	if got := echoOnce(ctx, "ws://"+st.proxyAddr+"/ws"); !strings.HasPrefix(got, "green-") {
		t.Errorf("a WebSocket opened after the drain was answered by %q, want green", got)
	}
	for _, f := range fronts {
		e := readEvents(ctx, f.c, f.url+"/events?once", nil)
		if !strings.Contains(e.body, "data: green-") {
			t.Errorf("%s: an event stream opened after the drain sent %q, want green's events", f.name, tail(e.body))
		}
	}
	t.Logf("drain %s, close spread %s: %d of %d WebSockets closed with 1001 (%d close frames 1001 at the targets), event streams ended cleanly per front %v (of %d each); connections ended from %s to %s after the switch (10th-90th percentile %s to %s, span %s); deploy: %d goodbyes, %d closed at the timeout; ordinary traffic %d requests, %d failed",
		drain, spread, wsOK, wsClients, closedOK, cleanPerFront, ssePerEnd, ms(first), ms(last), ms(p10), ms(p90), ms(p90-p10),
		res.Goodbyes, res.ClosedAtTimeout, sum.Requests, sum.Failed)
}

// runWebSocket talks to the old pool over a WebSocket until the proxy
// ends the connection: it sends messages of mixed sizes (large ones span
// several reads, so the proxy sees frames cut across reads) and reads the
// echoes. opened is told after the first echo.
func runWebSocket(ctx context.Context, url string, i int, opened chan<- struct{}) wsEnd {
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		return wsEnd{status: -1, err: err, at: time.Now()}
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	wctx, stopWriting := context.WithCancel(ctx)
	defer stopWriting()
	go func() {
		for n := 0; ; n++ {
			size := 16 + (i*7+n*13)%64
			if n%8 == 7 {
				size = 48 << 10
			}
			if c.Write(wctx, websocket.MessageBinary, bytes.Repeat([]byte{'a' + byte(n%26)}, size)) != nil {
				return
			}
			select {
			case <-wctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	e := wsEnd{}
	for {
		_, msg, err := c.Read(ctx)
		if err != nil {
			e.status, e.err, e.at = websocket.CloseStatus(err), err, time.Now()
			return e
		}
		if !bytes.HasPrefix(msg, []byte("blue-")) {
			e.status, e.err, e.at = -1, fmt.Errorf("echo from %q, want blue", msg[:min(len(msg), 16)]), time.Now()
			return e
		}
		if e.echoes++; e.echoes == 1 {
			opened <- struct{}{}
		}
	}
}

// echoOnce opens a WebSocket, sends one message and returns the echo.
func echoOnce(ctx context.Context, url string) string {
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		return err.Error()
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
		return err.Error()
	}
	_, msg, err := c.Read(ctx)
	if err != nil {
		return err.Error()
	}
	c.Close(websocket.StatusNormalClosure, "")
	return string(msg)
}

// readEvents reads an event stream until it ends, and checks that every
// event in it is whole. opened is told after the first event; with opened
// nil it returns after the first event.
func readEvents(ctx context.Context, c *http.Client, url string, opened chan<- struct{}) sseEnd {
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := c.Do(req)
	if err != nil {
		return sseEnd{err: err, at: time.Now()}
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return sseEnd{err: fmt.Errorf("status %d", resp.StatusCode), at: time.Now()}
	}
	if strings.HasPrefix(url, "https") && resp.ProtoMajor != 2 {
		return sseEnd{err: fmt.Errorf("served over %s, want HTTP/2", resp.Proto), at: time.Now()}
	}
	var body strings.Builder
	br := bufio.NewReader(resp.Body)
	e := sseEnd{}
	for {
		line, err := br.ReadString('\n')
		body.WriteString(line)
		if err != nil {
			e.at, e.body = time.Now(), body.String()
			if !errors.Is(err, io.EOF) || line != "" {
				e.err = err
				if err == io.EOF {
					e.err = fmt.Errorf("stream ended in the middle of a line %q", line)
				}
			}
			return e
		}
		if line != "\n" {
			continue
		}
		// An event ended: it must be whole.
		events := strings.Split(strings.TrimSuffix(body.String(), "\n\n"), "\n\n")
		last := events[len(events)-1]
		var id int
		var from string
		if _, err := fmt.Sscanf(last, "id: %d\ndata: %s event", &id, &from); err != nil {
			e.err, e.at, e.body = fmt.Errorf("event %q is not whole: %v", last, err), time.Now(), body.String()
			return e
		}
		if e.events++; e.events == 1 {
			if opened == nil {
				e.body = body.String()
				return e
			}
			opened <- struct{}{}
		}
	}
}

func tail(s string) string {
	if len(s) > 80 {
		return "…" + s[len(s)-80:]
	}
	return s
}
