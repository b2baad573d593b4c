package rofs

import (
	"os"
	"path/filepath"
	"testing"
)

func TestMake(t *testing.T) {
	d := t.TempDir()
	os.WriteFile(filepath.Join(d, "a"), nil, 0o600)
	undo := Make(t, d)
	if err := os.Remove(filepath.Join(d, "a")); err == nil {
		t.Fatal("removed")
	}
	undo()
	if err := os.Remove(filepath.Join(d, "a")); err != nil {
		t.Fatal(err)
	}
}
