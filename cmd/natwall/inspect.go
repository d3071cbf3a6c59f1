package main

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/spf13/cobra"

	"github.com/natwall/natwall/controlplane/inspect"
	"github.com/natwall/natwall/rules"
)

func init() {
	rootCmd.AddCommand(newInspectCmd())
}

func newInspectCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inspect --rules PATH [--rules PATH...] --pcap FILE [--var HOME_NET=CIDR,...] [--checksum off]",
		Short: "Run the rules and the L7 inspector over a capture offline; EVE JSON alerts on stdout",
		Long: `inspect reads a pcap or pcapng capture and decides each TCP flow as natwall
would: the flow's SYN through the stateful rules (compiled as check and
explain compile them), and for a flow that reaches a rule with an L7
condition its first client data through natwall's inspector (reassembly,
ClientHello and HTTP parsing, the hold bounds), then evaluation resumed at
the pending rule. Every alert rule hit and every deny or reject decision is
printed as an EVE JSON alert, as suricata -r does. It exits non-zero only
on errors (rule files, an unreadable capture), never because of alerts.

--var HOME_NET=CIDR[,CIDR] gives the inside networks ($HOME_NET, the inside
tag; --inside does the same). Other variables are address or port sets of
a YAML rule file given with --rules. Packets with a wrong IPv4 header or
TCP checksum are not read, as the daemon does not read them (the server
would drop them); --checksum off reads them anyway, for captures made on
a host whose NIC computes checksums (offload).`,
		Args: cobra.NoArgs,
		RunE: runInspect,
	}
	f := cmd.Flags()
	f.StringSlice("rules", nil, "rule files or directories")
	f.String("pcap", "", "the capture to read")
	f.StringArray("var", nil, "NAME=VALUE: HOME_NET=CIDR[,CIDR] sets the inside networks")
	f.StringSlice("inside", nil, "inside networks, for the inside and internet tags")
	f.StringSlice("local", nil, "the appliance's own addresses (ADDR or ADDR/LEN), for the local zone")
	f.String("checksum", "on", "on: skip packets with wrong checksums, as the daemon does; off: read them (captures made with checksum offload)")
	return cmd
}

func runInspect(cmd *cobra.Command, _ []string) error {
	f := cmd.Flags()
	paths, _ := f.GetStringSlice("rules")
	pcapPath, _ := f.GetString("pcap")
	if len(paths) == 0 || pcapPath == "" {
		return usageErrorf("--rules and --pcap are required")
	}
	var cfg inspect.Config
	switch cs, _ := f.GetString("checksum"); cs {
	case "on":
	case "off":
		cfg.SkipChecksums = true
	default:
		return usageErrorf("--checksum %q: on or off", cs)
	}
	inside, err := insideFlag(cmd)
	if err != nil {
		return err
	}
	vars, _ := f.GetStringArray("var")
	for _, v := range vars {
		name, value, ok := strings.Cut(v, "=")
		if !ok {
			return usageErrorf("--var %q: want NAME=VALUE", v)
		}
		if name != "HOME_NET" {
			return usageErrorf("--var %s: only HOME_NET is set from the command line; define other variables as sets in a YAML rule file", name)
		}
		for _, s := range strings.Split(value, ",") {
			p, err := netip.ParsePrefix(strings.TrimSpace(s))
			if err != nil {
				return usageErrorf("--var HOME_NET: %q: %w", s, err)
			}
			inside = append(inside, p)
		}
	}
	local, err := localFlag(cmd)
	if err != nil {
		return err
	}
	rs, tbl, err := compileRules(rules.Load(paths, rules.Options{Inside: inside, InspectL7: true}))
	if err != nil {
		var list rules.ErrorList
		if errors.As(err, &list) {
			for _, e := range list {
				fmt.Fprintln(cmd.ErrOrStderr(), e)
			}
			return invalidError{err: fmt.Errorf("%d errors in the rule files", len(list))}
		}
		return err
	}
	if err := inspect.Capture(cmd.OutOrStdout(), pcapPath, rs, tbl, rules.Endpoints{Inside: inside, Local: local}, cfg); err != nil {
		return err
	}
	return nil
}
