// Package route maps a request to a service by its Host, and a service to
// the pool that serves it now.
package route

import (
	"sync/atomic"

	"github.com/cutover/cutover/internal/dataplane/upstream"
)

// Routes is one service's routing at one moment: which pool takes which
// requests. A Routes is never changed once a Service serves it; the control
// plane builds the next one and swaps it in whole (see Service.Apply), so a
// request sees one routing, never a mix of two.
type Routes struct {
	// Stable serves every request of the service's hosts (nil: none is
	// served, 503).
	Stable *upstream.Pool
	// Preview serves the service's preview hosts; nil sends them to
	// Stable.
	Preview *upstream.Pool
	// Canary takes Weight of every WeightScale clients of the service's
	// hosts (see split); nil: Stable takes them all. Preview hosts never
	// see the canary.
	Canary *upstream.Pool
	Weight uint32
	// All lists every pool of the service, routed or idle, in the control
	// plane's order: what metrics report on. It routes nothing.
	All []*upstream.Pool
}

// Routed returns every pool the routing sends requests to, once each.
func (r *Routes) Routed() []*upstream.Pool {
	if r == nil {
		return nil
	}
	var out []*upstream.Pool
	for _, p := range []*upstream.Pool{r.Stable, r.Preview, r.Canary} {
		if p != nil && !containsPool(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// Lost returns the pools r sends requests to that next does not: the ones
// whose requests must drain when next replaces r.
func (r *Routes) Lost(next *Routes) []*upstream.Pool {
	keep := next.Routed()
	var out []*upstream.Pool
	for _, p := range r.Routed() {
		if !containsPool(keep, p) {
			out = append(out, p)
		}
	}
	return out
}

func containsPool(ps []*upstream.Pool, p *upstream.Pool) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// Service is one routed application as a host sees it. The service's hosts
// and its preview hosts share one routing (see PreviewHosts); each picks its
// own pool from it.
type Service struct {
	name    string
	routes  *atomic.Pointer[Routes]
	preview bool
	// previewView is the Service its preview hosts are routed to.
	previewView *Service
}

// NewService returns a service that serves no pool until Apply.
func NewService(name string) *Service {
	s := &Service{name: name, routes: new(atomic.Pointer[Routes])}
	s.previewView = &Service{name: name, routes: s.routes, preview: true}
	s.previewView.previewView = s.previewView
	return s
}

// Name is the service's name.
func (s *Service) Name() string { return s.name }

// PreviewHosts is the service as its preview hosts see it: the same routing,
// served by its Preview pool (Stable when there is none).
func (s *Service) PreviewHosts() *Service { return s.previewView }

// pick chooses the pool of a request; needKey reports that the routing
// splits and the request's key is needed (k is nil).
func (r *Routes) pick(preview bool, k *SplitKey) (sp Split, needKey bool) {
	if preview {
		if r.Preview != nil {
			return Split{Pool: r.Preview}, false
		}
		return Split{Pool: r.Stable}, false
	}
	if r.Canary == nil || r.Stable == nil {
		return Split{Pool: r.Stable}, false
	}
	if k == nil {
		return Split{}, true
	}
	return split(r.Stable, r.Canary, r.Weight, *k), false
}

// Acquire returns the pool that serves this request with the request
// counted in its in-flight total, or nil when the service serves no pool.
// The caller must call End on the pool when the request is finished.
//
// The count is taken before the routing is confirmed still current: a swap
// that happens in between is seen by the second load and the request is
// routed again by the new routing. So once Apply has returned, every
// request counted on a pool the new routing dropped was dispatched before
// the swap, and a drain that waits for that pool's count to reach zero
// misses none.
func (s *Service) Acquire() *upstream.Pool {
	var none SplitKey
	sp, _ := s.AcquireSplit(&none)
	return sp.Pool
}

// AcquireSplit is Acquire for a request that may be split between a stable
// and a canary pool. With k nil it acquires nothing and reports needKey
// when the routing splits: the caller then finds the request's key (its
// cookie and client address, which costs a header scan only then) and calls
// again with it. Split.SetCookie says the client must be told its pool.
func (s *Service) AcquireSplit(k *SplitKey) (sp Split, needKey bool) {
	for {
		r := s.routes.Load()
		if r == nil {
			return Split{}, false
		}
		sp, needKey = r.pick(s.preview, k)
		if needKey || sp.Pool == nil {
			return sp, needKey
		}
		sp.Pool.Begin()
		if s.routes.Load() == r {
			return sp, false
		}
		sp.Pool.Abort()
	}
}

// Routes returns the routing served now (nil before the first Apply).
func (s *Service) Routes() *Routes { return s.routes.Load() }

// Active returns the stable pool (nil if none).
func (s *Service) Active() *upstream.Pool {
	if r := s.routes.Load(); r != nil {
		return r.Stable
	}
	return nil
}

// Pools returns every pool of the service, routed or idle (see
// Routes.All).
func (s *Service) Pools() []*upstream.Pool {
	if r := s.routes.Load(); r != nil {
		return r.All
	}
	return nil
}

// Pool returns the pool of that name the routing sends requests to now.
func (s *Service) Pool(name string) (*upstream.Pool, bool) {
	for _, p := range s.routes.Load().Routed() {
		if p.Name() == name {
			return p, true
		}
	}
	return nil, false
}

// Apply makes r the service's routing in one atomic step and returns the
// routing it replaced (nil if none). r must not be changed afterwards.
func (s *Service) Apply(r *Routes) (old *Routes) { return s.routes.Swap(r) }
