// Package serve runs one cutover proxy: it wires the configuration into the
// control plane (pools, health, deploys, state), the data plane (listeners,
// proxy engine, access log) and the admin API, and handles the process
// signals (SIGHUP reload, SIGUSR1 log reopen, SIGTERM/SIGINT shutdown).
package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/controlplane"
	"github.com/cutover/cutover/internal/controlplane/state"
	"github.com/cutover/cutover/internal/controlplane/state/etcdstore"
	"github.com/cutover/cutover/internal/dataplane/accesslog"
	"github.com/cutover/cutover/internal/dataplane/forward"
	"github.com/cutover/cutover/internal/dataplane/listen"
	"github.com/cutover/cutover/internal/dataplane/proxy"
	"github.com/cutover/cutover/internal/dataplane/stats"
	"github.com/cutover/cutover/internal/metrics"
	"github.com/cutover/cutover/internal/provider/docker"
)

// Options say what to serve.
type Options struct {
	// ConfigPath is the configuration file; reloads re-read it.
	ConfigPath string
	// Config is used instead of reading ConfigPath when set (the built-in
	// demo); reloads are then unavailable.
	Config    *config.Config
	LookupEnv func(string) (string, bool)
	// Logger receives diagnostics (default: slog text on Stderr).
	Logger *slog.Logger
	// Stdout receives the access log when log.access is "-".
	Stdout io.Writer
	// Stderr receives diagnostics when Logger is nil.
	Stderr io.Writer
	// ACMERenewCheck is how often ACME certificates are checked for
	// renewal (0: the library's default, 10 minutes); tests shorten it.
	ACMERenewCheck time.Duration
	// OnApply is told of every desired state the routing swapped to (see
	// controlplane.Options.OnApply); tests measure with it.
	OnApply func(service string, d state.Service, began time.Time)
	// Etcd adjusts the etcd store's options (leases, probe interval)
	// before it opens; tests shorten them.
	Etcd func(*etcdstore.Options)
}

// Instance is a running proxy.
type Instance struct {
	o      Options
	cfg    *config.Config
	log    *slog.Logger
	mgr    *controlplane.Manager
	access *accesslog.Logger
	certs  *listen.CertSource
	lis    *listen.Server
	adm    *admin.Server
	// stats counts what the data plane served (metrics, status, the
	// dashboard, a deploy's guard); met exposes it with the rest.
	stats *stats.Stats
	met   *metrics.Metrics
	// metSrv serves metrics.listen (nil when not configured).
	metSrv *metrics.Server
	// ready is set once Start has finished: GET /healthz answers 200.
	ready atomic.Bool
	// store is the shared desired state (nil: the state file).
	store *etcdstore.Store
	// docker keeps pools of containers in step with the engine (nil when
	// the configuration has none).
	docker *docker.Provider
	// stopper is how the control plane stops an old colour's containers:
	// through docker once it runs (it may start at a reload).
	stopper dockerStopper
	// procs lends the event loops processors of their own while they
	// hold connections (nil without loops); closeAll gives them back.
	procs *procLender

	reloadMu sync.Mutex
	served   chan error

	// lease is this process's hold on state_dir (nil without one, and
	// while an upgrade hands it over).
	lease *lease
	// gate is shared by state-changing requests and taken alone by an
	// upgrade; upgradeMu lets one upgrade run at a time.
	gate      sync.RWMutex
	upgradeMu sync.Mutex
	// handedTo is the pid of the process this one handed over to (0:
	// none yet); upgraded tells Run to drain and exit.
	handedTo atomic.Int64
	upgraded chan struct{}
	// handover is set when this process was started by an upgrade.
	handover *child
	// stopping is set when a shutdown begins: GET /healthz then answers
	// 503 so load balancers stop sending before the listeners close.
	stopping atomic.Bool
}

