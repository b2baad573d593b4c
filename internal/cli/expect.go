package cli

import (
	"context"

	"github.com/cutover/cutover/internal/admin"
)

// liveNow is the pool the caller sees active on a service, sent with a
// deploy or rollback as the pool it expects to be live: the command is
// refused if another change switched the service in between, so a burst
// of retries flips it once. "" (no expectation) when the status does not
// name one service (an unknown or ambiguous one): the command itself then
// gets, and records, the problem.
func liveNow(ctx context.Context, c *admin.Client, service string) string {
	st, err := c.Status(ctx, service)
	if err != nil || len(st.Services) != 1 {
		return ""
	}
	return st.Services[0].Active
}
