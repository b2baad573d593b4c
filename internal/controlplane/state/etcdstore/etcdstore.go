// Package etcdstore keeps the services' desired state in etcd, so that
// several cutovers (one per host) serve one desired state: each service is
// a key (<prefix>services/<name>) whose mod revision is the store revision,
// a commit is one transaction comparing the mod revision of every key it
// changes (two writers cannot both win), and every instance follows the
// keys with a watch. Next to the state it keeps the deploy lock (a key
// bound to the deployer's lease), the live instances (<prefix>instances/,
// each bound to its instance's lease, with the revision it applied) and
// each instance's readiness for a pool being switched to
// (<prefix>ready/<service>/<pool>/<instance>), and the requests to end the
// canary or guard that holds a lock (<prefix>end/<service>, bound to the
// lock's lease), so promote and abort work through any instance.
//
// The etcd client library does the connection handling, retries, leases
// and watches; what is here is the layout of keys and how a cutover keeps
// serving when etcd cannot be reached: the last state applied stays (and
// is cached in state_dir for a start while etcd is down), Problem says
// why, and a resync runs the moment etcd answers again.
package etcdstore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/controlplane/state"
)

// CacheFile is the last applied state's copy in state_dir.
const CacheFile = "etcd-state.json"

// Key folders under the prefix.
const (
	dirServices  = "services/"
	dirLocks     = "locks/"
	dirInstances = "instances/"
	dirReady     = "ready/"
	// dirEnd holds the requests to end the trial holding a lock
	// (end/<service>), bound to the lock's lease.
	dirEnd = "end/"
)

// Defaults of Options.
const (
	DefaultInstanceTTL    = 5 * time.Second
	DefaultLockTTL        = 10 * time.Second
	DefaultProbeInterval  = 200 * time.Millisecond
	DefaultRequestTimeout = 2 * time.Second
)

// Options say how to reach etcd and who this instance is.
type Options struct {
	Endpoints []string
	Prefix    string
	TLS       *tls.Config
	Username  string
	Password  string
	// Instance names this cutover (required).
	Instance string
	// CacheDir is where the last applied state is cached ("": nowhere).
	CacheDir string
	Logger   *slog.Logger
	// InstanceTTL is the lease of the instance's registration and
	// readiness: an instance that stops answering leaves the live set
	// after it.
	InstanceTTL time.Duration
	// LockTTL is the deploy lock's lease: the lock of a deployer that
	// died (kill -9) expires after it.
	LockTTL time.Duration
	// ProbeInterval is how often the connection to etcd is checked (a
	// linearizable read, so a member without quorum counts as down).
	ProbeInterval  time.Duration
	RequestTimeout time.Duration
}

// FromConfig makes the options of cfg's store.etcd (cfg.Store.Etcd must be
// set), reading its TLS files.
func FromConfig(cfg *config.Config) (Options, error) {
	o, err := ConnOptions(cfg.Store.Etcd)
	o.Instance, o.CacheDir = cfg.Instance, cfg.StateDir
	return o, err
}

