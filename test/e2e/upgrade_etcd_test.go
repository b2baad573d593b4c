package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cutover/cutover/bench/loadclient"
	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/testutil/etcdtest"
)

// TestUpgradeKeepsEtcdRegistration: with the desired state in etcd, the
// instance's registration (what status and the readiness gate of the
// other instances go by) never leaves etcd across upgrades, and names the
// new process as soon as the old one is gone; under a strict load client
// no request fails.
func TestUpgradeKeepsEtcdRegistration(t *testing.T) {
	etcd := etcdtest.Start(t, 1)
	bs := newBinaryStack(t)
	bs.writeUpgradeConfig(t, upgradeConfig{http: bs.proxyAddr})
	const name = "edge-up"
	f, err := os.OpenFile(bs.cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "store:\n  etcd:\n    endpoints: [\"%s\"]\ninstance: %s\n", strings.Join(etcd.Endpoints(), `", "`), name)
	f.Close()

	cli := etcd.Client(t)
	key := config.DefaultEtcdPrefix + "instances/" + name
	// registered reads the registration: the pid it names and the revision
	// of the read (0, 0 when there is none).
	registered := func() (pid int, rev int64) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := cli.Get(ctx, key)
		if err != nil {
			t.Fatalf("read %s: %v", key, err)
		}
		if len(resp.Kvs) == 0 {
			return 0, resp.Header.Revision
		}
		var r struct {
			PID int `json:"pid"`
		}
		json.Unmarshal(resp.Kvs[0].Value, &r)
		return r.PID, resp.Header.Revision
	}
	awaitRegistered := func(pid int) int64 {
		deadline := time.Now().Add(15 * time.Second)
		for {
			got, rev := registered()
			if got == pid {
				return rev
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s names pid %d, want %d", key, got, pid)
			}
			// Polling etcd for a process's first registration.
			time.Sleep(20 * time.Millisecond)
		}
	}

	s := bs.serve(t)
	pid := s.cmd.Process.Pid
	from := awaitRegistered(pid)
	wctx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	wch := cli.Watch(wctx, key, clientv3.WithRev(from+1), clientv3.WithProgressNotify())
	var mu sync.Mutex
	var deletes []int64
	var seen int64
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for wr := range wch {
			mu.Lock()
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					deletes = append(deletes, ev.Kv.ModRevision)
				}
			}
			seen = max(seen, wr.Header.Revision)
			mu.Unlock()
		}
	}()
	// watchedTo waits until the watch has reported everything up to rev.
	watchedTo := func(rev int64) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			done := seen >= rev
			mu.Unlock()
			if done {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the watch of %s did not reach revision %d", key, rev)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			cli.RequestProgress(clientv3.WithRequireLeader(ctx))
			cancel()
			time.Sleep(20 * time.Millisecond)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	load := startLoad(ctx, t, loadclient.Options{
		Addr: bs.proxyAddr, Connections: 8, Duration: time.Minute, Host: "localhost",
		BackendHeader: "X-Backend", Timeout: requestTimeout,
	})
	for i := range 3 {
		old := pid
		pid, _ = bs.upgradeOnce(t, pid)
		got, rev := registered()
		if got != pid {
			t.Fatalf("upgrade %d: once the old process (pid %d) is gone, %s names pid %d, want the new process %d", i+1, old, key, got, pid)
		}
		watchedTo(rev)
		mu.Lock()
		d := append([]int64(nil), deletes...)
		mu.Unlock()
		if len(d) > 0 {
			t.Fatalf("upgrade %d: the registration %s was deleted at revisions %v (the instance left the live set)", i+1, key, d)
		}
	}
	cancel()
	res := <-load.done
	requests, failed, kinds, _ := strictCount(res, 0)
	t.Logf("3 upgrades with the state in etcd: the registration stayed and named each new process; %d requests, %d failed", requests, failed)
	if failed > 0 || requests == 0 {
		t.Fatalf("%d of %d requests failed: %v", failed, requests, kinds)
	}
	stopWatch()
	<-watched
}
