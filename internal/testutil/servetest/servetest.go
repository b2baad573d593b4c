// Package servetest holds what tests of a running cutover (serve.Instance)
// in several packages need alike.
package servetest

import (
	"context"
	"testing"
	"time"

	"github.com/cutover/cutover/internal/controlplane/history"
	"github.com/cutover/cutover/internal/serve"
)

// ShutdownWithin shuts in down gracefully and fails t when that returns an
// error or takes longer than limit (what is meant to stop it did not).
func ShutdownWithin(t testing.TB, in *serve.Instance, limit time.Duration) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	began := time.Now()
	shut := make(chan error, 1)
	go func() { shut <- in.Shutdown(ctx) }()
	select {
	case err := <-shut:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(limit + 20*time.Second):
		t.Fatalf("the shutdown did not finish within %s: something it waits for (a trial, a drain) did not stop", limit+20*time.Second)
	}
	return time.Since(began)
}

// LastEntry is the last history entry of kind for service in the history
// kept in stateDir (nil when there is none).
func LastEntry(t testing.TB, stateDir, service, kind string) *history.Entry {
	t.Helper()
	hist, _, err := history.Open(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	var last *history.Entry
	for _, e := range hist.List(service) {
		if e.Kind == kind {
			last = &e
		}
	}
	return last
}
