package accesslog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// fuzzEntry builds an entry from fuzzer input. The corpus in
// testdata/fuzz/<FuzzName> lists the arguments in this order.
func fuzzEntry(remote string, method, uri, host, referer, ua, reqID []byte, target string,
	status int, bytesSent, durNanos int64) Entry {
	return Entry{
		Start:          time.Unix(1_700_000_000, 0).Add(time.Duration(durNanos % int64(time.Hour))),
		RemoteAddr:     remote,
		Method:         method,
		URI:            uri,
		Proto:          "HTTP/1.1",
		Host:           host,
		Referer:        referer,
		UserAgent:      ua,
		RequestID:      reqID,
		Status:         status,
		BytesSent:      bytesSent,
		Service:        "web",
		Pool:           "green",
		Target:         target,
		UpstreamStatus: status / 2,
		Duration:       time.Duration(durNanos),
	}
}

// formatter is a Logger used only for its formatting, never opened.
func formatter(json bool) *Logger {
	l := &Logger{json: json}
	l.clock.init(json, time.UTC)
	return l
}

// FuzzJSON checks that any bytes a client can send produce one line of
// valid JSON in valid UTF-8 that decodes back to the input (with each
// invalid byte replaced by U+FFFD).
func FuzzJSON(f *testing.F) {
	f.Add("192.0.2.1", []byte("GET"), []byte("/"), []byte("example.com"), []byte(""), []byte("curl/8"),
		[]byte("abc"), "127.0.0.1:9001", 200, int64(612), int64(3_214_000))
	f.Add("", []byte("\x00"), []byte("\"\\\n\r\t\u2028\u2029"), []byte("\xff"), []byte("\xe2\x82"),
		[]byte("é日本\U0001F600"), []byte{}, "\x7f", 0, int64(-1), int64(-5))
	l := formatter(true)
	f.Fuzz(func(t *testing.T, remote string, method, uri, host, referer, ua, reqID []byte, target string,
		status int, bytesSent, durNanos int64) {
		e := fuzzEntry(remote, method, uri, host, referer, ua, reqID, target, status, bytesSent, durNanos)
		line := l.appendJSON(nil, &e)
		if !bytes.HasSuffix(line, []byte("\n")) || bytes.Count(line, []byte("\n")) != 1 {
			t.Fatalf("not exactly one line: %q", line)
		}
		if !json.Valid(line) {
			t.Fatalf("invalid JSON: %q", line)
		}
		if !utf8.Valid(line) {
			t.Fatalf("invalid UTF-8: %q", line)
		}
		var got struct {
			RemoteAddr string      `json:"remote_addr"`
			Method     string      `json:"method"`
			URI        string      `json:"uri"`
			Host       string      `json:"host"`
			Referer    string      `json:"referer"`
			UserAgent  string      `json:"user_agent"`
			RequestID  string      `json:"request_id"`
			Target     string      `json:"target"`
			Status     int         `json:"status"`
			BytesSent  int64       `json:"bytes_sent"`
			Duration   json.Number `json:"duration_ms"`
		}
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.UseNumber()
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("%v: %q", err, line)
		}
		for _, c := range []struct{ name, got, in string }{
			{"remote_addr", got.RemoteAddr, remote}, {"method", got.Method, string(method)},
			{"uri", got.URI, string(uri)}, {"host", got.Host, string(host)},
			{"referer", got.Referer, string(referer)}, {"user_agent", got.UserAgent, string(ua)},
			{"request_id", got.RequestID, string(reqID)}, {"target", got.Target, target},
		} {
			// Converting through []rune replaces each invalid byte with
			// U+FFFD, the documented treatment.
			if want := string([]rune(c.in)); c.got != want {
				t.Errorf("%s = %q, want %q", c.name, c.got, want)
			}
		}
		if got.Status != status || got.BytesSent != bytesSent {
			t.Errorf("status/bytes = %d/%d, want %d/%d", got.Status, got.BytesSent, status, bytesSent)
		}
		us := max(durNanos, 0) / 1000
		if want := fmt.Sprintf("%d.%03d", us/1000, us%1000); string(got.Duration) != want {
			t.Errorf("duration_ms = %s for %dns, want %s", got.Duration, durNanos, want)
		}
	})
}

// FuzzCombined checks that client bytes cannot break the combined line:
// printable ASCII only, exactly three quoted fields, and six key=value
// fields after them.
func FuzzCombined(f *testing.F) {
	f.Add("192.0.2.1", []byte("GET"), []byte("/"), []byte("example.com"), []byte(""), []byte("curl/8"),
		[]byte("abc"), "127.0.0.1:9001", 200, int64(612), int64(3_214_000))
	f.Add("", []byte("\x00"), []byte("\" \\\n"), []byte("\xff"), []byte("a b"),
		[]byte("é\""), []byte("id with space"), "x y", 0, int64(-1), int64(-5))
	l := formatter(false)
	f.Fuzz(func(t *testing.T, remote string, method, uri, host, referer, ua, reqID []byte, target string,
		status int, bytesSent, durNanos int64) {
		e := fuzzEntry(remote, method, uri, host, referer, ua, reqID, target, status, bytesSent, durNanos)
		line := string(l.appendCombined(nil, &e))
		body, ok := strings.CutSuffix(line, "\n")
		if !ok {
			t.Fatalf("no trailing newline: %q", line)
		}
		for i := 0; i < len(body); i++ {
			if body[i] < ' ' || body[i] > '~' {
				t.Fatalf("byte %#x at %d: %q", body[i], i, line)
			}
		}
		if n := strings.Count(body, `"`); n != 6 {
			t.Fatalf("%d quote characters, want 6: %q", n, line)
		}
		tail := body[strings.LastIndexByte(body, '"')+1:]
		fields := strings.Fields(tail)
		want := []string{"service=", "pool=", "target=", "upstream_status=", "duration=", "request_id="}
		if len(fields) != len(want) {
			t.Fatalf("fields after the user agent: %q", tail)
		}
		for i, f := range fields {
			if !strings.HasPrefix(f, want[i]) || len(f) == len(want[i]) {
				t.Fatalf("field %d = %q, want %s<value>", i, f, want[i])
			}
		}
	})
}
