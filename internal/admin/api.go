// Package admin is cutover's admin API: HTTP+JSON over a Unix socket
// (mode 0600), and optionally over TCP with a bearer token. The CLI is its
// client (see Client); scripts may call it too, e.g.
//
//	curl --unix-socket /var/lib/cutover/admin.sock http://cutover/v1/status
//
// Routes (all under /v1; bodies are JSON):
//
//	GET  /v1/health              → HealthResponse (the admin API itself answers)
//	GET  /v1/status[?service=S]  → StatusResponse
//	POST /v1/deploy   DeployRequest   → NDJSON stream of StreamLine
//	POST /v1/rollback RollbackRequest → NDJSON stream of StreamLine
//	POST /v1/reload              → ReloadResponse (re-reads the configuration file)
//	GET  /v1/history[?service=S] → HistoryResponse (operations, newest first)
//	POST /v1/upgrade  UpgradeRequest  → UpgradeResponse (a new process takes over the listeners)
//	GET  /healthz                → HealthzResponse, 200 while cutover serves, else 503 (no token)
//
// The TCP listener also serves the dashboard at /ui/ (see ui.go): a page
// that logs in with POST /ui/login {"token": "..."} and then reads this API
// with an HttpOnly, SameSite=Strict session cookie.
//
// Deploy and rollback answer with one JSON object per line
// (application/x-ndjson), flushed as the operation goes: zero or more
// {"type":"event",...} lines, then exactly one {"type":"result",...} or
// {"type":"error",...} line. When the request is refused before anything
// happened (unknown service, another deploy in progress, ...) the status
// code says so (400, 404, 409) and the body is that single error line;
// once events have been sent the status is 200 and the last line tells
// the outcome.
//
// Other errors are an ErrorResponse with a 4xx/5xx status. The request,
// result and status types (types.go) are the wire contract: the control
// plane answers with them and the CLI reads them. Their JSON field names
// are stable: fields may be added, none renamed or removed.
package admin

import (
	"net/http"
	"time"

	"github.com/cutover/cutover/internal/controlplane/history"
)

// APIVersion is the path prefix of this version of the API.
const APIVersion = "/v1"

// HistoryEntry is one operation in a HistoryResponse.
type HistoryEntry = history.Entry

// KindUnauthorized is the error kind of a TCP request without the right
// bearer token.
const KindUnauthorized ErrorKind = "unauthorized"

// HealthResponse is the body of GET /v1/health.
type HealthResponse struct {
	Status string `json:"status"` // "ok"
	PID    int    `json:"pid"`    // process id of the cutover serving the API
}

// StatusResponse is the body of GET /v1/status:
//
//	{"services": [{
//	  "name": "web", "hosts": ["example.com"], "active": "green", "previous": "blue",
//	  "balance": "round_robin", "operation": null,
//	  "pools": [{
//	    "name": "green", "active": true, "source": "config", "in_flight": 3, "served": 1042,
//	    "targets": [{"addr": "127.0.0.1:9011", "label": "127.0.0.1:9011", "state": "up",
//	                 "since": "...", "consecutive_passes": 12, "last_error": "", "last_probe": "...",
//	                 "in_flight": 2, "served": 530, "failures": 0}]
//	  }]
//	}]}
type StatusResponse struct {
	Services []ServiceStatus `json:"services"`
	// StateError says why the state cannot be written; while it is set
	// deploys, rollbacks and reloads are refused (absent when all is well).
	StateError string `json:"state_error,omitempty"`
	// Certificates are the HTTPS certificates served, one per file pair
	// and per ACME host (absent without listen.https):
	//   {"host": "example.com", "source": "acme", "state": "valid",
	//    "not_after": "...", "days_left": 59.5, "last_error": "", "warning": ""}
	Certificates []CertificateStatus `json:"certificates,omitempty"`
	// Store is the shared desired state (absent with the state file):
	//   {"kind": "etcd", "where": "etcd http://10.0.0.5:2379 (prefix /cutover/)",
	//    "instance": "edge-1", "stale": false, "applied": 42, "latest": 42,
	//    "instances": [{"name": "edge-1", "applied": 42, "behind": 0, "self": true}]}
	Store *StoreStatus `json:"store,omitempty"`
}

