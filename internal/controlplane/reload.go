package controlplane

import (
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
		for _, name := range sortedKeys(m.ops) {
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
		active := s.rs.Active()
		if active == nil {
			continue
		}
		if _, stays := sc.Pool(active.Name()); !stays && s.pools[active.Name()].inConfig {
			m.mu.Unlock()
			return errorf(admin.KindRefused, "reload refused: the new configuration%s has no pool %q in services.%s.pools, but it is the active pool of service %q — deploy another pool first (cutover deploy %s -s %s), then reload; the running configuration keeps serving",
				inFile(cfg.Path), active.Name(), sc.Name, sc.Name, otherPool(sc, active.Name()), sc.Name)
		}
	}
	if err := m.writeState(m.reloadedStateLocked(cfg)); err != nil {
		m.mu.Unlock()
		return errorf(admin.KindState, "reload refused, the running configuration keeps serving: %v", err)
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
	}
	for name, s := range current {
		removed = append(removed, name)
		pools := s.rs.Pools()
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

// reloadedStateLocked is the state as it will be once cfg is applied:
// services that leave are dropped, and so are the run-time targets of
// pools whose targets the file changed or that left the file (see
// updateServiceLocked). m.mu must be held.
func (m *Manager) reloadedStateLocked(cfg *config.Config) *state.State {
	st := m.stateLocked()
	for _, s := range m.services {
		ss, ok := st.Services[s.name]
		if !ok {
			continue
		}
		sc, stays := cfg.Service(s.name)
		if !stays {
			delete(st.Services, s.name)
			continue
		}
		for name, p := range s.pools {
			pc, inFile := sc.Pool(name)
			gone := !inFile && p.inConfig
			changed := inFile && (!p.inConfig || p.docker != pc.FromDocker() || !slices.Equal(p.cfgTargets, pc.Targets))
			if gone || changed {
				delete(ss.Targets, name)
			}
			if gone && ss.Previous == name {
				ss.Previous = ""
			}
		}
		st.Services[s.name] = ss
	}
	return st
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
		if _, ok := s.rs.RemovePool(name); !ok {
			continue // the active pool: checked before, never reached
		}
		delete(s.pools, name)
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
