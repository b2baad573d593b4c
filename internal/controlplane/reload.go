package controlplane

import (
	"context"
	"maps"
	"slices"
	"strings"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/controlplane/state"
	"github.com/cutover/cutover/internal/dataplane/route"
	"github.com/cutover/cutover/internal/dataplane/upstream"
)

// Reload applies a new validated configuration without dropping a
// connection. Services, pools and targets that stay keep their objects, so
// requests in flight, their accounting and keep-alive connections carry
// on; services and pools that are new are added (their targets start
// Unknown and take traffic once healthy); those that left stop being routed
// and their targets are drained (up to drain_timeout) and then closed.
// Hosts, balance, health and drain settings apply at once.
//
// The active pool of each service stays as it is (services.X.active only
// chooses the pool of a first start). A pool's targets set at run time by
// deploy --target are kept unless the file changed that pool's targets, in
// which case the file wins.
//
// Reload is refused, with nothing changed, when the new configuration no
// longer has a service's active pool, and while a deploy or rollback runs.
// state_dir, admin and listener settings are not applied here.
func (m *Manager) Reload(cfg *config.Config) error {
	// The state the reload leads to is written before it is applied (see
	// commit); m.mu stays held across the write so no deploy can start
	// between the checks and the change.
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return errorf(admin.KindRefused, "reload refused: cutover is shutting down")
	}
	if len(m.ops) > 0 {
		var running []string
		for _, name := range slices.Sorted(maps.Keys(m.ops)) {
			running = append(running, m.ops[name].String())
		}
		m.mu.Unlock()
		return errorf(admin.KindBusy, "reload refused: a %s is in progress — reload when it has finished", strings.Join(running, "; and a "))
	}
	current := map[string]*service{}
	for _, s := range m.services {
		current[s.name] = s
	}
	for i := range cfg.Services {
		sc := &cfg.Services[i]
		s, ok := current[sc.Name]
		if !ok {
			continue
		}
		active := s.desired.Active
		if p := s.pools[active]; p == nil || !p.inConfig {
			continue
		}
		if _, stays := sc.Pool(active); !stays {
			m.mu.Unlock()
			return errorf(admin.KindRefused, "reload refused: the new configuration%s has no pool %q in services.%s.pools, but it is the active pool of service %q — deploy another pool first (cutover deploy %s -s %s), then reload; the running configuration keeps serving",
				inFile(cfg.Path), active, sc.Name, sc.Name, otherPool(sc, active), sc.Name)
		}
	}
	changes, nextDesired := m.reloadChangesLocked(cfg)
	var err error
	rev := int64(0)
	if len(changes) > 0 {
		rev, err = m.commit(context.Background(), changes)
	} else {
		err = m.checkWritable()
	}
	if err != nil {
		m.mu.Unlock()
		return errorf(admin.KindState, "reload refused, the running configuration keeps serving: %v", err)
	}
	for name := range m.orphans {
		delete(m.orphans, name)
	}
	if cfg.StateDir != m.cfg.StateDir {
		m.log.Warn("state_dir changed in the configuration; it applies after a restart", "running", m.cfg.StateDir, "new", cfg.StateDir)
	}

	next := make([]*service, 0, len(cfg.Services))
	table := route.NewTable()
	var added, removed []string
	for i := range cfg.Services {
		sc := &cfg.Services[i]
		s, ok := current[sc.Name]
		if ok {
			m.updateServiceLocked(s, sc)
			delete(current, sc.Name)
			d, changed := nextDesired[s.name]
			if changed {
				d.Revision = rev
			} else {
				d = s.desired
			}
			// A pool that left the file stops getting requests here (a
			// preview); updateServiceLocked retires it, waiting for the
			// requests it has.
			m.applyLocked(s, d)
		} else {
			// Without state a service cannot fail to build.
			var err error
			if s, err = m.buildService(sc, nil); err != nil {
				m.mu.Unlock()
				return err
			}
			added = append(added, sc.Name)
		}
		next = append(next, s)
		table.Add(s.rs, sc.Hosts)
		table.AddPreview(s.rs, sc.PreviewHosts)
	}
	for name, s := range current {
		removed = append(removed, name)
		pools := s.rs.Routes().Routed()
		var ts []*upstream.Target
		for _, p := range s.pools {
			m.stopCheckers(p)
			ts = append(ts, p.up.Targets()...)
		}
		m.retireTargets(ts, s.cfg.Load(), pools...)
	}
	m.services = next
	m.cfg = cfg
	m.router.Swap(table)
	m.mu.Unlock()

	m.log.Info("configuration reloaded", "file", cfg.Path, "services", len(next), "added", added, "removed", removed)
	return nil
}

