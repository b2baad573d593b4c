// Package cli is cutover's command line. Every command except serve, demo
// and validate is a client of the admin API of a running `cutover serve`.
package cli

import (
	"io"

	"github.com/cutover/cutover/internal/admin"
	"github.com/spf13/cobra"
)

// Streams are where commands read and write, so tests can capture them.
type Streams struct {
	In       io.Reader
	Out, Err io.Writer
}

// NewRoot builds the cutover command tree.
func NewRoot(s Streams) *cobra.Command {
	root := &cobra.Command{
		Use:           "cutover",
		Short:         "Zero-downtime blue-green reverse proxy and deploy tool",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(s.In)
	root.SetOut(s.Out)
	root.SetErr(s.Err)
	root.AddCommand(
		newServeCmd(s),
		newDemoCmd(s),
		newValidateCmd(s),
		newStatusCmd(s),
		newDeployCmd(s),
		newRollbackCmd(s),
		newTrialCmd(s, admin.OpPromote),
		newTrialCmd(s, admin.OpAbort),
		newReloadCmd(s),
		newUpgradeCmd(s),
		newRestartCmd(s),
		newReleaseCmd(s),
		newHistoryCmd(s),
		newHealthCmd(s),
	)
	return root
}
