// Package loadclient is a strict HTTP/1.1 load generator for the benchmark's
// switch run and idle-connection check.
//
// It is hand-rolled over net.Conn on purpose: net/http's Transport silently
// re-sends idempotent requests that fail on a reused keep-alive connection,
// which would hide exactly the failures a proxy reload causes. Here every
// request is sent once; a non-2xx status or any socket error (connect, write,
// read, timeout, a connection closed before the full response) counts as a
// failed request, and the connection is replaced for the next request.
package loadclient

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"
)

// Options configure a load run.
type Options struct {
	// Addr is the host:port to connect to (127.0.0.1 only in the benchmark).
	Addr string
	// Connections is the number of concurrent keep-alive connections.
	Connections int
	// Duration bounds the run; cancelling the context ends it earlier.
	Duration time.Duration
	// Timeout bounds each request (write and full response); default 5s.
	Timeout time.Duration
	// Path is the request target; default "/".
	Path string
	// Host is the Host header; default "bench".
	Host string
	// BackendHeader names the response header that identifies the backend;
	// default "X-Backend".
	BackendHeader string
	// ConnectPause is how long a connection slot waits after a failed connect
	// before trying again, so a refused port does not turn into a busy loop of
	// failures; default 10ms.
	ConnectPause time.Duration
	// TLS, when set, speaks HTTP/1.1 over TLS on every connection (the
	// handshake is part of the connect; set NextProtos to http/1.1).
	TLS *tls.Config
}

func (o *Options) defaults() error {
	if o.Addr == "" {
		return errors.New("loadclient: Options.Addr is empty; set it to the proxy's host:port")
	}
	if o.Connections <= 0 {
		return fmt.Errorf("loadclient: Options.Connections is %d; it must be at least 1", o.Connections)
	}
	if o.Duration <= 0 {
		return fmt.Errorf("loadclient: Options.Duration is %v; it must be positive", o.Duration)
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Path == "" {
		o.Path = "/"
	}
	if o.Host == "" {
		o.Host = "bench"
	}
	if o.BackendHeader == "" {
		o.BackendHeader = "X-Backend"
	}
	if o.ConnectPause <= 0 {
		o.ConnectPause = 10 * time.Millisecond
	}
	return nil
}

// Record is one request as the client saw it.
type Record struct {
	// Sent is when the request was written, as an offset from Result.Start.
	Sent time.Duration
	// Done is when the response was read (or the request failed), as an
	// offset from Result.Start.
	Done time.Duration
	// Backend is the value of the backend header ("" when absent or failed).
	Backend string
	// Status is the HTTP status code, 0 when no status line arrived.
	Status int
	// Err is the socket or protocol error kind ("" on success); see ErrKind.
	Err ErrKind
}

// Failed reports whether the request counts as failed: a socket error or a
// status outside 2xx.
func (r Record) Failed() bool { return r.Err != "" || r.Status < 200 || r.Status > 299 }

// ErrKind classifies socket and protocol errors.
type ErrKind string

// Error kinds.
const (
	ErrConnect  ErrKind = "connect"
	ErrWrite    ErrKind = "write"
	ErrRead     ErrKind = "read"     // reset or other read failure
	ErrEOF      ErrKind = "eof"      // connection closed before a full response
	ErrTimeout  ErrKind = "timeout"  // Options.Timeout passed
	ErrProtocol ErrKind = "protocol" // malformed response
)

// Result is the outcome of a load run.
type Result struct {
	// Start is the moment offsets in Records are measured from.
	Start time.Time
	// Elapsed is the run's wall time.
	Elapsed time.Duration
	// Records holds every request, ordered by Sent.
	Records []Record
}

// Summary counts a result's requests.
type Summary struct {
	Requests     int
	Failed       int
	Non2xx       int
	SocketErrors int
	// ErrorKinds counts socket errors by kind.
	ErrorKinds map[ErrKind]int
	// ByBackend counts successful responses per backend header value.
	ByBackend map[string]int
}

// Summarize counts the requests of r.
func (r *Result) Summarize() Summary {
	s := Summary{ErrorKinds: map[ErrKind]int{}, ByBackend: map[string]int{}}
	for _, rec := range r.Records {
		s.Requests++
		switch {
		case rec.Err != "":
			s.Failed++
			s.SocketErrors++
			s.ErrorKinds[rec.Err]++
		case rec.Status < 200 || rec.Status > 299:
			s.Failed++
			s.Non2xx++
		default:
			s.ByBackend[rec.Backend]++
		}
	}
	return s
}

// Run sends requests over Options.Connections keep-alive connections until
// Options.Duration has passed or ctx is cancelled, and returns every request's
// record. It returns an error only for invalid options.
func Run(ctx context.Context, opts Options) (*Result, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	start := time.Now()
	deadline := start.Add(opts.Duration)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	request := []byte("GET " + opts.Path + " HTTP/1.1\r\nHost: " + opts.Host + "\r\nUser-Agent: cutover-bench-loadclient\r\n\r\n")
	perConn := make([][]Record, opts.Connections)
	var wg sync.WaitGroup
	for i := range opts.Connections {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := worker{opts: &opts, start: start, request: request, interned: map[string]string{}}
			perConn[i] = w.loop(ctx)
		}()
	}
	wg.Wait()

	res := &Result{Start: start, Elapsed: time.Since(start)}
	n := 0
	for _, recs := range perConn {
		n += len(recs)
	}
	res.Records = make([]Record, 0, n)
	for _, recs := range perConn {
		res.Records = append(res.Records, recs...)
	}
	sort.Slice(res.Records, func(i, j int) bool { return res.Records[i].Sent < res.Records[j].Sent })
	return res, nil
}

