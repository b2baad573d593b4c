package admin

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// UpgradeRequest is the body of POST /v1/upgrade:
//
//	{"binary": "/usr/local/bin/cutover", "timeout": "30s", "same_binary": false}
//
// binary defaults to the running executable's path as it is on disk now;
// same_binary (cutover restart) starts exactly the running executable
// instead; timeout (default 30s) bounds how long the new process may take
// to be ready.
type UpgradeRequest struct {
	Binary     string `json:"binary,omitempty"`
	SameBinary bool   `json:"same_binary,omitempty"`
	Timeout    string `json:"timeout,omitempty"`
}

// UpgradeResponse is the body of a successful POST /v1/upgrade. The old
// process (OldPID) has stopped accepting and is draining; NewPID serves.
type UpgradeResponse struct {
	OldPID int    `json:"old_pid"`
	NewPID int    `json:"new_pid"`
	Binary string `json:"binary"`
	// ReadyMS is how long the new process took to be ready (config, state,
	// listeners, first health checks); SwitchMS how long the admin API was
	// served by neither process while the state lease moved. Client
	// connections are accepted throughout: the listening sockets never
	// close.
	ReadyMS  float64 `json:"ready_ms"`
	SwitchMS float64 `json:"switch_ms"`
	// Drain is how long the old process lets requests in flight and open
	// WebSockets finish before it exits.
	Drain string `json:"drain"`
}

// Upgrade asks the running cutover to start a new process and hand it
// every listener (see internal/serve/upgrade.go). A refused or failed
// upgrade is an *Error whose message carries the new process's output.
func (c *Client) Upgrade(ctx context.Context, req UpgradeRequest) (*UpgradeResponse, error) {
	var r UpgradeResponse
	if err := c.getJSON(ctx, http.MethodPost, "/v1/upgrade", req, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

func (s *Server) upgrade(w http.ResponseWriter, r *http.Request) {
	var req UpgradeRequest
	if !decode(w, r, &req) {
		return
	}
	if s.o.Upgrade == nil {
		writeError(w, &Error{Kind: KindRefused, Message: "this cutover cannot upgrade itself: it was not started by `cutover serve -c FILE`"})
		return
	}
	s.log.Info("admin: upgrade requested", "binary", req.Binary, "same_binary", req.SameBinary, "timeout", req.Timeout)
	// The answer comes after the new process is ready, which may take
	// up to the request's timeout.
	http.NewResponseController(w).SetWriteDeadline(time.Time{})
	res, err := s.o.Upgrade(r.Context(), req)
	if err != nil {
		writeError(w, asError(err))
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// gated runs h only when Options.Gate lets a state-changing request in
// (it does not during an upgrade).
func (s *Server) gated(h http.HandlerFunc) http.HandlerFunc {
	if s.o.Gate == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		release, err := s.o.Gate()
		if err != nil {
			writeError(w, asError(err))
			return
		}
		defer release()
		h(w, r)
	}
}

// Listeners are the admin listeners, to be handed to a new process; each
// is nil when there is none (no admin.tcp, or a socket not made yet).
func (s *Server) Listeners() (unix, tcp net.Listener) {
	for i, p := range s.pausables() {
		if p == nil {
			continue
		}
		if i == 0 {
			unix = p.Listener
		} else {
			tcp = p.Listener
		}
	}
	return unix, tcp
}

func (s *Server) pausables() [2]*pausable {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	var out [2]*pausable
	if s.unix != nil {
		out[0] = s.unix.(*pausable)
	}
	if s.tcp != nil {
		out[1] = s.tcp.(*pausable)
	}
	return out
}

// Pause stops taking connections from the admin listeners, which stay
// open, so the process they were handed to is the only one answering;
// requests already accepted finish. It returns once no accept is under
// way. Resume undoes it.
func (s *Server) Pause() {
	for _, p := range s.pausables() {
		if p != nil {
			p.pause()
		}
	}
}

// Resume takes connections again after Pause (the hand-over failed).
func (s *Server) Resume() {
	for _, p := range s.pausables() {
		if p != nil {
			p.resume()
		}
	}
}

// KeepSocketFile makes closing this server leave the socket file in
// place: after a hand-over it belongs to the new process. keep false
// restores removing it.
func (s *Server) KeepSocketFile(keep bool) {
	if p := s.pausables()[0]; p != nil {
		if ul, ok := p.Listener.(*net.UnixListener); ok {
			ul.SetUnlinkOnClose(!keep)
		}
	}
}

// pausable is a listener whose Accept can be held without closing the
// socket. A held Accept leaves connections in the kernel's queue, for
// whichever process accepts from the same socket.
type pausable struct {
	net.Listener

	mu        sync.Mutex
	cond      *sync.Cond
	paused    bool
	accepting bool
	closed    chan struct{}
	closeOnce sync.Once
}

// deadliner is what *net.TCPListener and *net.UnixListener have in common.
type deadliner interface{ SetDeadline(time.Time) error }

func newPausable(ln net.Listener) *pausable {
	p := &pausable{Listener: ln, closed: make(chan struct{})}
	p.cond = sync.NewCond(&p.mu)
	return p
}

func (p *pausable) Accept() (net.Conn, error) {
	for {
		p.mu.Lock()
		for p.paused {
			select {
			case <-p.closed:
				p.mu.Unlock()
				return nil, net.ErrClosed
			default:
			}
			p.cond.Wait()
		}
		p.accepting = true
		p.mu.Unlock()
		c, err := p.Listener.Accept()
		p.mu.Lock()
		p.accepting = false
		paused := p.paused
		p.cond.Broadcast()
		p.mu.Unlock()
		var ne net.Error
		if err != nil && paused && errors.As(err, &ne) && ne.Timeout() {
			continue // the deadline set by pause: wait for resume
		}
		if c != nil && paused {
			// Accepted while pausing: it was queued before the pause,
			// so it is still this process's to answer.
			return c, nil
		}
		return c, err
	}
}

func (p *pausable) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = true
	if d, ok := p.Listener.(deadliner); ok {
		d.SetDeadline(time.Unix(1, 0))
	}
	for p.accepting {
		p.cond.Wait()
	}
}

func (p *pausable) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if d, ok := p.Listener.(deadliner); ok {
		d.SetDeadline(time.Time{})
	}
	p.paused = false
	p.cond.Broadcast()
}

func (p *pausable) Close() error {
	p.closeOnce.Do(func() {
		close(p.closed)
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	return p.Listener.Close()
}
