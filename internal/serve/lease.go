package serve

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// LeaseFile is the lock file in state_dir. The process holding an exclusive
// flock on it is the only one that may write the state: two cutovers on one
// state_dir would each write their own view, and during an upgrade the old
// process lets go of it only after it stopped taking state-changing
// requests, the new one takes it before it starts. The kernel drops the
// lock of a process that dies, so kill -9 leaves nothing to clean up.
const LeaseFile = "serve.lock"

// errLeaseUnwritable: state_dir does not let the lease file be made. Such a
// process cannot write the state either (the control plane refuses
// changes), so it serves without a lease.
var errLeaseUnwritable = errors.New("state_dir is not writable")

// lease is a held state lease.
type lease struct {
	f *os.File
}

// acquireLease takes the lease of dir, waiting up to wait for a holder
// that is letting go of it (0: do not wait).
func acquireLease(dir string, wait time.Duration) (*lease, error) {
	path := filepath.Join(dir, LeaseFile)
	err := os.MkdirAll(dir, 0o700)
	var f *os.File
	if err == nil {
		f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	}
	if err != nil {
		if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
			return nil, fmt.Errorf("state lease %s: %w: %w", path, errLeaseUnwritable, err)
		}
		return nil, fmt.Errorf("state lease %s: %w — state_dir must be writable", path, err)
	}
	deadline := time.Now().Add(wait)
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("state lease %s: flock: %w", path, err)
		}
		if time.Now().After(deadline) {
			holder := ""
			if b, rerr := os.ReadFile(path); rerr == nil {
				if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
					holder = fmt.Sprintf(" (pid %d)", pid)
				}
			}
			f.Close()
			return nil, fmt.Errorf("state_dir %s is in use by another cutover%s: two processes must not write one state file — stop that one, use `cutover upgrade` to replace it, or give this one another state_dir", dir, holder)
		}
		// flock has no timed wait; the holder is handing over within
		// milliseconds, or is another long-running cutover.
		time.Sleep(5 * time.Millisecond)
	}
	// The holder's pid, for the message above; informational only.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &lease{f: f}, nil
}

// release lets go of the lease (nil-safe, idempotent).
func (l *lease) release() {
	if l == nil || l.f == nil {
		return
	}
	syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	l.f.Close()
	l.f = nil
}
