package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cutover/cutover/internal/admin"
	"github.com/cutover/cutover/internal/human"
	"github.com/spf13/cobra"
)

// newStatusCmd builds `cutover status`.
func newStatusCmd(s Streams) *cobra.Command {
	var (
		at      adminTarget
		et      etcdTarget
		service string
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "status [-s SERVICE] [--json]",
		Short: "Show each service's active and previous pool and the health of every target",
		Long: "status asks the running cutover, per service, for the active and previous pool and for each\n" +
			"pool's targets: health state, requests in flight and requests served. --json prints the admin\n" +
			"API's status document (stable field names; see package admin).",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if et.endpoints != "" {
				r, err := et.open(cmd, at)
				if err != nil {
					return err
				}
				defer r.Close()
				st, err := r.Status(cmd.Context(), service)
				if err != nil {
					return apiError(err)
				}
				if asJSON {
					return printJSON(s.Out, st)
				}
				printShared(s.Out, st)
				return nil
			}
			c, err := at.client()
			if err != nil {
				return err
			}
			defer c.Close()
			st, err := c.Status(cmd.Context(), service)
			if err != nil {
				return apiError(err)
			}
			if asJSON {
				return printJSON(s.Out, st)
			}
			printStatus(s.Out, st, time.Now())
			return nil
		},
	}
	cmd.Flags().StringVarP(&service, "service", "s", "", "show only this service")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	at.register(cmd)
	et.register(cmd)
	return cmd
}

// printShared prints the desired state read from etcd itself (status
// --etcd): each service's pools and revision, then the instances.
func printShared(out io.Writer, st *admin.StatusResponse) {
	for _, svc := range st.Services {
		rev := fmt.Sprintf("revision %d", svc.Revision)
		if svc.Revision == 0 {
			rev = "not switched yet: the configuration's active pool"
		}
		fmt.Fprintf(out, "%s: active %s, previous %s (%s)\n", svc.Name, svc.Active, orNone(svc.Previous), rev)
		if svc.Canary != "" {
			fmt.Fprintf(out, "  canary: %s takes %g%% of the clients (cutover promote / cutover abort)\n", svc.Canary, svc.CanaryPercent)
		}
		if svc.Preview != "" {
			fmt.Fprintf(out, "  preview: %s (cutover promote / cutover abort)\n", svc.Preview)
		}
	}
	printStore(out, st.Store)
}

func printStatus(out io.Writer, st *admin.StatusResponse, now time.Time) {
	if st.StateError != "" {
		fmt.Fprintf(out, "WARNING: the state cannot be written: %s\n\n", st.StateError)
	}
	for i, svc := range st.Services {
		if i > 0 {
			fmt.Fprintln(out)
		}
		hosts := "any (default service)"
		if len(svc.Hosts) > 0 {
			hosts = strings.Join(svc.Hosts, ", ")
		}
		prev := svc.Previous
		if prev == "" {
			prev = "none"
		}
		fmt.Fprintf(out, "%s: active %s, previous %s\n", svc.Name, svc.Active, prev)
		fmt.Fprintf(out, "  hosts: %s; balance: %s\n", hosts, svc.Balance)
		if svc.Canary != "" {
			fmt.Fprintf(out, "  canary: %s takes %g%% of the clients (cutover promote / cutover abort)\n", svc.Canary, svc.CanaryPercent)
		}
		if g := svc.Guard; g != nil && !g.Done {
			fmt.Fprintf(out, "  guard until %s: %s\n", g.Ends.Local().Format("15:04:05"), guardLine(g))
		}
		if op := svc.Operation; op != nil {
			fmt.Fprintf(out, "  %s to %s in progress since %s (%s)\n", op.Kind, op.Pool, op.Started.Format("15:04:05"), human.Duration(now.Sub(op.Started)))
		}
		for _, p := range svc.Pools {
			if p.StopsAt != nil {
				fmt.Fprintf(out, "  %s stops at %s (in %s; cutover rollback before then keeps it)\n", p.Name, p.StopsAt.Local().Format("15:04:05"), human.Duration(p.StopsAt.Sub(now).Round(time.Second)))
			}
		}
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  POOL\tTARGET\tSTATE\tIN-FLIGHT\tSERVED\tLAST ERROR")
		for _, p := range svc.Pools {
			name := p.Name
			if p.Active {
				name += " (active)"
			}
			if p.Source != "config" {
				name += " [" + p.Source + "]"
			}
			if len(p.Targets) == 0 {
				fmt.Fprintf(tw, "  %s\t(no targets)\t\t%d\t%d\t\n", name, p.InFlight, p.Served)
				continue
			}
			for j, t := range p.Targets {
				if j > 0 {
					name = ""
				}
				target := t.Addr
				if t.Label != "" && t.Label != t.Addr {
					target = t.Label + " " + t.Addr
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%d\t%s\n", name, target, t.State, t.InFlight, t.Served, t.LastError)
			}
		}
		tw.Flush()
	}
	printCertificates(out, st.Certificates)
	printStore(out, st.Store)
}

// printStore lists the instances sharing the desired state, with the
// revision each applied and how far behind it is.
func printStore(out io.Writer, st *admin.StoreStatus) {
	if st == nil {
		return
	}
	if st.Instance == "" {
		fmt.Fprintf(out, "\nshared state: %s, read by this command", st.Where)
	} else {
		fmt.Fprintf(out, "\nshared state: %s; this instance: %s, applied revision %d", st.Where, st.Instance, st.Applied)
	}
	if st.Latest > 0 {
		fmt.Fprintf(out, ", newest %d", st.Latest)
	}
	fmt.Fprintln(out)
	if st.Stale {
		fmt.Fprintf(out, "STALE: %s\n", st.Problem)
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  INSTANCE\tAPPLIED\tBEHIND")
	for _, in := range st.Instances {
		name := in.Name
		if in.Self {
			name += " (this one)"
		}
		behind := human.Count(in.Behind, "service change")
		switch {
		case in.Stale:
			behind = "unknown (stale)"
		case in.Behind == 0:
			behind = "up to date"
		}
		fmt.Fprintf(tw, "  %s\t%d\t%s\n", name, in.Applied, behind)
	}
	tw.Flush()
}

// printCertificates lists the HTTPS certificates, warnings last on each line.
func printCertificates(out io.Writer, certs []admin.CertificateStatus) {
	if len(certs) == 0 {
		return
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CERTIFICATE	SOURCE	STATE	EXPIRES	DAYS LEFT	WARNING")
	for _, c := range certs {
		expires, days := "-", "-"
		if c.NotAfter != nil {
			expires = c.NotAfter.Format(time.RFC3339)
			days = fmt.Sprintf("%.1f", c.DaysLeft)
		}
		warn := c.Warning
		if warn != "" {
			warn = "WARNING: " + warn
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Host, c.Source, c.State, expires, days, warn)
	}
	tw.Flush()
}

// printJSON prints an admin API document for --json, indented.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
