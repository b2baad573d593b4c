package cli

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/cutover/cutover/internal/demo"
)

func newDemoCmd(s Streams) *cobra.Command {
	var o demo.Options
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a built-in blue-green demonstration on 127.0.0.1 (no Docker, no files)",
		Long: `Start the demo app's blue and green pools (two replicas each) in-process,
serve them with cutover on --listen, and switch between them under load,
counting every request. Then keep serving (unless --once) so you can try
cutover status, deploy and rollback against it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Out = s.Out
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			_, err := demo.Run(ctx, o)
			return err
		},
	}
	cmd.Flags().StringVar(&o.Listen, "listen", "127.0.0.1:8080", "proxy address")
	cmd.Flags().IntVar(&o.Switches, "switches", 6, "deploy/rollback switches to make under load")
	cmd.Flags().IntVar(&o.Clients, "clients", 16, "concurrent keep-alive load clients")
	cmd.Flags().BoolVar(&o.Once, "once", false, "exit after the demonstration")
	return cmd
}
