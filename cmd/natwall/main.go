// Command natwall is the natwall firewall and NAT gateway: `natwall run`
// is the daemon; the other subcommands inspect and operate it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// rootCmd is the natwall command. Each subcommand lives in its own file and
// registers itself from that file's init:
//
//	func init() { rootCmd.AddCommand(newDemoCmd()) }
var rootCmd = newRootCmd()

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "natwall",
		Short: "XDP firewall and NAT gateway for cloud VMs",
		// Errors are printed once, by main; usage only for usage errors.
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.AddCommand(newRunCmd(), newVersionCmd())
	return root
}

// finishRoot adds shell completion and help, and makes every command
// strict about its arguments; call it once every init has added its
// commands.
func finishRoot(root *cobra.Command) {
	root.InitDefaultCompletionCmd()
	root.SetHelpCommand(&cobra.Command{
		Use:   "help [command]",
		Short: "Help about any command",
		RunE: func(cmd *cobra.Command, args []string) error {
			target, rest, err := root.Find(args)
			if err != nil || len(rest) > 0 {
				return usageErrorf("no help topic %q; run 'natwall help'", strings.Join(args, " "))
			}
			target.SetOut(cmd.OutOrStdout())
			return target.Help()
		},
	})
	strictCommands(root)
}

func main() {
	// SIGTERM (systemd, container runtimes) and SIGINT cancel the context;
	// commands shut down from it. A second signal kills the process.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	finishRoot(rootCmd)
	err := rootCmd.ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "natwall: %s\n", errorText(err))
		os.Exit(exitCode(err))
	}
}
