package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"
)

// dialTimeout bounds connecting to the admin API. There is no overall
// request timeout: a deploy stream lasts as long as the deploy.
const dialTimeout = 5 * time.Second

// Client talks to a running cutover's admin API.
type Client struct {
	base  string
	token string
	hc    *http.Client
	// where names the endpoint in messages: the socket path or TCP address.
	where string
	unix  bool
}

// NewUnixClient returns a client of the admin API on a Unix socket.
func NewUnixClient(socket string) *Client {
	d := &net.Dialer{Timeout: dialTimeout}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns:    1,
		IdleConnTimeout: 30 * time.Second,
	}
	return &Client{base: "http://cutover", hc: &http.Client{Transport: tr}, where: socket, unix: true}
}

// NewTCPClient returns a client of the admin API on a TCP address
// (host:port), sending token as the bearer token.
func NewTCPClient(addr, token string) *Client {
	tr := &http.Transport{
		Proxy:           nil,
		DialContext:     (&net.Dialer{Timeout: dialTimeout}).DialContext,
		MaxIdleConns:    1,
		IdleConnTimeout: 30 * time.Second,
	}
	return &Client{base: "http://" + addr, token: token, hc: &http.Client{Transport: tr}, where: addr}
}

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// UnreachableError is returned when nothing answers at the admin endpoint.
type UnreachableError struct {
	// Where is the socket path or TCP address.
	Where string
	Unix  bool
	Err   error
}

func (e *UnreachableError) Error() string {
	if errors.Is(e.Err, syscall.EACCES) || errors.Is(e.Err, os.ErrPermission) {
		return fmt.Sprintf("cannot connect to cutover at %s (connect: %v): the admin socket is mode 0600 — run this as the user that runs `cutover serve` (or root)", e.Where, cause(e.Err))
	}
	if e.Unix {
		return fmt.Sprintf("no cutover is running at %s (connect: %v): start it with `cutover serve -c FILE` or point --socket at the right path", e.Where, cause(e.Err))
	}
	return fmt.Sprintf("no cutover admin API answers at %s (connect: %v): check admin.tcp of the running cutover", e.Where, cause(e.Err))
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// cause is the innermost useful part of a dial error, e.g. "no such file
// or directory" rather than "dial unix /x: connect: no such file or
// directory".
func cause(err error) error {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}

func (c *Client) do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Op == "dial" {
			return nil, &UnreachableError{Where: c.where, Unix: c.unix, Err: oe}
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("admin API at %s: %w", c.where, err)
	}
	return resp, nil
}

// getJSON sends a request and decodes a JSON answer into v, or the error
// it carries.
func (c *Client) getJSON(ctx context.Context, method, path string, body, v any) error {
	resp, err := c.do(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("admin API at %s: read the answer: %w", c.where, err)
	}
	if resp.StatusCode/100 != 2 {
		return c.errorFrom(resp, data)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("admin API at %s: answer is not the expected JSON (%v) — is this a cutover admin endpoint?", c.where, err)
	}
	return nil
}

// errorFrom turns a non-2xx answer into an *Error.
func (c *Client) errorFrom(resp *http.Response, data []byte) error {
	var er ErrorResponse
	if json.Unmarshal(data, &er) == nil && er.Error != nil && er.Error.Message != "" {
		return er.Error
	}
	var line StreamLine
	if json.Unmarshal(bytes.TrimSpace(data), &line) == nil && line.Error != nil {
		return line.Error
	}
	msg := strings.TrimSpace(string(data))
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	return &Error{Kind: KindInternal, Message: fmt.Sprintf("admin API at %s answered %s: %s", c.where, resp.Status, msg)}
}

// Health asks whether the admin API answers.
func (c *Client) Health(ctx context.Context) (*HealthResponse, error) {
	var h HealthResponse
	if err := c.getJSON(ctx, http.MethodGet, "/v1/health", nil, &h); err != nil {
		return nil, err
	}
	return &h, nil
}

