package listen

import (
	"crypto/tls"
	"strings"
)

// certSet is an immutable set of certificates chosen by SNI. The first one
// is the default, for names none of them covers and for clients that send
// no SNI.
type certSet struct {
	certs []*tls.Certificate
	files []string // where each came from, for messages
	// exact maps each DNS name and IP address of the certificates; wild
	// maps "example.com" for a "*.example.com" name. When two certificates
	// name the same host the earlier one wins, so the file's order decides.
	exact map[string]*tls.Certificate
	wild  map[string]*tls.Certificate
}

func newCertSet(certs []*tls.Certificate, files []string) *certSet {
	s := &certSet{
		certs: certs,
		files: files,
		exact: make(map[string]*tls.Certificate),
		wild:  make(map[string]*tls.Certificate),
	}
	add := func(m map[string]*tls.Certificate, name string, c *tls.Certificate) {
		if _, ok := m[name]; !ok {
			m[name] = c
		}
	}
	for _, c := range certs {
		for _, n := range c.Leaf.DNSNames {
			n = strings.ToLower(n)
			if rest, ok := strings.CutPrefix(n, "*."); ok {
				add(s.wild, rest, c)
			} else {
				add(s.exact, n, c)
			}
		}
		for _, ip := range c.Leaf.IPAddresses {
			add(s.exact, ip.String(), c)
		}
	}
	return s
}

// lookup returns the certificate for a ClientHello's server name: an exact
// name, else a wildcard one label up (*.example.com covers a.example.com,
// not a.b.example.com or example.com), else the default; matched says
// whether a name matched.
func (s *certSet) lookup(serverName string) (cert *tls.Certificate, matched bool) {
	name := normalName(serverName)
	if name != "" {
		if c, ok := s.exact[name]; ok {
			return c, true
		}
		if _, rest, ok := strings.Cut(name, "."); ok {
			if c, ok := s.wild[rest]; ok {
				return c, true
			}
		}
	}
	return s.certs[0], false
}

// normalName lowercases a server name and drops a trailing dot; SNI is
// case-insensitive and some clients send the absolute form.
func normalName(n string) string {
	return strings.TrimSuffix(strings.ToLower(n), ".")
}
