package proxy

import (
	"bufio"
	"errors"
	"strconv"
	"time"

	"github.com/cutover/cutover/internal/dataplane/forward"
	"github.com/cutover/cutover/internal/dataplane/upstream"
	"github.com/cutover/cutover/internal/dataplane/wire"
)

// reasonHeadTimeout is the 408 body's reason on both engines.
const reasonHeadTimeout = "the request head did not arrive in time"

// headErrorReason says for the client why its request head was refused.
// Only the parser's own reasons are shown: the text of a socket error
// names the proxy's addresses and means nothing to the client.
func headErrorReason(err error) string {
	var we *wire.Error
	switch {
	case isTimeout(err):
		return reasonHeadTimeout
	case errors.As(err, &we):
		return we.Reason
	case errors.Is(err, wire.ErrHeadTooLarge), errors.Is(err, wire.ErrBareLF):
		return err.Error()
	}
	return "the request head could not be read"
}

// failureStatus maps a failed exchange to the client's status and a short
// body saying which failure it was. Both engines and HTTP/2 use it.
func failureStatus(err error) (int, string) {
	var de *upstream.DialError
	var we *wire.Error
	switch {
	case errors.Is(err, errNoTarget):
		return 503, "503 Service Unavailable: the active pool has no targets\n"
	case isTimeout(err), errors.Is(err, errTryTimeout):
		return 504, "504 Gateway Timeout: the target did not answer in time\n"
	case errors.As(err, &de), errors.Is(err, errAllTried):
		return 502, "502 Bad Gateway: no target could be reached\n"
	case errors.As(err, &we), errors.Is(err, wire.ErrHeadTooLarge), errors.Is(err, wire.ErrBareLF):
		return 502, "502 Bad Gateway: the target sent a malformed response\n"
	}
	return 502, "502 Bad Gateway: the connection to the target failed before a complete response\n"
}

// writeLocalError writes the answer to a request that could not be read,
// closing the connection, and sets x up to log it. Both engines use it.
func writeLocalError(w *bufio.Writer, x *exchange, req *wire.Request, client *forward.Client, start time.Time, status int, reason string) {
	body := localErrorBody(status, reason)
	writeLocal(w, req, status, body, nil, false)
	// The exchange of a request that was never parsed holds nothing else.
	x.reset()
	x.req, x.client, x.start, x.proto = req, client, start, protoName(req.Minor)
	x.answeredLocally(status, len(body))
}

// localErrorBody is the body of the proxy's answer to a request it refuses.
func localErrorBody(status int, reason string) string {
	return strconv.Itoa(status) + " " + statusText(status) + ": " + reason + "\n"
}

// clientBodyStatus is the answer to a request whose body could not be
// read from the client: 408 when it stopped arriving for timeouts.read,
// as nginx answers, else 400. Both engines and HTTP/2 use it.
func clientBodyStatus(err error) (int, string) {
	if isTimeout(err) {
		return 408, localErrorBody(408, "the request body did not arrive in time")
	}
	return 400, "could not read the request body\n"
}
