// Package human formats counts and durations for messages people read:
// "1 target", "3 targets", "2m56s" rather than "1 targets" and
// "2m56.275097429s". Machine-read output (the admin API's JSON, metrics)
// keeps full precision.
package human

import (
	"strconv"
	"time"
)

// Count is n with its noun, made plural unless n is 1: Count(1, "target")
// is "1 target", Count(0, "target") is "0 targets". Nouns whose plural is
// not noun+"s" pass it as the third argument: Count(2, "switch", "switches").
func Count(n int, noun string, plural ...string) string {
	return strconv.Itoa(n) + " " + Noun(n, noun, plural...)
}

// Noun is the noun alone, singular when n is 1, for "3 of 1 target"-like
// phrases where the count comes from elsewhere.
func Noun(n int, noun string, plural ...string) string {
	if n == 1 {
		return noun
	}
	if len(plural) > 0 {
		return plural[0]
	}
	return noun + "s"
}

// Duration rounds d to what a person can use: whole seconds from a minute
// up ("2m56s"), hundredths of a second from a second ("2.35s"), a tenth of
// a millisecond from a millisecond ("1.5ms"), microseconds below that.
func Duration(d time.Duration) time.Duration {
	a := d
	if a < 0 {
		a = -a
	}
	switch {
	case a >= time.Minute:
		return d.Round(time.Second)
	case a >= time.Second:
		return d.Round(10 * time.Millisecond)
	case a >= time.Millisecond:
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}
