package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/serve"
)

// newUpgradeCmd builds `cutover upgrade`.
func newUpgradeCmd(s Streams) *cobra.Command {
	var at adminTarget
	var req admin.UpgradeRequest
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "upgrade [--binary PATH] [--timeout 30s]",
		Short: "Replace the running cutover with a new binary without refusing or failing a request",
		Long: `upgrade asks the running cutover serve to start a new binary (--binary, default the
running executable's path as it is on disk now) and hand it every listening socket (HTTP,
HTTPS, admin socket and TCP): no connection is refused at any moment. The new process reads
the configuration file and the state, starts its health checks, and takes over only when
each service's active pool is the same as now and has passed a health check. The old
process then stops accepting, answers requests already sent on its connections (with
Connection: close), keeps WebSockets open until the drain timeout, and exits.

If the new process fails to start, rejects its configuration, or is not ready within
--timeout, it is stopped, the old one keeps serving as if nothing happened, and this
command exits 1 with the new process's output. While an upgrade runs, deploys, rollbacks
and reloads are refused (retry them once it ends); a second upgrade is refused too.
SIGUSR2 to cutover serve does the same as this command without --binary.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runUpgrade(cmd, s, at, req, timeout)
		},
	}
	at.register(cmd)
	cmd.Flags().StringVar(&req.Binary, "binary", "", "the new cutover executable (default: the running one's path, as on disk now)")
	cmd.Flags().DurationVar(&timeout, "timeout", serve.DefaultUpgradeTimeout, "how long the new process may take to be ready")
	return cmd
}

// newRestartCmd builds `cutover restart`.
func newRestartCmd(s Streams) *cobra.Command {
	var at adminTarget
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "restart [--timeout 30s]",
		Short: "Restart the running cutover in place (applies every configuration change, listen addresses included)",
		Long: `restart is an upgrade to the very binary that runs (even if its file was replaced since):
a new process reads the configuration file and takes over the listening sockets without
refusing or failing a request. Unlike reload, it applies everything: a listen or admin
address that changed is opened fresh, one that was removed is closed. See cutover upgrade.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runUpgrade(cmd, s, at, admin.UpgradeRequest{SameBinary: true}, timeout)
		},
	}
	at.register(cmd)
	cmd.Flags().DurationVar(&timeout, "timeout", serve.DefaultUpgradeTimeout, "how long the new process may take to be ready")
	return cmd
}

func runUpgrade(cmd *cobra.Command, s Streams, at adminTarget, req admin.UpgradeRequest, timeout time.Duration) error {
	c, err := at.client()
	if err != nil {
		return err
	}
	defer c.Close()
	req.Timeout = timeout.String()
	r, err := c.Upgrade(cmd.Context(), req)
	if err != nil {
		return apiError(err)
	}
	fmt.Fprintf(s.Out, "upgraded: pid %d serves (%s), ready in %.0f ms, admin switched in %.1f ms; pid %d drains for up to %s and exits\n",
		r.NewPID, r.Binary, r.ReadyMS, r.SwitchMS, r.OldPID, r.Drain)
	return nil
}