// ConnOptions are the options that reach the etcd cluster e describes,
// with its TLS files read.
func ConnOptions(e *config.Etcd) (Options, error) {
	o := Options{Endpoints: e.Endpoints, Prefix: e.Prefix, Username: e.Username, Password: e.Password}
	if e.Cert == "" && e.CA == "" && !anyHTTPS(e.Endpoints) {
		return o, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if e.Cert != "" {
		pair, err := tls.LoadX509KeyPair(e.Cert, e.Key)
		if err != nil {
			return o, fmt.Errorf("store.etcd.cert/key: %w — give a PEM certificate and its private key", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	if e.CA != "" {
		pem, err := os.ReadFile(e.CA)
		if err != nil {
			return o, fmt.Errorf("store.etcd.ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return o, fmt.Errorf("store.etcd.ca: %s has no PEM certificate — give the CA that signed the etcd members' certificates", e.CA)
		}
		tc.RootCAs = pool
	}
	o.TLS = tc
	return o, nil
}

func anyHTTPS(eps []string) bool {
	for _, e := range eps {
		if strings.HasPrefix(e, "https://") {
			return true
		}
	}
	return false
}

// Store is the etcd store of one instance.
type Store struct {
	o   Options
	cli *clientv3.Client
	log *slog.Logger

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// problem is why etcd cannot be used now (nil: it can).
	problem atomic.Pointer[string]
	// resync asks the follow loop to read everything again (after etcd
	// came back).
	resync chan struct{}
	// lease is the instance lease (0 while there is none).
	lease atomic.Int64
	// claim: the next registration takes the instance's name whoever
	// holds it (set at Open and by Claim). Other registrations only
	// renew this process's own, so the process an upgrade replaced can
	// no longer overwrite its successor's.
	claim atomic.Bool
	// registered is the lease the registration was last written with (0:
	// none yet); superseded: another process of this instance holds the
	// name now (the new process of an upgrade), so this one publishes
	// nothing more.
	registered atomic.Int64
	superseded atomic.Bool
	// registeredCh is closed at the first registration.
	registeredCh   chan struct{}
	registeredOnce sync.Once

	mu      sync.Mutex
	applied map[string]state.Service
	rev     int64 // highest revision applied
	kick    chan struct{}
}

var _ state.Shared = (*Store)(nil)

// Open connects to etcd (without waiting for it: a store that cannot be
// reached is stale, not an error) and starts registering the instance.
func Open(o Options) (*Store, error) {
	s, err := newStore(o)
	if err != nil {
		return nil, err
	}
	s.wg.Add(3)
	go func() { defer s.wg.Done(); s.probe() }()
	go func() { defer s.wg.Done(); s.register() }()
	go func() { defer s.wg.Done(); s.publish() }()
	return s, nil
}

// OpenClient connects to etcd for a command that changes the desired
// state itself (cutover deploy --etcd): it is no instance — it neither
// registers among the live ones nor caches the state — and o.Instance
// names it in the deploy lock. It fails when etcd does not answer now.
func OpenClient(ctx context.Context, o Options) (*Store, error) {
	o.CacheDir = ""
	s, err := newStore(o)
	if err != nil {
		return nil, err
	}
	err = s.twice(ctx, func(ctx context.Context) error {
		_, err := s.cli.Get(ctx, s.key(dirServices), clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err
	})
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("%s cannot be reached: %w", s.Where(), err)
	}
	s.problem.Store(nil)
	return s, nil
}

func newStore(o Options) (*Store, error) {
	if o.Instance == "" {
		return nil, errors.New("etcd store: no instance name")
	}
	if o.Prefix == "" {
		o.Prefix = config.DefaultEtcdPrefix
	}
	if o.InstanceTTL <= 0 {
		o.InstanceTTL = DefaultInstanceTTL
	}
	if o.LockTTL <= 0 {
		o.LockTTL = DefaultLockTTL
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = DefaultProbeInterval
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: o.Endpoints, TLS: o.TLS, Username: o.Username, Password: o.Password,
		DialTimeout: o.RequestTimeout, DialKeepAliveTime: 2 * time.Second, DialKeepAliveTimeout: time.Second,
		PermitWithoutStream: true,
		Logger:              zap.NewNop(),
		// gRPC's default reconnect backoff grows to two minutes; an
		// instance must catch up within a second of etcd coming back.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond},
			MinConnectTimeout: time.Second,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("etcd store %s: %w", strings.Join(o.Endpoints, ", "), err)
	}
	s := &Store{o: o, cli: cli, log: o.Logger, resync: make(chan struct{}, 1), kick: make(chan struct{}, 1), applied: map[string]state.Service{},
		registeredCh: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.claim.Store(true)
	// Until the first probe answers, the store counts as unreachable.
	s.setProblem(errors.New("not connected yet"))
	return s, nil
}

// Close stops the background work and revokes the instance lease (its
// registration and readiness go at once).
func (s *Store) Close() error {
	s.cancel()
	s.wg.Wait()
	if id := s.lease.Load(); id != 0 {
		ctx, cancel := context.WithTimeout(context.Background(), s.o.RequestTimeout)
		s.cli.Revoke(ctx, clientv3.LeaseID(id))
		cancel()
	}
	return s.cli.Close()
}

// Instance is this cutover's name.
func (s *Store) Instance() string { return s.o.Instance }

// Where names the store in messages.
func (s *Store) Where() string {
	return fmt.Sprintf("etcd %s (prefix %s)", strings.Join(s.o.Endpoints, ", "), s.o.Prefix)
}

func (s *Store) key(dir string, parts ...string) string {
	return s.o.Prefix + dir + strings.Join(parts, "/")
}

// Problem says why etcd cannot be used now ("" when it can).
func (s *Store) Problem() string {
	if p := s.problem.Load(); p != nil {
		return *p
	}
	return ""
}

func (s *Store) setProblem(err error) {
	msg := fmt.Sprintf("%s cannot be reached: %v", s.Where(), err)
	if old := s.problem.Swap(&msg); old == nil {
		s.log.Error("etcd store unreachable: serving the last state applied, refusing changes", "store", s.Where(), "err", err)
	}
}

// unreachable is the error of a request that did not get through.
func (s *Store) unreachable(err error) error {
	s.setProblem(err)
	return fmt.Errorf("%s cannot be reached: %w", s.Where(), err)
}

func (s *Store) timeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.o.RequestTimeout)
}

// twice runs a request that is safe to repeat, each try under the
// request timeout, and tries once more when the first fails: a member that
// just stopped can take the first try with it before the client's balancer
// moves on to the others.
func (s *Store) twice(ctx context.Context, req func(context.Context) error) error {
	var err error
	for range 2 {
		rctx, cancel := s.timeout(ctx)
		err = req(rctx)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// probe checks etcd every ProbeInterval with a linearizable read (which
// needs a quorum) and asks for a resync when it answers again.
func (s *Store) probe() {
	t := time.NewTicker(s.o.ProbeInterval)
	defer t.Stop()
	for {
		err := s.twice(s.ctx, func(ctx context.Context) error {
			_, err := s.cli.Get(ctx, s.key(dirServices), clientv3.WithPrefix(), clientv3.WithCountOnly())
			return err
		})
		switch {
		case s.ctx.Err() != nil:
			return
		case err != nil:
			s.setProblem(err)
		case s.problem.Load() != nil:
			s.problem.Store(nil)
			s.log.Info("etcd store reachable again: catching up", "store", s.Where())
			select {
			case s.resync <- struct{}{}:
			default:
			}
			s.kickPublish()
		}
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Check refuses a change while etcd cannot be reached (as the prober
// last saw it; the commit checks again).
func (s *Store) Check(context.Context) error {
	if p := s.Problem(); p != "" {
		return errors.New(p)
	}
	return nil
}

// Load reads every service. When etcd cannot be reached it returns the
// cached state of the last run (or nothing), so the instance starts and
// serves it.
func (s *Store) Load(ctx context.Context) (map[string]state.Service, error) {
	ctx, cancel := s.timeout(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.key(dirServices), clientv3.WithPrefix())
	if err != nil {
		s.setProblem(err)
		cached, cerr := s.readCache()
		if cerr != nil {
			return nil, cerr
		}
		s.log.Warn("etcd store unreachable at start: serving the cached state", "store", s.Where(), "cache", s.cachePath(), "services", len(cached), "err", err)
		return cached, nil
	}
	out := map[string]state.Service{}
	for _, kv := range resp.Kvs {
		name, v, err := s.decodeService(kv.Key, kv.Value, kv.ModRevision)
		if err != nil {
			return nil, err
		}
		out[name] = v
	}
	return out, nil
}

func (s *Store) decodeService(key, value []byte, rev int64) (string, state.Service, error) {
	name := strings.TrimPrefix(string(key), s.key(dirServices))
	var v state.Service
	if err := json.Unmarshal(value, &v); err != nil {
		return name, v, fmt.Errorf("%s: key %s is not a cutover desired state (%v) — delete it or put a valid one", s.Where(), key, err)
	}
	v.Revision = rev
	return name, v, nil
}

// Commit is one transaction: every changed key must still have the mod
// revision its change was computed from.
func (s *Store) Commit(ctx context.Context, changes []state.Change) (int64, error) {
	ctx, cancel := s.timeout(ctx)
	defer cancel()
	var cmps []clientv3.Cmp
	var then, els []clientv3.Op
	for _, c := range changes {
		k := s.key(dirServices, c.Service)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", c.Revision))
		els = append(els, clientv3.OpGet(k))
		if c.Value == nil {
			then = append(then, clientv3.OpDelete(k))
			continue
		}
		v := c.Value.Clone()
		v.Revision = 0 // the key's mod revision is the revision
		data, err := json.Marshal(v)
		if err != nil {
			return 0, fmt.Errorf("encode desired state of %q: %w", c.Service, err)
		}
		then = append(then, clientv3.OpPut(k, string(data)))
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(then...).Else(els...).Commit()
	if err != nil {
		return 0, s.unreachable(err)
	}
	if !resp.Succeeded {
		for i, r := range resp.Responses {
			var found int64
			if kvs := r.GetResponseRange().GetKvs(); len(kvs) > 0 {
				found = kvs[0].ModRevision
			}
			if found != changes[i].Revision {
				return 0, &state.ConflictError{Service: changes[i].Service, Want: changes[i].Revision, Found: found, StoreDescribed: s.Where()}
			}
		}
		return 0, &state.ConflictError{Service: changes[0].Service, Want: changes[0].Revision, StoreDescribed: s.Where()}
	}
	return resp.Header.Revision, nil
}

// Follow reads everything, hands it to f, then watches the prefix from the
// next revision; it starts over when the watch ends (no leader, compacted)
// and when the prober saw etcd come back.
func (s *Store) Follow(ctx context.Context, f state.Follower) {
	announced := map[string]state.Intent{} // by service
	pause := 50 * time.Millisecond
	for ctx.Err() == nil {
		rev, err := s.snapshot(ctx, f, announced)
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(pause):
			case <-s.resync:
			}
			pause = min(pause*2, 500*time.Millisecond)
			continue
		}
		pause = 50 * time.Millisecond
		s.watch(ctx, f, announced, rev)
	}
}

// snapshot reads the whole prefix and hands it to f.
func (s *Store) snapshot(ctx context.Context, f state.Follower, announced map[string]state.Intent) (int64, error) {
	rctx, cancel := s.timeout(ctx)
	resp, err := s.cli.Txn(rctx).Then(
		clientv3.OpGet(s.key(dirServices), clientv3.WithPrefix()),
		clientv3.OpGet(s.key(dirLocks), clientv3.WithPrefix()),
		clientv3.OpGet(s.key(dirEnd), clientv3.WithPrefix()),
	).Commit()
	cancel()
	if err != nil {
		s.setProblem(err)
		return 0, err
	}
	services := map[string]state.Service{}
	for _, kv := range resp.Responses[0].GetResponseRange().GetKvs() {
		name, v, err := s.decodeService(kv.Key, kv.Value, kv.ModRevision)
		if err != nil {
			s.log.Error("etcd store: skipping a key", "err", err)
			continue
		}
		services[name] = v
	}
	f.ApplyStored(services, true)
	seen := map[string]bool{}
	for _, kv := range resp.Responses[1].GetResponseRange().GetKvs() {
		var i state.Intent
		if json.Unmarshal(kv.Value, &i) != nil {
			continue
		}
		seen[i.Service] = true
		if old, ok := announced[i.Service]; ok && old.ID == i.ID {
			continue
		}
		announced[i.Service] = i
		f.Announced(i, true)
	}
	for svc, i := range announced {
		if !seen[svc] {
			delete(announced, svc)
			f.Announced(i, false)
		}
	}
	// A request to end a trial made while the watch was down.
	for _, kv := range resp.Responses[2].GetResponseRange().GetKvs() {
		var e state.TrialEnd
		if json.Unmarshal(kv.Value, &e) == nil {
			f.TrialEndAsked(e)
		}
	}
	return resp.Header.Revision, nil
}

func (s *Store) watch(ctx context.Context, f state.Follower, announced map[string]state.Intent, rev int64) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := s.cli.Watch(wctx, s.o.Prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	svcPrefix, lockPrefix, endPrefix := s.key(dirServices), s.key(dirLocks), s.key(dirEnd)
	for {
		var wr clientv3.WatchResponse
		var ok bool
		select {
		case <-ctx.Done():
			return
		case <-s.resync:
			return
		case wr, ok = <-wch:
		}
		if !ok || wr.Canceled || wr.Err() != nil {
			if err := wr.Err(); err != nil && ctx.Err() == nil {
				s.log.Warn("etcd watch ended; reading the state again", "store", s.Where(), "err", err)
			}
			return
		}
		changed := map[string]state.Service{}
		for _, ev := range wr.Events {
			k := string(ev.Kv.Key)
			switch {
			case strings.HasPrefix(k, svcPrefix):
				if ev.Type == clientv3.EventTypeDelete {
					continue // the configuration says which services exist
				}
				name, v, err := s.decodeService(ev.Kv.Key, ev.Kv.Value, ev.Kv.ModRevision)
				if err != nil {
					s.log.Error("etcd store: skipping a key", "err", err)
					continue
				}
				changed[name] = v
			case strings.HasPrefix(k, lockPrefix):
				// The switch (a services key) comes before the lock's
				// release in revision order: hand over what changed so
				// far first.
				if len(changed) > 0 {
					f.ApplyStored(changed, false)
					changed = map[string]state.Service{}
				}
				svc := strings.TrimPrefix(k, lockPrefix)
				if ev.Type == clientv3.EventTypeDelete {
					if i, ok := announced[svc]; ok {
						delete(announced, svc)
						f.Announced(i, false)
					}
					continue
				}
				var i state.Intent
				if json.Unmarshal(ev.Kv.Value, &i) == nil {
					announced[svc] = i
					f.Announced(i, true)
				}
			case strings.HasPrefix(k, endPrefix) && ev.Type == clientv3.EventTypePut:
				var e state.TrialEnd
				if json.Unmarshal(ev.Kv.Value, &e) == nil {
					f.TrialEndAsked(e)
				}
			}
		}
		if len(changed) > 0 {
			f.ApplyStored(changed, false)
		}
	}
}

// Applied records what this instance serves now: it is cached in
// CacheDir and its revision published under instances/.
func (s *Store) Applied(services map[string]state.Service) {
	s.mu.Lock()
	s.applied = map[string]state.Service{}
	var rev int64
	for k, v := range services {
		s.applied[k] = v.Clone()
		rev = max(rev, v.Revision)
	}
	s.rev = rev
	s.mu.Unlock()
	s.kickPublish()
}

func (s *Store) kickPublish() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// registration is the value of instances/<name>.
type registration struct {
	Applied int64     `json:"applied"`
	PID     int       `json:"pid"`
	Since   time.Time `json:"since"`
}

// publish writes the cache file and the registration after each change,
// off the apply path (a burst of changes makes one write).
func (s *Store) publish() {
	since := time.Now()
	var cached int64 = -1
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.kick:
		}
		s.mu.Lock()
		rev := s.rev
		snap := make(map[string]state.Service, len(s.applied))
		for k, v := range s.applied {
			snap[k] = v
		}
		s.mu.Unlock()
		if rev != cached && s.o.CacheDir != "" && !s.superseded.Load() {
			st := state.New()
			st.Revision, st.Services = rev, snap
			if err := state.Save(s.cachePath(), st); err != nil {
				s.log.Warn("etcd store: caching the applied state failed (a start while etcd is down would serve an older one)", "cache", s.cachePath(), "err", err)
			} else {
				cached = rev
			}
		}
		id := s.lease.Load()
		if id == 0 || s.Problem() != "" {
			continue // registered again (with the revision) once etcd answers
		}
		data, _ := json.Marshal(registration{Applied: rev, PID: os.Getpid(), Since: since})
		ctx, cancel := s.timeout(s.ctx)
		if err := s.putRegistration(ctx, clientv3.LeaseID(id), string(data)); err != nil && s.ctx.Err() == nil {
			s.log.Warn("etcd store: publishing the applied revision failed", "err", err)
		}
		cancel()
	}
}

// putRegistration writes instances/<name> under lease id: at a claim
// whoever held the name, else only over this process's own registration
// (or when nobody holds the name).
func (s *Store) putRegistration(ctx context.Context, id clientv3.LeaseID, data string) error {
	k := s.key(dirInstances, s.o.Instance)
	put := clientv3.OpPut(k, data, clientv3.WithLease(id))
	var cmp clientv3.Cmp
	switch {
	case s.claim.Load():
		if _, err := s.cli.Put(ctx, k, data, clientv3.WithLease(id)); err != nil {
			return err
		}
		s.claim.Store(false)
		s.noteRegistered(id)
		return nil
	case s.registered.Load() == int64(id):
		cmp = clientv3.Compare(clientv3.LeaseValue(k), "=", id)
	default:
		// A new lease (the old one expired): the name is free unless
		// another process took it meanwhile.
		cmp = clientv3.Compare(clientv3.CreateRevision(k), "=", 0)
	}
	resp, err := s.cli.Txn(ctx).If(cmp).Then(put).Else(clientv3.OpGet(k)).Commit()
	if err != nil {
		return err
	}
	if resp.Succeeded {
		s.noteRegistered(id)
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) == 0 {
		// The name went free (its holder left): take it again.
		resp, err = s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).Then(put).Commit()
		if err == nil && resp.Succeeded {
			s.noteRegistered(id)
		}
		return err
	}
	if kvs[0].Lease != int64(id) && !s.superseded.Swap(true) {
		var r registration
		json.Unmarshal(kvs[0].Value, &r)
		s.log.Info("etcd store: another process of this instance registered (the new process of an upgrade); this one publishes nothing more",
			"instance", s.o.Instance, "pid", r.PID)
	}
	return nil
}

func (s *Store) noteRegistered(id clientv3.LeaseID) {
	s.registered.Store(int64(id))
	s.superseded.Store(false)
	s.registeredOnce.Do(func() { close(s.registeredCh) })
}

// Claim makes this process the instance's registration again, over any
// other process of the same instance (the old process of an upgrade that
// failed takes its name back from the new one it stopped).
func (s *Store) Claim() {
	s.claim.Store(true)
	s.kickPublish()
}

// Registered is closed once this process has registered the instance.
func (s *Store) Registered() <-chan struct{} { return s.registeredCh }

// register keeps the instance lease: granted, kept alive, granted again
// after it was lost (an instance cut off longer than its TTL).
func (s *Store) register() {
	ttl := int64(max(s.o.InstanceTTL/time.Second, 1))
	for s.ctx.Err() == nil {
		ctx, cancel := s.timeout(s.ctx)
		g, err := s.cli.Grant(ctx, ttl)
		cancel()
		if err != nil {
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		ka, err := s.cli.KeepAlive(s.ctx, g.ID)
		if err != nil {
			continue
		}
		s.lease.Store(int64(g.ID))
		s.kickPublish()
		for range ka {
		}
		if s.ctx.Err() != nil {
			// Closing: the keep-alive ended because of it, not because
			// the lease was lost; Close revokes the lease.
			return
		}
		s.lease.Store(0)
	}
}

// Lock takes the deploy lock of i.Service: a key that exists only while
// the deployer's own lease lives.
func (s *Store) Lock(ctx context.Context, i state.Intent) (func(), error) {
	if p := s.Problem(); p != "" {
		return nil, errors.New(p)
	}
	var g *clientv3.LeaseGrantResponse
	err := s.twice(ctx, func(ctx context.Context) (err error) {
		g, err = s.cli.Grant(ctx, int64(max(s.o.LockTTL/time.Second, 1)))
		return err
	})
	if err != nil {
		return nil, s.unreachable(err)
	}
	rctx, cancel := s.timeout(ctx)
	defer cancel()
	// Kept alive from the grant on: a slow transaction must not outlast
	// the lease.
	kctx, stop := context.WithCancel(context.Background())
	ka, err := s.cli.KeepAlive(kctx, g.ID)
	if err != nil {
		stop()
		s.cli.Revoke(rctx, g.ID)
		return nil, s.unreachable(err)
	}
	go func() {
		for range ka {
		}
	}()
	k := s.key(dirLocks, i.Service)
	data, _ := json.Marshal(i)
	var resp *clientv3.TxnResponse
	// Tried again like a read (a member that just stopped can take the
	// first try with it): a first try that took the lock shows as held
	// by this very intent.
	err = s.twice(ctx, func(ctx context.Context) (err error) {
		resp, err = s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
			Then(clientv3.OpPut(k, string(data), clientv3.WithLease(g.ID))).
			Else(clientv3.OpGet(k)).Commit()
		return err
	})
	if err != nil {
		stop()
		s.cli.Revoke(rctx, g.ID)
		return nil, s.unreachable(err)
	}
	if !resp.Succeeded {
		var holder state.Intent
		if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
			json.Unmarshal(kvs[0].Value, &holder)
		}
		if holder.ID != i.ID {
			stop()
			s.cli.Revoke(rctx, g.ID)
			return nil, &state.LockedError{Holder: holder, Where: s.Where()}
		}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			stop()
			ctx, cancel := s.timeout(context.Background())
			defer cancel()
			if _, err := s.cli.Revoke(ctx, g.ID); err != nil {
				s.log.Warn("etcd store: releasing the deploy lock failed; it expires with its lease", "service", i.Service, "ttl", s.o.LockTTL, "err", err)
			}
		})
	}, nil
}

// EndTrial asks the trial holding service's lock to end: the request is a
// key bound to the lock's own lease (it goes with the lock), which the
// holder's watch hands to its trial; then it waits for the trial to act.
func (s *Store) EndTrial(ctx context.Context, service, action string) (state.Intent, int64, error) {
	if p := s.Problem(); p != "" {
		return state.Intent{}, 0, errors.New(p)
	}
	lk, sk := s.key(dirLocks, service), s.key(dirServices, service)
	// A lock that changes hands (or whose lease just expired) between
	// the read and the write is read again.
	for range 3 {
		rctx, cancel := s.timeout(ctx)
		resp, err := s.cli.Txn(rctx).Then(clientv3.OpGet(lk), clientv3.OpGet(sk)).Commit()
		cancel()
		if err != nil {
			return state.Intent{}, 0, s.unreachable(err)
		}
		locks := resp.Responses[0].GetResponseRange().GetKvs()
		if len(locks) == 0 {
			return state.Intent{}, 0, state.ErrNoTrial
		}
		var holder state.Intent
		if err := json.Unmarshal(locks[0].Value, &holder); err != nil {
			return state.Intent{}, 0, fmt.Errorf("%s: the deploy lock %s is not a cutover deploy (%v) — delete the key", s.Where(), lk, err)
		}
		if holder.Trial == "" {
			return holder, 0, &state.LockedError{Holder: holder, Where: s.Where()}
		}
		var cur state.Service
		var curRev int64
		if kvs := resp.Responses[1].GetResponseRange().GetKvs(); len(kvs) > 0 {
			_, cur, _ = s.decodeService(kvs[0].Key, kvs[0].Value, kvs[0].ModRevision)
			curRev = kvs[0].ModRevision
		}
		data, _ := json.Marshal(state.TrialEnd{Service: service, ID: holder.ID, Action: action, By: s.o.Instance})
		rctx, cancel = s.timeout(ctx)
		put, err := s.cli.Txn(rctx).
			If(clientv3.Compare(clientv3.CreateRevision(lk), "=", locks[0].CreateRevision)).
			Then(clientv3.OpPut(s.key(dirEnd, service), string(data), clientv3.WithLease(clientv3.LeaseID(locks[0].Lease)))).
			Commit()
		cancel()
		if ctx.Err() != nil {
			return holder, 0, ctx.Err()
		}
		if err != nil || !put.Succeeded {
			continue
		}
		rev, err := s.awaitTrialEnd(ctx, service, put.Header.Revision, cur, curRev)
		if err != nil {
			return holder, 0, fmt.Errorf("instance %s was asked to %s the %s of service %q but has not acted yet: %w", holder.Instance, action, holder.Trial, service, err)
		}
		return holder, rev, nil
	}
	return state.Intent{}, 0, fmt.Errorf("%s: the deploy lock of service %q kept changing hands — retry", s.Where(), service)
}

// awaitTrialEnd waits, from revision rev on, until service's stable or
// canary pool differs from cur's or its lock is let go, and returns the
// service's revision then.
func (s *Store) awaitTrialEnd(ctx context.Context, service string, rev int64, cur state.Service, curRev int64) (int64, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	lk, sk := s.key(dirLocks, service), s.key(dirServices, service)
	wch := s.cli.Watch(wctx, s.o.Prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				if ctx.Err() != nil {
					return 0, ctx.Err()
				}
				return 0, s.unreachable(fmt.Errorf("watch ended: %v", wr.Err()))
			}
			for _, ev := range wr.Events {
				switch string(ev.Kv.Key) {
				case sk:
					if ev.Type != clientv3.EventTypePut {
						continue
					}
					_, v, err := s.decodeService(ev.Kv.Key, ev.Kv.Value, ev.Kv.ModRevision)
					if err != nil {
						continue
					}
					curRev = ev.Kv.ModRevision
					if v.Active != cur.Active || v.Canary != cur.Canary {
						return curRev, nil
					}
				case lk:
					return curRev, nil // let go (or expired and taken again)
				}
			}
		}
	}
}

// PublishReady writes this instance's readiness for r's pool under its
// instance lease (it goes when the instance does).
func (s *Store) PublishReady(ctx context.Context, r state.Readiness) error {
	id := s.lease.Load()
	if id == 0 {
		return fmt.Errorf("%s: instance %s is not registered yet", s.Where(), s.o.Instance)
	}
	if s.superseded.Load() {
		return nil // the process that replaced this one publishes its own
	}
	data, _ := json.Marshal(r)
	ctx, cancel := s.timeout(ctx)
	defer cancel()
	// Only under this process's own registration: the process an
	// upgrade replaced must not write over its successor's readiness.
	ik := s.key(dirInstances, s.o.Instance)
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(ik), "=", id)).
		Then(clientv3.OpPut(s.key(dirReady, r.Service, r.Pool, r.Instance), string(data), clientv3.WithLease(clientv3.LeaseID(id)))).
		Else(clientv3.OpGet(ik, clientv3.WithKeysOnly())).
		Commit()
	if err != nil {
		return s.unreachable(err)
	}
	if resp.Succeeded {
		return nil
	}
	if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 && s.registered.Load() != 0 && !s.claim.Load() {
		// Registered before, and another process holds the name now.
		s.superseded.Store(true)
		return nil
	}
	s.kickPublish()
	return fmt.Errorf("%s: instance %s is not registered yet", s.Where(), s.o.Instance)
}