// Start loads the configuration (unless given), restores state, binds every
// listener and starts serving. Any problem is returned before a request is
// accepted.
func Start(ctx context.Context, o Options) (_ *Instance, err error) {
	cfg := o.Config
	if cfg == nil {
		if o.ConfigPath == "" {
			return nil, errors.New("no configuration: pass -c FILE")
		}
		if cfg, err = config.Load(o.ConfigPath, o.LookupEnv); err != nil {
			return nil, err
		}
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	log := o.Logger
	if log == nil {
		log = newLogger(o.Stderr, cfg.Log)
	}
	in := &Instance{o: o, cfg: cfg, log: log, served: make(chan error, 4), upgraded: make(chan struct{}, 1), stats: stats.New()}
	defer func() {
		if err != nil {
			in.closeAll()
		}
	}()
	if o.Config == nil {
		if in.handover, err = childFromEnv(); err != nil {
			return nil, err
		}
	}
	var inherited *listen.Inherited
	if in.handover != nil {
		inherited = in.handover.listeners
		// Sockets the configuration no longer names (a listen address
		// changed) close once everything took what it needs.
		defer inherited.Close()
	} else if cfg.StateDir != "" {
		// A second waits for a holder that is letting go: a predecessor
		// killed a moment ago (a supervisor's restart after kill -9) still
		// holds the lease until its last thread has exited.
		if in.lease, err = acquireLease(cfg.StateDir, time.Second); errors.Is(err, errLeaseUnwritable) {
			log.Warn("serving without the state lease", "err", err)
		} else if err != nil {
			return nil, err
		}
	}

	in.met = metrics.New(metrics.Options{Stats: in.stats})
	co := controlplane.Options{Logger: log, Conn: controlplane.ConnOptions(cfg), Metrics: in.met, Stats: in.stats, OnApply: o.OnApply, Stopper: &in.stopper}
	if cfg.Store != nil && cfg.Store.Etcd != nil {
		eo, err := etcdstore.FromConfig(cfg)
		if err != nil {
			return nil, err
		}
		eo.Logger = log
		if o.Etcd != nil {
			o.Etcd(&eo)
		}
		if in.store, err = etcdstore.Open(eo); err != nil {
			return nil, err
		}
		co.Store = in.store
		in.met.AddStore(in.store)
	}
	if in.mgr, err = controlplane.New(cfg, co); err != nil {
		return nil, err
	}
	// Docker pools get their targets before any listener accepts.
	if docker.Needed(cfg) {
		if in.docker, err = docker.Start(ctx, docker.Options{Config: cfg, Sink: in.mgr, Logger: log}); err != nil {
			return nil, err
		}
		in.stopper.p.Store(in.docker)
	}
	access := cfg.Log.Access
	if access == "" {
		access = accesslog.PathStdout
	}
	if in.access, err = accesslog.New(accesslog.Options{
		Path: access, Format: cfg.Log.Format, Stdout: o.Stdout, Diagnostics: log,
	}); err != nil {
		return nil, fmt.Errorf("log.access: %w", err)
	}
	px := proxy.New(proxy.Options{
		Router:              in.mgr.Router(),
		AccessLog:           in.access,
		Trusted:             forward.NewTrusted(cfg.TrustedProxies),
		Logger:              log,
		ReadHeaderTimeout:   cfg.Timeouts.ReadHeader,
		IdleTimeout:         cfg.Timeouts.Idle,
		ReadTimeout:         cfg.Timeouts.Read,
		WriteTimeout:        cfg.Timeouts.Write,
		MaxHeaderBytes:      cfg.Limits.MaxHeaderBytes,
		ResponseTimeout:     cfg.Upstream.ResponseTimeout,
		UpstreamReadTimeout: cfg.Upstream.ReadTimeout,
		Observers:           []proxy.Observer{in.stats},
		TryTimeout:          cfg.Upstream.TryTimeout,
	})
	lo := listen.Options{
		HTTP: cfg.Listen.HTTP, HTTPS: cfg.Listen.HTTPS, Proxy: px, Engine: cfg.Listen.Engine,
		HandshakeTimeout: cfg.Timeouts.ReadHeader, IdleTimeout: cfg.Timeouts.Idle, Logger: log,
		Inherited: inherited,
	}
	if cfg.Listen.HTTPS != "" {
		if in.certs, err = listen.NewCertSource(certOptions(cfg, o.ACMERenewCheck, log)); err != nil {
			return nil, err
		}
		lo.TLS = in.certs.TLSConfig()
		lo.HTTPChallenge = in.certs.HTTPChallenge
		in.met.SetCertificates(in.certs.Status)
	}
	if in.lis, err = listen.New(lo); err != nil {
		return nil, err
	}
	if n := in.lis.Loops(); n > 0 {
		in.procs = lendProcs(n, func() bool { return in.lis.LoopConns() > 0 })
	}
	ao := admin.Options{
		Socket: cfg.Admin.Socket, TCP: cfg.Admin.TCP, Token: cfg.Admin.Token,
		Manager: in.mgr, Logger: log, SocketRetry: socketRetry, Gate: in.enterGate, Ready: in.readiness,
	}
	if o.Config == nil {
		ao.Reload = func(context.Context) error { return in.reloadGated() }
		ao.Upgrade = in.Upgrade
	}
	if ao.UnixListener, err = inherited.Take(listen.NameAdmin, cfg.Admin.Socket); err != nil {
		return nil, err
	}
	if ao.TCPListener, err = inherited.Take(listen.NameAdminTCP, cfg.Admin.TCP); err != nil {
		return nil, err
	}
	if in.certs != nil {
		ao.Certificates = in.certificateStatus
	}
	if in.store != nil {
		ao.Store = in.mgr.StoreStatus
	}
	if in.adm, err = admin.Listen(ao); err != nil {
		return nil, err
	}
	in.met.SetSources(in.mgr.Router(), in.lis.Counts)
	if cfg.Metrics.Listen != "" {
		mo := metrics.ServerOptions{Addr: cfg.Metrics.Listen, Metrics: in.met, Ready: func() bool { return in.readiness() == nil }}
		if mo.Listener, err = inherited.Take(listen.NameMetrics, cfg.Metrics.Listen); err != nil {
			return nil, err
		}
		if in.metSrv, err = metrics.Listen(mo); err != nil {
			return nil, err
		}
	}
	if err = in.mgr.Start(ctx); err != nil {
		return nil, err
	}
	if in.handover != nil {
		if err = in.handover.takeOver(in); err != nil {
			return nil, err
		}
	}
	if in.certs != nil {
		// Last, once nothing can fail any more (a lock taken by an order
		// must not be left by a start that is refused), and after the
		// listeners are bound: the ACME challenges are answered on them.
		if err = in.certs.StartACME(ctx, addrString(in.lis.HTTPAddr()), addrString(in.lis.HTTPSAddr())); err != nil {
			return nil, err
		}
	}
	go func() { in.served <- in.lis.Serve() }()
	go func() { in.served <- in.adm.Serve() }()
	if in.metSrv != nil {
		go func() { in.served <- in.metSrv.Serve() }()
	}
	in.ready.Store(true)
	if in.handover != nil {
		in.handover.serving(in)
	} else if err := sdNotify(os.LookupEnv, "READY=1"); err != nil {
		log.Warn("telling systemd cutover is ready failed", "err", err)
	}
	log.Info("cutover serving", "pid", os.Getpid(),
		"http", addrString(in.lis.HTTPAddr()), "https", addrString(in.lis.HTTPSAddr()),
		"admin", cfg.Admin.Socket, "config", o.ConfigPath, "services", len(cfg.Services))
	if p := in.mgr.StateProblem(); p != "" {
		log.Error("serving, but the state cannot be written: changes are refused", "state_dir", cfg.StateDir, "problem", p)
	}
	return in, nil
}

// socketRetry is how often a serving cutover tries again to make an admin
// socket its state_dir did not let it make.
const socketRetry = 2 * time.Second

// certOptions turns the tls section into the listener's certificate options.
func certOptions(cfg *config.Config, renewCheck time.Duration, log *slog.Logger) listen.CertOptions {
	co := listen.CertOptions{
		CertFile: cfg.TLS.Cert, KeyFile: cfg.TLS.Key, Pairs: filePairs(cfg), SelfSigned: cfg.TLS.SelfSigned,
		Hosts: cfg.TLS.Hosts, StateDir: cfg.StateDir, Logger: log,
	}
	if a := cfg.TLS.ACME; a != nil {
		co.ACME = &listen.ACMEOptions{
			Email: a.Email, Directory: a.Directory, CARoots: a.CARoots,
			Hosts: cfg.ACMEHosts(), Challenge: a.Challenge, Storage: a.Storage, RenewCheckInterval: renewCheck,
		}
	}
	return co
}

func filePairs(cfg *config.Config) []listen.CertPair {
	var out []listen.CertPair
	for _, p := range cfg.TLS.Certificates {
		out = append(out, listen.CertPair{CertFile: p.Cert, KeyFile: p.Key})
	}
	return out
}

// certificateStatus is the admin API's view of the served certificates.
func (in *Instance) certificateStatus() []admin.CertificateStatus {
	now := time.Now()
	list := in.certs.Status()
	out := make([]admin.CertificateStatus, len(list))
	for i, c := range list {
		out[i] = admin.CertificateStatus{
			Host: c.Host, Source: c.Source, State: c.State, DaysLeft: c.DaysLeft(now),
			LastError: c.LastError, Warning: c.Warning,
		}
		if !c.NotAfter.IsZero() {
			na := c.NotAfter
			out[i].NotAfter = &na
		}
	}
	return out
}

// Certificates is the HTTPS certificates' source (nil without
// listen.https): its Status is what `cutover status` and the per-host
// expiry gauge show.
func (in *Instance) Certificates() *listen.CertSource { return in.certs }

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

func newLogger(w io.Writer, l config.Log) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.Level)); err != nil {
		level = slog.LevelInfo
	}
	ho := &slog.HandlerOptions{Level: level}
	if l.Format == accesslog.FormatJSON {
		return slog.New(slog.NewJSONHandler(w, ho))
	}
	return slog.New(slog.NewTextHandler(w, ho))
}

