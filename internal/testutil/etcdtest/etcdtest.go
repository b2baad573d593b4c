// Package etcdtest runs an etcd cluster inside a test process: members on
// 127.0.0.1 with free ports, data in the test's temporary folder, no logs.
package etcdtest

import (
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/cutover/cutover/internal/testutil/freeport"
)

// Cluster is a running embedded cluster.
type Cluster struct {
	t       testing.TB
	Members []*Member
}

// Member is one etcd member.
type Member struct {
	Name      string
	ClientURL string
	cfg       *embed.Config
	e         *embed.Etcd
}

// Start runs an n-member cluster and waits until it has a leader. It is
// stopped when the test ends.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t}
	var initial []string
	for i := range n {
		client, peer := freeURL(t), freeURL(t)
		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.Dir = t.TempDir()
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
		cfg.ListenMetricsUrls = nil
		cfg.InitialClusterToken = "cutover-test"
		cfg.ClusterState = embed.ClusterStateFlagNew
		// Quick elections: a stopped member or a lost quorum shows in
		// milliseconds rather than seconds.
		cfg.TickMs, cfg.ElectionMs = 25, 250
		cfg.Logger, cfg.ZapLoggerBuilder = "zap", embed.NewZapLoggerBuilder(zap.NewNop())
		cfg.UnsafeNoFsync = true
		c.Members = append(c.Members, &Member{Name: cfg.Name, ClientURL: client.String(), cfg: cfg})
		initial = append(initial, fmt.Sprintf("%s=%s", cfg.Name, peer.String()))
	}
	for _, m := range c.Members {
		m.cfg.InitialCluster = strings.Join(initial, ",")
	}
	for _, m := range c.Members {
		c.run(m)
	}
	for _, m := range c.Members {
		c.waitReady(m)
	}
	t.Cleanup(func() {
		for _, m := range c.Members {
			m.stop()
		}
	})
	return c
}

func (c *Cluster) run(m *Member) {
	c.t.Helper()
	e, err := embed.StartEtcd(m.cfg)
	if err != nil {
		c.t.Fatalf("start etcd member %s: %v", m.Name, err)
	}
	m.e = e
}

func (c *Cluster) waitReady(m *Member) {
	c.t.Helper()
	select {
	case <-m.e.Server.ReadyNotify():
	case err := <-m.e.Err():
		c.t.Fatalf("etcd member %s: %v", m.Name, err)
	case <-time.After(30 * time.Second):
		c.t.Fatalf("etcd member %s not ready after 30s", m.Name)
	}
}

// Endpoints are the members' client URLs.
func (c *Cluster) Endpoints() []string {
	out := make([]string, len(c.Members))
	for i, m := range c.Members {
		out[i] = m.ClientURL
	}
	return out
}

// Client is an etcd client of the cluster for the test to look at keys
// with; it is closed when the test ends.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Stop stops member i.
func (c *Cluster) Stop(i int) { c.Members[i].stop() }

// Restart starts member i again on its ports and data.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	m := c.Members[i]
	m.cfg.ClusterState = embed.ClusterStateFlagExisting
	c.run(m)
}

// WaitReady waits until restarted member i serves again.
func (c *Cluster) WaitReady(i int) { c.waitReady(c.Members[i]) }

func (m *Member) stop() {
	if m.e != nil {
		m.e.Close()
		<-m.e.Server.StopNotify()
		m.e = nil
	}
}

// freeURL is below the ephemeral range: Restart binds the same ports
// again, and meanwhile an outgoing connection could take an ephemeral one.
func freeURL(t testing.TB) url.URL {
	t.Helper()
	return url.URL{Scheme: "http", Host: freeport.For(t)}
}

// Relay is a TCP relay the test can cut: a client pointed at it reaches
// the target until Cut, and again after Resume (on the same address).
type Relay struct {
	t      testing.TB
	Addr   string
	target string

	mu    sync.Mutex
	l     net.Listener
	conns map[net.Conn]bool
	done  chan struct{}
}

// NewRelay relays 127.0.0.1:free to target; it is closed when the test
// ends.
func NewRelay(t testing.TB, target string) *Relay {
	t.Helper()
	r := &Relay{t: t, target: target}
	// Below the ephemeral range, because Resume binds the address again.
	l, err := net.Listen("tcp", freeport.For(t))
	if err != nil {
		t.Fatal(err)
	}
	r.Addr = l.Addr().String()
	r.serve(l)
	t.Cleanup(r.Cut)
	return r
}

// URL is the relay as an etcd endpoint.
func (r *Relay) URL() string { return "http://" + r.Addr }

func (r *Relay) serve(l net.Listener) {
	r.mu.Lock()
	r.l, r.conns, r.done = l, map[net.Conn]bool{}, make(chan struct{})
	done := r.done
	r.mu.Unlock()
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", r.target)
			if err != nil {
				c.Close()
				continue
			}
			r.mu.Lock()
			r.conns[c], r.conns[up] = true, true
			r.mu.Unlock()
			go pipe(c, up)
			go pipe(up, c)
		}
	}()
}

func pipe(dst, src net.Conn) {
	io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// Cut closes the relay's listener and every connection through it.
func (r *Relay) Cut() {
	r.mu.Lock()
	l, done := r.l, r.done
	r.l = nil
	r.mu.Unlock()
	if l == nil {
		return
	}
	l.Close()
	<-done
	r.mu.Lock()
	for c := range r.conns {
		c.Close()
	}
	r.conns = map[net.Conn]bool{}
	r.mu.Unlock()
}

// Resume listens again on the relay's address.
func (r *Relay) Resume() {
	r.t.Helper()
	l, err := net.Listen("tcp", r.Addr)
	if err != nil {
		r.t.Fatalf("relay: listen again on %s: %v", r.Addr, err)
	}
	r.serve(l)
}