// AwaitReady waits until every other live instance published i.Pool
// ready for attempt i.ID.
func (s *Store) AwaitReady(ctx context.Context, i state.Intent, wait func([]state.Waiting)) error {
	readyPrefix := s.key(dirReady, i.Service, i.Pool) + "/"
	var last string
	var waiting []state.Waiting
	for {
		rctx, cancel := s.timeout(ctx)
		resp, err := s.cli.Txn(rctx).Then(
			clientv3.OpGet(s.key(dirInstances), clientv3.WithPrefix()),
			clientv3.OpGet(readyPrefix, clientv3.WithPrefix()),
		).Commit()
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return &state.NotReadyError{Waiting: waiting, Err: ctx.Err()}
			}
			return s.unreachable(err)
		}
		ready := map[string]state.Readiness{}
		for _, kv := range resp.Responses[1].GetResponseRange().GetKvs() {
			var r state.Readiness
			if json.Unmarshal(kv.Value, &r) == nil {
				ready[r.Instance] = r
			}
		}
		waiting = waiting[:0]
		for _, kv := range resp.Responses[0].GetResponseRange().GetKvs() {
			name := strings.TrimPrefix(string(kv.Key), s.key(dirInstances))
			if name == s.o.Instance {
				continue // the deployer checked the pool itself
			}
			r, ok := ready[name]
			w := state.Waiting{Instance: name, Reported: ok && r.ID == i.ID}
			switch {
			case !w.Reported:
			case r.Problem != "":
				w.Problem = r.Problem
			case r.Ready:
				continue
			default:
				for _, t := range r.Targets {
					if !t.Ready {
						w.Targets = append(w.Targets, t)
					}
				}
			}
			waiting = append(waiting, w)
		}
		sort.Slice(waiting, func(a, b int) bool { return waiting[a].Instance < waiting[b].Instance })
		if desc := fmt.Sprint(waiting); desc != last {
			last = desc
			wait(waiting)
		}
		if len(waiting) == 0 {
			return nil
		}
		if err := s.awaitChange(ctx, resp.Header.Revision, readyPrefix); err != nil {
			return &state.NotReadyError{Waiting: waiting, Err: err}
		}
	}
}