// HTTPAddr is the bound plain-HTTP address (nil if none).
func (in *Instance) HTTPAddr() net.Addr { return in.lis.HTTPAddr() }

// HTTPSAddr is the bound HTTPS address (nil if none).
func (in *Instance) HTTPSAddr() net.Addr { return in.lis.HTTPSAddr() }

// Stats are the data plane's counts of what it served.
func (in *Instance) Stats() *stats.Stats { return in.stats }

// MetricsAddr is the bound metrics address (nil when metrics.listen is
// not set).
func (in *Instance) MetricsAddr() net.Addr {
	if in.metSrv == nil {
		return nil
	}
	return in.metSrv.Addr()
}

// Manager is the control plane.
func (in *Instance) Manager() *controlplane.Manager { return in.mgr }

// Config is the configuration the instance started with.
func (in *Instance) Config() *config.Config { return in.cfg }

// Reload re-reads the configuration file and applies it without dropping a
// connection, and re-reads the TLS certificate files. An invalid file is
// refused with its problems and the running configuration keeps serving.
func (in *Instance) Reload() error {
	in.reloadMu.Lock()
	defer in.reloadMu.Unlock()
	return in.mgr.RecordReload(in.reload)
}

func (in *Instance) reload() error {
	if in.o.Config != nil {
		return errors.New("this instance runs a built-in configuration; there is no file to reload")
	}
	cfg, err := config.Load(in.o.ConfigPath, in.o.LookupEnv)
	if err != nil {
		in.log.Error("reload refused; the running configuration keeps serving", "config", in.o.ConfigPath, "err", err)
		return err
	}
	if !slices.Equal(cfg.ACMEHosts(), in.cfg.ACMEHosts()) {
		in.log.Warn("the ACME hosts changed in the file; certificates for the new list are obtained at the next restart",
			"config", in.o.ConfigPath, "running", in.cfg.ACMEHosts(), "file", cfg.ACMEHosts())
	}
	if cfg.Listen != in.cfg.Listen || cfg.Admin != in.cfg.Admin {
		in.log.Warn("listener or admin addresses changed in the file; they take effect at the next restart",
			"config", in.o.ConfigPath)
	}
	if err := in.mgr.Reload(cfg); err != nil {
		in.log.Error("reload refused; the running configuration keeps serving", "err", err)
		return err
	}
	if in.docker != nil {
		in.docker.SetConfig(context.Background(), cfg)
	} else if docker.Needed(cfg) {
		if in.docker, err = docker.Start(context.Background(), docker.Options{Config: cfg, Sink: in.mgr, Logger: in.log}); err != nil {
			in.log.Error("configuration reloaded, but its Docker pools cannot be followed", "err", err)
			return err
		}
		in.stopper.p.Store(in.docker)
	}
	if in.certs != nil {
		if err := in.certs.ReloadFiles(cfg.TLS.Cert, cfg.TLS.Key, filePairs(cfg)); err != nil {
			in.log.Error("TLS certificate reload failed; the old certificate stays", "err", err)
			return err
		}
	}
	in.log.Info("configuration reloaded", "config", in.o.ConfigPath)
	return nil
}

