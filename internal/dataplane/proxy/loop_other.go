//go:build !linux

package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"time"
)

// LoopsSupported reports whether this system has the event loops (Linux).
const LoopsSupported = false

// Loops is the event-loop engine, which needs Linux's epoll; elsewhere
// every connection is served by the goroutine engine.
type Loops struct{}

// LoopOptions configure Loops.
type LoopOptions struct {
	Loops   int
	Handoff func(nc net.Conn, h *Handoff)
}

// NewLoops reports that the event loops need Linux.
func (p *Proxy) NewLoops(o LoopOptions) (*Loops, error) {
	return nil, errors.New("event loops need Linux's epoll")
}

// Len is 0: there are no loops.
func (e *Loops) Len() int { return 0 }

// Clients is always 0 where there are no event loops.
func (e *Loops) Clients() (all, tls int64) { return 0, 0 }

// Add refuses nc.
func (e *Loops) Add(nc net.Conn) error { return errors.New("event loops need Linux's epoll") }

// AddTLS refuses tc.
func (e *Loops) AddTLS(tc *tls.Conn, pipe *TLSPipe) error {
	return errors.New("event loops need Linux's epoll")
}

// Shutdown does nothing.
func (e *Loops) Shutdown(ctx context.Context) error { return nil }

// Drain does nothing.
func (e *Loops) Drain(ctx context.Context, idleGrace time.Duration) error { return nil }
