package config

import (
	"runtime"
	"strings"
	"testing"
)

// TestLongUnknownKeyIsCheap: a 10 MB unknown key is reported without the
// typo suggestion's edit distance (quadratic in the key's length: 20 s and
// 2.5 GB before), and the message shows only the start of the key.
func TestLongUnknownKeyIsCheap(t *testing.T) {
	const size = 10 << 20
	long := strings.Repeat("x", size)
	text := "services:\n  web:\n    pools: {blue: [\"127.0.0.1:9001\"]}\n    ? " + long + "\n    : 1\n"

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := Parse([]byte(text), "cutover.yaml", env(nil))
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Fatal("Parse accepted an unknown key")
	}
	// The YAML parser itself copies the key a few times; the edit distance
	// allocated len(key)*len(candidate)*8 bytes for each candidate.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 40*size {
		t.Errorf("parsing allocated %d MB for a %d MB key, want at most %d MB", alloc>>20, size>>20, 40*size>>20)
	}
	msg := err.Error()
	if !strings.Contains(msg, "unknown key") {
		t.Errorf("message %q does not say unknown key", msg)
	}
	if len(msg) > 1000 {
		t.Errorf("message is %d bytes long, want it to show only the start of the key", len(msg))
	}
	if !strings.Contains(msg, "(a key of 10485773 bytes)") {
		t.Errorf("message %q does not say how long the key is", msg)
	}
}

func TestShortKey(t *testing.T) {
	if got := shortKey("services.web"); got != "services.web" {
		t.Errorf("short key changed: %q", got)
	}
	long := strings.Repeat("é", 100) // 200 bytes; a cut at 120 is a boundary
	got := shortKey(long)
	if !strings.HasPrefix(got, strings.Repeat("é", 60)+"…") || !strings.Contains(got, "200 bytes") {
		t.Errorf("shortKey(200 bytes of é) = %q", got)
	}
	odd := "a" + strings.Repeat("é", 100) // the cut at 120 falls inside a character
	if got := shortKey(odd); !strings.HasPrefix(got, "a"+strings.Repeat("é", 59)+"…") {
		t.Errorf("shortKey cut a character: %q", got)
	}
}
