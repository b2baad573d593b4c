package rules

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/controlplane/state"
	"github.com/cutover/cutover/internal/dataplane/upstream"
)

func kindOf(err error) admin.ErrorKind {
	var ae *admin.Error
	if errors.As(err, &ae) {
		return ae.Kind
	}
	return ""
}

func TestSwitchNext(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cur := state.Service{Revision: 7, Active: "blue", Previous: "green", Preview: "red", Canary: "red", Weight: 1000,
		StopAt: map[string]time.Time{"red": at}}
	nx, err := Switch{Kind: admin.OpDeploy, Service: "web", Pool: "red", Expect: "blue",
		Targets: []upstream.TargetSpec{{Addr: "127.0.0.1:9001"}}, StopOldAt: at}.Next(cur.Clone())
	if err != nil {
		t.Fatal(err)
	}
	if nx.Active != "red" || nx.Previous != "blue" || nx.Preview != "" || nx.Canary != "" || nx.Weight != 0 {
		t.Fatalf("after the switch to red: %+v, want red active, blue previous, no preview or canary", nx)
	}
	if ts := nx.Targets["red"]; len(ts) != 1 || ts[0].Addr != "127.0.0.1:9001" {
		t.Fatalf("red's run-time targets: %v", nx.Targets)
	}
	if _, ok := nx.StopAt["red"]; ok || !nx.StopAt["blue"].Equal(at) {
		t.Fatalf("stops: %v, want blue's scheduled and red's (routed again) dropped", nx.StopAt)
	}
	if cur.Active != "blue" || cur.Targets != nil {
		t.Fatalf("Next changed its input: %+v", cur)
	}
	if _, err := (Switch{Kind: admin.OpRollback, Service: "web", Pool: "green", Expect: "green"}).Next(cur); kindOf(err) != admin.KindRefused {
		t.Fatalf("switch expecting green while blue is active: %v, want refused", err)
	}
}

func TestRollbackAndHeld(t *testing.T) {
	if p, err := Rollback(state.Service{Active: "green", Previous: "blue"}, "web", ""); err != nil || p != "blue" {
		t.Fatalf("rollback: %q, %v, want blue", p, err)
	}
	if _, err := Rollback(state.Service{Active: "green"}, "web", ""); kindOf(err) != admin.KindRefused || !strings.Contains(err.Error(), "no previous pool") {
		t.Fatalf("rollback without a previous pool: %v", err)
	}
	if _, err := Rollback(state.Service{Active: "green", Previous: "blue", Canary: "red", Weight: 1000}, "web", ""); kindOf(err) != admin.KindRefused || !strings.Contains(err.Error(), "cutover abort") {
		t.Fatalf("rollback during a canary: %v", err)
	}
	if p, err := Held(state.Service{Active: "green", Canary: "red", Preview: "blue"}, "web", admin.OpPromote); err != nil || p != "red" {
		t.Fatalf("held with a canary: %q, %v, want the canary", p, err)
	}
	if _, err := Held(state.Service{Active: "green"}, "web", admin.OpAbort); kindOf(err) != admin.KindRefused {
		t.Fatalf("abort with nothing held: %v", err)
	}
	if d := Drop(state.Service{Active: "green", Canary: "red", Weight: 1000, Preview: "red"}, "red"); d.Canary != "" || d.Weight != 0 || d.Preview != "" || d.Active != "green" {
		t.Fatalf("drop: %+v", d)
	}
}

func TestDeployCheck(t *testing.T) {
	canary := state.Service{Active: "blue", Canary: "green", Weight: 1000}
	if err := (Deploy{Service: "web", Pool: "red"}).Check(canary); kindOf(err) != admin.KindRefused || !strings.Contains(err.Error(), "is a canary") {
		t.Fatalf("deploy of another pool during a canary: %v", err)
	}
	if err := (Deploy{Service: "web", Pool: "green"}).Check(canary); err != nil {
		t.Fatalf("deploy of the canary pool (promote): %v", err)
	}
	if err := (Deploy{Service: "web", Pool: "blue", Preview: true}).Check(state.Service{Active: "blue"}); kindOf(err) != admin.KindRefused {
		t.Fatalf("preview of the stable pool: %v", err)
	}
	if err := (Deploy{Service: "web", Pool: "green", Trial: true}).Check(state.Service{}); kindOf(err) != admin.KindRefused {
		t.Fatalf("canary without a stable pool: %v", err)
	}
	if err := PoolName("Green!"); kindOf(err) != admin.KindInvalid {
		t.Fatalf("bad pool name: %v", err)
	}
	if err := CheckTargets([]upstream.TargetSpec{{Addr: "127.0.0.1:1"}, {Addr: "127.0.0.1:1"}}); kindOf(err) != admin.KindInvalid {
		t.Fatalf("a target given twice: %v", err)
	}
}

