//go:build !linux

package listen

import (
	"errors"
	"net"
)

// loopListener exists only where there are event loops.
type loopListener struct{ net.Listener }

// newLoopListener is never called where there are no event loops.
func newLoopListener(ln net.Listener) (*loopListener, error) {
	return nil, errors.New("event loops need Linux's epoll")
}

// acceptForLoops is never called where there are no event loops.
func (s *Server) acceptForLoops(ln *loopListener) error {
	return errors.New("event loops need Linux's epoll")
}
