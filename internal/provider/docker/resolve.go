package docker

import (
	"fmt"
	"sort"
	"strings"

	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/dataplane/upstream"
)

// PoolRef is one pool whose members come from Docker.
type PoolRef struct {
	Service, Pool string
	// Containers are names or IDs (exactly one of Containers and Compose).
	Containers []string
	Compose    *config.ComposeRef
	// Port is the port the app listens on inside each container.
	Port int
}

// Key names the pool in messages and maps.
func (r PoolRef) Key() string { return r.Service + "/" + r.Pool }

// Pools lists the configuration's pools that take members from Docker.
func Pools(cfg *config.Config) []PoolRef {
	var out []PoolRef
	for _, s := range cfg.Services {
		for _, p := range s.Pools {
			if !p.FromDocker() {
				continue
			}
			ref := PoolRef{Service: s.Name, Pool: p.Name, Containers: p.Containers, Port: p.Port}
			if p.Compose != nil {
				c := *p.Compose
				ref.Compose = &c
			}
			out = append(out, ref)
		}
	}
	return out
}

// Resolution is the outcome of resolving one pool.
type Resolution struct {
	// Targets take traffic: one per container that runs, is on the
	// network with an address, is not stopping, and whose Docker health
	// check (if any) passes. Sorted by label.
	Targets []upstream.TargetSpec
	// Problems are configuration or environment errors for people:
	// missing containers, containers off the network.
	Problems []string
	// Waiting are members that exist but take no traffic for now
	// (health starting or unhealthy, stopping, not running).
	Waiting []string
	// Pending is true when a member should change without an event to
	// announce it (attached to the network, address not yet assigned):
	// the pool is resolved again shortly.
	Pending bool

	// missing are the named containers the engine does not have, and
	// noneRunning says a compose service has no running replica there:
	// with several engines they are problems only when true of them all.
	missing     []string
	noneRunning bool
}

// Resolve computes a pool's targets from a snapshot of the engine's
// containers. stopping holds the IDs of containers that were sent their
// stop signal and still run.
func Resolve(ref PoolRef, containers []Container, n Network, stopping map[string]bool) Resolution {
	res := resolveOn(ref, containers, n, stopping)
	res.Problems = append(presenceProblems(ref, res.missing, res.noneRunning), res.Problems...)
	return res
}

// presenceProblems reports named containers that exist nowhere and a
// compose service with no running replica.
func presenceProblems(ref PoolRef, missing []string, noneRunning bool) []string {
	var out []string
	where := fmt.Sprintf("pool %s of service %s", ref.Pool, ref.Service)
	if ref.Compose != nil && noneRunning {
		out = append(out, fmt.Sprintf("%s: no running container of compose project %q, service %q — start it: docker compose -p %s up -d %s",
			where, ref.Compose.Project, ref.Compose.Service, ref.Compose.Project, ref.Compose.Service))
	}
	for _, name := range missing {
		out = append(out, fmt.Sprintf("%s: no container %q exists — start it, or fix services.%s.pools.%s.containers",
			where, name, ref.Service, ref.Pool))
	}
	return out
}

// resolveOn is Resolve without the presence problems, which depend on
// every engine's containers.
func resolveOn(ref PoolRef, containers []Container, n Network, stopping map[string]bool) Resolution {
	var res Resolution
	where := fmt.Sprintf("pool %s of service %s", ref.Pool, ref.Service)
	members, missing := Members(ref, containers)
	res.missing = missing
	res.noneRunning = !anyRunning(members)
	seen := map[string]bool{}
	for _, c := range members {
		if !c.Running() {
			// A stopped replica of a compose service is normal (scaled
			// down, stopped by hand); a named container is expected to run.
			if ref.Compose == nil {
				res.Problems = append(res.Problems, fmt.Sprintf("%s: container %q is %s, not running — start it: docker start %s", where, c.Name, c.State, c.Name))
			} else {
				res.Waiting = append(res.Waiting, fmt.Sprintf("%s (%s)", c.Name, c.State))
			}
			continue
		}
		ep, attached := c.On(n)
		switch {
		case !attached:
			_, err := Addr(c, n, ref.Port)
			res.Problems = append(res.Problems, where+": "+err.Error())
			continue
		case ep.IP == "":
			res.Waiting = append(res.Waiting, c.Name+" (no address on the network yet)")
			res.Pending = true
			continue
		case stopping[c.ID]:
			res.Waiting = append(res.Waiting, c.Name+" (stopping)")
			continue
		case c.Health == HealthStarting || c.Health == HealthUnhealthy:
			res.Waiting = append(res.Waiting, fmt.Sprintf("%s (Docker health: %s)", c.Name, c.Health))
			continue
		}
		addr, _ := Addr(c, n, ref.Port)
		if seen[addr] {
			continue
		}
		seen[addr] = true
		res.Targets = append(res.Targets, upstream.TargetSpec{Addr: addr, Label: c.Name})
	}
	sort.Slice(res.Targets, func(i, j int) bool { return res.Targets[i].Label < res.Targets[j].Label })
	return res
}

// Members picks the containers of a pool from a snapshot of the engine's:
// the compose service's (one-off containers left out), or the named ones;
// missing are the named containers that do not exist.
func Members(ref PoolRef, containers []Container) (members []Container, missing []string) {
	if ref.Compose != nil {
		for _, c := range containers {
			p, s := c.Compose()
			if p == ref.Compose.Project && s == ref.Compose.Service && c.Labels[LabelOneOff] != "True" {
				members = append(members, c)
			}
		}
		return members, nil
	}
	for _, name := range ref.Containers {
		c, ok := find(containers, name)
		if !ok {
			missing = append(missing, name)
			continue
		}
		members = append(members, c)
	}
	return members, missing
}

func anyRunning(cs []Container) bool {
	for _, c := range cs {
		if c.Running() {
			return true
		}
	}
	return false
}

// find looks a container up by exact name, then by ID or unique ID prefix
// (as docker does).
func find(cs []Container, ref string) (Container, bool) {
	ref = strings.TrimPrefix(ref, "/")
	for _, c := range cs {
		if c.Name == ref || c.ID == ref {
			return c, true
		}
	}
	if !isHex(ref) {
		return Container{}, false
	}
	var match Container
	n := 0
	for _, c := range cs {
		if strings.HasPrefix(c.ID, ref) {
			match = c
			n++
		}
	}
	return match, n == 1
}

func isHex(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !strings.ContainsRune("0123456789abcdef", r) {
			return false
		}
	}
	return true
}

// fingerprint identifies a target list, to push only changes.
func fingerprint(ts []upstream.TargetSpec) string {
	var b strings.Builder
	for _, t := range ts {
		b.WriteString(t.Addr)
		b.WriteByte('=')
		b.WriteString(t.Label)
		b.WriteByte(';')
	}
	return b.String()
}
