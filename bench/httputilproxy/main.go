// Command httputilproxy is the benchmark's reference for what Go's standard
// reverse proxy reaches on the same job as cutover: httputil.ReverseProxy
// with a tuned Transport (upstream keep-alive, a buffer pool), round robin
// over the targets, the same forwarding headers. The harness runs it with
// `bench/run -proxies nginx,httputil,cutover`; it is the measurement behind
// the choice of cutover's own HTTP/1.1 engine (docs/benchmarks.md).
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v := b.p.Get(); v != nil {
		return *v.(*[]byte)
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(v []byte) { b.p.Put(&v) }

// accessLog writes nginx combined lines, buffered like cutover's.
type accessLog struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (l *accessLog) log(r *http.Request, status int, start time.Time) {
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	l.mu.Lock()
	fmt.Fprintf(l.w, "%s - - [%s] \"%s %s %s\" %d - \"%s\" \"%s\"\n", host, start.Format("02/Jan/2006:15:04:05 -0700"),
		r.Method, r.RequestURI, r.Proto, status, r.Referer(), r.UserAgent())
	l.mu.Unlock()
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) { s.status = code; s.ResponseWriter.WriteHeader(code) }

func main() {
	listen := flag.String("listen", "127.0.0.1:18080", "listen address")
	targets := flag.String("targets", "127.0.0.1:9001,127.0.0.1:9002", "comma-separated upstream addresses")
	accessPath := flag.String("access-log", "", "combined access log file (default: none)")
	flag.Parse()

	var urls []*url.URL
	for _, t := range strings.Split(*targets, ",") {
		urls = append(urls, &url.URL{Scheme: "http", Host: t})
	}
	var next atomic.Uint64
	tr := &http.Transport{
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     60 * time.Second,
		DisableCompression:  true,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	}
	rp := &httputil.ReverseProxy{
		Transport:  tr,
		BufferPool: &bufferPool{},
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(urls[next.Add(1)%uint64(len(urls))])
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
			host, _, _ := net.SplitHostPort(pr.In.RemoteAddr)
			pr.Out.Header.Set("X-Real-IP", host)
		},
	}
	var handler http.Handler = rp
	if *accessPath != "" {
		f, err := os.OpenFile(*accessPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			log.Fatal(err)
		}
		al := &accessLog{w: bufio.NewWriterSize(f, 64<<10)}
		go func() {
			for range time.Tick(200 * time.Millisecond) {
				al.mu.Lock()
				al.w.Flush()
				al.mu.Unlock()
			}
		}()
		handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			sw := &statusWriter{ResponseWriter: w, status: 200}
			rp.ServeHTTP(sw, r)
			al.log(r, sw.status, start)
		})
	}
	srv := &http.Server{Addr: *listen, Handler: handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 75 * time.Second}
	go func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		<-sigs
		srv.Close()
	}()
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