// StoreEtcd is the kind of an etcd store.
const StoreEtcd = "etcd"

// StoreStatus is the shared store as the answering instance sees it.
type StoreStatus struct {
	Kind     string `json:"kind"`
	Where    string `json:"where"`
	Instance string `json:"instance"`
	// Stale: the instance cannot reach the store; it serves the last
	// state it applied and refuses changes. Problem says why.
	Stale   bool   `json:"stale"`
	Problem string `json:"problem,omitempty"`
	// Applied is the revision this instance applied; Latest the newest
	// revision of any service in the store.
	Applied   int64            `json:"applied"`
	Latest    int64            `json:"latest"`
	Instances []InstanceStatus `json:"instances"`
}

// InstanceStatus is one live cutover sharing the store.
type InstanceStatus struct {
	Name    string `json:"name"`
	Applied int64  `json:"applied"`
	// Behind counts the services whose stored state is newer than what
	// the instance applied.
	Behind int  `json:"behind"`
	Self   bool `json:"self,omitempty"`
	// Stale: the instance cannot reach the store (shown for the
	// answering instance only: others that cannot are not live).
	Stale bool `json:"stale,omitempty"`
}

// HistoryResponse is the body of GET /v1/history: the last operations
// (at most history.Limit), newest first:
//
//	{"entries": [{
//	  "id": 12, "kind": "deploy", "service": "web", "from": "blue", "to": "green",
//	  "started": "...", "ended": "...", "result": "succeeded", "reason": "service \"web\" switched ...",
//	  "time_to_healthy_ms": 1503.2, "in_flight_at_switch": 4, "drained": 4, "closed_at_timeout": 0,
//	  "drain_ms": 38.1, "targets": [{"addr": "127.0.0.1:9011", "ready": true}]
//	}]}
//
// kind is deploy, rollback, release or reload; result is running,
// succeeded, failed, refused or timed_out.
type HistoryResponse struct {
	Entries []HistoryEntry `json:"entries"`
}

// CertificateStatus is one served certificate in a StatusResponse. State
// is "valid", "pending" (no certificate from the CA yet, being obtained),
// "failing" (none yet and the last attempt failed), "renewal_failing" or
// "expired"; Warning says what needs attention.
type CertificateStatus struct {
	Host      string     `json:"host"`
	Source    string     `json:"source"` // "acme", "file" or "self-signed"
	State     string     `json:"state"`
	NotAfter  *time.Time `json:"not_after,omitempty"`
	DaysLeft  float64    `json:"days_left"`
	LastError string     `json:"last_error,omitempty"`
	Warning   string     `json:"warning,omitempty"`
}

// ReloadResponse is the body of a successful POST /v1/reload.
type ReloadResponse struct {
	Status  string `json:"status"` // "ok"
	Message string `json:"message"`
}

// ErrorResponse is the body of a failed non-streaming request.
type ErrorResponse struct {
	Error *Error `json:"error"`
}

// Stream line types.
const (
	LineEvent  = "event"
	LineResult = "result"
	LineError  = "error"
)

// StreamLine is one line of a deploy or rollback stream; Type says which
// of the other fields is set.
type StreamLine struct {
	Type   string        `json:"type"`
	Event  *Event        `json:"event,omitempty"`
	Result *DeployResult `json:"result,omitempty"`
	Error  *Error        `json:"error,omitempty"`
}

// statusFor maps an error kind to an HTTP status code.
func statusFor(kind ErrorKind) int {
	switch kind {
	case KindInvalid:
		return http.StatusBadRequest
	case KindNotFound:
		return http.StatusNotFound
	case KindBusy, KindRefused:
		return http.StatusConflict
	case KindUnhealthy:
		return http.StatusUnprocessableEntity
	case KindCanceled, KindState:
		return http.StatusServiceUnavailable
	case KindUnauthorized:
		return http.StatusUnauthorized
	}
	return http.StatusInternalServerError
}
