package upstream

import (
	"testing"
	"time"
)

// setter records the deadlines set.
type setter struct{ set []time.Time }

func (s *setter) fn(t time.Time) error {
	s.set = append(s.set, t)
	return nil
}

func (s *setter) assert(t *testing.T, want ...time.Time) {
	t.Helper()
	if len(s.set) != len(want) {
		t.Fatalf("deadlines set %v, want %v", s.set, want)
	}
	for i := range want {
		if !s.set[i].Equal(want[i]) {
			t.Fatalf("deadlines set %v, want %v", s.set, want)
		}
	}
}

func TestDeadlineExtend(t *testing.T) {
	const d = 80 * time.Second // d/8 = 10s
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var s setter
	var dl Deadline

	dl.Extend(t0, d, s.fn) // none in force: set
	s.assert(t, t0.Add(d))

	dl.Extend(t0.Add(5*time.Second), d, s.fn)  // 5s later: within d/8, skipped
	dl.Extend(t0.Add(10*time.Second), d, s.fn) // exactly d/8: skipped
	s.assert(t, t0.Add(d))

	dl.Extend(t0.Add(11*time.Second), d, s.fn) // more than d/8 later: set
	s.assert(t, t0.Add(d), t0.Add(11*time.Second+d))

	// A shorter timeout is always set, however close.
	dl.Extend(t0.Add(11*time.Second), d-time.Millisecond, s.fn)
	s.assert(t, t0.Add(d), t0.Add(11*time.Second+d), t0.Add(11*time.Second+d-time.Millisecond))

	// A shorter timeout from a later time: the wanted deadline is earlier
	// than the one in force, so it is set.
	dl.Extend(t0.Add(12*time.Second), time.Second, s.fn)
	s.assert(t, t0.Add(d), t0.Add(11*time.Second+d), t0.Add(11*time.Second+d-time.Millisecond), t0.Add(13*time.Second))

	// Clear removes the deadline; the next Extend sets again even for the
	// deadline that was in force.
	s.set = nil
	dl.Clear(s.fn)
	s.assert(t, time.Time{})
	dl.Extend(t0.Add(12*time.Second), time.Second, s.fn)
	s.assert(t, time.Time{}, t0.Add(13*time.Second))
}

// The timeout still fires no later than its value after the last activity
// and no earlier than 7/8 of it.
func TestDeadlineBounds(t *testing.T) {
	const d = 8 * time.Second
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var s setter
	var dl Deadline
	for ms := 0; ms < 60_000; ms += 250 {
		now := t0.Add(time.Duration(ms) * time.Millisecond)
		dl.Extend(now, d, s.fn)
		in := s.set[len(s.set)-1]
		if in.After(now.Add(d)) || in.Before(now.Add(d-d/8)) {
			t.Fatalf("at %v the deadline in force is %v, want within [%v, %v]", now, in, now.Add(d-d/8), now.Add(d))
		}
	}
	if len(s.set) > 60_000/1000+1 {
		t.Fatalf("%d deadline updates for 240 extends, want about one per d/8", len(s.set))
	}
}
