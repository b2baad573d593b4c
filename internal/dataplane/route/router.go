package route

import "sync/atomic"

// Router holds the current table. The data plane loads it once per
// request; a reload stores a new one, so a request sees one whole table.
type Router struct {
	table atomic.Pointer[Table]
}

// NewRouter returns a router serving t.
func NewRouter(t *Table) *Router {
	r := &Router{}
	r.table.Store(t)
	return r
}

// Table returns the current table.
func (r *Router) Table() *Table { return r.table.Load() }

// Swap installs t and returns the table it replaced.
func (r *Router) Swap(t *Table) *Table { return r.table.Swap(t) }