// worker drives one connection slot.
type worker struct {
	opts     *Options
	start    time.Time
	request  []byte
	conn     net.Conn
	br       *bufio.Reader
	interned map[string]string
}

func (w *worker) loop(ctx context.Context) []Record {
	recs := make([]Record, 0, 1024)
	defer w.closeConn()
	dialer := net.Dialer{Timeout: w.opts.Timeout}
	for ctx.Err() == nil {
		if w.conn == nil {
			sent := time.Since(w.start)
			c, err := w.dial(ctx, &dialer)
			if err != nil {
				if ctx.Err() != nil {
					break // the run ended while dialling: not the proxy's failure
				}
				recs = append(recs, Record{Sent: sent, Done: time.Since(w.start), Err: ErrConnect})
				select {
				case <-ctx.Done():
				case <-time.After(w.opts.ConnectPause):
				}
				continue
			}
			w.conn = c
			if w.br == nil {
				w.br = bufio.NewReaderSize(c, 16<<10)
			} else {
				w.br.Reset(c)
			}
		}
		rec, keep := w.roundTrip()
		recs = append(recs, rec)
		if !keep {
			w.closeConn()
		}
	}
	return recs
}

func (w *worker) dial(ctx context.Context, d *net.Dialer) (net.Conn, error) {
	if w.opts.TLS == nil {
		return d.DialContext(ctx, "tcp", w.opts.Addr)
	}
	td := tls.Dialer{NetDialer: d, Config: w.opts.TLS}
	return td.DialContext(ctx, "tcp", w.opts.Addr)
}

func (w *worker) closeConn() {
	if w.conn != nil {
		_ = w.conn.Close()
		w.conn = nil
	}
}

// roundTrip sends one request on the open connection and reads the response.
// keep reports whether the connection may carry another request.
func (w *worker) roundTrip() (rec Record, keep bool) {
	now := time.Now()
	rec.Sent = now.Sub(w.start)
	defer func() { rec.Done = time.Since(w.start) }()
	_ = w.conn.SetDeadline(now.Add(w.opts.Timeout))
	if _, err := w.conn.Write(w.request); err != nil {
		rec.Err = classify(err, ErrWrite)
		return rec, false
	}
	resp, err := ReadResponse(w.br, []byte(w.opts.BackendHeader), w.interned)
	rec.Status = resp.Status
	rec.Backend = resp.Backend
	if err != nil {
		rec.Err = classify(err, ErrRead)
		return rec, false
	}
	return rec, !resp.Close
}

func classify(err error, fallback ErrKind) ErrKind {
	var ne net.Error
	switch {
	case errors.Is(err, errProtocol):
		return ErrProtocol
	case errors.As(err, &ne) && ne.Timeout():
		return ErrTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return ErrEOF
	}
	return fallback
}

