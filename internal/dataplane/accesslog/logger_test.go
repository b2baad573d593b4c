package accesslog

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

var plusOne = time.FixedZone("", 3600)

func sampleEntry() Entry {
	return Entry{
		Start:          time.Date(2024, 3, 9, 14, 5, 7, 120_000_000, plusOne),
		RemoteAddr:     "192.0.2.10",
		Method:         []byte("GET"),
		URI:            []byte("/index.html?q=1&r=%20x"),
		Proto:          "HTTP/1.1",
		Host:           []byte("example.com"),
		Referer:        []byte("https://ref.example/page"),
		UserAgent:      []byte("curl/8.5.0"),
		RequestID:      []byte("0af7651916cd43dd"),
		Status:         200,
		BytesSent:      612,
		Service:        "web",
		Pool:           "blue",
		Target:         "127.0.0.1:9001",
		UpstreamStatus: 200,
		Duration:       3*time.Millisecond + 214*time.Microsecond,
	}
}

// syncBuffer is a Stdout that records writes and announces each one.
type syncBuffer struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	sizes  []int
	err    error // returned by Write when set
	writes chan struct{}
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{writes: make(chan struct{}, 1024)} }

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return 0, s.err
	}
	s.buf.Write(p)
	s.sizes = append(s.sizes, len(p))
	select {
	case s.writes <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func (s *syncBuffer) writeCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sizes)
}

