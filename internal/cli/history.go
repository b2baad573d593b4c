package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/controlplane/history"
	"github.com/cutover/cutover/internal/human"
	"github.com/spf13/cobra"
)

// newHistoryCmd builds `cutover history`.
func newHistoryCmd(s Streams) *cobra.Command {
	var (
		at      adminTarget
		service string
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "history [-s SERVICE] [--json]",
		Short: "List the last deploys, rollbacks, releases and reloads, newest first",
		Long: fmt.Sprintf("history prints the operations the running cutover recorded (the last %d, kept in\n"+
			"state_dir/%s across restarts), newest first, one line each: id, start time, kind,\n"+
			"service, from → to pool, result and what happened. --json prints every field (admin API\n"+
			"GET /v1/history): times, time to healthy, in-flight at the switch, drained, drain time and\n"+
			"the targets involved.", history.Limit, history.FileName),
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := at.client()
			if err != nil {
				return err
			}
			defer c.Close()
			h, err := c.History(cmd.Context(), service)
			if err != nil {
				return apiError(err)
			}
			if asJSON {
				return printJSON(s.Out, h)
			}
			if len(h.Entries) == 0 {
				fmt.Fprintln(s.Out, "no operations recorded yet")
				return nil
			}
			printHistory(s.Out, h.Entries, time.Now())
			return nil
		},
	}
	cmd.Flags().StringVarP(&service, "service", "s", "", "show only this service's operations")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print every field as JSON for scripts")
	at.register(cmd)
	return cmd
}

// printHistory writes one line per entry, like `git log --oneline`.
func printHistory(out io.Writer, entries []admin.HistoryEntry, now time.Time) {
	tw := tabwriter.NewWriter(out, 0, 0, 1, ' ', 0)
	for _, e := range entries {
		pools := ""
		switch {
		case e.To != "" && e.From != "" && e.From != e.To:
			pools = e.From + " → " + e.To
		case e.To != "":
			pools = "→ " + e.To
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.ID, e.Started.Local().Format("2006-01-02 15:04:05"),
			e.Kind, dash(e.Service), dash(pools), e.Result, historyDetail(e, now))
	}
	tw.Flush()
}

// historyDetail is the short form of what happened.
func historyDetail(e admin.HistoryEntry, now time.Time) string {
	took := human.Duration(e.Duration(now))
	if e.Result != history.ResultSucceeded {
		reason, _, _ := strings.Cut(e.Reason, "\n")
		return fmt.Sprintf("after %s: %s", took, reason)
	}
	switch {
	case e.Kind == history.KindReload:
		return fmt.Sprintf("in %s", took)
	case e.NoOp:
		return "already active, nothing to do"
	}
	msg := fmt.Sprintf("in %s: healthy after %s, %d in flight at the switch, %d drained in %s", took,
		human.Duration(fromMS(e.TimeToHealthyMS)), e.InFlightAtSwitch, e.Drained, human.Duration(fromMS(e.DrainMS)))
	if e.ClosedAtTimeout > 0 {
		msg += fmt.Sprintf(", %d closed at the drain timeout", e.ClosedAtTimeout)
	}
	if len(e.Warnings) > 0 {
		msg += fmt.Sprintf(" (warning: %s)", e.Warnings[0])
	}
	return msg
}

func fromMS(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
