package human

import (
	"testing"
	"time"
)

func TestCount(t *testing.T) {
	for _, tc := range []struct {
		n      int
		noun   string
		plural []string
		want   string
	}{
		{0, "target", nil, "0 targets"},
		{1, "target", nil, "1 target"},
		{2, "target", nil, "2 targets"},
		{1, "switch", []string{"switches"}, "1 switch"},
		{3, "switch", []string{"switches"}, "3 switches"},
	} {
		if got := Count(tc.n, tc.noun, tc.plural...); got != tc.want {
			t.Errorf("Count(%d, %q, %q) = %q, want %q", tc.n, tc.noun, tc.plural, got, tc.want)
		}
	}
}

func TestDuration(t *testing.T) {
	for _, tc := range []struct {
		in   time.Duration
		want string
	}{
		{2*time.Minute + 56275097429*time.Nanosecond, "2m56s"},
		{2351234567 * time.Nanosecond, "2.35s"},
		{1523456 * time.Nanosecond, "1.5ms"},
		{12345 * time.Nanosecond, "12µs"},
		{-1523456 * time.Nanosecond, "-1.5ms"},
		{0, "0s"},
	} {
		if got := Duration(tc.in).String(); got != tc.want {
			t.Errorf("Duration(%v) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
