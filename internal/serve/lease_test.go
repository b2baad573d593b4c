package serve

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// Two processes must not write one state file: while one holds the lease
// another is refused with a message that names the holder and the fix, and
// it gets the lease once the holder lets go within its wait.
func TestLeaseIsExclusive(t *testing.T) {
	dir := t.TempDir()
	held, err := acquireLease(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = acquireLease(dir, 200*time.Millisecond)
	if err == nil {
		t.Fatal("a second lease on one state_dir was granted")
	}
	if waited := time.Since(start); waited < 200*time.Millisecond {
		t.Fatalf("refused after %v, want the 200ms wait first", waited)
	}
	for _, want := range []string{"in use by another cutover", fmt.Sprintf("(pid %d)", os.Getpid()), "cutover upgrade"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
	}

	// A waiter must keep waiting while the lease is held, and get it once
	// the holder lets go.
	got := make(chan error, 1)
	go func() {
		l, err := acquireLease(dir, 10*time.Second)
		if err == nil {
			l.release()
		}
		got <- err
	}()
	select {
	case err := <-got:
		held.release()
		t.Fatalf("a waiter returned while the lease was held (err %v); want it to wait", err)
	case <-time.After(300 * time.Millisecond):
	}
	held.release()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("waiting for a holder that let go: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a waiter did not get the lease within 5 s of its release")
	}
}
