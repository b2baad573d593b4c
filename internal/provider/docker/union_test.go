package docker

import (
	"slices"
	"strings"
	"testing"
)

// TestResolveUnitesEngines checks how snapshots of two engines make one
// pool: each engine's containers on its own network, an address two
// engines report counted once, missing only what no engine has, and a
// stop signal seen on one engine not hiding the other's container.
func TestResolveUnitesEngines(t *testing.T) {
	one := &engine{eng: &Engine{host: "unix:///var/run/docker.sock"}}
	two := &engine{eng: &Engine{host: "tcp://10.0.0.6:2375"}}
	p := &Provider{engines: []*engine{one, two}}
	n1, n2 := Network{ID: "n1", Name: "app"}, Network{ID: "n2", Name: "app"}
	c := func(id, name, ip string) Container {
		return Container{ID: id, Name: name, State: "running", Networks: map[string]Endpoint{"app": {IP: ip}}}
	}
	ref := PoolRef{Service: "web", Pool: "blue", Containers: []string{"a", "b", "c", "gone"}, Port: 8000}
	live := []snapshot{
		{e: one, net: n1, containers: []Container{c("1a", "a", "10.1.0.2"), c("1c", "c", "10.9.0.9")}, stopping: map[string]bool{}},
		{e: two, net: n2, containers: []Container{c("2b", "b", "10.2.0.2"), c("2c", "c", "10.9.0.9")}, stopping: map[string]bool{}},
	}
	res := p.resolve(ref, live)
	var got []string
	for _, tg := range res.Targets {
		got = append(got, tg.Label+"="+tg.Addr)
	}
	want := []string{
		"a@unix:///var/run/docker.sock=10.1.0.2:8000",
		"b@tcp://10.0.0.6:2375=10.2.0.2:8000",
		"c@unix:///var/run/docker.sock=10.9.0.9:8000",
	}
	if !slices.Equal(got, want) {
		t.Errorf("targets %v, want %v", got, want)
	}
	if len(res.Problems) != 1 || !strings.Contains(res.Problems[0], `no container "gone" exists`) {
		t.Errorf("problems %q, want only that gone is missing", res.Problems)
	}

	// c stopping on the first engine: the second's c (same address here)
	// still counts, labelled with that engine.
	live[0].stopping = map[string]bool{"1c": true}
	res = p.resolve(ref, live)
	got = got[:0]
	for _, tg := range res.Targets {
		got = append(got, tg.Label)
	}
	if !slices.Contains(got, "c@tcp://10.0.0.6:2375") || len(got) != 3 {
		t.Errorf("targets %v, want c through the second engine", got)
	}
	if !slices.Equal(res.Waiting, []string{"c (stopping) on unix:///var/run/docker.sock"}) {
		t.Errorf("waiting %q", res.Waiting)
	}

	// With the second engine left out, b is missing and c (stopping on the
	// first) takes no traffic.
	res = p.resolve(ref, live[:1])
	if len(res.Targets) != 1 || res.Targets[0].Label != "a@unix:///var/run/docker.sock" {
		t.Errorf("targets %v, want a alone", res.Targets)
	}
	if len(res.Problems) != 2 || !strings.Contains(res.Problems[0], `"b"`) || !strings.Contains(res.Problems[1], `"gone"`) {
		t.Errorf("problems %q, want b and gone missing", res.Problems)
	}
}
