package main

import (
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/natwall/natwall/controlplane/api"
)

func init() { rootCmd.AddCommand(newFlowsCmd()) }

// flowEventView is one line of `natwall flows`.
type flowEventView api.FlowEvent

func (e flowEventView) tables(wide bool) []table {
	h := append([]string{"TIME", "EVENT", "REASON"}, flowHeader(wide)...)
	if wide {
		h = append(h, "LOST")
	}
	row := append([]string{e.Time.Local().Format("15:04:05.000"), e.Type, dash(e.Reason)}, flowRow(e.Flow, wide)...)
	if wide {
		row = append(row, strconv.FormatUint(e.Lost, 10))
	}
	return []table{{header: h, rows: [][]string{row}}}
}

func newFlowsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "flows",
		Short: "Tail the live flow events: flows starting and ending, and alerts",
		Long: `flows prints flow events as the dataplane reports them, until Ctrl-C (or
--count events). Filters select by an endpoint's address or port, the
protocol and the event type. -o json prints one JSON object a line.

Events reach the CLI through a buffer: one that falls behind loses events,
and the next event it gets counts them (LOST in -o wide, lost in json).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := outputFormat(cmd)
			if err != nil {
				return err
			}
			types, _ := cmd.Flags().GetStringSlice("type")
			filter, err := flowFilter(cmd, types)
			if err != nil {
				return err
			}
			count, _ := cmd.Flags().GetInt("count")
			if count < 0 {
				return usageErrorf("--count %d: must be 0 (no limit) or more", count)
			}
			out := newStream(cmd.OutOrStdout(), format)
			seen := 0
			return daemon(cmd).Flows(cmd.Context(), filter, func(ev api.FlowEvent) error {
				if err := out.write(flowEventView(ev)); err != nil {
					return err
				}
				seen++
				if count > 0 && seen >= count {
					return api.ErrStopTail
				}
				return nil
			})
		},
	}
	socketFlag(cmd)
	filterFlags(cmd)
	outputFlag(cmd)
	cmd.Flags().StringSlice("type", nil, "only these event types: "+strings.Join(api.EventTypes, ", "))
	cmd.RegisterFlagCompletionFunc("type", func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return slices.Clone(api.EventTypes), cobra.ShellCompDirectiveNoFileComp
	})
	cmd.Flags().Int("count", 0, "stop after this many events (0: until interrupted)")
	return cmd
}