// awaitChange returns once a key of instances/ or under readyPrefix
// changed after rev.
func (s *Store) awaitChange(ctx context.Context, rev int64, readyPrefix string) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := s.cli.Watch(wctx, s.o.Prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithKeysOnly())
	inst := s.key(dirInstances)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return nil // read again
			}
			for _, ev := range wr.Events {
				k := string(ev.Kv.Key)
				if strings.HasPrefix(k, inst) || strings.HasPrefix(k, readyPrefix) {
					return nil
				}
			}
		}
	}
}

// Status lists the live instances with what each applied.
func (s *Store) Status(ctx context.Context) state.SharedStatus {
	s.mu.Lock()
	st := state.SharedStatus{Where: s.Where(), Instance: s.o.Instance, Applied: s.rev, Problem: s.Problem()}
	s.mu.Unlock()
	if st.Problem != "" {
		return st
	}
	ctx, cancel := context.WithTimeout(ctx, s.o.RequestTimeout)
	defer cancel()
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.key(dirServices), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(s.key(dirInstances), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		st.Problem = s.unreachable(err).Error()
		return st
	}
	var revs []int64
	for _, kv := range resp.Responses[0].GetResponseRange().GetKvs() {
		revs = append(revs, kv.ModRevision)
		st.Latest = max(st.Latest, kv.ModRevision)
	}
	for _, kv := range resp.Responses[1].GetResponseRange().GetKvs() {
		var r registration
		json.Unmarshal(kv.Value, &r)
		is := state.InstanceStatus{Name: strings.TrimPrefix(string(kv.Key), s.key(dirInstances)), Applied: r.Applied, Since: r.Since}
		for _, rv := range revs {
			if rv > r.Applied {
				is.Behind++
			}
		}
		st.Instances = append(st.Instances, is)
	}
	return st
}

