package docker

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// ContainerTargets resolves NAME[:PORT] references (deploy --container)
// to addresses on network across every engine of hosts (docker.hosts, or
// the one of docker.host): the union, as a pool's members are. A container
// found on several engines gives a target on each (an address reached
// through two engines counts once). A reference no engine has is an error
// naming what each engine said; so is a container an engine has but that
// cannot take traffic (stopped, no port, off the network). An engine that
// does not answer is left out when the others have every container: down
// lists it, for the caller to warn about; with one engine it is the error.
func ContainerTargets(ctx context.Context, hosts, refs []string, network string) (addrs []string, down []error, err error) {
	var engines []targetSource
	for _, h := range hosts {
		e, err := Connect(ctx, h)
		if err != nil {
			if len(hosts) == 1 {
				return nil, nil, err
			}
			down = append(down, err)
			continue
		}
		defer e.Close()
		engines = append(engines, e)
	}
	addrs, err = unionTargets(ctx, engines, down, refs, network)
	return addrs, down, err
}

// targetSource is an engine as ContainerTargets uses it.
type targetSource interface {
	Host() string
	ContainerTarget(ctx context.Context, ref, network string) (addr, name string, err error)
}

func unionTargets(ctx context.Context, engines []targetSource, down []error, refs []string, network string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, ref := range refs {
		found := 0
		var missing []string
		for _, e := range engines {
			addr, _, err := e.ContainerTarget(ctx, ref, network)
			var me *MissingError
			switch {
			case errors.As(err, &me):
				missing = append(missing, e.Host())
				continue
			case err != nil && len(engines)+len(down) == 1:
				return nil, fmt.Errorf("--container %s: %w", ref, err)
			case err != nil:
				return nil, fmt.Errorf("--container %s on the Docker engine %s: %w", ref, e.Host(), err)
			}
			found++
			if !seen[addr] {
				seen[addr] = true
				out = append(out, addr)
			}
		}
		if found > 0 {
			continue
		}
		name, _, _ := strings.Cut(ref, ":")
		if len(engines)+len(down) == 1 {
			return nil, fmt.Errorf("--container %s: %w", ref, &MissingError{Name: name})
		}
		var why []string
		if len(missing) > 0 {
			why = append(why, "none on "+strings.Join(missing, ", "))
		}
		for _, d := range down {
			why = append(why, d.Error())
		}
		return nil, fmt.Errorf("--container %s: no configured Docker engine has a container %q (%s) — check the name with docker ps -a on each engine, or start it first",
			ref, name, strings.Join(why, "; "))
	}
	return out, nil
}
