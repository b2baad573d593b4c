// Package route maps a request to a service by its Host, and a service to
// the pool that serves it now.
package route

import (
	"sync"
	"sync/atomic"

	"github.com/cutover/cutover/internal/dataplane/upstream"
)

// Service is one routed application: its pools and which one is active.
//
// The active pool is an atomic pointer, so a switch is one store: a request
// sees either the old pool or the new one, never a mix, and from the store
// on no new request goes to the old pool (see Acquire).
type Service struct {
	name string

	active atomic.Pointer[upstream.Pool]

	// mu guards the pool set and previous; the data plane never takes it.
	mu       sync.Mutex
	pools    map[string]*upstream.Pool
	order    []string
	previous string
}

// NewService returns a service with no pools.
func NewService(name string) *Service {
	return &Service{name: name, pools: make(map[string]*upstream.Pool)}
}

// Name is the service's name.
func (s *Service) Name() string { return s.name }

// Acquire returns the active pool with the request counted in its
// in-flight total, or nil when the service has no active pool. The caller
// must call End on the pool when the request is finished.
//
// The count is taken before the pool is confirmed still active: a switch
// that happens in between is seen by the second load and the request goes
// to the new pool instead. So once Activate has returned, every request
// counted on the old pool was dispatched before the switch, and a drain
// that waits for the old pool's count to reach zero misses none.
func (s *Service) Acquire() *upstream.Pool {
	for {
		p := s.active.Load()
		if p == nil {
			return nil
		}
		p.Begin()
		if s.active.Load() == p {
			return p
		}
		p.Abort()
	}
}

// Active returns the active pool (nil if none).
func (s *Service) Active() *upstream.Pool { return s.active.Load() }

// Previous returns the name of the pool that was active before the last
// switch ("" if none).
func (s *Service) Previous() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.previous
}

// Pool returns the named pool.
func (s *Service) Pool(name string) (*upstream.Pool, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pools[name]
	return p, ok
}

// Pools returns the pools in the order they were added.
func (s *Service) Pools() []*upstream.Pool {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*upstream.Pool, 0, len(s.order))
	for _, n := range s.order {
		out = append(out, s.pools[n])
	}
	return out
}

// AddPool adds a pool, or returns the existing one of that name.
func (s *Service) AddPool(p *upstream.Pool) *upstream.Pool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.pools[p.Name()]; ok {
		return old
	}
	s.pools[p.Name()] = p
	s.order = append(s.order, p.Name())
	return p
}

// PutPool adds p, or puts it in the place of the inactive pool of its name
// (keeping that pool's position in the order). It reports false, changing
// nothing, when the pool of that name is active.
func (s *Service) PutPool(p *upstream.Pool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.pools[p.Name()]
	if ok && s.active.Load() == old {
		return false
	}
	if !ok {
		s.order = append(s.order, p.Name())
	}
	s.pools[p.Name()] = p
	return true
}

// RemovePool removes an inactive pool and returns it.
func (s *Service) RemovePool(name string) (*upstream.Pool, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pools[name]
	if !ok || s.active.Load() == p {
		return nil, false
	}
	delete(s.pools, name)
	for i, n := range s.order {
		if n == name {
			s.order = append(s.order[:i], s.order[i+1:]...)
			break
		}
	}
	if s.previous == name {
		s.previous = ""
	}
	return p, true
}

// Activate makes the named pool the active one in one atomic step and
// returns the pool that was active (nil if none). The old pool becomes
// the previous one, for rollback.
func (s *Service) Activate(name string) (old *upstream.Pool, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pools[name]
	if !ok {
		return nil, false
	}
	old = s.active.Swap(p)
	if old != nil && old != p {
		s.previous = old.Name()
	}
	return old, true
}

// Restore sets the active and previous pools without a switch, when state
// is loaded at startup.
func (s *Service) Restore(active, previous string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pools[active]
	if !ok {
		return false
	}
	s.active.Store(p)
	if _, ok := s.pools[previous]; ok {
		s.previous = previous
	} else {
		s.previous = ""
	}
	return true
}
