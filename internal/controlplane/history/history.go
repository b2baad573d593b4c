// Package history records every operation of the control plane — deploy,
// rollback, release and reload, whether it succeeded, failed, was refused
// or timed out — and keeps the last Limit of them in state_dir, so that
// `cutover history` and the dashboard can say what happened and how it
// went, also after a restart or kill -9.
//
// An operation is written twice: when it begins (result "running") and when
// it ends. A cutover killed in between leaves the "running" entry, which
// the next start reads as failed and interrupted: the history never claims
// an operation that may not have finished went well.
package history

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cutover/cutover/internal/atomicfile"
)

// FileName is the history file's name inside state_dir.
const FileName = "history.json"

// Limit is how many entries are kept; older ones are dropped.
const Limit = 200

// Version is the file format written by this build.
const Version = 1

// Operation kinds.
const (
	KindDeploy   = "deploy"
	KindRollback = "rollback"
	KindRelease  = "release" // a deploy made by `cutover release`
	KindReload   = "reload"
	KindPromote  = "promote"
	KindAbort    = "abort"
	// KindTrial is the end of a canary or guard that its deploy's caller
	// did not wait for (--detach, or a canary that held until promote).
	KindTrial = "trial"
	// KindStop is cutover serve stopping the containers of a pool that
	// left the routing, when the time a release's --keep-old gave came.
	KindStop = "stop"
)

// Results.
const (
	ResultRunning   = "running" // begun, not ended yet
	ResultSucceeded = "succeeded"
	ResultFailed    = "failed"
	ResultRefused   = "refused"   // not allowed in the state it found; nothing changed
	ResultTimedOut  = "timed_out" // the pool was not healthy in time; nothing changed
)

// interrupted is the reason given to an entry a stopped cutover left running.
const interrupted = "cutover stopped before the operation finished (killed or crashed); check `cutover status` for which pool is active"