// reloadGated is Reload unless an upgrade is handing the state over.
func (in *Instance) reloadGated() error {
	release, err := in.enterGate()
	if err != nil {
		in.log.Error("reload refused; the running configuration keeps serving", "err", err)
		return err
	}
	defer release()
	return in.Reload()
}

// readiness is GET /healthz's answer on every listener that serves it:
// nil while the proxy serves.
func (in *Instance) readiness() error {
	switch {
	case in.stopping.Load():
		return errors.New("shutting down: requests in flight are finishing, new connections are not accepted")
	case !in.ready.Load():
		return errors.New("starting")
	}
	return nil
}

// ReopenLogs reopens the access log file (after logrotate moved it).
func (in *Instance) ReopenLogs() error { return in.access.Reopen() }

// Shutdown stops accepting, lets requests in flight finish until ctx ends,
// and closes everything.
func (in *Instance) Shutdown(ctx context.Context) error {
	in.stopping.Store(true)
	err := in.lis.Shutdown(ctx)
	in.closeAll()
	return err
}

func (in *Instance) closeAll() {
	if in.adm != nil {
		in.adm.Close()
	}
	if in.certs != nil {
		in.certs.Close()
	}
	if in.metSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		in.metSrv.Shutdown(ctx)
		cancel()
	}
	// The control plane first: a scheduled stop it is carrying out sees
	// its context end and stays scheduled for the next start, rather than
	// failing on a closed engine connection.
	if in.mgr != nil {
		in.mgr.Close()
	}
	in.docker.Close()
	if in.store != nil {
		in.store.Close()
		in.store = nil
	}
	if in.access != nil {
		in.access.Close()
	}
	in.procs.Close()
	in.procs = nil
	in.lease.release()
}

