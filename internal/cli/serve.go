package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/pprof"

	"github.com/spf13/cobra"

	"github.com/cutover/cutover/internal/serve"
)

func newServeCmd(s Streams) *cobra.Command {
	var o serve.Options
	var cpuProfile string
	cmd := &cobra.Command{
		Use:   "serve -c FILE",
		Short: "Run the proxy: listeners, health checks, admin API",
		Long: `Run the reverse proxy described by the configuration file.

Signals: SIGHUP re-reads the configuration (and TLS certificate files)
without dropping a connection; SIGUSR1 reopens the access log; SIGUSR2
upgrades in place (as cutover upgrade); SIGTERM or
SIGINT stop accepting and let requests in flight finish (timeouts.shutdown).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.ConfigPath == "" {
				return &exitError{code: 2, err: errors.New("serve needs the configuration file: cutover serve -c FILE (see `cutover validate -c FILE`)")}
			}
			o.LookupEnv = os.LookupEnv
			o.Stdout = s.Out
			o.Stderr = s.Err
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return fmt.Errorf("--cpu-profile: %w", err)
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return fmt.Errorf("--cpu-profile: %w", err)
				}
				defer pprof.StopCPUProfile()
			}
			// GOGC is process-wide: this command owns the process. An
			// operator's GOGC is left as set.
			if _, set := os.LookupEnv("GOGC"); !set {
				defer serve.KeepHeapFloor(serve.DefaultHeapFloor)()
			}
			return serve.Run(context.Background(), o)
		},
	}
	cmd.Flags().StringVarP(&o.ConfigPath, "config", "c", "", "configuration file (YAML)")
	cmd.Flags().StringVar(&cpuProfile, "cpu-profile", "", "write a CPU profile (go tool pprof) to this file until the proxy stops")
	return cmd
}