// Entry is one operation. Its JSON field names are part of the admin API
// (GET /v1/history) and of `cutover history --json`: fields may be added,
// none renamed or removed.
type Entry struct {
	// ID grows by one per operation and is never reused.
	ID      uint64     `json:"id"`
	Kind    string     `json:"kind"`
	Service string     `json:"service,omitempty"`
	From    string     `json:"from,omitempty"` // the pool active when it began
	To      string     `json:"to,omitempty"`   // the pool it switched (or would switch) to
	Started time.Time  `json:"started"`
	Ended   *time.Time `json:"ended,omitempty"` // nil while running
	Result  string     `json:"result"`
	// Reason is the outcome in one line for people: the summary of a
	// success, or the refusal or error message.
	Reason string `json:"reason,omitempty"`
	// ErrorKind is the control plane's error kind of a failure (busy,
	// unhealthy, ...).
	ErrorKind string `json:"error_kind,omitempty"`
	// NoOp is true when the pool was already active and nothing changed.
	NoOp bool `json:"no_op,omitempty"`
	// TimeToHealthyMS is from the start of the health wait until every
	// target of To had passed.
	TimeToHealthyMS float64 `json:"time_to_healthy_ms"`
	// InFlightAtSwitch requests were running on From at the switch; Drained
	// of them finished, ClosedAtTimeout were ended at the drain timeout.
	InFlightAtSwitch int64   `json:"in_flight_at_switch"`
	Drained          int64   `json:"drained"`
	ClosedAtTimeout  int64   `json:"closed_at_timeout"`
	DrainMS          float64 `json:"drain_ms"`
	// Targets are To's targets when the operation ended.
	Targets  []Target `json:"targets,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
}

// Target is one target involved in an operation.
type Target struct {
	Addr  string `json:"addr"`
	Label string `json:"label,omitempty"`
	// Ready says whether it passed its health gate; Error is its last
	// probe error when it did not.
	Ready bool   `json:"ready"`
	Error string `json:"error,omitempty"`
}

// Running reports whether the entry has not ended.
func (e *Entry) Running() bool { return e.Result == ResultRunning }

// Duration is how long the operation took (so far, while running).
func (e *Entry) Duration(now time.Time) time.Duration {
	if e.Ended != nil {
		return e.Ended.Sub(e.Started)
	}
	return now.Sub(e.Started)
}

// file is the history file's content.
type file struct {
	Version int     `json:"version"`
	NextID  uint64  `json:"next_id"`
	Entries []Entry `json:"entries"` // oldest first
}

// Log is the history of one cutover. It is safe for concurrent use.
type Log struct {
	path string // "" keeps the history in memory only

	// writeMu serialises file writes; it is taken before mu, so each
	// write takes its snapshot after the previous one and the file always
	// ends with the latest history.
	writeMu sync.Mutex
	mu      sync.Mutex
	next    uint64
	entries []Entry // oldest first, at most Limit
}

// Path returns the history file's path in dir.
func Path(dir string) string { return filepath.Join(dir, FileName) }

// Open reads the history in dir ("" for a history kept in memory only).
// Entries a stopped cutover left running are marked failed. A file that
// cannot be parsed is moved aside (to history.json.corrupt) rather than
// stopping cutover from serving; the returned warning says so, and the
// Log is usable either way. A file that cannot be read is an error.
func Open(dir string) (l *Log, warning error, err error) {
	l = &Log{next: 1}
	if dir == "" {
		return l, nil, nil
	}
	l.path = Path(dir)
	data, err := os.ReadFile(l.path)
	if errors.Is(err, fs.ErrNotExist) {
		return l, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read history file %s: %w — make state_dir readable by the user running cutover", l.path, err)
	}
	f, perr := parse(data)
	if perr != nil {
		aside := l.path + ".corrupt"
		if err := os.Rename(l.path, aside); err != nil {
			return nil, nil, fmt.Errorf("history file %s %v, and it cannot be moved aside: %w — delete it", l.path, perr, err)
		}
		return l, fmt.Errorf("history file %s %v; moved it to %s and started an empty history", l.path, perr, aside), nil
	}
	l.entries, l.next = f.Entries, max(f.NextID, 1)
	now := time.Now()
	changed := false
	for i := range l.entries {
		e := &l.entries[i]
		if e.ID >= l.next {
			l.next = e.ID + 1
		}
		if e.Running() {
			e.Result, e.Reason, e.Ended = ResultFailed, interrupted, &now
			changed = true
		}
	}
	if changed {
		if err := l.write(); err != nil {
			return l, fmt.Errorf("marking interrupted operations failed: %w", err), nil
		}
	}
	return l, nil, nil
}

func parse(data []byte) (*file, error) {
	var f file
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("is not a valid cutover history file (%v)", err)
	}
	switch {
	case f.Version == 0:
		return nil, errors.New(`has no "version" field`)
	case f.Version > Version:
		return nil, fmt.Errorf("has version %d, written by a newer cutover (this one reads %d)", f.Version, Version)
	}
	if len(f.Entries) > Limit {
		f.Entries = f.Entries[len(f.Entries)-Limit:]
	}
	return &f, nil
}

// Begin records that an operation started: e gets the next ID and result
// "running" and is written at once. End records its outcome. The returned
// error (the file could not be written) does not stop the operation: the
// entry stays in memory and the caller logs the error.
func (l *Log) Begin(e Entry) (uint64, error) {
	l.mu.Lock()
	e.ID = l.next
	l.next++
	e.Result, e.Ended = ResultRunning, nil
	if e.Started.IsZero() {
		e.Started = time.Now()
	}
	l.entries = append(l.entries, e)
	if over := len(l.entries) - Limit; over > 0 {
		l.entries = append(l.entries[:0], l.entries[over:]...)
	}
	l.mu.Unlock()
	return e.ID, l.save()
}

// End replaces the entry of id with e (its outcome; e.ID and e.Started are
// kept from Begin, Ended defaults to now) and writes the file. An id that
// was dropped meanwhile (more than Limit operations began since) is
// appended again rather than lost.
func (l *Log) End(id uint64, e Entry) error {
	l.mu.Lock()
	if e.Ended == nil {
		now := time.Now()
		e.Ended = &now
	}
	e.ID = id
	found := false
	for i := len(l.entries) - 1; i >= 0; i-- {
		if l.entries[i].ID == id {
			e.Started = l.entries[i].Started
			l.entries[i] = e
			found = true
			break
		}
	}
	if !found {
		l.entries = append(l.entries, e)
	}
	l.mu.Unlock()
	return l.save()
}

// List returns the entries of service ("" for all), newest first (by ID:
// the order operations began in).
func (l *Log) List(service string) []Entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Entry, 0, len(l.entries))
	for i := len(l.entries) - 1; i >= 0; i-- {
		if service == "" || l.entries[i].Service == service {
			out = append(out, clone(l.entries[i]))
		}
	}
	return out
}

func clone(e Entry) Entry {
	e.Targets = append([]Target(nil), e.Targets...)
	e.Warnings = append([]string(nil), e.Warnings...)
	if e.Ended != nil {
		t := *e.Ended
		e.Ended = &t
	}
	return e
}

func (l *Log) save() error {
	if l.path == "" {
		return nil
	}
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	return l.write()
}

// write encodes the current history and replaces the file; the caller
// holds writeMu (or has the Log to itself).
func (l *Log) write() error {
	l.mu.Lock()
	f := file{Version: Version, NextID: l.next, Entries: l.entries}
	data, err := json.MarshalIndent(&f, "", "  ")
	l.mu.Unlock()
	if err != nil {
		return fmt.Errorf("encode history: %w", err)
	}
	if err := atomicfile.Write(l.path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("history file: %w", err)
	}
	return nil
}
