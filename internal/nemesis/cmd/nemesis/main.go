// Command nemesis runs one nemesis scenario (default the soak) outside go
// test, for long runs:
//
//	go run ./internal/nemesis/cmd/nemesis -duration 30m -seed 11 -out /tmp/soak
//	go run ./internal/nemesis/cmd/nemesis -scenario short -routing   # with interest routing
//
// It prints the verdict table, writes the history and verdict to -out when
// set, and exits 1 when the verdict fails.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/durasock/durasock/internal/nemesis"
)

func main() {
	nemesis.NodeMain() // a node process started by the harness never returns from here
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "nemesis:", err)
		os.Exit(1)
	}
}

func run() error {
	scenario := flag.String("scenario", "soak", "scenario to run")
	seed := flag.Int64("seed", 1, "seed of the nemesis schedule")
	duration := flag.Duration("duration", 0, "length of the nemesis program (0: the scenario's default)")
	rate := flag.Int("rate", 0, "total events per second (0: the scenario's default)")
	out := flag.String("out", "", "directory to write the history and verdict to")
	routing := flag.Bool("routing", false, "run with interest routing (inbox partitions, routed namespaces)")
	flag.Parse()
	sc, err := nemesis.ScenarioByName(*scenario)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	logger := log.New(os.Stderr, "", log.LstdFlags)
	start := time.Now()
	h, v, err := nemesis.RunScenario(ctx, sc, nemesis.Options{Seed: *seed, Duration: *duration, Rate: *rate,
		Routing: *routing, Logf: logger.Printf})
	if h == nil {
		return err
	}
	fmt.Println(v.Table())
	fmt.Println(nemesis.MarkdownHeader)
	fmt.Println(v.MarkdownRow(sc.Defect))
	if *out != "" {
		if werr := nemesis.Write(*out, h, v); werr != nil {
			return werr
		}
	}
	logger.Printf("%s, seed %d: %s in %v", v.Scenario, *seed, map[bool]string{true: "PASS", false: "FAIL"}[v.OK()], time.Since(start).Round(time.Second))
	if !v.OK() {
		if err != nil {
			logger.Print(err)
		}
		return fmt.Errorf("%s (seed %d): %s", v.Scenario, *seed, v.Failures())
	}
	return err
}
