package route

import (
	"strings"
)

// Table maps Host names to services. A table is immutable once built; a
// reload builds a new one and swaps it in (see Router).
type Table struct {
	exact map[string]*Service
	// wildcard maps ".example.com" for "*.example.com".
	wildcard map[string]*Service
	def      *Service
	services []*Service
}

// NewTable returns an empty table.
func NewTable() *Table {
	return &Table{exact: map[string]*Service{}, wildcard: map[string]*Service{}}
}

// Add routes the given host names to s; no names makes s the default
// service for hosts no other service claims. Names are "example.com" or
// "*.example.com", lower case.
func (t *Table) Add(s *Service, hosts []string) {
	t.services = append(t.services, s)
	if len(hosts) == 0 {
		t.def = s
		return
	}
	t.addHosts(s, hosts)
}

func (t *Table) addHosts(s *Service, hosts []string) {
	for _, h := range hosts {
		h = strings.ToLower(strings.TrimSuffix(h, "."))
		if strings.HasPrefix(h, "*.") {
			t.wildcard[h[1:]] = s
		} else {
			t.exact[h] = s
		}
	}
}

// AddPreview routes the given host names to s's preview pool (see
// Service.PreviewHosts).
func (t *Table) AddPreview(s *Service, hosts []string) { t.addHosts(s.PreviewHosts(), hosts) }

// Services returns every service in the order added.
func (t *Table) Services() []*Service { return t.services }

// Service returns the service with the given name.
func (t *Table) Service(name string) (*Service, bool) {
	for _, s := range t.services {
		if s.name == name {
			return s, true
		}
	}
	return nil, false
}

// Lookup returns the service for a Host header value (port and case
// ignored): an exact name first, then the longest matching wildcard, then
// the default service. It returns nil when none matches.
func (t *Table) Lookup(host []byte) *Service {
	host = stripPort(host)
	var buf [256]byte
	if len(host) > 0 && host[len(host)-1] == '.' {
		host = host[:len(host)-1]
	}
	if len(host) <= len(buf) {
		n := 0
		for _, c := range host {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			buf[n] = c
			n++
		}
		h := buf[:n]
		// string(h) in a map index does not allocate.
		if s, ok := t.exact[string(h)]; ok {
			return s
		}
		if len(t.wildcard) > 0 {
			for i := 0; i < len(h); i++ {
				if h[i] == '.' {
					if s, ok := t.wildcard[string(h[i:])]; ok {
						return s
					}
				}
			}
		}
	}
	return t.def
}

// stripPort removes ":port" from a host, keeping IPv6 literals whole.
func stripPort(h []byte) []byte {
	if len(h) > 0 && h[0] == '[' {
		for i, c := range h {
			if c == ']' {
				return h[:i+1]
			}
		}
		return h
	}
	for i := len(h) - 1; i >= 0; i-- {
		if h[i] == ':' {
			return h[:i]
		}
		if h[i] < '0' || h[i] > '9' {
			break
		}
	}
	return h
}
