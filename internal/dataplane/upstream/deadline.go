package upstream

import "time"

// Deadline is a connection deadline that is moved lazily: Extend skips the
// update when the deadline in force is already within an eighth of the
// timeout of the wanted one. Every request moves its connections'
// deadlines, and each move is a runtime timer update under a lock; this
// keeps them off most requests, while a timeout still fires between 7/8 of
// its value and its value after the last activity.
type Deadline struct {
	at time.Time
}

// Extend sets the deadline to now+d through set unless the one in force is
// at most d/8 earlier than that. A shorter deadline is always set.
func (dl *Deadline) Extend(now time.Time, d time.Duration, set func(time.Time) error) {
	want := now.Add(d)
	if !dl.at.IsZero() && !dl.at.After(want) && want.Sub(dl.at) <= d/8 {
		return
	}
	dl.at = want
	set(want)
}

// Clear removes the deadline.
func (dl *Deadline) Clear(set func(time.Time) error) {
	dl.at = time.Time{}
	set(time.Time{})
}
