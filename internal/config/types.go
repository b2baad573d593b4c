// Package config reads and validates cutover's YAML configuration file.
//
// The file is a template: ${VAR} and ${VAR:-default} are filled from the
// environment before parsing (the job nginx's envsubst entrypoint does in the
// seed setup). Every problem is reported with the file, line and key it was
// found at and what to do about it; Load returns all problems at once so that
// `cutover validate` can list them like `nginx -t`.
package config

import (
	"net/netip"
	"strings"
	"time"
)

// Config is a validated configuration. Zero values never reach callers: Load
// fills every default, so the data plane and control plane can use the fields
// directly.
type Config struct {
	// Path is the file the configuration was read from ("" when built in code).
	Path string

	Listen         Listen
	TLS            TLS
	StateDir       string
	Admin          Admin
	Metrics        Metrics
	TrustedProxies []netip.Prefix
	Log            Log
	Timeouts       Timeouts
	Limits         Limits
	Upstream       Upstream
	Docker         Docker
	// Store is where the services' desired state lives when several
	// cutovers share it (nil: the state file in StateDir).
	Store *Store
	// Instance names this cutover among those sharing a store (default:
	// the host name).
	Instance string

	// Services in the order the file lists them.
	Services []Service
}

// Listen holds the public listener addresses.
type Listen struct {
	// HTTP is the plain-HTTP address ("" disables it). When HTTPS is set, every
	// request on HTTP is answered with a 308 redirect to HTTPS.
	HTTP string
	// HTTPS is the TLS address ("" disables it); HTTP/2 is offered by ALPN.
	HTTPS string
	// Engine serves HTTP/1.1, plain and over TLS: "loops" (default: event
	// loops, one per processor, on Linux; over TLS a connection moves to
	// one after its handshake and first request) or "goroutines" (one
	// goroutine per connection).
	Engine string
}

// TLS says where the certificates for listen.https come from. Handshakes
// pick one by SNI: an ACME certificate for an ACME host, else the file or
// self-signed pair whose names match (exact, then wildcard), else the
// first pair (the default).
type TLS struct {
	Cert, Key string // PEM files; re-read on SIGHUP
	// Certificates are more PEM pairs, chosen by SNI from their names and
	// re-read on SIGHUP. Cert/Key, when set, come first.
	Certificates []CertPair
	// SelfSigned generates a certificate for Hosts once and keeps it in StateDir.
	SelfSigned bool
	Hosts      []string
	// ACME obtains and renews certificates from an ACME CA (nil: off).
	ACME *ACME
}

// CertPair is one certificate chain and its private key, as PEM files.
type CertPair struct {
	Cert, Key string
}

// ACME configures certificates from an ACME CA such as Let's Encrypt.
type ACME struct {
	// Email is the account's contact address (optional, but the CA warns
	// it about expiring certificates).
	Email string
	// Directory is the CA's directory URL (default DefaultACMEDirectory).
	Directory string
	// CARoots is a PEM file of roots to trust for the directory's HTTPS,
	// for private CAs and tests ("" means the system roots).
	CARoots string
	// Hosts get a certificate each (default: every exact host of every
	// service, in file order).
	Hosts []string
	// Challenge is ChallengeHTTP01 (default; answered on listen.http) or
	// ChallengeTLSALPN01 (answered on listen.https).
	Challenge string
	// Storage is the folder for the account, certificates and locks
	// (default <state_dir>/acme). Several cutovers (each with its own
	// state_dir) that share it obtain each certificate once.
	Storage string
}

// ACME challenge types of tls.acme.challenge.
const (
	ChallengeHTTP01    = "http-01"
	ChallengeTLSALPN01 = "tls-alpn-01"
)

// Admin configures the admin API listeners.
type Admin struct {
	// Socket is the Unix socket path (default <state_dir>/admin.sock).
	Socket string
	// TCP is an optional host:port for the admin API; it requires Token.
	TCP string
	// Token is the bearer token required on the TCP listener.
	Token string
}

// Metrics configures the Prometheus metrics listener.
type Metrics struct {
	// Listen is the host:port serving GET /metrics and GET /healthz ("":
	// no metrics listener). It is never one of the public listeners.
	Listen string
}

// Log configures logging.
type Log struct {
	// Access is a file path, "-" for stdout or "off".
	Access string
	// Format is "combined" (nginx's) or "json".
	Format string
	// Level is the diagnostics level: debug, info, warn or error.
	Level string
}

// Timeouts bound the client side of the data plane.
type Timeouts struct {
	ReadHeader time.Duration // a request head must arrive within this (default 10s)
	Idle       time.Duration // keep-alive wait for the next request (default 75s)
	Read       time.Duration // between two reads of a request body (default 60s)
	Write      time.Duration // between two writes of a response (default 60s)
	Shutdown   time.Duration // SIGTERM grace for in-flight requests (default 30s)
}

// Limits bound request sizes.
type Limits struct {
	MaxHeaderBytes int // request line + headers (default 32768); larger gets 431
}

// Upstream configures connections to targets.
type Upstream struct {
	ConnectTimeout   time.Duration // default 5s
	ResponseTimeout  time.Duration // wait for the response head (default 60s)
	ReadTimeout      time.Duration // between two reads of a response body (default 60s)
	KeepaliveTimeout time.Duration // idle upstream connections are closed after this (default 60s)
	MaxIdlePerTarget int           // idle keep-alive connections kept per target, at least (default 64; up to the recent peak in use)
	// TryTimeout, when set, sends a request that may be sent again (an
	// idempotent one without a body) to another target after waiting this
	// long for a response head on one (default 0: off).
	TryTimeout time.Duration
	Outlier    Outlier
}

