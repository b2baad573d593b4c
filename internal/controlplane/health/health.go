// Package health runs cutover's active health checks: one checker per
// target, probing GET http://ADDR<path> at the service's interval and
// reporting each result to the target, which turns consecutive results into
// its verdict (see upstream.Target.ReportProbe).
package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/dataplane/upstream"
)

// Settings are the active check of one service.
type Settings struct {
	Path       string
	Interval   time.Duration
	Timeout    time.Duration
	Thresholds upstream.Thresholds
}

// FromConfig converts a service's health configuration.
func FromConfig(h config.Health) Settings {
	return Settings{
		Path:       h.Path,
		Interval:   h.Interval,
		Timeout:    h.Timeout,
		Thresholds: upstream.Thresholds{Healthy: h.Healthy, Unhealthy: h.Unhealthy},
	}
}

// maxBody is how much of a probe's response body is read; the status is
// what counts, the body is read only so the server sees a clean exchange.
const maxBody = 64 << 10

// Prober sends probes. One Prober is shared by all checkers.
type Prober struct {
	client *http.Client
}

// NewProber returns a prober. Every probe opens a new connection: a target
// that still answers on an old keep-alive connection but no longer accepts
// new ones would otherwise look healthy while the data plane cannot reach
// it. Environment proxy settings are ignored; probes go straight to the
// target.
func NewProber() *Prober {
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            (&net.Dialer{KeepAlive: -1}).DialContext,
		DisableKeepAlives:      true,
		DisableCompression:     true,
		MaxResponseHeaderBytes: 64 << 10,
	}
	return &Prober{client: &http.Client{
		Transport: tr,
		// A redirect is an answer (3xx passes); following it would probe
		// something else.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// Close releases the prober's resources.
func (p *Prober) Close() { p.client.CloseIdleConnections() }

// Probe checks addr once: GET http://addr<path> must answer 2xx or 3xx
// within timeout. The error says what happened in words fit for a deploy
// report.
func (p *Prober) Probe(ctx context.Context, addr, path string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	req.Header.Set("User-Agent", "cutover-health")
	resp, err := p.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			return fmt.Errorf("GET %s: no answer within %s", path, timeout)
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("GET %s: %w", path, err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("GET %s answered %s", path, resp.Status)
	}
	return nil
}

// CheckerOptions configure a Checker.
type CheckerOptions struct {
	Target *upstream.Target
	Prober *Prober
	// Settings is read before every probe, so a reload applies at once.
	Settings func() Settings
	// Notify is called after every probe result was reported (may be nil).
	Notify func()
	// OnProbe is told each probe's result, nil for a pass (may be nil).
	OnProbe func(err error)
	// Logger receives verdict changes (may be nil).
	Logger *slog.Logger
	// Attrs name the service and pool in log lines.
	Attrs []slog.Attr
}

// Checker probes one target continuously: first at once, then every
// interval.
type Checker struct {
	o       CheckerOptions
	restart chan chan struct{}
	done    chan struct{}
}

// NewChecker returns a checker; Run starts it.
func NewChecker(o CheckerOptions) *Checker {
	if o.Notify == nil {
		o.Notify = func() {}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Checker{o: o, restart: make(chan chan struct{}), done: make(chan struct{})}
}

// Target is the checked target.
func (c *Checker) Target() *upstream.Target { return c.o.Target }

// Run probes until ctx ends. Call it once.
func (c *Checker) Run(ctx context.Context) {
	defer close(c.done)
	t := c.o.Target
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ack := <-c.restart:
			// Reset here, between two probes, so no probe that started
			// before the restart counts towards the fresh verdict.
			t.ResetVerdict()
			close(ack)
		case <-timer.C:
		}
		s := c.o.Settings()
		err := c.o.Prober.Probe(ctx, t.Addr(), s.Path, s.Timeout)
		if ctx.Err() != nil {
			return
		}
		before := t.State()
		if c.o.OnProbe != nil {
			c.o.OnProbe(err)
		}
		after := t.ReportProbe(err, s.Thresholds)
		// Between two probes is also when idle connections a burst left
		// are given back, traffic or not.
		t.SweepIdle()
		if after != before {
			attrs := append([]slog.Attr{
				slog.String("target", t.Label()),
				slog.String("from", before.String()),
				slog.String("to", after.String()),
			}, c.o.Attrs...)
			if err != nil {
				attrs = append(attrs, slog.String("error", err.Error()))
			}
			level := slog.LevelInfo
			if after == upstream.Down {
				level = slog.LevelWarn
			}
			c.o.Logger.LogAttrs(ctx, level, "target health changed", attrs...)
		}
		c.o.Notify()
		timer.Reset(s.Interval)
	}
}

// ErrStopped is returned by Restart on a checker that is not running.
var ErrStopped = errors.New("health checker stopped")

// Restart makes the checker judge its target afresh: the consecutive
// counts are reset and the next probe is sent at once. It returns once the
// counts are reset (after the probe in progress, if any, has finished).
func (c *Checker) Restart(ctx context.Context) error {
	ack := make(chan struct{})
	select {
	case c.restart <- ack:
	case <-c.done:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ack:
		return nil
	case <-c.done:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Done is closed when Run has returned.
func (c *Checker) Done() <-chan struct{} { return c.done }