// reloadChangesLocked is the commit cfg leads to: services that leave
// are removed from the store (and so are services the store names that
// the configuration already had not), and the desired state of the others
// drops the run-time targets of pools whose targets the file changed or
// that left the file, and a previous or preview pool that left (see
// updateServiceLocked). It returns the changes and the next desired state
// of each service that changes. m.mu must be held.
func (m *Manager) reloadChangesLocked(cfg *config.Config) ([]state.Change, map[string]state.Service) {
	var changes []state.Change
	next := map[string]state.Service{}
	for _, name := range slices.Sorted(maps.Keys(m.orphans)) {
		changes = append(changes, state.Change{Service: name, Revision: m.orphans[name]})
	}
	for _, s := range m.services {
		sc, stays := cfg.Service(s.name)
		if !stays {
			if s.desired.Revision > 0 {
				changes = append(changes, state.Change{Service: s.name, Revision: s.desired.Revision})
			}
			continue
		}
		d := s.desired.Clone()
		changed := false
		for name, p := range s.pools {
			pc, inFile := sc.Pool(name)
			gone := !inFile && p.inConfig
			if inFile && (!p.inConfig || p.docker != pc.FromDocker() || !slices.Equal(p.cfgTargets, pc.Targets)) || gone {
				if _, ok := d.Targets[name]; ok {
					delete(d.Targets, name)
					changed = true
				}
			}
			if gone && d.Previous == name {
				d.Previous, changed = "", true
			}
			if gone && d.Preview == name {
				d.Preview, changed = "", true
			}
		}
		if changed {
			next[s.name] = d
			changes = append(changes, state.Change{Service: s.name, Value: &d, Revision: s.desired.Revision})
		}
	}
	return changes, next
}

// updateServiceLocked applies a service's new configuration to its
// runtime. The caller holds m.mu and has checked that the active pool
// stays.
func (m *Manager) updateServiceLocked(s *service, sc *config.Service) {
	cp := *sc
	s.cfg.Store(&cp)
	bal, _ := upstream.ParseBalance(sc.Balance)
	seen := map[string]bool{}
	for _, pc := range sc.Pools {
		seen[pc.Name] = true
		p, ok := s.pools[pc.Name]
		if !ok {
			p = m.newPool(s, pc.Name, bal)
			p.inConfig, p.docker, p.cfgTargets = true, pc.FromDocker(), slices.Clone(pc.Targets)
			m.setPoolTargets(p, specsOf(pc.Targets), upstream.Unknown)
			continue
		}
		p.up.SetBalance(bal)
		changed := !p.inConfig || p.docker != pc.FromDocker() || !slices.Equal(p.cfgTargets, pc.Targets)
		p.inConfig, p.docker, p.cfgTargets = true, pc.FromDocker(), slices.Clone(pc.Targets)
		if !changed {
			continue
		}
		p.runtime = nil
		// A pool from Docker keeps its targets until the provider sets
		// them from the containers.
		if !pc.FromDocker() {
			gone := m.setPoolTargets(p, specsOf(pc.Targets), upstream.Unknown)
			m.retireTargets(gone, sc)
		}
	}
	for name, p := range s.pools {
		if seen[name] || !p.inConfig {
			continue
		}
		if name == s.desired.Active {
			continue // checked before, never reached
		}
		s.removePoolLocked(name)
		m.stopCheckers(p)
		m.retireTargets(p.up.Targets(), sc, p.up)
	}
	// Pools created by deploy keep the service's balance.
	for _, p := range s.pools {
		if !p.inConfig {
			p.up.SetBalance(bal)
		}
	}
}

func otherPool(sc *config.Service, active string) string {
	for _, p := range sc.Pools {
		if p.Name != active {
			return p.Name
		}
	}
	return "POOL"
}
