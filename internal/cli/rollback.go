package cli

import (
	"time"

	"github.com/cutover/cutover/internal/admin"
	"github.com/spf13/cobra"
)

// newRollbackCmd builds `cutover rollback`.
func newRollbackCmd(s Streams) *cobra.Command {
	var (
		at  adminTarget
		et  etcdTarget
		req = admin.RollbackRequest{Timeout: admin.Duration(admin.DefaultTimeout)}
	)
	cmd := &cobra.Command{
		Use:   "rollback [-s SERVICE] [--timeout 60s]",
		Short: "Switch a service back to its previous pool, which is still warm",
		Long: "rollback switches a service back to the pool that was live before the last deploy (the\n" +
			"seed's deploy.sh rb). When that pool's health checks kept passing the switch is immediate;\n" +
			"otherwise it is checked afresh first, as by deploy. The pool left becomes the previous one,\n" +
			"so a second rollback returns to it. Refused when there is no previous pool, and when another\n" +
			"change switched the service since this command looked (so retries flip it once).",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if et.endpoints != "" {
				r, err := et.open(cmd, at)
				if err != nil {
					return err
				}
				defer r.Close()
				res, err := r.Rollback(cmd.Context(), req, printEvent(s.Out))
				return printOutcome(s.Out, res, err)
			}
			c, err := at.client()
			if err != nil {
				return err
			}
			defer c.Close()
			if req.Expect == "" {
				req.Expect = liveNow(cmd.Context(), c, req.Service)
			}
			res, err := c.Rollback(cmd.Context(), req, printEvent(s.Out))
			return printOutcome(s.Out, res, err)
		},
	}
	cmd.Flags().StringVarP(&req.Service, "service", "s", "", "service to roll back (may be omitted when there is one)")
	cmd.Flags().DurationVar((*time.Duration)(&req.Timeout), "timeout", admin.DefaultTimeout, "how long the previous pool may take to become healthy when it must be checked")
	cmd.Flags().StringVar(&req.Expect, "expect", "", "refuse unless this pool is active when the rollback switches (default: the pool status shows active now)")
	at.register(cmd)
	et.register(cmd)
	return cmd
}
