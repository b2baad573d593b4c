package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// ServerOptions configure the metrics listener.
type ServerOptions struct {
	// Addr is the host:port to listen on, unless Listener is given (a
	// listener inherited from the process being upgraded).
	Addr     string
	Listener net.Listener
	Metrics  *Metrics
	// Ready reports whether cutover serves; GET /healthz answers 200 only
	// then (503 before), for a Docker HEALTHCHECK or a load balancer.
	Ready func() bool
}

// Server serves GET /metrics and GET /healthz. It is never one of the
// public listeners: metrics name every target and pool.
type Server struct {
	ln  net.Listener
	srv *http.Server
}

// Listen binds the metrics listener.
func Listen(o ServerOptions) (*Server, error) {
	ln := o.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", o.Addr); err != nil {
			return nil, fmt.Errorf("metrics.listen %s: %w", o.Addr, err)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", o.Metrics.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		HealthHandler(o.Ready).ServeHTTP(w, r)
	})
	return &Server{ln: ln, srv: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}}, nil
}

// HealthHandler answers GET /healthz: 200 "ok" once ready reports true,
// 503 before. Other listeners (the admin TCP listener) serve it too.
func HealthHandler(ready func() bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if ready != nil && !ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "starting\n")
			return
		}
		io.WriteString(w, "ok\n")
	})
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Listener is the bound listener (to hand to a new process on upgrade).
func (s *Server) Listener() net.Listener { return s.ln }

// Serve serves until Shutdown.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics listener: %w", err)
	}
	return nil
}

// Shutdown stops the listener and waits for scrapes in flight.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }
