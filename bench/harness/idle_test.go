package main

import (
	"strings"
	"testing"
)

func TestIdleTableSideBySide(t *testing.T) {
	results := []idleResult{
		{Proxy: "nginx", Conns: 10000, BeforeKB: 19000, WithKB: 28765, StillOpen: 10000},
		{Proxy: "cutover", Conns: 10000, BeforeKB: 14000, WithKB: 111375, StillOpen: 10000},
		{Proxy: "nginx", TLS: true, Conns: 10000, BeforeKB: 19000, WithKB: 163531, StillOpen: 10000},
		{Proxy: "cutover", TLS: true, Conns: 10000, Err: "idle connection 7 of 10000: TLS handshake: EOF | reset"},
	}
	got := idleTable(results)
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if len(lines) != 4 {
		t.Fatalf("table has %d lines; want header, separator and a row per proxy:\n%s", len(lines), got)
	}
	if !strings.Contains(lines[0], "plain: per connection") || !strings.Contains(lines[0], "TLS: per connection") || strings.Count(lines[1], "---:") != 10 {
		t.Errorf("header:\n%s\n%s", lines[0], lines[1])
	}
	// (28765-19000) KiB * 1024 B / 10000 = 1.0 kB; TLS (163531-19000) * 1.024 / 10 = 14.8 kB.
	if lines[2] != "| nginx | 10000 | 19.5 MB | 29.5 MB | 1.0 kB | 10000 | 10000 | 19.5 MB | 167.5 MB | 14.8 kB | 10000 |" {
		t.Errorf("nginx row = %q", lines[2])
	}
	if !strings.Contains(lines[3], "| 10.0 kB |") || !strings.Contains(lines[3], "failed: idle connection 7 of 10000: TLS handshake: EOF / reset") {
		t.Errorf("cutover row = %q; want its plain figure and the TLS failure (with | escaped)", lines[3])
	}

	// Only plain checks: only plain columns.
	plain := idleTable(results[:2])
	if strings.Contains(plain, "TLS") || strings.Count(strings.Split(plain, "\n")[1], "---:") != 5 {
		t.Errorf("plain-only table:\n%s", plain)
	}
}

func TestIdleVerdict(t *testing.T) {
	results := []idleResult{
		{Proxy: "nginx", TLS: true, Conns: 1000, BeforeKB: 1000, WithKB: 15000},
		{Proxy: "cutover", Conns: 1000, BeforeKB: 1000, WithKB: 3500},
		{Proxy: "cutover", TLS: true, Conns: 1000, BeforeKB: 1000, WithKB: 36000},
	}
	got := idleVerdict(results)
	for _, want := range []string{"2.6 kB per connection, meets the bar (<= 3 kB)", "over TLS 35.8 kB per connection against nginx's 14.3 kB, misses the bar"} {
		if !strings.Contains(got, want) {
			t.Errorf("verdict %q lacks %q", got, want)
		}
	}
	if got := idleVerdict(results[:1]); got != "" {
		t.Errorf("without cutover: verdict %q; want none", got)
	}
}
