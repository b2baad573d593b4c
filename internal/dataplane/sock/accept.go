package sock

import (
	"errors"
	"syscall"
	"time"
)

// Shortage reports whether an accept failed for want of file descriptors
// or memory: the listening socket is still good, and accepting again after
// a pause works once connections have closed (net/http's Server retries
// these too).
func Shortage(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

// NextBackOff is the pause after an accept failed by Shortage, given the
// previous pause (0 after an accept that worked): 5 ms, doubling up to a
// second, as net/http's.
func NextBackOff(prev time.Duration) time.Duration {
	return min(max(2*prev, 5*time.Millisecond), time.Second)
}
