// Command backend is the benchmark's upstream: a tiny HTTP server that answers
// GET / with a fixed 100-byte body and GET /healthz with 200. Every response
// names the instance in an X-Backend header (e.g. "blue-1") so the switch run
// can tell which pool served each request.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// bodySize is the response body length the benchmark workload is defined by.
const bodySize = 100

func main() {
	addr := flag.String("addr", "127.0.0.1:9001", "listen address (host:port)")
	name := flag.String("name", "blue-1", "instance name sent in the X-Backend header; the part before '-' is the pool colour")
	flag.Parse()

	if err := run(*addr, *name); err != nil {
		fmt.Fprintln(os.Stderr, "backend:", err)
		os.Exit(1)
	}
}

func run(addr, name string) error {
	body := make([]byte, bodySize)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	body[len(body)-1] = '\n'
	contentLength := []string{strconv.Itoa(len(body))}
	backend := []string{name}
	contentType := []string{"text/plain; charset=utf-8"}

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header()["X-Backend"] = backend
		w.WriteHeader(http.StatusOK)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		// Assigning the header slices directly avoids canonicalising and
		// allocating on every request; the backend should cost as little CPU as
		// possible since it shares the machine with the proxy under test.
		h := w.Header()
		h["Content-Type"] = contentType
		h["Content-Length"] = contentLength
		h["X-Backend"] = backend
		_, _ = w.Write(body)
	})

	srv := &http.Server{
		Addr:              addr,
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          log.New(os.Stderr, "backend "+name+": ", 0),
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()

	select {
	case err := <-errc:
		return fmt.Errorf("serve %s on %s: %w", name, addr, err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shut down %s: %w", name, err)
	}
	return nil
}
