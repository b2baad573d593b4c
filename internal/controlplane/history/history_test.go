package history

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func mustOpen(t *testing.T, dir string) *Log {
	t.Helper()
	l, warn, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if warn != nil {
		t.Fatalf("unexpected warning: %v", warn)
	}
	return l
}

func TestBeginEndAndReopen(t *testing.T) {
	dir := t.TempDir()
	l := mustOpen(t, dir)
	id, err := l.Begin(Entry{Kind: KindDeploy, Service: "web", From: "blue", To: "green"})
	if err != nil {
		t.Fatal(err)
	}
	if got := l.List(""); len(got) != 1 || got[0].Result != ResultRunning || got[0].Ended != nil {
		t.Fatalf("after Begin: %+v, want one running entry", got)
	}
	if err := l.End(id, Entry{Kind: KindDeploy, Service: "web", From: "blue", To: "green", Result: ResultSucceeded,
		Reason: "switched", TimeToHealthyMS: 1500, InFlightAtSwitch: 7, Drained: 7, DrainMS: 12.5,
		Targets: []Target{{Addr: "127.0.0.1:9011", Ready: true}}}); err != nil {
		t.Fatal(err)
	}
	id2, _ := l.Begin(Entry{Kind: KindRollback, Service: "api", From: "b", To: "a"})
	l.End(id2, Entry{Kind: KindRollback, Service: "api", From: "b", To: "a", Result: ResultRefused, Reason: "busy", ErrorKind: "busy"})

	// A new Log over the same folder is what a restart sees.
	r := mustOpen(t, dir)
	all := r.List("")
	if len(all) != 2 || all[0].ID != id2 || all[1].ID != id {
		t.Fatalf("after reopen: %+v, want ids %d then %d (newest first)", all, id2, id)
	}
	web := r.List("web")
	if len(web) != 1 {
		t.Fatalf("List(web) = %d entries, want 1", len(web))
	}
	e := web[0]
	if e.Result != ResultSucceeded || e.InFlightAtSwitch != 7 || e.DrainMS != 12.5 || e.TimeToHealthyMS != 1500 ||
		len(e.Targets) != 1 || e.Targets[0].Addr != "127.0.0.1:9011" || e.Ended == nil || e.Started.IsZero() || e.Ended.Before(e.Started) {
		t.Fatalf("entry after reopen: %+v", e)
	}
	// IDs continue after a restart; none is reused.
	id3, _ := r.Begin(Entry{Kind: KindReload})
	if id3 != id2+1 {
		t.Fatalf("id after reopen = %d, want %d", id3, id2+1)
	}
	// Only the history file is left in the folder: no temporary files.
	names, _ := filepath.Glob(filepath.Join(dir, "*"))
	hidden, _ := filepath.Glob(filepath.Join(dir, ".*"))
	if len(names) != 1 || len(hidden) != 0 {
		t.Fatalf("folder holds %v %v, want only %s", names, hidden, FileName)
	}
	if fi, _ := os.Stat(Path(dir)); fi.Mode().Perm() != 0o600 {
		t.Fatalf("history file mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestKeepsTheLastLimit(t *testing.T) {
	// In memory: Begin drops the oldest (no fsync per entry, so it is quick).
	l := mustOpen(t, "")
	for i := range Limit + 25 {
		id, _ := l.Begin(Entry{Kind: KindDeploy, Service: "web", To: fmt.Sprint(i)})
		l.End(id, Entry{Kind: KindDeploy, Service: "web", To: fmt.Sprint(i), Result: ResultSucceeded})
	}
	// On disk: a file holding more than Limit (written by hand) is cut to
	// the newest Limit on reading, and the next write keeps Limit.
	dir := t.TempDir()
	f := file{Version: Version, NextID: Limit + 25}
	for i := range Limit + 24 {
		f.Entries = append(f.Entries, Entry{ID: uint64(i + 1), Kind: KindDeploy, Service: "web", To: fmt.Sprint(i), Result: ResultSucceeded})
	}
	data, _ := json.Marshal(&f)
	if err := os.WriteFile(Path(dir), data, 0o600); err != nil {
		t.Fatal(err)
	}
	d := mustOpen(t, dir)
	id, _ := d.Begin(Entry{Kind: KindDeploy, Service: "web", To: fmt.Sprint(Limit + 24)})
	d.End(id, Entry{Kind: KindDeploy, Service: "web", To: fmt.Sprint(Limit + 24), Result: ResultSucceeded})
	for name, log := range map[string]*Log{"memory": l, "file": d, "reopened": mustOpen(t, dir)} {
		got := log.List("")
		if len(got) != Limit {
			t.Fatalf("%s: %d entries, want %d", name, len(got), Limit)
		}
		if got[0].To != fmt.Sprint(Limit+24) || got[Limit-1].To != "25" {
			t.Fatalf("%s: newest %q oldest %q, want %d and 25", name, got[0].To, got[Limit-1].To, Limit+24)
		}
	}
}

func TestConcurrentOperations(t *testing.T) {
	dir := t.TempDir()
	l := mustOpen(t, dir)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			svc := fmt.Sprintf("s%d", i%4)
			id, err := l.Begin(Entry{Kind: KindDeploy, Service: svc})
			if err != nil {
				t.Error(err)
				return
			}
			if err := l.End(id, Entry{Kind: KindDeploy, Service: svc, Result: ResultSucceeded}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	got := mustOpen(t, dir).List("")
	if len(got) != 20 {
		t.Fatalf("%d entries on disk, want 20", len(got))
	}
	seen := map[uint64]bool{}
	for _, e := range got {
		if e.Result != ResultSucceeded || seen[e.ID] {
			t.Fatalf("entry %+v: want succeeded with a unique id", e)
		}
		seen[e.ID] = true
	}
}

func TestCorruptFileIsMovedAside(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(Path(dir), []byte(`{"version": 1, "entries": [`), 0o600); err != nil {
		t.Fatal(err)
	}
	l, warn, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if warn == nil || !strings.Contains(warn.Error(), ".corrupt") {
		t.Fatalf("warning = %v, want one naming the .corrupt file", warn)
	}
	if len(l.List("")) != 0 {
		t.Fatal("want an empty history")
	}
	if _, err := os.Stat(Path(dir) + ".corrupt"); err != nil {
		t.Fatalf("corrupt file not kept: %v", err)
	}
}

func TestNewerVersionIsMovedAside(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(Path(dir), []byte(`{"version": 99, "entries": []}`), 0o600)
	_, warn, err := Open(dir)
	if err != nil || warn == nil || !strings.Contains(warn.Error(), "newer cutover") {
		t.Fatalf("Open = %v, %v; want a warning naming the newer version", warn, err)
	}
}

// TestKill9LeavesRunningEntryFailed kills a process with -9 while its
// operation runs; the next Open must show that operation as failed and
// interrupted, and keep the one that had ended.
func TestKill9LeavesRunningEntryFailed(t *testing.T) {
	if dir := os.Getenv("HISTORY_HELPER_DIR"); dir != "" {
		l, _, err := Open(dir)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		id, _ := l.Begin(Entry{Kind: KindDeploy, Service: "web", To: "green"})
		l.End(id, Entry{Kind: KindDeploy, Service: "web", To: "green", Result: ResultSucceeded})
		l.Begin(Entry{Kind: KindRollback, Service: "web", To: "blue"})
		fmt.Println("running")
		time.Sleep(time.Minute) // killed here
		os.Exit(0)
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKill9LeavesRunningEntryFailed$")
	cmd.Env = append(os.Environ(), "HISTORY_HELPER_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "running" {
		cmd.Process.Kill()
		t.Fatalf("helper said %q, %v", line, err)
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	cmd.Wait()

	l := mustOpen(t, dir)
	got := l.List("web")
	if len(got) != 2 {
		t.Fatalf("%d entries after kill -9, want 2", len(got))
	}
	if got[0].Kind != KindRollback || got[0].Result != ResultFailed || !strings.Contains(got[0].Reason, "stopped before the operation finished") || got[0].Ended == nil {
		t.Fatalf("interrupted entry: %+v", got[0])
	}
	if got[1].Result != ResultSucceeded {
		t.Fatalf("ended entry: %+v", got[1])
	}
	// The repair was written: a second start reads the same.
	if again := mustOpen(t, dir).List("web"); again[0].Result != ResultFailed {
		t.Fatalf("second reopen: %+v", again[0])
	}
}
