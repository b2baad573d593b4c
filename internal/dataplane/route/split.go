package route

import (
	"bytes"

	"github.com/cutover/cutover/internal/dataplane/upstream"
)

// WeightScale is what a canary weight is counted in: 10000 is every
// request, 1000 is 10%, so a split is exact to a hundredth of a percent.
const WeightScale = 10000

// CookiePrefix starts the name of the cookie that keeps a client on the
// pool a canary split gave it: cutover_<service>.
const CookiePrefix = "cutover_"

// SplitKey is what a request brings to a canary split: the value of its
// service's sticky cookie, if it sent one, and its client address.
type SplitKey struct {
	// Cookie is the value of the cutover_<service> cookie ("" when none).
	Cookie []byte
	// Client is the client's address (the real one, after trusted
	// proxies), as text; it is hashed when no cookie decides.
	Client []byte
}

// Split is the outcome of a canary split for one request.
type Split struct {
	Pool *upstream.Pool
	// SetCookie says the client must be told which pool it was given: it
	// sent no cookie naming a pool of the split.
	SetCookie bool
}

// split picks between the stable and the canary pool: a cookie that names
// either keeps the client where it was; otherwise a hash of the client's
// address decides, the canary taking weight of every WeightScale clients.
// The hash makes the choice the same for a client on every request (an API
// client that keeps no cookie still stays on one version), and a client
// given the canary at a low weight keeps it when the weight grows.
func split(stable, canary *upstream.Pool, weight uint32, k SplitKey) Split {
	if len(k.Cookie) > 0 {
		switch {
		case bytes.Equal(k.Cookie, []byte(canary.Name())):
			return Split{Pool: canary}
		case bytes.Equal(k.Cookie, []byte(stable.Name())):
			return Split{Pool: stable}
		}
	}
	if clientBucket(k.Client) < weight {
		return Split{Pool: canary, SetCookie: true}
	}
	return Split{Pool: stable, SetCookie: true}
}

// clientBucket maps a client address to 0..WeightScale-1, evenly: FNV-1a
// over the address's bytes, then a finaliser (MurmurHash3's) so that
// addresses differing only in their last bits spread over every bucket.
func clientBucket(client []byte) uint32 {
	h := uint32(2166136261)
	for _, c := range client {
		h ^= uint32(c)
		h *= 16777619
	}
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h % WeightScale
}

// CookieValue finds the value of the cookie named name in a Cookie header
// value ("a=1; cutover_web=green"), or nil.
func CookieValue(header, name []byte) []byte {
	for len(header) > 0 {
		var pair []byte
		if i := bytes.IndexByte(header, ';'); i >= 0 {
			pair, header = header[:i], header[i+1:]
		} else {
			pair, header = header, nil
		}
		pair = bytes.TrimLeft(pair, " \t")
		if len(pair) > len(name) && pair[len(name)] == '=' && bytes.Equal(pair[:len(name)], name) {
			return bytes.TrimRight(pair[len(name)+1:], " \t")
		}
	}
	return nil
}