// render logs entries to a buffer with the clock in loc and returns the
// output after Close.
func render(t *testing.T, format string, loc *time.Location, entries ...Entry) string {
	t.Helper()
	out := newSyncBuffer()
	l, err := New(Options{Path: "-", Format: format, Stdout: out, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	l.clock.init(l.json, loc)
	l.mu.Unlock()
	for i := range entries {
		l.Log(&entries[i])
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func TestCombinedExactLine(t *testing.T) {
	full := sampleEntry()
	empty := Entry{Start: time.Date(2024, 12, 31, 23, 59, 59, 999_000_000, time.UTC), Duration: -time.Second}
	failed := sampleEntry()
	failed.Status, failed.UpstreamStatus, failed.BytesSent = 502, 0, 0
	failed.Duration = 12*time.Second + 345*time.Millisecond + 999*time.Microsecond
	failed.Proto = "HTTP/1.0"

	got := render(t, FormatCombined, plusOne, full, empty, failed)
	want := `192.0.2.10 - - [09/Mar/2024:14:05:07 +0100] "GET /index.html?q=1&r=%20x HTTP/1.1" 200 612 "https://ref.example/page" "curl/8.5.0" service=web pool=blue target=127.0.0.1:9001 upstream_status=200 duration=0.003 request_id=0af7651916cd43dd
- - - [01/Jan/2025:00:59:58 +0100] "-" 000 0 "-" "-" service=- pool=- target=- upstream_status=- duration=0.000 request_id=-
192.0.2.10 - - [09/Mar/2024:14:05:19 +0100] "GET /index.html?q=1&r=%20x HTTP/1.0" 502 0 "https://ref.example/page" "curl/8.5.0" service=web pool=blue target=127.0.0.1:9001 upstream_status=- duration=12.345 request_id=0af7651916cd43dd
`
	if got != want {
		t.Fatalf("combined output\n got: %q\nwant: %q", got, want)
	}
}

func TestCombinedEscaping(t *testing.T) {
	e := sampleEntry()
	e.URI = []byte("/a\"b\\c\x01d\x7f\xffé ok")
	e.UserAgent = []byte("evil\"agent\nnext line")
	e.Referer = []byte("\t")
	e.RequestID = []byte("id with spaces\"")
	e.Target = "host name"
	got := render(t, FormatCombined, plusOne, e)
	want := `192.0.2.10 - - [09/Mar/2024:14:05:07 +0100] "GET /a\x22b\x5Cc\x01d\x7F\xFF\xC3\xA9 ok HTTP/1.1" 200 612 "\x09" "evil\x22agent\x0Anext line" service=web pool=blue target=host\x20name upstream_status=200 duration=0.003 request_id=id\x20with\x20spaces\x22
`
	if got != want {
		t.Fatalf("escaped output\n got: %q\nwant: %q", got, want)
	}
}

func TestJSONLine(t *testing.T) {
	got := render(t, FormatJSON, plusOne, sampleEntry())
	want := `{"time":"2024-03-09T14:05:07.123+01:00","remote_addr":"192.0.2.10","method":"GET","uri":"/index.html?q=1&r=%20x","proto":"HTTP/1.1","host":"example.com","status":200,"bytes_sent":612,"referer":"https://ref.example/page","user_agent":"curl/8.5.0","request_id":"0af7651916cd43dd","service":"web","pool":"blue","target":"127.0.0.1:9001","upstream_status":200,"duration_ms":3.214}
`
	if got != want {
		t.Fatalf("json output\n got: %s\nwant: %s", got, want)
	}

	empty := Entry{Start: time.Date(2024, 1, 2, 3, 4, 5, 6_000_000, time.UTC)}
	got = render(t, FormatJSON, time.UTC, empty)
	var m map[string]any
	if err := json.Unmarshal([]byte(got), &m); err != nil {
		t.Fatalf("%v in %s", err, got)
	}
	if m["time"] != "2024-01-02T03:04:05.006Z" || m["upstream_status"] != nil || m["duration_ms"] != 0.0 ||
		m["status"] != 0.0 || m["uri"] != "" {
		t.Fatalf("empty entry as JSON: %s", got)
	}
	if _, ok := m["upstream_status"]; !ok || len(m) != 16 {
		t.Fatalf("want all 16 keys including upstream_status: %s", got)
	}
}

func TestJSONEscaping(t *testing.T) {
	e := sampleEntry()
	e.URI = []byte("/q\"\\\x00\x1f\n\r\t\x7fé\u2028end")
	e.UserAgent = []byte("bad\xff\xfe utf8 \xe2\x82 cut")
	e.Target = "quote\"target"
	line := render(t, FormatJSON, time.UTC, e)
	if !json.Valid([]byte(line)) {
		t.Fatalf("invalid JSON: %s", line)
	}
	if strings.Contains(line, "\u2028") {
		t.Error("U+2028 not escaped")
	}
	var got struct {
		URI       string `json:"uri"`
		UserAgent string `json:"user_agent"`
		Target    string `json:"target"`
	}
	if err := json.Unmarshal([]byte(line), &got); err != nil {
		t.Fatal(err)
	}
	if got.URI != string(e.URI) {
		t.Errorf("uri round trip = %q, want %q", got.URI, e.URI)
	}
	if want := "bad\ufffd\ufffd utf8 \ufffd\ufffd cut"; got.UserAgent != want {
		t.Errorf("invalid UTF-8 became %q, want %q", got.UserAgent, want)
	}
	if got.Target != e.Target {
		t.Errorf("target = %q", got.Target)
	}
}

func TestLogDoesNotRetainEntry(t *testing.T) {
	e := sampleEntry()
	out := newSyncBuffer()
	l, err := New(Options{Path: "-", Stdout: out, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	l.Log(&e)
	// The data plane reuses its buffers as soon as Log returns.
	copy(e.URI, "XXXXXXXXXX")
	copy(e.UserAgent, "YYYY")
	e.Status = 999
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.Contains(s, `"GET /index.html?q=1&r=%20x HTTP/1.1" 200 612`) ||
		!strings.Contains(s, `"curl/8.5.0"`) {
		t.Fatalf("line changed after Log returned: %s", s)
	}
}

func TestBufferedUntilFull(t *testing.T) {
	out := newSyncBuffer()
	l, err := New(Options{Path: "-", Stdout: out, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	e := sampleEntry()
	lineLen := len(render(t, FormatCombined, time.Local, e))
	logged := 0
	for ; logged < 10; logged++ {
		l.Log(&e)
	}
	if n := out.writeCount(); n != 0 {
		t.Fatalf("%d writes for 10 lines, want them buffered", n)
	}
	for out.writeCount() == 0 && logged < 2*bufferSize/lineLen {
		l.Log(&e)
		logged++
	}
	out.mu.Lock()
	sizes := append([]int(nil), out.sizes...)
	out.mu.Unlock()
	if len(sizes) != 1 || sizes[0] < bufferSize || sizes[0] >= bufferSize+lineLen {
		t.Fatalf("writes %v after %d lines of %d bytes; want one write just past %d bytes",
			sizes, logged, lineLen, bufferSize)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(out.String(), "\n"); got != logged {
		t.Fatalf("%d lines out, %d logged", got, logged)
	}
}

func TestFlushInterval(t *testing.T) {
	out := newSyncBuffer()
	l, err := New(Options{Path: "-", Stdout: out, FlushInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	e := sampleEntry()
	l.Log(&e)
	select {
	case <-out.writes:
	case <-time.After(5 * time.Second):
		t.Fatal("a buffered line was not flushed within 5s with a 10ms flush interval")
	}
	if got := out.String(); !strings.HasPrefix(got, "192.0.2.10 - - [") || strings.Count(got, "\n") != 1 {
		t.Fatalf("flushed %q", got)
	}
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) == 0 {
		return nil
	}
	if data[len(data)-1] != '\n' {
		t.Fatalf("%s does not end in a newline", path)
	}
	return strings.Split(string(data[:len(data)-1]), "\n")
}

func TestReopenAfterRename(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	l, err := New(Options{Path: path, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	e := sampleEntry()
	logN := func(n int) {
		for i := 0; i < n; i++ {
			l.Log(&e)
		}
	}
	logN(1000) // more than one buffer: some already written
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	logN(100) // still buffered for the renamed file
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	logN(7)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := len(readLines(t, path+".1")); got != 1100 {
		t.Errorf("rotated file has %d lines, want 1100", got)
	}
	if got := len(readLines(t, path)); got != 7 {
		t.Errorf("new file has %d lines, want 7", got)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&^0o644 != 0 {
		t.Errorf("new file mode %o, want at most 0644", fi.Mode().Perm())
	}
}

func TestReopenUnderConcurrentLoad(t *testing.T) {
	for _, format := range []string{FormatCombined, FormatJSON} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "access.log")
			l, err := New(Options{Path: path, Format: format, FlushInterval: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			const workers, perWorker, rotations = 8, 3000, 3
			var halfway, done sync.WaitGroup
			halfway.Add(workers)
			done.Add(workers)
			for w := 0; w < workers; w++ {
				go func() {
					defer done.Done()
					e := sampleEntry()
					for i := 0; i < perWorker; i++ {
						if i == perWorker/2 {
							halfway.Done()
						}
						e.RequestID = fmt.Appendf(e.RequestID[:0], "w%d-%d", w, i)
						l.Log(&e)
					}
				}()
			}
			// Rotate while the workers are mid-way through their lines.
			halfway.Wait()
			for r := 1; r <= rotations; r++ {
				if err := os.Rename(path, fmt.Sprintf("%s.%d", path, r)); err != nil {
					t.Fatal(err)
				}
				if err := l.Reopen(); err != nil {
					t.Fatal(err)
				}
			}
			done.Wait()
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			files := []string{path}
			for r := 1; r <= rotations; r++ {
				files = append(files, fmt.Sprintf("%s.%d", path, r))
			}
			seen := checkLines(t, format, files...)
			if len(seen) != workers*perWorker {
				t.Fatalf("%d distinct lines across %d files, want %d", len(seen), len(files), workers*perWorker)
			}
		})
	}
}

var combinedRE = regexp.MustCompile(`^\S+ - - \[[^\]]+\] "[^"]*" \d{3} \d+ "[^"]*" "[^"]*" service=\S+ pool=\S+ target=\S+ upstream_status=\S+ duration=\d+\.\d{3} request_id=(\S+)$`)

// checkLines checks every line's shape and returns how often each request
// ID occurs; it fails on a duplicate.
func checkLines(t *testing.T, format string, files ...string) map[string]bool {
	t.Helper()
	seen := map[string]bool{}
	for _, f := range files {
		for _, line := range readLines(t, f) {
			var id string
			if format == FormatJSON {
				var v struct {
					RequestID string `json:"request_id"`
				}
				if err := json.Unmarshal([]byte(line), &v); err != nil {
					t.Fatalf("%s: %v in %q", f, err, line)
				}
				id = v.RequestID
			} else {
				m := combinedRE.FindStringSubmatch(line)
				if m == nil {
					t.Fatalf("%s: malformed line %q", f, line)
				}
				id = m[1]
			}
			if seen[id] {
				t.Fatalf("request %s logged twice", id)
			}
			seen[id] = true
		}
	}
	return seen
}

func TestConcurrentLogLosesNothing(t *testing.T) {
	for _, format := range []string{FormatCombined, FormatJSON} {
		t.Run(format, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "access.log")
			l, err := New(Options{Path: path, Format: format, FlushInterval: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			const workers, perWorker = 32, 1000
			var wg sync.WaitGroup
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					e := sampleEntry()
					for i := 0; i < perWorker; i++ {
						e.RequestID = fmt.Appendf(e.RequestID[:0], "w%d-%d", w, i)
						e.Start = e.Start.Add(7 * time.Millisecond) // crosses seconds
						l.Log(&e)
					}
				}()
			}
			wg.Wait()
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if got := len(checkLines(t, format, path)); got != workers*perWorker {
				t.Fatalf("%d lines, want %d", got, workers*perWorker)
			}
		})
	}
}

func TestZeroAllocs(t *testing.T) {
	for _, format := range []string{FormatCombined, FormatJSON} {
		t.Run(format, func(t *testing.T) {
			l, err := New(Options{Path: filepath.Join(t.TempDir(), "access.log"), Format: format})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			e := sampleEntry()
			e.URI = []byte("/escaped\"path\xff\x01?q=é")
			l.Log(&e) // first line sets the clock cache
			// 5000 lines are several 64 KiB writes and many new seconds.
			allocs := testing.AllocsPerRun(5000, func() {
				e.Start = e.Start.Add(300 * time.Millisecond)
				l.Log(&e)
			})
			if allocs != 0 {
				t.Fatalf("Log allocates %.2f times per call, want 0", allocs)
			}
		})
	}
}

func TestOffAndNil(t *testing.T) {
	var nilLogger *Logger
	e := sampleEntry()
	nilLogger.Log(&e)
	if err := errors.Join(nilLogger.Flush(), nilLogger.Reopen(), nilLogger.Close()); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	t.Chdir(dir)
	off, err := New(Options{Path: "off"})
	if err != nil {
		t.Fatal(err)
	}
	if allocs := testing.AllocsPerRun(100, func() { off.Log(&e) }); allocs != 0 {
		t.Errorf("off logger allocates %.1f per call", allocs)
	}
	if err := errors.Join(off.Flush(), off.Reopen(), off.Close()); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("off logger created %v", entries)
	}
}

func TestOptionErrors(t *testing.T) {
	missingDir := filepath.Join(t.TempDir(), "no", "such", "dir", "access.log")
	cases := []struct {
		o    Options
		want string
	}{
		{Options{Path: "-", Format: "common"}, `format "common" is unknown`},
		{Options{Path: ""}, "path is empty"},
		{Options{Path: missingDir}, missingDir},
	}
	for _, tc := range cases {
		l, err := New(tc.o)
		if err == nil {
			l.Close()
			t.Errorf("New(%+v) succeeded", tc.o)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want it to contain %q", tc.o, err, tc.want)
		}
	}
}

func TestReopenFailureKeepsOldFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	l, err := New(Options{Path: path, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	e := sampleEntry()
	l.Log(&e)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	// A directory where the file should be: open fails even for root.
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Reopen onto a directory: err = %v, want one naming %s", err, path)
	}
	l.Log(&e)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := len(readLines(t, path+".1")); got != 2 {
		t.Fatalf("old file has %d lines, want both", got)
	}
	if err := l.Reopen(); err == nil {
		t.Error("Reopen after Close succeeded")
	}
	l.Log(&e) // discarded, must not panic
}

func TestWriteFailureReportedOnce(t *testing.T) {
	out := newSyncBuffer()
	out.err = errors.New("disk full")
	var diag bytes.Buffer
	var diagMu sync.Mutex
	h := slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		diagMu.Lock()
		defer diagMu.Unlock()
		return diag.Write(p)
	}), nil)
	l, err := New(Options{Path: "-", Stdout: out, FlushInterval: time.Hour, Diagnostics: slog.New(h)})
	if err != nil {
		t.Fatal(err)
	}
	e := sampleEntry()
	for i := 0; i < 3; i++ {
		l.Log(&e)
		if err := l.Flush(); err == nil || !strings.Contains(err.Error(), "disk full") {
			t.Fatalf("Flush with a failing writer: %v", err)
		}
	}
	out.mu.Lock()
	out.err = nil
	out.mu.Unlock()
	l.Log(&e)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	diagMu.Lock()
	defer diagMu.Unlock()
	sc := bufio.NewScanner(&diag)
	var msgs []string
	for sc.Scan() {
		msgs = append(msgs, sc.Text())
	}
	if len(msgs) != 2 || !strings.Contains(msgs[0], "write failed") || !strings.Contains(msgs[1], "succeed again") {
		t.Fatalf("diagnostics %q, want one failure and one recovery", msgs)
	}
	if got := strings.Count(out.String(), "\n"); got != 1 {
		t.Fatalf("%d lines written after recovery, want 1", got)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// The benchmarks report the cost of Log including its share of the 64 KiB
// writes ("file"), and formatting and locking alone ("discard").
func benchmarkLog(b *testing.B, format string) {
	b.Run("file", func(b *testing.B) {
		l, err := New(Options{Path: filepath.Join(b.TempDir(), "access.log"), Format: format})
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		runLog(b, l)
	})
	b.Run("discard", func(b *testing.B) {
		l, err := New(Options{Path: "-", Stdout: io.Discard, Format: format})
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		runLog(b, l)
	})
}

func runLog(b *testing.B, l *Logger) {
	e := sampleEntry()
	b.ReportAllocs()
	for b.Loop() {
		l.Log(&e)
	}
}

func BenchmarkLogCombined(b *testing.B) { benchmarkLog(b, FormatCombined) }
func BenchmarkLogJSON(b *testing.B)     { benchmarkLog(b, FormatJSON) }

func benchmarkLogParallel(b *testing.B, format string) {
	l, err := New(Options{Path: filepath.Join(b.TempDir(), "access.log"), Format: format})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		e := sampleEntry()
		for pb.Next() {
			l.Log(&e)
		}
	})
}

func BenchmarkLogCombinedParallel(b *testing.B) { benchmarkLogParallel(b, FormatCombined) }
func BenchmarkLogJSONParallel(b *testing.B)     { benchmarkLogParallel(b, FormatJSON) }
