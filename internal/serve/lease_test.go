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

	got := make(chan error, 1)
	go func() {
		l, err := acquireLease(dir, 10*time.Second)
		if err == nil {
			l.release()
		}
		got <- err
	}()
	held.release()
	if err := <-got; err != nil {
		t.Fatalf("waiting for a holder that let go: %v", err)
	}
}