var errProtocol = errors.New("malformed HTTP response")

// Response is what ReadResponse learned about one response.
type Response struct {
	Status int
	// Backend is the value of the requested backend header.
	Backend string
	// Close is set when the connection cannot carry another request
	// (Connection: close, or a body delimited by the connection's end).
	Close bool
	// BodyLen is the number of body bytes read.
	BodyLen int64
}

// ReadResponse reads one HTTP/1.1 response to a GET (head and body) from br.
// backendHeader names the header whose value goes to Response.Backend;
// interned de-duplicates those values across calls so a long run does not
// allocate a string per request (pass nil to skip).
func ReadResponse(br *bufio.Reader, backendHeader []byte, interned map[string]string) (Response, error) {
	var resp Response
	line, err := readLine(br)
	if err != nil {
		return resp, err
	}
	// "HTTP/1.1 200 OK": version, space, three digits.
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return resp, fmt.Errorf("status line %q: %w", line, errProtocol)
	}
	code, err := strconv.Atoi(string(line[9:12]))
	if err != nil || code < 100 || code > 999 {
		return resp, fmt.Errorf("status code in %q: %w", line, errProtocol)
	}
	resp.Status = code
	http10 := line[7] == '0'
	resp.Close = http10

	contentLength := int64(-1)
	chunked := false
	for {
		line, err := readLine(br)
		if err != nil {
			return resp, err
		}
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return resp, fmt.Errorf("header line %q: %w", line, errProtocol)
		}
		name, value := line[:colon], bytes.TrimSpace(line[colon+1:])
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 {
				return resp, fmt.Errorf("content-length %q: %w", value, errProtocol)
			}
			contentLength = n
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
			if !chunked {
				return resp, fmt.Errorf("transfer-encoding %q: %w", value, errProtocol)
			}
		case bytes.EqualFold(name, []byte("Connection")):
			if containsToken(value, "close") {
				resp.Close = true
			} else if http10 && containsToken(value, "keep-alive") {
				resp.Close = false
			}
		case len(backendHeader) > 0 && bytes.EqualFold(name, backendHeader):
			if interned == nil {
				resp.Backend = string(value)
			} else if s, ok := interned[string(value)]; ok {
				resp.Backend = s
			} else {
				s := string(value)
				interned[s] = s
				resp.Backend = s
			}
		}
	}

	switch {
	case code == 204 || code == 304 || (code >= 100 && code < 200):
		return resp, nil
	case chunked:
		n, err := readChunked(br)
		resp.BodyLen = n
		return resp, err
	case contentLength >= 0:
		n, err := io.CopyN(io.Discard, br, contentLength)
		resp.BodyLen = n
		if err != nil && errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return resp, err
	default:
		// Body delimited by the end of the connection.
		resp.Close = true
		n, err := io.Copy(io.Discard, br)
		resp.BodyLen = n
		return resp, err
	}
}

// readLine returns one line without its CRLF (a bare LF is accepted). The
// slice is valid until the next read from br.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("line longer than %d bytes: %w", br.Size(), errProtocol)
		}
		if errors.Is(err, io.EOF) && len(line) > 0 {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

func readChunked(br *bufio.Reader) (int64, error) {
	var total int64
	for {
		line, err := readLine(br)
		if err != nil {
			return total, err
		}
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		size, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
		if err != nil || size < 0 {
			return total, fmt.Errorf("chunk size %q: %w", line, errProtocol)
		}
		if size == 0 {
			// Trailers end with an empty line.
			for {
				line, err := readLine(br)
				if err != nil {
					return total, err
				}
				if len(line) == 0 {
					return total, nil
				}
			}
		}
		n, err := io.CopyN(io.Discard, br, size)
		total += n
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return total, err
		}
		if line, err := readLine(br); err != nil {
			return total, err
		} else if len(line) != 0 {
			return total, fmt.Errorf("chunk not followed by CRLF: %w", errProtocol)
		}
	}
}

func containsToken(value []byte, token string) bool {
	for _, part := range bytes.Split(value, []byte(",")) {
		if bytes.EqualFold(bytes.TrimSpace(part), []byte(token)) {
			return true
		}
	}
	return false
}
