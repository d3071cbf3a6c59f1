package main

import (
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/natwall/natwall/controlplane"
)

func init() { rootCmd.AddCommand(newTeardownCmd()) }

func newTeardownCmd() *cobra.Command {
	var configFile, pinDir string
	var keepForwarding bool
	cmd := &cobra.Command{
		Use:   "teardown",
		Short: "Detach natwall and remove everything it pinned, with no daemon running",
		Long: `teardown removes what natwall attached and pinned: its XDP program from
every NIC, and its maps and links under the pin directory, whatever natwall
build left them (on_exit: keep leaves them, so that the dataplane enforces
while the daemon is down). All tracked flows are lost.

It first turns the kernel's forwarding off, since without natwall the
kernel would forward with no policy and no NAT; --keep-forwarding leaves it.
It refuses while a natwall daemon holds the pin directory.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("pin-dir") && configFile != "" {
				cfg, err := controlplane.LoadConfig(controlplane.LoadOptions{File: configFile})
				if err != nil {
					return err
				}
				pinDir = cfg.PinDir
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			return controlplane.Teardown(pinDir, keepForwarding, controlplane.ProcSys, log)
		},
	}
	cmd.Flags().StringVarP(&configFile, "config", "c", "", "natwall's config file, for its pin_dir")
	cmd.Flags().StringVar(&pinDir, "pin-dir", controlplane.DefaultPinDir, "natwall's bpffs pin directory")
	cmd.Flags().BoolVar(&keepForwarding, "keep-forwarding", false, "leave the kernel's forwarding on")
	return cmd
}
