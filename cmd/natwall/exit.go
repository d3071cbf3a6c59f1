package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/natwall/natwall/controlplane"
	"github.com/natwall/natwall/controlplane/api"
	"github.com/natwall/natwall/rules"
)

// Exit codes, documented in README.md: scripts tell a typo from a broken
// config from a daemon that is down.
const (
	exitOK          = 0
	exitError       = 1 // anything else: the daemon failed, the kernel refused, ...
	exitUsage       = 2 // unknown command, flag or output format; bad arguments
	exitInvalid     = 3 // a config or rule file that does not validate
	exitUnreachable = 4 // no natwall daemon answers on the API socket
)

// usageError is a command line natwall cannot act on.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// invalidError is input that does not validate; its details, each
// file:line:col: reason, are printed one a line.
type invalidError struct {
	err     error
	details []string
}

func (e invalidError) Error() string { return e.err.Error() }
func (e invalidError) Unwrap() error { return e.err }

// exitCode is the exit code err calls for.
func exitCode(err error) int {
	var usage usageError
	var invalid invalidError
	var cfgErr *controlplane.ConfigError
	var ruleErrs rules.ErrorList
	var ruleErr *rules.Error
	var apiErr *api.Error
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &usage):
		return exitUsage
	case errors.Is(err, api.ErrUnreachable):
		return exitUnreachable
	case errors.As(err, &invalid), errors.As(err, &cfgErr), errors.As(err, &ruleErrs), errors.As(err, &ruleErr):
		return exitInvalid
	case errors.As(err, &apiErr) && apiErr.Invalid():
		return exitInvalid
	case errors.As(err, &apiErr) && apiErr.StatusCode == 400:
		// The daemon refused the request as the CLI built it.
		return exitUsage
	}
	return exitError
}

// errorText is err as main prints it after "natwall: ": problems in files
// one a line, each file:line:col: reason.
func errorText(err error) string {
	var invalid invalidError
	if errors.As(err, &invalid) && len(invalid.details) > 0 {
		return invalid.Error() + ":\n  " + strings.Join(invalid.details, "\n  ")
	}
	var ruleErrs rules.ErrorList
	if errors.As(err, &ruleErrs) && len(ruleErrs) > 1 {
		lines := make([]string, len(ruleErrs))
		for i, e := range ruleErrs {
			lines[i] = e.Error()
		}
		return fmt.Sprintf("%d errors in the rule files:\n  %s", len(ruleErrs), strings.Join(lines, "\n  "))
	}
	return err.Error()
}

// strictCommands makes every command of root fail as a usage error on an
// unknown subcommand, a missing one, bad arguments or bad flags, instead
// of printing help and exiting 0. Run it after every command is added.
func strictCommands(root *cobra.Command) {
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.HasSubCommands() && !c.Runnable() {
			c.Args = func(cmd *cobra.Command, args []string) error {
				if len(args) > 0 {
					return usageErrorf("unknown command %q for %q; run '%s --help'", args[0], cmd.CommandPath(), cmd.CommandPath())
				}
				return nil
			}
			c.RunE = func(cmd *cobra.Command, _ []string) error {
				var names []string
				for _, sub := range cmd.Commands() {
					if sub.IsAvailableCommand() {
						names = append(names, sub.Name())
					}
				}
				return usageErrorf("%s needs a subcommand: %s", cmd.CommandPath(), strings.Join(names, ", "))
			}
		} else if args := c.Args; args != nil {
			c.Args = func(cmd *cobra.Command, a []string) error {
				if err := args(cmd, a); err != nil {
					return usageError{err}
				}
				return nil
			}
		} else {
			c.Args = func(cmd *cobra.Command, a []string) error {
				if len(a) > 0 {
					return usageErrorf("unknown command %q for %q", a[0], cmd.CommandPath())
				}
				return nil
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}
