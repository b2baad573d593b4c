package admin

import "context"

// Raw requests for the tests in package admin_test (which use a real
// control plane, and the control plane imports this package).

func (c *Client) GetJSON(ctx context.Context, method, path string, body, v any) error {
	return c.getJSON(ctx, method, path, body, v)
}

func (c *Client) Stream(ctx context.Context, path string, body any, onEvent func(Event)) (*DeployResult, error) {
	return c.stream(ctx, path, body, onEvent)
}