// Run starts an instance and serves until SIGTERM/SIGINT or ctx ends;
// SIGHUP reloads and SIGUSR1 reopens the access log.
func Run(ctx context.Context, o Options) error {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	in, err := Start(ctx, o)
	if err != nil {
		return err
	}
	for {
		select {
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
				in.reloadGated()
			case syscall.SIGUSR2:
				// As nginx: upgrade to the executable at the running one's
				// path. The outcome is logged; `cutover upgrade` reports it.
				go in.Upgrade(context.Background(), admin.UpgradeRequest{})
			case syscall.SIGUSR1:
				if err := in.ReopenLogs(); err != nil {
					in.log.Error("reopening the access log failed", "err", err)
				}
			default:
				return in.stop(sig.String())
			}
		case <-in.upgraded:
			return in.drainAfterUpgrade()
		case <-ctx.Done():
			return in.stop("context done")
		case err := <-in.served:
			if err != nil {
				in.closeAll()
				return err
			}
		}
	}
}

func (in *Instance) stop(why string) error {
	sdNotify(os.LookupEnv, "STOPPING=1")
	grace := in.cfg.Timeouts.Shutdown
	in.log.Info("shutting down; letting requests in flight finish", "reason", why, "grace", grace)
	ctx, cancel := context.WithTimeout(context.Background(), max(grace, time.Millisecond))
	defer cancel()
	if err := in.Shutdown(ctx); err != nil {
		in.log.Warn("shutdown grace ended with requests in flight", "err", err)
		return nil
	}
	in.log.Info("stopped")
	return nil
}

// dockerStopper is the control plane's controlplane.PoolStopper: the
// Docker provider, once one runs.
type dockerStopper struct {
	p atomic.Pointer[docker.Provider]
}

func (d *dockerStopper) StopPool(ctx context.Context, service, pool string) ([]string, error) {
	p := d.p.Load()
	if p == nil {
		return nil, fmt.Errorf("pool %s of service %s: cutover follows no Docker containers (the configuration has no Docker pools)", pool, service)
	}
	return p.StopPool(ctx, service, pool)
}
