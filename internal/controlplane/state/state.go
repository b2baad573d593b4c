// Package state is each service's desired state — which pool is stable,
// which one was before (the rollback target), the preview pool, the targets
// set at run time — and the Store that keeps it. It is what makes a restart
// (also after kill -9) serve the same pools as before.
//
// The file store replaces its file atomically on every change (temporary
// file in the same folder, fsync, rename, fsync of the folder), so a reader
// sees either the old state or the new one, never a torn write.
package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/cutover/cutover/internal/atomicfile"
	"github.com/cutover/cutover/internal/dataplane/upstream"
)

// FileName is the state file's name inside state_dir.
const FileName = "state.json"

// Version is the format written by this build (2 added revisions and the
// preview pool; version 1 files are read as they are). A file with a higher
// version was written by a newer cutover and is refused rather than misread.
const Version = 2

// State is the content of the state file.
type State struct {
	Version int `json:"version"`
	// Revision is the store's revision: it grows by one with every
	// commit, and each service records the one that last changed it.
	Revision int64              `json:"revision,omitempty"`
	Services map[string]Service `json:"services"`
}

// Service is the desired state of one service: what it should serve. The
// control plane changes it only by computing the next value from the
// current one, committing it to the Store, and then applying it.
type Service struct {
	// Revision is the store revision that last changed the service (0:
	// never stored). A commit names the revision its change was computed
	// from and is refused when the service has moved on since.
	Revision int64 `json:"revision,omitempty"`
	// Active is the stable pool: it serves the service's hosts.
	Active string `json:"active"`
	// Previous is the pool that served before the last switch ("" if none).
	Previous string `json:"previous,omitempty"`
	// Preview is the pool the service's preview hosts go to ("" sends them
	// to Active).
	Preview string `json:"preview,omitempty"`
	// Canary is a pool taking Weight (in route.WeightScale units) of the
	// service's clients besides Active ("" none): a canary deploy that is
	// under way, or holds until promote or abort.
	Canary string `json:"canary,omitempty"`
	Weight uint32 `json:"weight,omitempty"`
	// Targets are pool targets set at run time (deploy --target), by pool.
	// They replace the configuration's targets of that pool; a pool that
	// is only here was created at run time.
	Targets map[string][]Target `json:"targets,omitempty"`
	// StopAt is when cutover serve stops the containers of a pool that
	// left the routing (cutover release --keep-old), by pool. It is kept
	// here so that the stop happens whatever becomes of the command that
	// asked for it, also across restarts; an entry is dropped when its
	// pool is routed to again (DropRouted), so a rollback never finds its
	// pool stopped.
	StopAt map[string]time.Time `json:"stop_at,omitempty"`
}

// Clone returns a copy of s that shares nothing with it.
func (s Service) Clone() Service {
	c := s
	c.Targets = nil
	if len(s.Targets) > 0 {
		c.Targets = make(map[string][]Target, len(s.Targets))
		for pool, ts := range s.Targets {
			c.Targets[pool] = append([]Target(nil), ts...)
		}
	}
	c.StopAt = maps.Clone(s.StopAt)
	return c
}

// ScheduleStop records that pool's containers are to be stopped at at.
func (s *Service) ScheduleStop(pool string, at time.Time) {
	if s.StopAt == nil {
		s.StopAt = map[string]time.Time{}
	}
	s.StopAt[pool] = at
}

// DropRouted cancels the scheduled stop of every pool s routes requests
// to.
func (s *Service) DropRouted() {
	for pool := range s.StopAt {
		if s.Uses(pool) {
			delete(s.StopAt, pool)
		}
	}
	if len(s.StopAt) == 0 {
		s.StopAt = nil
	}
}

// Uses reports whether the desired state routes requests to pool.
func (s Service) Uses(pool string) bool {
	return s.Active == pool || s.Preview == pool || s.Canary == pool
}

// Target is one target set at run time.
type Target struct {
	Addr  string `json:"addr"`
	Label string `json:"label,omitempty"`
}

// New returns an empty state of the current version.
func New() *State {
	return &State{Version: Version, Services: map[string]Service{}}
}

// Path returns the state file's path in dir.
func Path(dir string) string { return filepath.Join(dir, FileName) }

// Load reads the state file at path. A missing file is no error: it returns
// (nil, nil), meaning first start. A file that cannot be read or parsed is
// an error naming the file and what to do.
func Load(path string) (*State, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state file %s: %w", path, err)
	}
	st, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("state file %s: %w — fix the file, or delete it to start from the configuration's active pools", path, err)
	}
	return st, nil
}

func parse(data []byte) (*State, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("is empty, not a cutover state file")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var st State
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("is not a valid cutover state file (%v)", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("has data after the JSON object")
	}
	switch {
	case st.Version == 0:
		return nil, errors.New(`has no "version" field, so it is not a cutover state file`)
	case st.Version > Version:
		return nil, fmt.Errorf("has version %d, written by a newer cutover (this one reads version %d) — run the newer cutover", st.Version, Version)
	case st.Version < 0:
		return nil, fmt.Errorf("has version %d, which no cutover writes", st.Version)
	}
	if st.Services == nil {
		st.Services = map[string]Service{}
	}
	for name, s := range st.Services {
		if s.Active == "" {
			return nil, fmt.Errorf("service %q has no active pool", name)
		}
	}
	return &st, nil
}

// Save writes st to path atomically (see package atomicfile).
func Save(path string, st *State) error {
	data, err := Marshal(st)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	return nil
}

// Marshal encodes st as the file holds it: indented JSON (object keys
// sorted, target lists in pool order), ending in a newline.
func Marshal(st *State) ([]byte, error) {
	out := State{Version: Version, Revision: st.Revision, Services: map[string]Service{}}
	for name, s := range st.Services {
		out.Services[name] = s.Clone()
	}
	data, err := json.MarshalIndent(&out, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode state: %w", err)
	}
	return append(data, '\n'), nil
}

// SetTargets records a pool's run-time targets.
func (s *Service) SetTargets(pool string, specs []upstream.TargetSpec) {
	if s.Targets == nil {
		s.Targets = map[string][]Target{}
	}
	ts := make([]Target, 0, len(specs))
	for _, r := range specs {
		ts = append(ts, Target{Addr: r.Addr, Label: r.Label})
	}
	s.Targets[pool] = ts
}

// CheckWritable reports whether a file can be created in dir (and removed
// again), the way Save creates its temporary file.
func CheckWritable(dir string) error {
	f, err := os.CreateTemp(dir, "."+FileName+".*.probe")
	if err != nil {
		return fmt.Errorf("state_dir %s is not writable: %w", dir, err)
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("state_dir %s is not writable: %w", dir, err)
	}
	return nil
}

// Pools returns the names of the pools with run-time targets, sorted.
func (s Service) Pools() []string {
	names := make([]string, 0, len(s.Targets))
	for n := range s.Targets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
