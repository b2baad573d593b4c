package main

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseSTime(t *testing.T) {
	out := "\n\nNow timing with session id reuse.\nstarting\nrrrrrrrr\n\n" +
		"1090 connections in 0.26s; 4192.31 connections/user sec, bytes read 238710\n" +
		"1090 connections in 9 real seconds, 219 bytes read per connection\n"
	conns, per, err := parseSTime(out)
	if err != nil || conns != 1090 || per != 219 {
		t.Errorf("parseSTime = %d, %d, %v; want 1090, 219, nil", conns, per, err)
	}
	if _, _, err := parseSTime("starting\nERROR\n140:error:connect\n"); err == nil || !strings.Contains(err.Error(), "ERROR") {
		t.Errorf("output without a summary: err %v; want one quoting the output", err)
	}
}

func TestSTimeArgs(t *testing.T) {
	got := sTimeArgs(sTimeOptions{Addr: "127.0.0.1:8443", Clients: 32, Duration: 10 * time.Second})
	want := []string{"s_time", "-connect", "127.0.0.1:8443", "-www", "/", "-reuse", "-time", "10"}
	if !slices.Equal(got, want) {
		t.Errorf("sTimeArgs = %q; want %q", got, want)
	}
}
