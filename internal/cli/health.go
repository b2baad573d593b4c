package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/cutover/cutover/internal/admin"
	"github.com/spf13/cobra"
)

// newHealthCmd builds `cutover health`: the check command of a Docker
// HEALTHCHECK, since cutover's image has no shell or curl.
func newHealthCmd(s Streams) *cobra.Command {
	var (
		at      adminTarget
		url     string
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "health [--url URL | --socket PATH | -c FILE]",
		Short: "Exit 0 when the running cutover serves, 1 when it does not (for a Docker HEALTHCHECK)",
		Long: "health asks the running cutover's GET /healthz, on its admin socket (found as for the other\n" +
			"commands) or at --url (the admin TCP or metrics listener, e.g. http://127.0.0.1:9901/healthz),\n" +
			"prints \"ok\" and exits 0 when it serves, or prints why not and exits 1. In the image:\n" +
			"  HEALTHCHECK CMD [\"/cutover\", \"health\", \"-c\", \"/etc/cutover/cutover.yaml\"]",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			var err error
			if url != "" {
				err = admin.CheckHealthz(ctx, url)
			} else {
				c, cerr := at.client()
				if cerr != nil {
					return cerr
				}
				defer c.Close()
				err = c.Healthz(ctx)
			}
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			fmt.Fprintln(s.Out, "ok")
			return nil
		},
	}
	cmd.Flags().StringVar(&url, "url", "", "ask this /healthz URL instead of the admin socket")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "give up (exit 1) after this long")
	at.register(cmd)
	return cmd
}