func (s *Store) cachePath() string { return filepath.Join(s.o.CacheDir, CacheFile) }

// readCache is the state cached by the last run (empty without one).
func (s *Store) readCache() (map[string]state.Service, error) {
	if s.o.CacheDir == "" {
		return map[string]state.Service{}, nil
	}
	st, err := state.Load(s.cachePath())
	if err != nil {
		return nil, err
	}
	if st == nil {
		return map[string]state.Service{}, nil
	}
	return st.Services, nil
}

// AppliedRevision is the highest revision this instance applied.
func (s *Store) AppliedRevision() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rev
}

// AwaitApplied waits until every live instance has applied revision rev
// (or a later one), as each publishes it in its registration; wait
// receives the instances that have and those still behind as that
// changes.
func (s *Store) AwaitApplied(ctx context.Context, rev int64, wait func(applied, behind []string)) error {
	last := "-"
	for {
		rctx, cancel := s.timeout(ctx)
		resp, err := s.cli.Get(rctx, s.key(dirInstances), clientv3.WithPrefix())
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return s.unreachable(err)
		}
		var applied, behind []string
		for _, kv := range resp.Kvs {
			var r registration
			json.Unmarshal(kv.Value, &r)
			name := strings.TrimPrefix(string(kv.Key), s.key(dirInstances))
			if r.Applied >= rev {
				applied = append(applied, name)
			} else {
				behind = append(behind, name)
			}
		}
		if desc := fmt.Sprint(applied, behind); desc != last {
			last = desc
			wait(applied, behind)
		}
		if len(behind) == 0 {
			return nil
		}
		if err := s.awaitChange(ctx, resp.Header.Revision, s.key(dirInstances)); err != nil {
			return err
		}
	}
}
