package state

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// Store keeps every service's desired state with revisions, so that two
// writers cannot both win: a commit names, per service, the revision its
// change was computed from, and is refused whole (ErrConflict) when any of
// them moved on. The file store is the one in use; a shared store (etcd:
// one key per service, a commit is one transaction comparing each key's
// mod revision) fits the same contract and adds a watch that hands every
// committed change to the control plane, which applies it as it applies
// its own.
type Store interface {
	// Load returns every stored service's desired state, each with its
	// Revision set.
	Load(ctx context.Context) (map[string]Service, error)
	// Commit applies the changes together or not at all and returns the
	// new revision of the changed services.
	Commit(ctx context.Context, changes []Change) (int64, error)
	// Check reports whether a commit could work now, for refusing an
	// operation before a long health wait rather than at its switch.
	Check(ctx context.Context) error
	// Where names the store in messages (a file path, endpoints).
	Where() string
}

// Change is one service's part of a commit.
type Change struct {
	Service string
	// Value is the next desired state; nil removes the service.
	Value *Service
	// Revision is the revision Value was computed from (0: the service
	// was not stored).
	Revision int64
}

// ErrConflict is the error of a commit whose service changed since the
// revision it names.
var ErrConflict = errors.New("the desired state changed since it was read")

// ConflictError says which service moved on.
type ConflictError struct {
	Service        string
	Want, Found    int64
	StoreDescribed string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("service %q in %s is at revision %d, not %d: another change was committed first — look at the status and retry",
		e.Service, e.StoreDescribed, e.Found, e.Want)
}

func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// FileStore keeps the desired state in one file (state.json in state_dir).
// Commits are serialised in the process, and across processes on the same
// state_dir by an exclusive flock on the folder, so the revision check and
// the write are one step.
type FileStore struct {
	path string
	mu   sync.Mutex
}

// NewFileStore returns the store of the state file in dir.
func NewFileStore(dir string) *FileStore { return &FileStore{path: Path(dir)} }

// Where is the state file's path.
func (f *FileStore) Where() string { return f.path }

// Load reads the file; a missing file is an empty state.
func (f *FileStore) Load(context.Context) (map[string]Service, error) {
	st, err := Load(f.path)
	if err != nil || st == nil {
		return map[string]Service{}, err
	}
	return st.Services, nil
}

// Check reports whether the folder takes a new file now.
func (f *FileStore) Check(context.Context) error { return CheckWritable(filepath.Dir(f.path)) }

// Commit checks each change's revision against the file and writes the
// new state atomically.
func (f *FileStore) Commit(_ context.Context, changes []Change) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	unlock, err := lockDir(filepath.Dir(f.path))
	if err != nil {
		return 0, err
	}
	defer unlock()
	st, err := Load(f.path)
	if err != nil {
		return 0, err
	}
	if st == nil {
		st = New()
	}
	if err := check(st, changes, f.path); err != nil {
		return 0, err
	}
	rev := apply(st, changes)
	if err := Save(f.path, st); err != nil {
		return 0, err
	}
	return rev, nil
}

func check(st *State, changes []Change, where string) error {
	for _, c := range changes {
		if found := st.Services[c.Service].Revision; found != c.Revision {
			return &ConflictError{Service: c.Service, Want: c.Revision, Found: found, StoreDescribed: where}
		}
	}
	return nil
}

func apply(st *State, changes []Change) int64 {
	st.Revision++
	for _, c := range changes {
		if c.Value == nil {
			delete(st.Services, c.Service)
			continue
		}
		v := c.Value.Clone()
		v.Revision = st.Revision
		st.Services[c.Service] = v
	}
	return st.Revision
}

// lockDir takes an exclusive flock on dir (a folder can be locked like a
// file, and needs no lock file that a read-only folder could not hold).
func lockDir(dir string) (unlock func(), err error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("state_dir %s: %w", dir, err)
	}
	if err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX); err != nil {
		d.Close()
		return nil, fmt.Errorf("state_dir %s: lock: %w", dir, err)
	}
	return func() {
		syscall.Flock(int(d.Fd()), syscall.LOCK_UN)
		d.Close()
	}, nil
}

// MemStore keeps the desired state in memory, for a cutover without
// state_dir: revisions work as in the file store, nothing survives a
// restart.
type MemStore struct {
	mu sync.Mutex
	st *State
}

// NewMemStore returns an empty memory store.
func NewMemStore() *MemStore { return &MemStore{st: New()} }

// Where says there is no file.
func (m *MemStore) Where() string { return "memory (no state_dir)" }

// Load returns a copy of the state.
func (m *MemStore) Load(context.Context) (map[string]Service, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]Service, len(m.st.Services))
	for k, v := range m.st.Services {
		out[k] = v.Clone()
	}
	return out, nil
}

// Check always passes.
func (m *MemStore) Check(context.Context) error { return nil }

// Commit checks the revisions and applies the changes.
func (m *MemStore) Commit(_ context.Context, changes []Change) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := check(m.st, changes, m.Where()); err != nil {
		return 0, err
	}
	return apply(m.st, changes), nil
}
