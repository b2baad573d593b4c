package cli

import (
	"errors"
	"fmt"

	"github.com/cutover/cutover/internal/admin"

	"github.com/spf13/cobra"
)

// newReloadCmd builds `cutover reload`.
func newReloadCmd(s Streams) *cobra.Command {
	var at adminTarget
	cmd := &cobra.Command{
		Use:   "reload",
		Short: "Make the running cutover re-read its configuration file without dropping a connection",
		Long: "reload asks the running cutover to read its configuration file again (as SIGHUP does) and\n" +
			"apply it without dropping a connection. A file with problems is refused with every problem\n" +
			"listed (exit 1), and the running configuration keeps serving.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := at.client()
			if err != nil {
				return err
			}
			defer c.Close()
			r, err := c.Reload(cmd.Context())
			if err != nil {
				var ue *admin.UnreachableError
				if errors.As(err, &ue) {
					return &exitError{code: 2, err: err}
				}
				// A refused file is this command's failure, as for validate.
				return &exitError{code: 1, err: err}
			}
			fmt.Fprintln(s.Out, r.Message)
			return nil
		},
	}
	at.register(cmd)
	return cmd
}