func TestTrialDidNothing(t *testing.T) {
	canary := state.Service{Active: "blue", Canary: "green", Weight: 1 << 30}
	promoted := state.Service{Active: "green"}
	aborted := state.Service{Active: "blue"}
	for _, c := range []struct {
		verb          string
		before, after state.Service
		want          bool
	}{
		{admin.OpPromote, canary, promoted, false},
		{admin.OpAbort, canary, aborted, false},
		{admin.OpPromote, canary, canary, true},
		{admin.OpAbort, canary, canary, true},
		// A preview promoted elsewhere: no canary before or after, the
		// active pool changed.
		{admin.OpPromote, aborted, promoted, false},
		{admin.OpAbort, aborted, aborted, true},
	} {
		if got := TrialDidNothing(c.verb, c.before, c.after); got != c.want {
			t.Errorf("TrialDidNothing(%s, %+v, %+v) = %v, want %v", c.verb, c.before, c.after, got, c.want)
		}
	}
}

func TestWaitingProgress(t *testing.T) {
	none := WaitingProgress(state.Waiting{Instance: "edge-2"})
	if len(none) != 1 || none[0].Instance != "edge-2" || none[0].Addr != "" || none[0].Error == "" {
		t.Errorf("an instance that has not reported: %+v, want one entry naming it with a reason", none)
	}
	two := WaitingProgress(state.Waiting{Instance: "edge-3", Targets: []state.TargetReadiness{{Addr: "a:1", Passes: 1, Needed: 2, Error: "refused"}, {Addr: "b:1"}}})
	if len(two) != 2 || two[0].Addr != "a:1" || two[0].Passes != 1 || two[0].Needed != 2 || two[0].Error != "refused" || two[1].Addr != "b:1" || two[1].Instance != "edge-3" {
		t.Errorf("an instance with two unready targets: %+v", two)
	}
}

func TestStoreStatus(t *testing.T) {
	sh := state.SharedStatus{Where: "etcd e1", Instance: "edge-1", Applied: 7, Latest: 9, Problem: "",
		Instances: []state.InstanceStatus{{Name: "edge-2", Applied: 9}, {Name: "edge-3", Applied: 7, Behind: 1}}}
	got := StoreStatus(sh, true)
	if got.Instance != "edge-1" || got.Applied != 7 || got.Latest != 9 || got.Stale {
		t.Fatalf("instance view: %+v", got)
	}
	// Its own registration missing: listed, marked.
	if n := len(got.Instances); n != 3 || !got.Instances[2].Self || got.Instances[2].Name != "edge-1" || got.Instances[0].Self {
		t.Fatalf("instance view lists %+v; want edge-2, edge-3 and itself marked", got.Instances)
	}
	sh.Instances = append(sh.Instances, state.InstanceStatus{Name: "edge-1", Applied: 7})
	if got := StoreStatus(sh, true); len(got.Instances) != 3 || !got.Instances[2].Self {
		t.Fatalf("registered instance: %+v, want it once, marked", got.Instances)
	}
	sh.Instance, sh.Problem = "cli@host/1", "etcd unreachable"
	cli := StoreStatus(sh, false)
	if cli.Instance != "" || cli.Applied != 0 || !cli.Stale || len(cli.Instances) != 3 {
		t.Fatalf("CLI view: %+v", cli)
	}
	for _, is := range cli.Instances {
		if is.Self {
			t.Fatalf("CLI view marks %s as itself", is.Name)
		}
	}
}
