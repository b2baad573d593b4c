package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// procStat is the part of /proc/PID/stat the harness uses.
type procStat struct {
	PID   int
	Comm  string
	State byte
	PPID  int
	// UTime and STime are CPU time in clock ticks (USER_HZ).
	UTime, STime uint64
	// StartTime (ticks since boot) tells a process from a later one that
	// reuses its PID.
	StartTime uint64
}

// parseStat parses the contents of /proc/PID/stat. The command name is in
// parentheses and may itself contain spaces and parentheses, so the fields
// are counted from the last ')'.
func parseStat(b []byte) (procStat, error) {
	var st procStat
	open := bytes.IndexByte(b, '(')
	closing := bytes.LastIndexByte(b, ')')
	if open < 1 || closing < open {
		return st, fmt.Errorf("parse /proc stat %q: no (comm) field", truncate(b, 80))
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil {
		return st, fmt.Errorf("parse /proc stat pid %q: %w", b[:open], err)
	}
	st.PID = pid
	st.Comm = string(b[open+1 : closing])
	// Fields after comm, numbered as in proc(5): 3=state 4=ppid ... 14=utime
	// 15=stime ... 22=starttime.
	rest := strings.Fields(string(b[closing+1:]))
	const lastNeeded = 22 - 3
	if len(rest) <= lastNeeded {
		return st, fmt.Errorf("parse /proc stat of pid %d: %d fields after comm; want at least %d", pid, len(rest), lastNeeded+1)
	}
	field := func(n int) string { return rest[n-3] }
	if len(field(3)) != 1 {
		return st, fmt.Errorf("parse /proc stat of pid %d: state %q", pid, field(3))
	}
	st.State = field(3)[0]
	nums := []struct {
		n   int
		dst *uint64
	}{{14, &st.UTime}, {15, &st.STime}, {22, &st.StartTime}}
	for _, f := range nums {
		v, err := strconv.ParseUint(field(f.n), 10, 64)
		if err != nil {
			return st, fmt.Errorf("parse /proc stat of pid %d field %d %q: %w", pid, f.n, field(f.n), err)
		}
		*f.dst = v
	}
	if st.PPID, err = strconv.Atoi(field(4)); err != nil {
		return st, fmt.Errorf("parse /proc stat of pid %d ppid %q: %w", pid, field(4), err)
	}
	return st, nil
}

// parseStatusKB returns the value in kB of a "Key:   1234 kB" line of
// /proc/PID/status (VmHWM, VmRSS).
func parseStatusKB(b []byte, key string) (int64, error) {
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || string(name) != key {
			continue
		}
		f := strings.Fields(string(value))
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("parse /proc status %s: value %q; want \"N kB\"", key, value)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc status %s: %w", key, err)
		}
		return n, nil
	}
	return 0, fmt.Errorf("parse /proc status: no %s line (a kernel thread or a zombie has none)", key)
}

// descendants returns root and every process below it in the parent map,
// sorted by PID.
func descendants(root int, parent map[int]int) []int {
	children := map[int][]int{}
	for pid, ppid := range parent {
		children[ppid] = append(children[ppid], pid)
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	sort.Ints(out)
	return out
}

// procTable reads the stat of every process in /proc. Processes that exit
// while it reads are skipped.
func procTable() (map[int]procStat, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list /proc: %w", err)
	}
	table := make(map[int]procStat, len(entries))
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil {
			continue
		}
		table[pid] = st
	}
	return table, nil
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, fmt.Errorf("read stat of pid %d: %w", pid, err)
	}
	return parseStat(b)
}

// processTree returns the live processes of the tree rooted at root.
func processTree(root int) ([]procStat, error) {
	table, err := procTable()
	if err != nil {
		return nil, err
	}
	if _, ok := table[root]; !ok {
		return nil, fmt.Errorf("process %d is not running", root)
	}
	parent := make(map[int]int, len(table))
	for pid, st := range table {
		parent[pid] = st.PPID
	}
	var out []procStat
	for _, pid := range descendants(root, parent) {
		out = append(out, table[pid])
	}
	return out, nil
}

// ticksPerSecond is USER_HZ, the unit of utime and stime.
type ticksPerSecond float64

// clockTicks asks getconf for CLK_TCK; Linux fixes USER_HZ at 100 on every
// common architecture, which is the fallback.
func clockTicks() ticksPerSecond {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && n > 0 {
			return ticksPerSecond(n)
		}
	}
	return 100
}

// cpuTime sums utime+stime over procs.
func cpuTime(procs []procStat, hz ticksPerSecond) time.Duration {
	var ticks uint64
	for _, p := range procs {
		ticks += p.UTime + p.STime
	}
	return time.Duration(float64(ticks) / float64(hz) * float64(time.Second))
}

// treeCPU is the CPU time (user+system) used so far by the live processes of
// the tree rooted at root. For nginx that is the master plus its workers.
func treeCPU(root int, hz ticksPerSecond) (time.Duration, error) {
	procs, err := processTree(root)
	if err != nil {
		return 0, err
	}
	return cpuTime(procs, hz), nil
}

// treeMemKB sums a /proc/PID/status kB field (VmHWM, VmRSS) over the tree
// rooted at root.
func treeMemKB(root int, key string) (int64, error) {
	procs, err := processTree(root)
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, p := range procs {
		if p.State == 'Z' {
			continue // exited, not yet reaped: no memory left
		}
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p.PID), "status"))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // exited meanwhile
			}
			return 0, fmt.Errorf("read status of pid %d: %w", p.PID, err)
		}
		kb, err := parseStatusKB(b, key)
		if err != nil {
			return 0, fmt.Errorf("pid %d (%s): %w", p.PID, p.Comm, err)
		}
		sum += kb
	}
	return sum, nil
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// parseSystemBusy returns the busy time (user, nice, system, irq, softirq,
// steal) of all CPUs, in ticks, from the contents of /proc/stat. Guest time
// is already counted in user; idle and iowait are not busy.
func parseSystemBusy(b []byte) (uint64, error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("parse /proc/stat: first line %q; want \"cpu\" and at least 8 counters", truncate(line, 80))
	}
	var busy uint64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system irq softirq steal
		v, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc/stat counter %d %q: %w", i, f[i], err)
		}
		busy += v
	}
	return busy, nil
}

// systemBusy is the machine's busy CPU time so far.
func systemBusy(hz ticksPerSecond) (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("read /proc/stat: %w", err)
	}
	ticks, err := parseSystemBusy(b)
	if err != nil {
		return 0, err
	}
	return time.Duration(float64(ticks) / float64(hz) * float64(time.Second)), nil
}
