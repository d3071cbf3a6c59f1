// natwall-bench runs natwall's benchmarks against Linux forwarding,
// iptables and nftables, and writes the results as a table, JSON and
// docs/benchmarks.md. It needs root. `make bench` and `make bench-quick`
// run it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/natwall/natwall/test/bench"
)

func main() {
	quick := flag.Bool("quick", false, "a short run for development (N = 10 and 1,000, one repetition)")
	jsonPath := flag.String("json", "", "write the results as JSON to this file")
	mdPath := flag.String("markdown", "", "write the results page (docs/benchmarks.md) to this file")
	only := flag.String("configs", "", "comma-separated configuration IDs to run (default: all)")
	ruleCounts := flag.String("rules", "", "comma-separated rule counts (default: the mode's)")
	reps := flag.Int("reps", 0, "repetitions (default: the mode's)")
	duration := flag.Duration("duration", 0, "measuring time of one forwarding trial (default: the mode's)")
	flag.Parse()

	opts := bench.FullOptions()
	command := "make bench"
	if *quick {
		opts, command = bench.QuickOptions(), "make bench-quick"
	}
	if *only != "" {
		opts.Configs = strings.Split(*only, ",")
	}
	if *ruleCounts != "" {
		opts.RuleCounts = nil
		for _, s := range strings.Split(*ruleCounts, ",") {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 {
				fail(fmt.Errorf("-rules: %q is not a rule count", s))
			}
			opts.RuleCounts = append(opts.RuleCounts, n)
		}
	}
	if *reps > 0 {
		opts.Reps = *reps
	}
	if *duration > 0 {
		opts.Duration = *duration
	}
	opts.Progress = os.Stderr

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	report, err := bench.Run(ctx, opts)
	if err != nil {
		fail(err)
	}
	report.WriteTable(os.Stdout)
	if *jsonPath != "" {
		data, err := json.MarshalIndent(report, "", "  ")
		if err == nil {
			err = os.WriteFile(*jsonPath, append(data, '\n'), 0o644)
		}
		if err != nil {
			fail(err)
		}
	}
	if *mdPath != "" {
		f, err := os.Create(*mdPath)
		if err == nil {
			err = report.WriteMarkdown(f, command)
			err = errors.Join(err, f.Close())
		}
		if err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "natwall-bench:", err)
	os.Exit(1)
}
