package cli

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/cutover/cutover/internal/admin"
	"github.com/spf13/cobra"
)

// trialFlags are deploy's (and release's) canary and guard flags.
type trialFlags struct {
	canary       string
	step         time.Duration
	guard        time.Duration
	maxErrorRate string
	maxLatency   string
	minRequests  uint64
	detach       bool
}

func (tf *trialFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&tf.canary, "canary", "", "send these percentages of the clients to POOL in turn before the full switch (e.g. 10,50); clients are sticky")
	f.DurationVar(&tf.step, "step", 0, "how long each --canary percentage holds (0: hold the first until cutover promote or abort)")
	f.DurationVar(&tf.guard, "guard", 0, "watch POOL this long after it takes traffic and roll back at once when it does worse than the pool it replaces")
	f.StringVar(&tf.maxErrorRate, "max-error-rate", "", "guard: highest error rate, e.g. 1% (default: the old pool's rate plus 1 point)")
	f.StringVar(&tf.maxLatency, "max-latency", "", "guard: highest p99 as a multiple of the old pool's, e.g. 2x (default 2x)")
	f.Uint64Var(&tf.minRequests, "min-requests", 0, "guard: requests POOL must serve before it is judged (default 50)")
	f.BoolVar(&tf.detach, "detach", false, "return once POOL takes traffic; the steps and the guard go on in cutover serve")
}

// apply checks the flags and binds them into req.
func (tf *trialFlags) apply(req *admin.DeployRequest) error {
	if tf.canary != "" {
		for _, p := range strings.Split(tf.canary, ",") {
			v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(p), "%"), 64)
			if err != nil {
				return fmt.Errorf("--canary %q: %q is not a percentage — give rising percentages, e.g. --canary 10,50", tf.canary, p)
			}
			req.Canary = append(req.Canary, v)
		}
	}
	req.Step = admin.Duration(tf.step)
	req.Detach = tf.detach
	guardSet := tf.maxErrorRate != "" || tf.maxLatency != "" || tf.minRequests > 0
	if tf.guard == 0 {
		if guardSet {
			return errors.New("--max-error-rate, --max-latency and --min-requests tune a guard: add --guard DURATION, e.g. --guard 5m")
		}
		return nil
	}
	g := &admin.GuardSettings{Window: admin.Duration(tf.guard), MinRequests: tf.minRequests}
	if tf.maxErrorRate != "" {
		v, err := parseRate(tf.maxErrorRate)
		if err != nil {
			return err
		}
		g.MaxErrorRate = v
	}
	if tf.maxLatency != "" {
		v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(tf.maxLatency), "x"), 64)
		if err != nil || v < 1 {
			return fmt.Errorf("--max-latency %q: give a ratio of the old pool's p99 of 1x or more, e.g. 2x", tf.maxLatency)
		}
		g.MaxLatencyRatio = v
	}
	req.Guard = g
	return nil
}

// parseRate reads a rate given as a percentage ("1%") or a share ("0.01").
func parseRate(s string) (float64, error) {
	t, scale := strings.TrimSpace(s), 1.0
	if strings.HasSuffix(t, "%") {
		t, scale = strings.TrimSuffix(t, "%"), 100
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 || v/scale >= 1 {
		return 0, fmt.Errorf("--max-error-rate %q: give a percentage below 100, e.g. 1%%", s)
	}
	return v / scale, nil
}

// printGuard prints what a guard measured.
func printGuard(out io.Writer, g *admin.GuardReport) {
	if g == nil {
		return
	}
	fmt.Fprintf(out, "  guard: %s served %d requests, error rate %.2f%% (limit %.2f%%), p99 %.1f ms", g.Pool, g.Requests, 100*g.ErrorRate, 100*g.MaxErrorRate, g.P99MS)
	if g.MaxP99MS > 0 {
		fmt.Fprintf(out, " (limit %.1f ms)", g.MaxP99MS)
	}
	fmt.Fprintf(out, "\n  against %s before: %d requests, error rate %.2f%%, p99 %.1f ms\n", g.Baseline, g.BaselineRequests, 100*g.BaselineErrorRate, g.BaselineP99MS)
	if g.Breach != "" {
		fmt.Fprintf(out, "  breach: %s\n", g.Breach)
	}
}

// printGuardError prints the numbers of a guard that rolled back.
func printGuardError(out io.Writer, err error) {
	var ce *admin.Error
	if errors.As(err, &ce) && ce.Kind == admin.KindGuard {
		printGuard(out, ce.Guard)
	}
}

// newTrialCmd builds `cutover promote` and `cutover abort`.
func newTrialCmd(s Streams, op string) *cobra.Command {
	var (
		at  adminTarget
		et  etcdTarget
		req = admin.TrialRequest{Timeout: admin.Duration(admin.DefaultTimeout)}
	)
	short, long := "Make a service's canary or preview pool its stable pool (the full switch, with its drain)",
		"promote ends a canary with the full switch now (its remaining steps skipped), or makes the\n"+
			"preview pool the stable one, health-gated and drained as a deploy."
	if op == admin.OpAbort {
		short, long = "Send every client of a service back to its stable pool, ending a canary or preview",
			"abort drops a service's canary (every client back on the stable pool at once; requests\n"+
				"already running on the canary finish there) or its preview pool. During a guard window\n"+
				"after a full switch it rolls back to the pool replaced."
	}
	cmd := &cobra.Command{
		Use:   op + " [-s SERVICE]",
		Short: short,
		Long:  long,
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, done, err := et.operator(cmd, at)
			if err != nil {
				return err
			}
			defer done()
			run := c.Abort
			if op == admin.OpPromote {
				run = c.Promote
			}
			res, err := run(cmd.Context(), req, printEvent(s.Out))
			return printOutcome(s.Out, res, err)
		},
	}
	cmd.Flags().StringVarP(&req.Service, "service", "s", "", "service (may be omitted when there is one)")
	if op == admin.OpPromote {
		cmd.Flags().DurationVar((*time.Duration)(&req.Timeout), "timeout", admin.DefaultTimeout, "how long the pool may take to become healthy")
	}
	at.register(cmd)
	et.register(cmd)
	return cmd
}

// guardLine is a running guard's numbers on one line.
func guardLine(g *admin.GuardReport) string {
	return fmt.Sprintf("%s: %d requests, error rate %.2f%% (limit %.2f%%), p99 %.1f ms; %s before: error rate %.2f%%, p99 %.1f ms",
		g.Pool, g.Requests, 100*g.ErrorRate, 100*g.MaxErrorRate, g.P99MS, g.Baseline, 100*g.BaselineErrorRate, g.BaselineP99MS)
}
