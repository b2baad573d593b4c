//go:build !linux

package proxy

// parkSupported: without epoll, an idle TLS connection keeps its goroutine
// waiting in a read, as a busy one does.
const parkSupported = false

type parker struct{}

func (k *parker) init() {}

func (k *parker) park(c *clientConn) bool { return false }

func (k *parker) wake(c *clientConn) {}
