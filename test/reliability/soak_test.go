package reliability

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cutover/cutover/bench/soak"
)

// TestSoak runs the real binary for 20 s under 16 strict keep-alive
// clients while it is switched every second, a live backend is killed with
// SIGKILL (and restarted) every 3 s and the configuration is reloaded every
// 2 s: no request may fail, every switch and reload must succeed, and
// memory and descriptors must stop growing once the first switches have
// warmed the proxy up.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("the soak takes 20 s; -short skips it")
	}
	tl := binaries(t)
	const d = 20 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), d+2*time.Minute)
	defer cancel()
	res, err := soak.Run(ctx, soak.Options{Cutover: tl.cutover, Backend: tl.backend, Dir: t.TempDir(), Duration: d, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	s := res.Summary
	// The last sample of the first quarter is the warmed-up baseline.
	var warm int64
	var warmFDs int
	for _, smp := range res.Samples {
		if smp.At > d/4 {
			break
		}
		warm, warmFDs = smp.RSSKB, smp.FDs
	}
	peak, peakFDs := res.Peak(d / 4)
	last := res.Last()
	t.Logf("soak %v: %d requests, %d failed; %d switches (%d failed), %d backend kills, %d reloads (%d failed); RSS after warm-up %d kB, peak %d kB, last %d kB; fds after warm-up %d, peak %d, last %d",
		res.Elapsed.Round(time.Millisecond), s.Requests, s.Failed, res.Switches, res.SwitchErrors, res.Kills, res.Reloads, res.ReloadErrors, warm, peak, last.RSSKB, warmFDs, peakFDs, last.FDs)
	for _, e := range res.Errors {
		t.Errorf("soak: %s", e)
	}
	if s.Failed != 0 {
		t.Errorf("%d of %d requests failed (%v); first ones: %+v", s.Failed, s.Requests, s.ErrorKinds, res.Failures)
	}
	if s.Requests == 0 {
		t.Fatal("the soak sent no requests")
	}
	served := map[string]int{}
	for b, n := range s.ByBackend {
		served[b[:strings.IndexByte(b, '-')+1]] += n
	}
	if served["blue-"] == 0 || served["green-"] == 0 {
		t.Errorf("responses by backend %v: both pools must have served", s.ByBackend)
	}
	// The tickers may drop ticks on a busy machine; at least half must run.
	if res.Switches < int(d/time.Second)/2 || res.Kills < 2 || res.Reloads < 2 {
		t.Errorf("the soak did too little: %d switches, %d kills, %d reloads in %v", res.Switches, res.Kills, res.Reloads, d)
	}
	if len(res.Samples) < int(d/time.Second)/2 {
		t.Fatalf("only %d samples of the proxy's RSS and descriptors", len(res.Samples))
	}
	// Bounded: after a quarter of the run (pools and buffers allocated,
	// idle upstream connections opened) growth is a leak. The slack covers
	// the garbage collector's rhythm and a busy moment's extra connections.
	if peak > warm+warm/2+16<<10 {
		t.Errorf("RSS grew from %d kB after warm-up to a peak of %d kB", warm, peak)
	}
	// Upstream connections are up to max_idle_per_target per target, and
	// each of 16 clients holds one more while its request runs.
	if peakFDs > warmFDs+2*16+16 {
		t.Errorf("open descriptors grew from %d after warm-up to a peak of %d", warmFDs, peakFDs)
	}
}
