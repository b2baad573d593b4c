package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// process is one program the harness started.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has exited and been reaped
	err     error         // exit error, valid after done
}

// PID is the process ID of the started program (the nginx master, say).
func (p *process) PID() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// logTail returns the last lines of the process's output file, for error
// messages.
func (p *process) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(no output: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}

// supervisor starts programs and stops every one of them by PID, also on
// failure or interrupt (stopAll runs from a deferred call in main).
type supervisor struct {
	mu    sync.Mutex
	procs []*process
}

// startSpec describes a program to start.
type startSpec struct {
	name string
	args []string // args[0] is the executable path
	// logPath receives stderr, and stdout unless stdout is set.
	logPath string
	// stdout, when set, receives standard output instead (HAProxy's access
	// log goes there).
	stdout io.Writer
	env    []string
}

func (s *supervisor) start(spec startSpec) (*process, error) {
	logFile, err := os.Create(spec.logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: create log file: %w", spec.name, err)
	}
	cmd := exec.Command(spec.args[0], spec.args[1:]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if spec.stdout != nil {
		cmd.Stdout = spec.stdout
	}
	if spec.env != nil {
		cmd.Env = append(os.Environ(), spec.env...)
	}
	// A process group of its own keeps the terminal's Ctrl-C away from the
	// programs, so the harness alone decides the order they stop in; the
	// parent-death signal is the backstop if the harness itself is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("start %s (%s): %w", spec.name, strings.Join(spec.args, " "), err)
	}
	p := &process{name: spec.name, cmd: cmd, logPath: spec.logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = logFile.Close()
		close(p.done)
	}()
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return p, nil
}

// stop ends p and every process below it: sig to p (SIGTERM unless given),
// SIGKILL after grace, then SIGKILL to any of its children still alive
// (matched by PID and start time, so a reused PID is never hit).
func (s *supervisor) stop(p *process, sig syscall.Signal, grace time.Duration) error {
	defer s.forget(p)
	if p.exited() {
		return nil
	}
	tree, _ := processTree(p.PID()) // the children to check afterwards
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	_ = p.cmd.Process.Signal(sig)
	var stopErr error
	select {
	case <-p.done:
	case <-time.After(grace):
		stopErr = fmt.Errorf("%s (pid %d) did not exit within %v of %v; killed", p.name, p.PID(), grace, sig)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	for _, child := range tree {
		if child.PID == p.PID() {
			continue
		}
		// Children of an exiting master may take a moment to follow it.
		deadline := time.Now().Add(grace)
		for stillSame(child) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if stillSame(child) {
			_ = syscall.Kill(child.PID, syscall.SIGKILL)
			stopErr = errors.Join(stopErr, fmt.Errorf("%s child %d (%s) outlived its parent; killed", p.name, child.PID, child.Comm))
		}
	}
	return stopErr
}

// stillSame reports whether the process that st describes is still alive
// (and not a zombie) under the same PID.
func stillSame(st procStat) bool {
	now, err := readStat(st.PID)
	return err == nil && now.StartTime == st.StartTime && now.State != 'Z'
}

func (s *supervisor) forget(p *process) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, q := range s.procs {
		if q == p {
			s.procs = append(s.procs[:i], s.procs[i+1:]...)
			return
		}
	}
}

// stopAll stops every process still running, newest first (proxies before
// the backends they use).
func (s *supervisor) stopAll(log io.Writer) {
	s.mu.Lock()
	procs := append([]*process(nil), s.procs...)
	s.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		if err := s.stop(procs[i], syscall.SIGTERM, 5*time.Second); err != nil {
			fmt.Fprintln(log, "bench: warning:", err)
		}
	}
}
