package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/natwall/natwall/controlplane"
)

func newRunCmd() *cobra.Command {
	var configFile string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the natwall daemon",
		Long: `Run the natwall daemon: set the forwarding sysctls, attach the XDP
dataplane to the configured interfaces, and serve /metrics, /healthz and
/readyz, and the local API on api.socket, until SIGTERM or SIGINT. SIGHUP,
natwall reload, and with reload.watch a change of the config file or a rule
file, reload config and rules as one transaction: what is invalid changes
nothing.

Settings come from the config file, then NATWALL_<KEY> environment
variables (nested keys joined with _, e.g. NATWALL_METRICS_LISTEN), then
flags, each overriding the one before.

With --dry-run it validates the settings and rule files, as natwall config
check does, and exits: 0 when they are good, 3 when they are not.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			source := controlplane.LoadOptions{File: configFile, Flags: cmd.Flags()}
			if dryRun {
				cfg, err := checkConfig(source)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), configSummary(cfg))
				return nil
			}
			cfg, err := controlplane.LoadConfig(source)
			if err != nil {
				return err
			}
			return controlplane.Run(cmd.Context(), cfg, source)
		},
	}
	cmd.Flags().StringVarP(&configFile, "config", "c", "", "YAML config file")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "validate the config and rule files, then exit")
	controlplane.AddFlags(cmd.Flags())
	return cmd
}