// Outlier configures outlier detection: ejecting targets that time out or
// fail again and again (see upstream.OutlierOptions).
type Outlier struct {
	ConsecutiveFailures int           // failures in a row that eject (default 5; 0: only timeouts eject)
	BaseEjectionTime    time.Duration // first ejection; doubles on each that follows (default 10s)
	MaxEjectionTime     time.Duration // longest ejection (default 5m)
	MaxEjectionPercent  int           // most of a pool ejected at once (default 50; 0: no ejection)
}

// Docker configures the Docker provider.
type Docker struct {
	// Network is the Docker network whose addresses are used for containers.
	Network string
	// Host overrides DOCKER_HOST when set.
	Host string
	// Hosts are several engines whose containers the pools take together
	// (exclusive with Host).
	Hosts []string
}

// Engines lists the engine addresses to follow: docker.hosts, else
// docker.host ("" meaning DOCKER_HOST or the local socket).
func (d Docker) Engines() []string {
	if len(d.Hosts) > 0 {
		return d.Hosts
	}
	return []string{d.Host}
}

// Store is a desired state shared by several cutovers.
type Store struct {
	// Etcd is the etcd cluster that holds it.
	Etcd *Etcd
}

// Etcd says how to reach an etcd cluster.
type Etcd struct {
	// Endpoints are the members' client URLs (http:// or https://).
	Endpoints []string
	// Prefix is put before every key cutover writes (default
	// DefaultEtcdPrefix); cutovers with the same prefix share one state.
	Prefix string
	// Cert and Key are a client certificate (PEM files, optional); CA is
	// the PEM file of roots to trust for the members (default: the
	// system's).
	Cert, Key, CA string
	// Username and Password log in when etcd has auth enabled.
	Username, Password string
}

// Engines of listen.engine.
const (
	EngineLoops      = "loops"
	EngineGoroutines = "goroutines"
)

// Service is one routed application with its pools.
type Service struct {
	Name string
	// Hosts are the Host names routed here: exact names or "*.example.com".
	// Empty means the default service for any host.
	Hosts []string
	// PreviewHosts go to the service's preview pool (cutover deploy POOL
	// --preview), or to its active pool while there is none.
	PreviewHosts []string
	Balance      string
	Health       Health
	DrainTimeout time.Duration
	// DrainCloseSpread is the last part of the drain window over which
	// the old pool's long-lived connections (WebSockets, event streams)
	// are told goodbye one after another; 0 means a fifth of DrainTimeout
	// (CloseSpread).
	DrainCloseSpread time.Duration
	// Pools in the order the file lists them.
	Pools []Pool
	// Active is the pool that serves on first start (when no state exists).
	Active string
}

// Health configures active health checks.
type Health struct {
	Path      string        // default /healthz
	Interval  time.Duration // default 1s
	Timeout   time.Duration // default 2s
	Healthy   int           // consecutive passes to be healthy (default 2)
	Unhealthy int           // consecutive failures to be unhealthy (default 3)
}

// Pool is one colour of a service. Exactly one of Targets, Containers or
// Compose is set.
type Pool struct {
	Name string
	// Targets are host:port addresses.
	Targets []string
	// Containers are Docker container names or IDs, reached on Docker.Network at Port.
	Containers []string
	// Compose selects every running replica of a compose service.
	Compose *ComposeRef
	// Port is the container port for Containers and Compose.
	Port int
}

// ComposeRef names a compose project's service.
type ComposeRef struct {
	Project string
	Service string
}

// FromDocker reports whether the pool's members come from the Docker provider.
func (p Pool) FromDocker() bool { return len(p.Containers) > 0 || p.Compose != nil }

// Service returns the service with the given name.
func (c *Config) Service(name string) (*Service, bool) {
	for i := range c.Services {
		if c.Services[i].Name == name {
			return &c.Services[i], true
		}
	}
	return nil, false
}

// Pool returns the pool with the given name.
func (s *Service) Pool(name string) (*Pool, bool) {
	for i := range s.Pools {
		if s.Pools[i].Name == name {
			return &s.Pools[i], true
		}
	}
	return nil, false
}

// ACMEHosts are the names tls.acme gets certificates for: tls.acme.hosts
// when set, else every exact (non-wildcard) host of every service, in file
// order and without duplicates. Nil when tls.acme is off.
func (c *Config) ACMEHosts() []string {
	a := c.TLS.ACME
	if a == nil {
		return nil
	}
	if a.Hosts != nil {
		return a.Hosts
	}
	var out []string
	seen := map[string]bool{}
	for _, s := range c.Services {
		for _, h := range s.Hosts {
			if strings.HasPrefix(h, "*.") || seen[h] {
				continue
			}
			if _, err := netip.ParseAddr(h); err == nil {
				continue
			}
			seen[h] = true
			out = append(out, h)
		}
	}
	return out
}

// closeSpreadShare is the share of drain_timeout that drain_close_spread
// defaults to.
const closeSpreadShare = 5 // a fifth

// CloseSpread is how long before the drain timeout the old pool's
// long-lived connections start to be told goodbye, spread evenly until
// the timeout: drain_close_spread, or a fifth of drain_timeout when unset.
func (s *Service) CloseSpread() time.Duration {
	if s.DrainCloseSpread > 0 {
		return min(s.DrainCloseSpread, s.DrainTimeout)
	}
	return s.DrainTimeout / closeSpreadShare
}
