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
dataplane to the configured interfaces, and serve /metrics and /healthz
until SIGTERM or SIGINT.

Settings come from the config file, then NATWALL_<KEY> environment
variables (nested keys joined with _, e.g. NATWALL_METRICS_LISTEN), then
flags, each overriding the one before.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := controlplane.LoadConfig(controlplane.LoadOptions{File: configFile, Flags: cmd.Flags()})
			if err != nil {
				return err
			}
			return controlplane.Run(cmd.Context(), cfg)
		},
	}
	cmd.Flags().StringVarP(&configFile, "config", "c", "", "YAML config file")
	controlplane.AddFlags(cmd.Flags())
	return cmd
}
