// Package forward decides the headers a request carries to its upstream:
// who the client is (X-Forwarded-For, X-Real-IP, honouring only trusted
// proxies), how it came (X-Forwarded-Proto, X-Forwarded-Host) and which
// request it is (X-Request-Id). Both HTTP engines use it, so HTTP/1.1 and
// HTTP/2 clients are described to upstreams the same way.
package forward

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"net"
	"net/netip"
	"sync/atomic"
)

// Trusted is the set of peers whose forwarding headers are believed.
type Trusted struct {
	prefixes []netip.Prefix
}

// NewTrusted returns the set of the given networks. An IPv4-mapped IPv6
// network ("::ffff:10.0.0.0/104") is kept as the IPv4 network it maps,
// because addresses are compared in their unmapped form.
func NewTrusted(p []netip.Prefix) *Trusted {
	t := &Trusted{prefixes: make([]netip.Prefix, 0, len(p))}
	for _, pfx := range p {
		if a := pfx.Addr(); a.Is4In6() && pfx.Bits() >= 96 {
			pfx = netip.PrefixFrom(a.Unmap(), pfx.Bits()-96)
		}
		t.prefixes = append(t.prefixes, pfx)
	}
	return t
}

// Contains reports whether addr is a trusted proxy. A mapped IPv4 address
// is compared as IPv4, and a zone (fe80::1%eth0) is ignored.
func (t *Trusted) Contains(addr netip.Addr) bool {
	if t == nil {
		return false
	}
	addr = addr.Unmap().WithZone("")
	for _, p := range t.prefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// Client describes the peer of one client connection. It is computed once
// per connection, not per request.
type Client struct {
	Addr    netip.Addr
	IP      string // Addr as text
	Trusted bool   // the peer is a trusted proxy
	TLS     bool
}

// NewClient describes the peer at remote.
func NewClient(remote net.Addr, tls bool, trusted *Trusted) Client {
	var addr netip.Addr
	switch a := remote.(type) {
	case nil:
	case *net.TCPAddr:
		addr = a.AddrPort().Addr()
	default:
		if ap, err := netip.ParseAddrPort(remote.String()); err == nil {
			addr = ap.Addr()
		}
	}
	return ClientAt(addr, tls, trusted)
}

// ClientAt describes the peer at addr (the zero Addr for a peer that is
// not an IP: a Unix socket). An event loop that accepted a socket itself
// has its peer as a netip.Addr, without a net.Addr to allocate.
func ClientAt(addr netip.Addr, tls bool, trusted *Trusted) Client {
	c := Client{TLS: tls, Addr: addr.Unmap()}
	if c.Addr.IsValid() {
		c.IP = c.Addr.String()
	} else {
		// Unix sockets and other non-IP peers.
		c.IP = "unix"
	}
	c.Trusted = trusted.Contains(c.Addr)
	return c
}

// Proto is the scheme the client used.
func (c *Client) Proto() string {
	if c.TLS {
		return "https"
	}
	return "http"
}

// AppendXFF appends the X-Forwarded-For value to send upstream: the
// incoming list followed by the peer when the peer is trusted, otherwise
// the peer alone (a client must not be able to claim another address).
func (c *Client) AppendXFF(dst, incoming []byte) []byte {
	if c.Trusted && len(incoming) > 0 {
		dst = append(dst, incoming...)
		dst = append(dst, ", "...)
	}
	return append(dst, c.IP...)
}

// RealIP returns the client's address: the peer, or, when the peer is a
// trusted proxy, the right-most address of the incoming X-Forwarded-For
// that is not itself trusted (the nginx realip module's recursive rule).
func (c *Client) RealIP(incomingXFF []byte, trusted *Trusted) []byte {
	if !c.Trusted || len(incomingXFF) == 0 {
		return nil
	}
	v := incomingXFF
	var last []byte
	for len(v) > 0 {
		i := bytes.LastIndexByte(v, ',')
		part := bytes.TrimSpace(v[i+1:])
		if i < 0 {
			v = nil
		} else {
			v = v[:i]
		}
		if len(part) == 0 {
			continue
		}
		addr, err := netip.ParseAddr(string(part))
		if err != nil {
			// Not an address: stop believing the list here.
			return last
		}
		last = part
		if !trusted.Contains(addr) {
			return part
		}
	}
	return last
}

// IDs generates request IDs: a random per-process prefix and a counter,
// which is unique without a random read per request.
type IDs struct {
	prefix [8]byte
	n      atomic.Uint64
}

// NewIDs returns a generator with a fresh random prefix.
func NewIDs() *IDs {
	g := &IDs{}
	if _, err := rand.Read(g.prefix[:]); err != nil {
		// crypto/rand does not fail on supported platforms; fall back to a
		// fixed prefix rather than refuse to serve.
		copy(g.prefix[:], "cutover!")
	}
	return g
}

// Append appends a new 32-hex-digit ID to dst.
func (g *IDs) Append(dst []byte) []byte {
	var b [16]byte
	copy(b[:8], g.prefix[:])
	binary.BigEndian.PutUint64(b[8:], g.n.Add(1))
	n := len(dst)
	dst = append(dst, make([]byte, 32)...)
	hex.Encode(dst[n:], b[:])
	return dst
}
