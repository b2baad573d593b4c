package accesslog

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Why buffer: writing each line with its own write() puts a system call on
// every request's hot path, which at tens of thousands of requests per
// second is a measurable share of the proxy's CPU. Like nginx's
// `access_log ... buffer=64k flush=...`, lines collect in memory and go out
// in one write when the buffer passes bufferSize, and at least every flush
// interval so that `tail -f` stays current. The price is the same as
// nginx's: a crash loses at most one interval's worth of lines.
const (
	// bufferSize is the fill level that triggers a write.
	bufferSize = 64 << 10
	// bufferSlack lets the last line that crosses bufferSize fit without
	// growing the buffer in the common case.
	bufferSlack = 8 << 10
	// DefaultFlushInterval is the longest a line waits in the buffer.
	DefaultFlushInterval = 200 * time.Millisecond
)

// Formats accepted by Options.Format.
const (
	FormatCombined = "combined"
	FormatJSON     = "json"
)

// Destinations with a special meaning in Options.Path.
const (
	PathStdout = "-"
	PathOff    = "off"
)

// Options configures a Logger.
type Options struct {
	// Path is a file path, "-" for standard output, or "off".
	Path string
	// Format is "combined" (nginx's, plus cutover's fields) or "json".
	// Empty means combined.
	Format string
	// FlushInterval bounds how long a line may sit in the buffer; zero
	// means DefaultFlushInterval.
	FlushInterval time.Duration
	// Stdout is where "-" writes; nil means os.Stdout.
	Stdout io.Writer
	// Diagnostics receives write failures (once per failure streak, not
	// per line). Nil means slog.Default().
	Diagnostics *slog.Logger
}

// Logger writes access log lines. Its methods are safe for concurrent use,
// and a nil *Logger is a valid logger that discards everything.
type Logger struct {
	off      bool
	json     bool
	path     string // "" when writing to Stdout
	interval time.Duration
	diag     *slog.Logger

	// mu guards the buffer being filled and the formatting state.
	mu     sync.Mutex
	buf    []byte
	closed bool
	clock  clockCache

	// wmu serialises writes and guards the destination. It is taken while
	// mu is held (never the other way round) so that buffers reach the
	// destination in the order they were filled; mu is released before
	// the write, so requests keep logging into the other buffer meanwhile.
	wmu     sync.Mutex
	spare   []byte // the buffer being written, empty otherwise
	out     io.Writer
	file    *os.File // nil for stdout
	failing bool     // in a streak of write errors; reported once

	stop        chan struct{}
	flusherDone chan struct{}
}

// New opens the access log that o describes and starts its background
// flusher. Close it to flush the last lines.
func New(o Options) (*Logger, error) {
	l := &Logger{diag: o.Diagnostics, interval: o.FlushInterval}
	if l.diag == nil {
		l.diag = slog.Default()
	}
	switch o.Format {
	case "", FormatCombined:
	case FormatJSON:
		l.json = true
	default:
		return nil, fmt.Errorf("access log format %q is unknown: use %q (nginx's) or %q",
			o.Format, FormatCombined, FormatJSON)
	}
	if l.interval <= 0 {
		l.interval = DefaultFlushInterval
	}
	switch o.Path {
	case PathOff:
		l.off = true
		return l, nil
	case "":
		return nil, fmt.Errorf("access log path is empty: set it to a file path, %q for standard output or %q",
			PathStdout, PathOff)
	case PathStdout:
		l.out = o.Stdout
		if l.out == nil {
			l.out = os.Stdout
		}
	default:
		f, err := openLogFile(o.Path)
		if err != nil {
			return nil, err
		}
		l.path, l.file, l.out = o.Path, f, f
	}
	l.buf = make([]byte, 0, bufferSize+bufferSlack)
	l.spare = make([]byte, 0, bufferSize+bufferSlack)
	l.clock.init(l.json, time.Local)
	l.stop = make(chan struct{})
	l.flusherDone = make(chan struct{})
	go l.flusher()
	return l, nil
}

func openLogFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open access log %q: %w; create its directory and make it writable, "+
			"or set the access log to %q or %q", path, err, PathStdout, PathOff)
	}
	return f, nil
}

// Log formats e and queues the line. It does not keep e or anything e
// points to, and it does not allocate. After Close it discards the entry.
func (l *Logger) Log(e *Entry) {
	if l == nil || l.off {
		return
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	if l.json {
		l.buf = l.appendJSON(l.buf, e)
	} else {
		l.buf = l.appendCombined(l.buf, e)
	}
	if len(l.buf) < bufferSize {
		l.mu.Unlock()
		return
	}
	_ = l.writeLocked(nil) // a failure is reported through Diagnostics
}

// Flush writes the buffered lines now.
func (l *Logger) Flush() error {
	if l == nil || l.off {
		return nil
	}
	l.mu.Lock()
	if len(l.buf) == 0 {
		l.mu.Unlock()
		return nil
	}
	return l.writeLocked(nil)
}

// Reopen flushes the buffer to the current file, then opens the path again
// and continues there: after logrotate renamed the file (SIGUSR1), new
// lines go to a fresh file at the path and none are lost. If the path
// cannot be opened the old file stays in use and the error says why. For
// standard output Reopen only flushes.
func (l *Logger) Reopen() error {
	if l == nil || l.off {
		return nil
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return errors.New("access log is closed")
	}
	return l.writeLocked(func() error {
		if l.file == nil {
			return nil
		}
		f, err := openLogFile(l.path)
		if err != nil {
			return fmt.Errorf("reopen failed, still writing to the previous file: %w", err)
		}
		old := l.file
		l.file, l.out = f, f
		if err := old.Close(); err != nil {
			return fmt.Errorf("close previous access log file %q: %w", l.path, err)
		}
		return nil
	})
}

// Close stops the flusher, writes the buffered lines and closes the file.
// Later Log calls are discarded. Close is idempotent.
func (l *Logger) Close() error {
	if l == nil || l.off {
		return nil
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	close(l.stop)
	<-l.flusherDone

	l.mu.Lock()
	return l.writeLocked(func() error {
		if l.file == nil {
			return nil
		}
		if err := l.file.Close(); err != nil {
			return fmt.Errorf("close access log %q: %w", l.path, err)
		}
		return nil
	})
}

// writeLocked is called with mu held and releases it. It hands the filled
// buffer to the writer side, writes it, then runs after (if any) while the
// destination is still exclusively held.
func (l *Logger) writeLocked(after func() error) error {
	l.wmu.Lock()
	l.buf, l.spare = l.spare[:0], l.buf
	l.mu.Unlock()
	defer l.wmu.Unlock()

	var err error
	if len(l.spare) > 0 {
		_, err = l.out.Write(l.spare)
		l.spare = l.spare[:0]
		l.noteWrite(err)
		if err != nil {
			err = fmt.Errorf("write access log %s: %w", l.name(), err)
		}
	}
	if after != nil {
		err = errors.Join(err, after())
	}
	return err
}

// noteWrite reports the first failure of a streak and the recovery, so a
// full disk produces two diagnostics rather than one per flush.
func (l *Logger) noteWrite(err error) {
	switch {
	case err != nil && !l.failing:
		l.failing = true
		l.diag.Error("access log write failed; lines are dropped until writes succeed again",
			"path", l.name(), "err", err)
	case err == nil && l.failing:
		l.failing = false
		l.diag.Info("access log writes succeed again", "path", l.name())
	}
}

func (l *Logger) name() string {
	if l.file == nil {
		return "stdout"
	}
	return l.path
}

func (l *Logger) flusher() {
	defer close(l.flusherDone)
	t := time.NewTicker(l.interval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			_ = l.Flush() // a failure is reported through Diagnostics
		}
	}
}
