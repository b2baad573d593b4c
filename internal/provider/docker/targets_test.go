package docker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// fakeEngine has containers by name: their address, or the error the
// engine gives for them.
type fakeEngine struct {
	host  string
	addrs map[string]string
	errs  map[string]error
}

func (f fakeEngine) Host() string { return f.host }

func (f fakeEngine) ContainerTarget(_ context.Context, ref, _ string) (string, string, error) {
	name, _, _ := strings.Cut(ref, ":")
	if err := f.errs[name]; err != nil {
		return "", "", err
	}
	if a, ok := f.addrs[name]; ok {
		return a, name, nil
	}
	return "", "", &MissingError{Name: name}
}

// TestContainerTargetsAcrossEngines: deploy --container takes the union
// of every configured engine's containers, an address reached through two
// engines once; a container no engine has, or one that cannot take
// traffic where it is, is refused naming each engine.
func TestContainerTargetsAcrossEngines(t *testing.T) {
	ctx := context.Background()
	a := fakeEngine{host: "unix:///a.sock", addrs: map[string]string{"green-1": "10.0.0.2:8000", "both": "10.0.0.9:8000"}}
	b := fakeEngine{host: "tcp://10.0.0.6:2375", addrs: map[string]string{"green-2": "10.0.1.2:8000", "both": "10.0.1.9:8000", "same": "10.0.0.2:8000"},
		errs: map[string]error{"stopped": errors.New(`container "stopped" is exited, not running — start it first (docker start stopped)`)}}
	both := []targetSource{a, b}

	got, err := unionTargets(ctx, both, nil, []string{"green-1:8000", "green-2:8000", "both:8000", "same:8000"}, "net")
	if want := []string{"10.0.0.2:8000", "10.0.1.2:8000", "10.0.0.9:8000", "10.0.1.9:8000"}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("union = %v, %v; want %v (each engine's containers, the same address once)", got, err, want)
	}

	_, err = unionTargets(ctx, both, nil, []string{"green-1:8000", "nowhere:8000"}, "net")
	if err == nil || !strings.Contains(err.Error(), `"nowhere"`) || !strings.Contains(err.Error(), a.host) || !strings.Contains(err.Error(), b.host) || !strings.Contains(err.Error(), "docker ps -a") {
		t.Fatalf("a container on no engine: %v, want refused naming it, both engines and the fix", err)
	}
	_, err = unionTargets(ctx, both, nil, []string{"stopped:8000"}, "net")
	if err == nil || !strings.Contains(err.Error(), b.host) || !strings.Contains(err.Error(), "docker start stopped") {
		t.Fatalf("a stopped container on one engine: %v, want refused naming the engine and the fix", err)
	}

	// An engine that does not answer: the others' containers are used; a
	// container only it could have is refused with its error.
	down := []error{fmt.Errorf("cannot reach the Docker Engine at tcp://10.0.0.7:2375: connection refused")}
	got, err = unionTargets(ctx, both, down, []string{"green-2:8000"}, "net")
	if err != nil || !slices.Equal(got, []string{"10.0.1.2:8000"}) {
		t.Fatalf("with an engine down: %v, %v; want the container the others have", got, err)
	}
	_, err = unionTargets(ctx, []targetSource{a}, down, []string{"green-2:8000"}, "net")
	if err == nil || !strings.Contains(err.Error(), "10.0.0.7:2375") || !strings.Contains(err.Error(), "none on "+a.host) {
		t.Fatalf("a container only the engine down could have: %v, want refused naming what each engine said", err)
	}

	// One engine: its own message, as before docker.hosts.
	_, err = unionTargets(ctx, []targetSource{a}, nil, []string{"nowhere:8000"}, "net")
	var me *MissingError
	if !errors.As(err, &me) || err.Error() != `--container nowhere:8000: no container "nowhere" exists — check the name with docker ps -a, or start it first` {
		t.Fatalf("one engine, missing container: %v", err)
	}
}
