package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/natwall/natwall/dataplane"
)

func init() {
	ct := &cobra.Command{Use: "conntrack", Short: "List and flush the live dataplane's tracked flows"}
	ct.AddCommand(newConntrackListCmd(), newConntrackFlushCmd())
	rootCmd.AddCommand(ct, newNATCmd())
}

func stateFlags(cmd *cobra.Command) {
	cmd.Flags().String("pin-dir", dataplane.DefaultPinDir, "natwall's bpffs pin directory")
}

func openState(cmd *cobra.Command) (*dataplane.State, error) {
	dir, _ := cmd.Flags().GetString("pin-dir")
	return dataplane.OpenState(dir)
}

func filterFlags(cmd *cobra.Command) {
	cmd.Flags().String("addr", "", "only flows with an endpoint in this CIDR")
	cmd.Flags().Uint16("port", 0, "only flows with an endpoint on this port")
	cmd.Flags().String("proto", "", "only flows of this protocol: tcp, udp, icmp, icmpv6 or a number")
}

func flowFilter(cmd *cobra.Command) (dataplane.FlowFilter, error) {
	var f dataplane.FlowFilter
	if s, _ := cmd.Flags().GetString("addr"); s != "" {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return f, fmt.Errorf("--addr %q is not a CIDR or an address", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		f.Addr = p
	}
	f.Port, _ = cmd.Flags().GetUint16("port")
	if s, _ := cmd.Flags().GetString("proto"); s != "" {
		n, ok := protoNumbers[s]
		if !ok {
			v, err := strconv.ParseUint(s, 10, 8)
			if err != nil {
				return f, fmt.Errorf("--proto %q is not tcp, udp, icmp, icmpv6 or a number", s)
			}
			n = uint8(v)
		}
		f.Proto = n
	}
	return f, nil
}

var protoNumbers = map[string]uint8{"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}

func protoName(n uint8) string {
	for name, v := range protoNumbers {
		if v == n {
			return name
		}
	}
	return strconv.Itoa(int(n))
}

// flowJSON is a flow as `conntrack list -o json` prints it.
type flowJSON struct {
	Proto        string    `json:"proto"`
	Src          string    `json:"src"`
	Dst          string    `json:"dst"`
	ReplySrc     string    `json:"reply_src"`
	ReplyDst     string    `json:"reply_dst"`
	TCPState     string    `json:"tcp_state,omitempty"`
	Zone         string    `json:"zone"`
	SNAT         bool      `json:"snat"`
	DNAT         bool      `json:"dnat"`
	RuleID       uint32    `json:"rule_id"`
	Created      time.Time `json:"created"`
	LastSeen     time.Time `json:"last_seen"`
	PacketsOrig  uint64    `json:"packets_orig"`
	BytesOrig    uint64    `json:"bytes_orig"`
	PacketsReply uint64    `json:"packets_reply"`
	BytesReply   uint64    `json:"bytes_reply"`
}

func toJSON(f dataplane.Flow) flowJSON {
	return flowJSON{Proto: protoName(f.Proto), Src: f.Src.String(), Dst: f.Dst.String(), ReplySrc: f.ReplySrc.String(),
		ReplyDst: f.ReplyDst.String(), TCPState: dataplane.TCPStateName(f.TCPState), Zone: dataplane.ZoneName(f.Zone),
		SNAT: f.SNAT, DNAT: f.DNAT, RuleID: f.RuleID, Created: f.Created, LastSeen: f.LastSeen,
		PacketsOrig: f.PacketsOrig, BytesOrig: f.BytesOrig, PacketsReply: f.PacketsReply, BytesReply: f.BytesReply}
}

func writeFlows(w io.Writer, flows []dataplane.Flow, output string, now time.Time) error {
	if output == "json" {
		out := make([]flowJSON, len(flows))
		for i, f := range flows {
			out[i] = toJSON(f)
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROTO\tSRC\tDST\tREPLY-SRC\tREPLY-DST\tSTATE\tZONE\tRULE\tPKTS\tBYTES\tAGE\tIDLE")
	for _, f := range flows {
		state := dataplane.TCPStateName(f.TCPState)
		if state == "" {
			state = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d/%d\t%d/%d\t%s\t%s\n", protoName(f.Proto), f.Src, f.Dst, f.ReplySrc, f.ReplyDst,
			state, dataplane.ZoneName(f.Zone), f.RuleID, f.PacketsOrig, f.PacketsReply, f.BytesOrig, f.BytesReply,
			now.Sub(f.Created).Round(time.Second), now.Sub(f.LastSeen).Round(time.Second))
	}
	return tw.Flush()
}

func newConntrackListCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List tracked flows, with their translated (reply) view",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			filter, err := flowFilter(cmd)
			if err != nil {
				return err
			}
			st, err := openState(cmd)
			if err != nil {
				return err
			}
			defer st.Close()
			flows := []dataplane.Flow{}
			if err := st.Flows(func(f dataplane.Flow) bool {
				if filter.Match(f) {
					flows = append(flows, f)
				}
				return true
			}); err != nil {
				return err
			}
			output, _ := cmd.Flags().GetString("output")
			return writeFlows(cmd.OutOrStdout(), flows, output, time.Now())
		},
	}
	stateFlags(cmd)
	filterFlags(cmd)
	cmd.Flags().StringP("output", "o", "table", "table or json")
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
			filter, err := flowFilter(cmd)
			if err != nil {
				return err
			}
			if all, _ := cmd.Flags().GetBool("all"); !all && filter == (dataplane.FlowFilter{}) {
				return errors.New("no filter: give --addr, --port or --proto, or --all to flush every flow")
			}
			st, err := openState(cmd)
			if err != nil {
				return err
			}
			defer st.Close()
			n, err := st.Flush(filter)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "flushed %d flows\n", n)
			return nil
		},
	}
	stateFlags(cmd)
	filterFlags(cmd)
	cmd.Flags().Bool("all", false, "flush every flow")
	return cmd
}

func newNATCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "nat",
		Short: "Show SNAT port use per external address and protocol",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := openState(cmd)
			if err != nil {
				return err
			}
			defer st.Close()
			usage, err := st.SNATUsage()
			if err != nil {
				return err
			}
			if o, _ := cmd.Flags().GetString("output"); o == "json" {
				type row struct {
					Address  string `json:"address"`
					Protocol string `json:"protocol"`
					InUse    int    `json:"in_use"`
					Capacity int    `json:"capacity"`
				}
				rows := []row{}
				for _, u := range usage {
					rows = append(rows, row{u.Addr.String(), protoName(u.Proto), u.Mappings, u.Capacity})
				}
				return json.NewEncoder(cmd.OutOrStdout()).Encode(rows)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ADDRESS\tPROTO\tIN USE\tCAPACITY\tUSED")
			for _, u := range usage {
				pct := 0.0
				if u.Capacity > 0 {
					pct = 100 * float64(u.Mappings) / float64(u.Capacity)
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.1f%%\n", u.Addr, protoName(u.Proto), u.Mappings, u.Capacity, pct)
			}
			return tw.Flush()
		},
	}
	stateFlags(cmd)
	cmd.Flags().StringP("output", "o", "table", "table or json")
	return cmd
}
