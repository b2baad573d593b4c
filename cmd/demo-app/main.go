// Command demo-app is the small HTTP service cutover's tests and examples
// deploy: it reports its profile, version and hostname and offers slow,
// streaming and WebSocket routes (see internal/demoapp).
//
// It listens on ":$PORT" (default 8000) unless -addr is given, takes PROFILE
// and VERSION (default "dev") from the environment, and on SIGTERM or SIGINT
// stops accepting, lets in-flight requests finish for up to 10s, and exits 0.
//
// With -healthcheck URL it instead GETs URL and exits 0 on a 2xx answer and 1
// otherwise, so an image built FROM scratch can declare a Docker HEALTHCHECK
// without curl. Use an IP address (127.0.0.1), not "localhost": a scratch
// image has no /etc/hosts.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cutover/cutover/internal/demoapp"
	"github.com/cutover/cutover/internal/human"
)

const (
	defaultPort        = "8000"
	defaultVersion     = "dev"
	shutdownTimeout    = 10 * time.Second
	healthcheckTimeout = 5 * time.Second
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr))
}

// parseFailRate reads FAIL_RATE: a share such as 0.05 or a percentage
// such as 5%; "" is 0.
func parseFailRate(v string) (float64, error) {
	if v == "" {
		return 0, nil
	}
	s, scale := v, 1.0
	if strings.HasSuffix(s, "%") {
		s, scale = strings.TrimSuffix(s, "%"), 100
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || f/scale > 1 {
		return 0, fmt.Errorf("FAIL_RATE=%q: give the share of GET / requests to fail, e.g. 5%% or 0.05", v)
	}
	return f / scale, nil
}

// run is main without the process exit, returning the exit code.
func run(args []string, getenv func(string) string, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo-app", flag.ContinueOnError)
	fs.SetOutput(stderr)
	port := getenv("PORT")
	if port == "" {
		port = defaultPort
	}
	addr := fs.String("addr", ":"+port, "listen address (default \":$PORT\", PORT defaults to "+defaultPort+")")
	healthURL := fs.String("healthcheck", "", "GET this URL, exit 0 on 2xx and 1 otherwise, instead of serving")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "demo-app: unexpected arguments %q: configuration is by flags and the PORT, PROFILE, VERSION and FAIL_RATE variables\n", fs.Args())
		return 2
	}
	if *healthURL != "" {
		return healthcheck(*healthURL, stderr)
	}

	logger := slog.New(slog.NewTextHandler(stderr, nil))
	version := getenv("VERSION")
	if version == "" {
		version = defaultVersion
	}
	failRate, err := parseFailRate(getenv("FAIL_RATE"))
	if err != nil {
		fmt.Fprintf(stderr, "demo-app: %v\n", err)
		return 2
	}
	app := demoapp.New(demoapp.Options{Profile: getenv("PROFILE"), Version: version, Logger: logger, FailRate: failRate})

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		logger.Error("demo-app cannot listen: choose a free address with -addr or PORT", "addr", *addr, "err", err)
		return 1
	}
	// The bound address is logged (not the flag) so ":0" reveals its port.
	logger.Info("demo-app listening", "addr", ln.Addr().String(), "profile", getenv("PROFILE"), "version", version)

	serveErr := make(chan error, 1)
	go func() { serveErr <- app.Serve(ln) }()

	select {
	case err := <-serveErr:
		logger.Error("demo-app stopped serving", "err", err)
		return 1
	case <-ctx.Done():
	}
	stop() // a second signal now kills the process the default way

	start := time.Now()
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := app.Shutdown(sctx); err != nil {
		// Cutting connections that outlived the deadline is part of a
		// planned stop, so the exit stays 0.
		logger.Warn("demo-app shutdown deadline passed", "timeout", shutdownTimeout, "err", err)
	}
	if err := <-serveErr; err != nil {
		logger.Error("demo-app stopped serving", "err", err)
		return 1
	}
	logger.Info("demo-app stopped", "served", app.Served(), "shutdown", human.Duration(time.Since(start)))
	return 0
}

// healthcheck GETs url and returns 0 for a 2xx answer, 1 otherwise.
func healthcheck(url string, stderr io.Writer) int {
	client := &http.Client{Timeout: healthcheckTimeout}
	resp, err := client.Get(url)
	if err != nil {
		fmt.Fprintf(stderr, "demo-app: health check of %s failed: %v\n", url, err)
		return 1
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		fmt.Fprintf(stderr, "demo-app: health check of %s answered %s, want 2xx\n", url, resp.Status)
		return 1
	}
	return 0
}
