// Package lockedbuf is a bytes.Buffer that many goroutines may write while
// a test reads it: a log destination for code under test.
package lockedbuf

import (
	"bytes"
	"sync"
)

// Buffer collects writes under a lock; the zero value is ready to use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is everything written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
