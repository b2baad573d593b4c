package serve

import "testing"

// The policy lends at the first busy look, keeps through short idle
// spells, and gives back only after idleTicks idle looks in a row.
func TestProcPolicyLendsWhileBusy(t *testing.T) {
	p := procPolicy{extra: 2, idleTicks: 3}
	steps := []struct {
		busy bool
		want int
	}{
		{false, 0}, // nothing held: idle looks change nothing
		{true, +2}, // lent at once
		{true, 0},  // still held
		{false, 0},
		{false, 0},
		{true, 0}, // an idle spell shorter than idleTicks keeps them
		{false, 0},
		{false, 0},
		{false, -2}, // the third idle look in a row gives them back
		{false, 0},
		{true, +2},
	}
	for i, s := range steps {
		if got := p.look(s.busy); got != s.want {
			t.Fatalf("look %d (busy %v) = %+d, want %+d", i, s.busy, got, s.want)
		}
	}
	if got := p.release(); got != -2 {
		t.Errorf("release while held = %+d, want -2", got)
	}
	if got := p.release(); got != 0 {
		t.Errorf("release when nothing is held = %+d, want 0", got)
	}
}
