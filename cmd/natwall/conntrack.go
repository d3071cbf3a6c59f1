package main

import (
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/natwall/natwall/controlplane/api"
)

func init() {
	ct := &cobra.Command{Use: "conntrack", Short: "List and flush the live dataplane's tracked flows"}
	ct.AddCommand(newConntrackListCmd(), newConntrackFlushCmd())
	rootCmd.AddCommand(ct, newNATCmd())
}

func filterFlags(cmd *cobra.Command) {
	cmd.Flags().String("addr", "", "only flows with an endpoint in this CIDR or at this address")
	cmd.Flags().Uint16("port", 0, "only flows with an endpoint on this port")
	cmd.Flags().String("proto", "", "only flows of this protocol: tcp, udp, icmp, icmpv6 or a number")
	cmd.RegisterFlagCompletionFunc("proto", func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return []cobra.Completion{"tcp", "udp", "icmp", "icmpv6"}, cobra.ShellCompDirectiveNoFileComp
	})
}

// flowFilter reads the filter flags; types are the event types, for flows.
func flowFilter(cmd *cobra.Command, types []string) (api.FlowFilter, error) {
	addr, _ := cmd.Flags().GetString("addr")
	proto, _ := cmd.Flags().GetString("proto")
	port := ""
	if p, _ := cmd.Flags().GetUint16("port"); p != 0 {
		port = strconv.Itoa(int(p))
	}
	f, err := api.ParseFlowFilter(addr, port, proto, types)
	if err != nil {
		return f, usageErrorf("--%w", err)
	}
	return f, nil
}

// flowList is `conntrack list`.
type flowList []api.Flow

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func flowHeader(wide bool) []string {
	h := []string{"PROTO", "SRC", "DST", "REPLY-SRC", "REPLY-DST", "STATE", "ZONE", "RULE", "PKTS", "BYTES"}
	if wide {
		h = append(h, "NAT")
	}
	return h
}

func flowRow(f api.Flow, wide bool) []string {
	row := []string{f.Proto, f.Src, f.Dst, f.ReplySrc, f.ReplyDst, dash(f.TCPState), f.Zone, strconv.FormatUint(uint64(f.RuleID), 10),
		fmt.Sprintf("%d/%d", f.PacketsOrig, f.PacketsReply), fmt.Sprintf("%d/%d", f.BytesOrig, f.BytesReply)}
	if wide {
		nat := "-"
		switch {
		case f.SNAT && f.DNAT:
			nat = "snat+dnat"
		case f.SNAT:
			nat = "snat"
		case f.DNAT:
			nat = "dnat"
		}
		row = append(row, nat)
	}
	return row
}

func (l flowList) tables(wide bool) []table {
	t := table{header: append(flowHeader(wide), "AGE", "IDLE")}
	now := clock()
	for _, f := range l {
		t.rows = append(t.rows, append(flowRow(f, wide),
			now.Sub(f.Created).Round(time.Second).String(), now.Sub(f.LastSeen).Round(time.Second).String()))
	}
	return []table{t}
}

func newConntrackListCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List tracked flows, with their translated (reply) view",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := outputFormat(cmd)
			if err != nil {
				return err
			}
			filter, err := flowFilter(cmd, nil)
			if err != nil {
				return err
			}
			flows, err := daemon(cmd).Conntrack(cmd.Context(), filter)
			if err != nil {
				return err
			}
			return render(cmd.OutOrStdout(), format, flowList(flows))
		},
	}
	socketFlag(cmd)
	filterFlags(cmd)
	outputFlag(cmd)
	return cmd
}

func newConntrackFlushCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "flush",
		Short: "Delete tracked flows matching a filter (--all for every flow)",
		Long: `flush deletes flows from the live dataplane. Their next packets are treated as
packets of no flow: a mid-stream TCP segment is dropped (or answered with a
RST when conntrack.invalid_tcp_reset is set), so clients reconnect.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			filter, err := flowFilter(cmd, nil)
			if err != nil {
				return err
			}
			all, _ := cmd.Flags().GetBool("all")
			switch {
			case !all && filter.IsZero():
				return usageErrorf("no filter: give --addr, --port or --proto, or --all to flush every flow")
			case all && !filter.IsZero():
				return usageErrorf("--all goes without --addr, --port and --proto")
			}
			n, err := daemon(cmd).Flush(cmd.Context(), filter, all)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "flushed %d flows\n", n)
			return nil
		},
	}
	socketFlag(cmd)
	filterFlags(cmd)
	cmd.Flags().Bool("all", false, "flush every flow")
	return cmd
}

// natView is `natwall nat`, and the NAT part of status.
type natView []api.NATUsage

func (v natView) tables(bool) []table {
	t := table{header: []string{"ADDRESS", "PROTO", "IN USE", "CAPACITY", "USED"}}
	for _, u := range v {
		t.rows = append(t.rows, []string{u.Address, u.Protocol, strconv.Itoa(u.InUse), strconv.Itoa(u.Capacity), percent(u.InUse, u.Capacity)})
	}
	return []table{t}
}

func newNATCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "nat",
		Short: "Show SNAT port use per external address and protocol",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := outputFormat(cmd)
			if err != nil {
				return err
			}
			usage, err := daemon(cmd).NAT(cmd.Context())
			if err != nil {
				return err
			}
			return render(cmd.OutOrStdout(), format, natView(usage))
		},
	}
	socketFlag(cmd)
	outputFlag(cmd)
	return cmd
}
