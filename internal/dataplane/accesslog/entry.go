// Package accesslog writes one line per proxied request, in nginx's
// "combined" format or as JSON, to a file, stdout, or nowhere.
package accesslog

import "time"

// Entry is one request as the data plane saw it. Byte slices point into the
// connection's buffers and are valid only during the Log call: the logger
// formats the entry before it returns and keeps no reference to it.
type Entry struct {
	Start      time.Time // when the request head was read
	RemoteAddr string    // client IP, after trusted-proxy resolution
	Method     []byte
	URI        []byte
	Proto      string // "HTTP/1.1", "HTTP/1.0" or "HTTP/2.0"
	Host       []byte
	Referer    []byte
	UserAgent  []byte
	RequestID  []byte

	Status    int   // status sent to the client
	BytesSent int64 // response body bytes sent to the client

	Service        string // "" when no service matched
	Pool           string
	Target         string
	UpstreamStatus int // 0 when no upstream answered
	Duration       time.Duration
}