// Healthz asks GET /healthz whether cutover serves: nil when it answers
// 200, else an error saying why (its answer, or that nothing answers).
func (c *Client) Healthz(ctx context.Context) error {
	resp, err := c.do(ctx, http.MethodGet, "/healthz", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return healthzAnswer(c.where, resp)
}

// CheckHealthz asks GET url (a cutover /healthz on a TCP listener, e.g.
// http://127.0.0.1:9901/healthz) whether cutover serves, like Healthz.
func CheckHealthz(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("health URL %q: %w — give e.g. http://127.0.0.1:9901/healthz", url, err)
	}
	hc := &http.Client{Transport: &http.Transport{Proxy: nil, DialContext: (&net.Dialer{Timeout: dialTimeout}).DialContext}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("no cutover answers at %s: %w", url, cause(err))
	}
	defer resp.Body.Close()
	return healthzAnswer(url, resp)
}

func healthzAnswer(where string, resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var h HealthzResponse
	if json.Unmarshal(data, &h) == nil && h.Reason != "" {
		return fmt.Errorf("cutover at %s is not serving (%s): %s", where, resp.Status, h.Reason)
	}
	return fmt.Errorf("cutover at %s answered %s to GET /healthz: %s", where, resp.Status, strings.TrimSpace(string(data)))
}

// Status returns every service, or the named one.
func (c *Client) Status(ctx context.Context, service string) (*StatusResponse, error) {
	path := "/v1/status"
	if service != "" {
		path += "?service=" + url.QueryEscape(service)
	}
	var st StatusResponse
	if err := c.getJSON(ctx, http.MethodGet, path, nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// History returns the recorded operations of service ("" for every
// service), newest first.
func (c *Client) History(ctx context.Context, service string) (*HistoryResponse, error) {
	path := "/v1/history"
	if service != "" {
		path += "?service=" + url.QueryEscape(service)
	}
	var h HistoryResponse
	if err := c.getJSON(ctx, http.MethodGet, path, nil, &h); err != nil {
		return nil, err
	}
	return &h, nil
}

// Reload asks the running cutover to re-read its configuration file.
func (c *Client) Reload(ctx context.Context) (*ReloadResponse, error) {
	var r ReloadResponse
	if err := c.getJSON(ctx, http.MethodPost, "/v1/reload", nil, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Deploy runs a deploy, calling onEvent (may be nil) for each progress
// event as it arrives. A refused or failed deploy is an *Error.
func (c *Client) Deploy(ctx context.Context, req DeployRequest, onEvent func(Event)) (*DeployResult, error) {
	return c.stream(ctx, "/v1/deploy", req, onEvent)
}

// Rollback runs a rollback, like Deploy.
func (c *Client) Rollback(ctx context.Context, req RollbackRequest, onEvent func(Event)) (*DeployResult, error) {
	return c.stream(ctx, "/v1/rollback", req, onEvent)
}

// Promote ends a service's canary with the full switch, or makes its
// preview pool stable.
func (c *Client) Promote(ctx context.Context, req TrialRequest, onEvent func(Event)) (*DeployResult, error) {
	return c.stream(ctx, "/v1/promote", req, onEvent)
}

// Abort sends every client of a service back to its stable pool.
func (c *Client) Abort(ctx context.Context, req TrialRequest, onEvent func(Event)) (*DeployResult, error) {
	return c.stream(ctx, "/v1/abort", req, onEvent)
}

func (c *Client) stream(ctx context.Context, path string, body any, onEvent func(Event)) (*DeployResult, error) {
	resp, err := c.do(ctx, http.MethodPost, path, body)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/x-ndjson") {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if resp.StatusCode/100 == 2 {
			return nil, fmt.Errorf("admin API at %s: %s did not answer with a stream — is this a cutover admin endpoint?", c.where, path)
		}
		return nil, c.errorFrom(resp, data)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var l StreamLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return nil, fmt.Errorf("admin API at %s: bad stream line %q: %w", c.where, sc.Text(), err)
		}
		switch l.Type {
		case LineEvent:
			if l.Event != nil && onEvent != nil {
				onEvent(*l.Event)
			}
		case LineResult:
			if l.Result == nil {
				return nil, fmt.Errorf("admin API at %s: result line without a result", c.where)
			}
			return l.Result, nil
		case LineError:
			if l.Error == nil {
				return nil, fmt.Errorf("admin API at %s: error line without an error", c.where)
			}
			return nil, l.Error
		}
	}
	err = sc.Err()
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, fmt.Errorf("the connection to cutover at %s ended before the operation finished (%v) — run `cutover status` to see which pool is active", c.where, err)
}
