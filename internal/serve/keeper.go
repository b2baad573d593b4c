package serve

import (
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// keepAsInit is what the old process of an upgrade does instead of exiting
// when it is PID 1, as `cutover serve` is in its container: the container
// ends when PID 1 does, which would take the new process down with it.
// Drained and holding no socket, it stays as the container's init: it
// reaps orphans (the new process becomes its child when its parent exits),
// forwards signals to whichever process serves now (named by the state
// lease), follows later upgrades, and exits with that process's status
// when it ends. The container's PID stays 1; `docker stop` reaches the
// serving process through it.
func (in *Instance) keepAsInit() error {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGCHLD)
	defer signal.Stop(sigs)
	cur := int(in.handedTo.Load())
	in.log.Info("staying as the container's init for the new process", "serving_pid", cur)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	status := 0
	for {
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
			if pid == cur {
				status = ws.ExitStatus()
			}
		}
		if processGone(cur) {
			next := leaseHolder(in.cfg.StateDir)
			if next == 0 || next == cur || processGone(next) {
				in.log.Info("the serving process ended; the container stops", "pid", cur, "status", status)
				os.Exit(status)
			}
			cur = next
		}
		select {
		case sig := <-sigs:
			if s, ok := sig.(syscall.Signal); ok && s != syscall.SIGCHLD {
				syscall.Kill(cur, s)
			}
		case <-tick.C:
		}
	}
}

// processGone reports whether pid has exited (or is a zombie).
func processGone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z' || s[i+2] == 'X'
}

// leaseHolder is the pid written in state_dir's lease file (0 if none).
func leaseHolder(dir string) int {
	if dir == "" {
		return 0
	}
	b, err := os.ReadFile(filepath.Join(dir, LeaseFile))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}
