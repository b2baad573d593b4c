package listen

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/dataplane/route"
	"github.com/cutover/cutover/internal/dataplane/upstream"
)

// webService routes every host to a service "web" whose active pool
// "blue" has targets, all up.
func webService(targets ...string) (*route.Router, *upstream.Pool) {
	svc := route.NewService("web")
	pool := upstream.NewPool("blue", upstream.RoundRobin)
	specs := make([]upstream.TargetSpec, len(targets))
	for i, a := range targets {
		specs[i] = upstream.TargetSpec{Addr: a}
	}
	pool.SetTargets(specs, func(s upstream.TargetSpec) *upstream.Target {
		return upstream.NewTarget(upstream.TargetOptions{Addr: s.Addr, Initial: upstream.Up})
	})
	svc.Apply(&route.Routes{Stable: pool})
	tbl := route.NewTable()
	tbl.Add(svc, nil)
	return route.NewRouter(tbl), pool
}

// runServer makes a Server with o, serves it and shuts it down when the
// test ends.
func runServer(t *testing.T, o Options) *Server {
	t.Helper()
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		<-served
	})
	return s
}

// serveRaw accepts connections on a new 127.0.0.1 listener until the test
// ends and serves the n-th (from 0) with serve, which owns it.
func serveRaw(t *testing.T, serve func(c net.Conn, n int)) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, ln, serve)
	return ln
}

// serveOn serves ln's connections like serveRaw. When the test ends the
// listener and every connection are closed and serve waited for.
func serveOn(t *testing.T, ln net.Listener, serve func(c net.Conn, n int)) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				serve(c, n)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// getAsync GETs url with c and sends the body, or "error: " and why.
func getAsync(c *http.Client, url string) <-chan string {
	got := make(chan string, 1)
	go func() {
		resp, err := c.Get(url)
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	return got
}

// shutdownAsync shuts s down, giving requests in flight 10s, and sends
// what Shutdown returned.
func shutdownAsync(s *Server) <-chan error {
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	return shut
}
