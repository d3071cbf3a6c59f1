package main

import (
	"github.com/spf13/cobra"

	"github.com/natwall/natwall/controlplane"
)

func newRunCmd() *cobra.Command {
	var configFile string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the natwall daemon",
		Long: `Run the natwall daemon: set the forwarding sysctls, attach the XDP
dataplane to the configured interfaces, and serve /metrics, /healthz and
/readyz until SIGTERM or SIGINT. SIGHUP, and with reload.watch a change of
the config file or a rule file, reloads config and rules as one
transaction: what is invalid changes nothing.

Settings come from the config file, then NATWALL_<KEY> environment
variables (nested keys joined with _, e.g. NATWALL_METRICS_LISTEN), then
flags, each overriding the one before.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			source := controlplane.LoadOptions{File: configFile, Flags: cmd.Flags()}
			cfg, err := controlplane.LoadConfig(source)
			if err != nil {
				return err
			}
			return controlplane.Run(cmd.Context(), cfg, source)
		},
	}
	cmd.Flags().StringVarP(&configFile, "config", "c", "", "YAML config file")
	controlplane.AddFlags(cmd.Flags())
	return cmd
}
