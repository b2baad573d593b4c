package config

import (
	"os"
	"path/filepath"
	"time"

	"github.com/cutover/cutover/internal/dataplane/upstream"
)

// Default values that are not obvious from a field's zero value.
const (
	// DefaultStateDir is where state, the admin socket and self-signed
	// certificates live when state_dir is not set.
	DefaultStateDir = "/var/lib/cutover"
	// AdminSocketName is the admin socket's file name inside the state dir
	// when admin.socket is not set.
	AdminSocketName = "admin.sock"
	// DefaultACMEDirectory is Let's Encrypt's production directory, the
	// default of tls.acme.directory.
	DefaultACMEDirectory = "https://acme-v02.api.letsencrypt.org/directory"
	// DefaultEtcdPrefix is store.etcd.prefix when not set.
	DefaultEtcdPrefix = "/cutover/"
)

// Values of log.access that are not file paths.
const (
	AccessStdout = "-"
	AccessOff    = "off"
)

// Access log formats.
const (
	FormatCombined = "combined"
	FormatJSON     = "json"
)

// Default returns a configuration with every default filled in, no listeners
// and no services. Code that builds a configuration (the built-in demo, tests)
// starts here, sets Listen, adds services made with DefaultService, and may
// call Validate.
func Default() *Config {
	return &Config{
		Instance: DefaultInstance(),
		StateDir: DefaultStateDir,
		Admin:    Admin{Socket: filepath.Join(DefaultStateDir, AdminSocketName)},
		Log:      Log{Access: AccessStdout, Format: FormatCombined, Level: "info"},
		Timeouts: Timeouts{
			ReadHeader: 10 * time.Second,
			Idle:       75 * time.Second,
			Read:       60 * time.Second,
			Write:      60 * time.Second,
			Shutdown:   30 * time.Second,
		},
		Limits: Limits{MaxHeaderBytes: 32 << 10},
		Upstream: Upstream{
			ConnectTimeout:   5 * time.Second,
			ResponseTimeout:  60 * time.Second,
			ReadTimeout:      60 * time.Second,
			KeepaliveTimeout: 60 * time.Second,
			MaxIdlePerTarget: 64,
			Outlier:          DefaultOutlier(),
		},
	}
}

// DefaultService returns a service with the given name, the default balance,
// health checks and drain timeout, and no pools. Active must be set once
// pools are added (a parsed file defaults it to the first pool).
func DefaultService(name string) Service {
	return Service{
		Name:         name,
		Balance:      upstream.DefaultBalance.String(),
		Health:       DefaultHealth(),
		DrainTimeout: 30 * time.Second,
	}
}

// DefaultOutlier returns the default outlier detection, which the data
// plane defines.
func DefaultOutlier() Outlier {
	o := upstream.DefaultOutlierOptions()
	return Outlier{
		ConsecutiveFailures: o.ConsecutiveFailures,
		BaseEjectionTime:    o.BaseEjection,
		MaxEjectionTime:     o.MaxEjection,
		MaxEjectionPercent:  o.MaxEjectedPercent,
	}
}

// DefaultHealth returns the default active health check.
func DefaultHealth() Health {
	return Health{
		Path:      "/healthz",
		Interval:  time.Second,
		Timeout:   2 * time.Second,
		Healthy:   2,
		Unhealthy: 3,
	}
}

// DefaultInstance is instance when not set: the host name (or "cutover"
// when the system will not say it).
func DefaultInstance() string {
	if h, err := os.Hostname(); err == nil && ValidInstance(h) {
		return h
	}
	return "cutover"
}
