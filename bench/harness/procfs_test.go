package main

import (
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	// A command name with spaces and parentheses must not shift the fields.
	line := "4242 (nginx: worker (x) ) S 4241 4241 5577 0 -1 4194304 100 0 0 0 731 219 0 0 20 0 1 0 52892 3133440 412 18446744073709551615 0 0\n"
	st, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	want := procStat{PID: 4242, Comm: "nginx: worker (x) ", State: 'S', PPID: 4241, UTime: 731, STime: 219, StartTime: 52892}
	if st != want {
		t.Errorf("parseStat = %+v\nwant         %+v", st, want)
	}
}

func TestParseStatErrors(t *testing.T) {
	for _, in := range []string{
		"",
		"12 cat R 1",
		"12 (cat) R 1 2 3",
		"x (cat) R 7150 7150 5577 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 52892 3133440",
		"12 (cat) R 7150 7150 5577 0 -1 4194304 100 0 0 0 zz 0 0 0 20 0 1 0 52892 3133440",
	} {
		if _, err := parseStat([]byte(in)); err == nil {
			t.Errorf("parseStat(%q): want an error", in)
		}
	}
}

func TestParseStatOwnProcess(t *testing.T) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Skip("no /proc:", err)
	}
	st, err := parseStat(b)
	if err != nil {
		t.Fatal(err)
	}
	if st.PID <= 0 || st.PPID <= 0 || st.StartTime == 0 {
		t.Errorf("parseStat(/proc/self/stat) = %+v; want positive pid, ppid, start time", st)
	}
}

func TestParseStatusKB(t *testing.T) {
	status := "Name:\tnginx\nVmPeak:\t   20000 kB\nVmHWM:\t    2148 kB\nVmRSS:\t    2100 kB\n"
	for key, want := range map[string]int64{"VmHWM": 2148, "VmRSS": 2100, "VmPeak": 20000} {
		got, err := parseStatusKB([]byte(status), key)
		if err != nil || got != want {
			t.Errorf("parseStatusKB(%s) = %d, %v; want %d", key, got, err, want)
		}
	}
	if _, err := parseStatusKB([]byte("Name:\tkthreadd\n"), "VmHWM"); err == nil {
		t.Error("parseStatusKB without the key: want an error")
	}
	if _, err := parseStatusKB([]byte("VmHWM:\t12 MB\n"), "VmHWM"); err == nil {
		t.Error("parseStatusKB with a unit other than kB: want an error")
	}
}

func TestDescendants(t *testing.T) {
	parent := map[int]int{1: 0, 10: 1, 11: 10, 12: 10, 13: 11, 20: 1, 21: 20}
	if got, want := descendants(10, parent), []int{10, 11, 12, 13}; !reflect.DeepEqual(got, want) {
		t.Errorf("descendants(10) = %v; want %v", got, want)
	}
	if got, want := descendants(99, parent), []int{99}; !reflect.DeepEqual(got, want) {
		t.Errorf("descendants(99) = %v; want %v", got, want)
	}
}

func TestCPUTime(t *testing.T) {
	procs := []procStat{{UTime: 150, STime: 50}, {UTime: 30, STime: 20}}
	if got := cpuTime(procs, 100); got != 2500*time.Millisecond {
		t.Errorf("cpuTime = %v; want 2.5s", got)
	}
}

// The tree of a real parent with a child is found and its memory summed.
func TestProcessTreeOfRealProcesses(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	cmd := exec.Command("sh", "-c", "sleep 30 & echo started; wait")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	buf := make([]byte, 8)
	if _, err := out.Read(buf); err != nil || !strings.HasPrefix(string(buf), "started") {
		t.Fatalf("waiting for the child: %q, %v", buf, err)
	}
	procs, err := processTree(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	// The child may not have exec'd sleep yet, so it is matched by parent.
	if len(procs) != 2 || procs[0].PID != cmd.Process.Pid || procs[1].PPID != cmd.Process.Pid {
		t.Fatalf("processTree = %+v; want the shell and its sleep child", procs)
	}
	kb, err := treeMemKB(cmd.Process.Pid, "VmRSS")
	if err != nil || kb <= 0 {
		t.Errorf("treeMemKB = %d, %v; want a positive sum", kb, err)
	}
	// Kill the child found through the tree first, so none is left behind;
	// the shell's wait then returns.
	if p, err := os.FindProcess(procs[1].PID); err == nil {
		_ = p.Kill()
	}
}

func TestParseSystemBusy(t *testing.T) {
	stat := "cpu  100 5 50 9000 40 3 2 1 7 0\ncpu0 50 2 25 4500 20 1 1 0 3 0\nintr 1\n"
	busy, err := parseSystemBusy([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64(100 + 5 + 50 + 3 + 2 + 1); busy != want {
		t.Errorf("busy = %d; want %d (user+nice+system+irq+softirq+steal)", busy, want)
	}
	for _, bad := range []string{"", "intr 1\n", "cpu 1 2 3\n", "cpu 1 2 x 4 5 6 7 8\n"} {
		if _, err := parseSystemBusy([]byte(bad)); err == nil {
			t.Errorf("parseSystemBusy(%q): want an error", bad)
		}
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		if _, err := parseSystemBusy(b); err != nil {
			t.Errorf("this machine's /proc/stat: %v", err)
		}
	}
}
