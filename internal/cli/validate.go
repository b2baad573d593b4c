package cli

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cutover/cutover/internal/config"
	"github.com/cutover/cutover/internal/human"
	"github.com/spf13/cobra"
)

// newValidateCmd builds `cutover validate`, the counterpart of `nginx -t`:
// it loads the file exactly as serve would and lists every problem.
func newValidateCmd(s Streams) *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "validate -c FILE",
		Short: "Check a configuration file and list every problem in it",
		Long: "validate reads the configuration file as `cutover serve` would, filling ${VAR} templates\n" +
			"from the environment, and prints \"ok\" (exit 0) or every problem with its file, line and\n" +
			"key (exit 1).",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return &exitError{code: 2, err: fmt.Errorf("unexpected argument %q — give the file with -c %s", args[0], args[0])}
			}
			return nil
		},
		RunE: func(_ *cobra.Command, _ []string) error {
			if path == "" {
				return &exitError{code: 2, err: errors.New("no configuration file given — pass it with -c FILE")}
			}
			cfg, err := config.Load(path, os.LookupEnv)
			if err != nil {
				var problems *config.Errors
				if !errors.As(err, &problems) {
					return &exitError{code: 1, err: err}
				}
				for _, p := range problems.Problems {
					fmt.Fprintln(s.Err, p)
				}
				return &exitError{code: 1, err: fmt.Errorf("%s: %s", path, human.Count(len(problems.Problems), "problem"))}
			}
			names := make([]string, len(cfg.Services))
			for i, svc := range cfg.Services {
				names[i] = svc.Name
			}
			fmt.Fprintf(s.Out, "ok: %s: %s (%s)\n", path, human.Count(len(names), "service"), strings.Join(names, ", "))
			return nil
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "", "configuration file to check")
	return cmd
}
