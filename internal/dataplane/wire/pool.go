package wire

import (
	"sync"
	"sync/atomic"
	"unsafe"
)

// FreeList is Buffers for one goroutine (an event loop): a stack of spare
// buffers of one size, so lending one costs no lock. It keeps at most Max
// spares; beyond that returned buffers are left to the garbage collector,
// so a burst of busy connections does not pin its peak for ever.
type FreeList struct {
	Size, Max int
	free      [][]byte
	// lent counts the buffers handed out and not yet put back.
	lent int
}

// Get returns a spare buffer, or a new one when there is none.
func (f *FreeList) Get() []byte {
	f.lent++
	if n := len(f.free); n > 0 {
		b := f.free[n-1]
		f.free[n-1] = nil
		f.free = f.free[:n-1]
		return b
	}
	return make([]byte, f.Size)
}

// Put keeps buf as a spare, unless Max are kept already.
func (f *FreeList) Put(buf []byte) {
	f.lent--
	if len(f.free) < f.Max && cap(buf) >= f.Size {
		f.free = append(f.free, buf[:f.Size])
	}
}

// Spare is the number of buffers kept for reuse.
func (f *FreeList) Spare() int { return len(f.free) }

// Disown forgets a lent buffer that will not come back (it moved to
// another pool).
func (f *FreeList) Disown() { f.lent-- }

// Lent is the number of buffers Get handed out that were not Put back.
func (f *FreeList) Lent() int { return f.lent }

// SyncBuffers is Buffers shared by goroutines, over a sync.Pool (which
// the garbage collector empties when they stay unused).
type SyncBuffers struct {
	size int
	pool sync.Pool
	lent atomic.Int64
}

// NewSyncBuffers returns a pool of buffers of size bytes.
func NewSyncBuffers(size int) *SyncBuffers {
	return &SyncBuffers{size: size}
}

// Get returns a pooled buffer or a new one.
func (s *SyncBuffers) Get() []byte {
	s.lent.Add(1)
	if p, ok := s.pool.Get().(*byte); ok {
		return unsafe.Slice(p, s.size)
	}
	return make([]byte, s.size)
}

// Put returns buf to the pool.
func (s *SyncBuffers) Put(buf []byte) {
	s.lent.Add(-1)
	if cap(buf) < s.size {
		return
	}
	// The first byte's address stands for the buffer: a pointer fits in
	// the pool's interface without allocating, as a slice would not.
	s.pool.Put(unsafe.SliceData(buf))
}

// Adopt counts as lent a buffer that came from another pool (see
// Reader.SetPool) and will be put here.
func (s *SyncBuffers) Adopt() { s.lent.Add(1) }

// Lent is the number of buffers out: handed out or adopted, not yet put.
func (s *SyncBuffers) Lent() int64 { return s.lent.Load() }
