//go:build linux

package proxy

import (
	"sync"
	"syscall"
	"time"
)

// parkSupported: connections park on Linux (epoll).
const parkSupported = true

// parker is the epoll set parked connections wait in, and the goroutine
// that waits on it. A parked connection's socket is registered in this set
// besides Go's netpoller (one-shot, for reading); its key in conns is the
// event's data, so an event for a connection that was woken otherwise is
// told apart from one of another connection reusing its descriptor. The
// goroutine and the set exist only while something is parked.
type parker struct {
	mu    sync.Mutex
	ep    int // -1: nothing parked, no goroutine waiting
	next  uint64
	conns map[uint64]*clientConn
}

// parkSweep is how often the waiting goroutine looks for parked
// connections whose idle timeout passed; they close up to this late.
const parkSweep = 250 * time.Millisecond

func (k *parker) init() { k.ep = -1 }

// epollOneShot is syscall.EPOLLONESHOT as the uint32 the event mask is.
const epollOneShot = 1 << 30

// park registers c, whose goroutine is about to end; false when it could
// not be (the connection is closed, or epoll failed): the caller then
// carries on as if the wait had ended.
func (k *parker) park(c *clientConn) bool {
	if c.rc == nil {
		if c.rc = rawConnOf(c.nc); c.rc == nil {
			return false
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.ep < 0 {
		ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			c.p.o.Logger.Warn("parking idle TLS connections: epoll_create1 failed; the connection keeps its goroutine", "err", err)
			return false
		}
		k.ep = ep
		if k.conns == nil {
			k.conns = make(map[uint64]*clientConn)
		}
		go k.wait(ep)
	}
	k.next++
	key := k.next
	var aerr error
	// Inside Control the descriptor is the connection's and stays open; a
	// connection closed already is refused here.
	cerr := c.rc.Control(func(fd uintptr) {
		ev := syscall.EpollEvent{
			Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | epollOneShot,
			Fd:     int32(uint32(key)),
			Pad:    int32(uint32(key >> 32)),
		}
		aerr = syscall.EpollCtl(k.ep, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if cerr != nil || aerr != nil {
		return false
	}
	c.parkKey = key
	k.conns[key] = c
	c.p.parkStats.now.Add(1)
	c.p.parkStats.total.Add(1)
	return true
}

// takeLocked removes c from the set; false when it was not parked (or
// another waker took it first). k.mu is held.
func (k *parker) takeLocked(c *clientConn) bool {
	if c.parkKey == 0 || k.conns[c.parkKey] != c {
		return false
	}
	delete(k.conns, c.parkKey)
	c.parkKey = 0
	// A closed connection's registration went with its descriptor, which
	// may be another connection's by now: Control refuses it then.
	c.rc.Control(func(fd uintptr) {
		syscall.EpollCtl(k.ep, syscall.EPOLL_CTL_DEL, int(fd), nil)
	})
	c.p.parkStats.now.Add(-1)
	return true
}

// wake resumes c if it is parked.
func (k *parker) wake(c *clientConn) {
	k.mu.Lock()
	ok := k.takeLocked(c)
	k.mu.Unlock()
	if ok {
		go c.resume()
	}
}

// wait resumes parked connections as their sockets become readable or
// their idle timeouts pass; it ends, closing ep, when none is left.
func (k *parker) wait(ep int) {
	var (
		events [128]syscall.EpollEvent
		woken  []*clientConn
		swept  = time.Now()
	)
	for {
		n, err := syscall.EpollWait(ep, events[:], int(parkSweep/time.Millisecond))
		if err != nil && err != syscall.EINTR {
			// Every parked connection resumes; those that wait again park
			// in a new set.
			k.mu.Lock()
			for _, c := range k.conns {
				if k.takeLocked(c) {
					woken = append(woken, c)
				}
			}
			k.ep = -1
			k.mu.Unlock()
			syscall.Close(ep)
			for _, c := range woken {
				go c.resume()
			}
			if len(woken) > 0 {
				woken[0].p.o.Logger.Error("parking idle TLS connections: epoll_wait failed; the parked connections were resumed", "err", err, "connections", len(woken))
			}
			return
		}
		now := time.Now()
		k.mu.Lock()
		for i := range n {
			key := uint64(uint32(events[i].Fd)) | uint64(uint32(events[i].Pad))<<32
			if c := k.conns[key]; c != nil && k.takeLocked(c) {
				woken = append(woken, c)
			}
		}
		if now.Sub(swept) >= parkSweep {
			swept = now
			for _, c := range k.conns {
				if !now.Before(c.idleAt) && k.takeLocked(c) {
					woken = append(woken, c)
				}
			}
		}
		// Nothing parked and nothing happened for a sweep: stop, so an idle
		// Proxy holds no goroutine and no descriptor for this.
		done := len(k.conns) == 0 && n == 0
		if done {
			k.ep = -1
		}
		k.mu.Unlock()
		for i, c := range woken {
			go c.resume()
			woken[i] = nil
		}
		woken = woken[:0]
		if done {
			syscall.Close(ep)
			return
		}
	}
}
