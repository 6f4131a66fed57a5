package nemesis

import (
	"context"
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

var (
	scenarioFlag = flag.String("nemesis.scenario", "short", "scenario to run (see Scenarios); \"all\" runs every one; not given: \"short\" without and with routing")
	seedFlag     = flag.Int64("nemesis.seed", 1, "seed of the nemesis schedule")
	durationFlag = flag.Duration("nemesis.duration", 0, "length of the nemesis program (0: the scenario's default)")
	rateFlag     = flag.Int("nemesis.rate", 0, "total events per second (0: the scenario's default)")
	outFlag      = flag.String("nemesis.out", "", "directory to write histories and verdicts to")
	tableFlag    = flag.Bool("nemesis.table", false, "print the verdicts as the markdown table of docs/RELIABILITY.md")
	logsFlag     = flag.Bool("nemesis.logs", false, "print the node logs of passing runs too")
	opsFlag      = flag.String("nemesis.ops", "", "comma-separated operations: the scenario runs seeded random rounds of these instead of its program")
	routingFlag  = flag.Bool("nemesis.routing", false, "run the scenario(s) with interest routing (inbox partitions, routed namespaces)")
)

func TestMain(m *testing.M) {
	NodeMain() // a node process started by the harness never returns from here
	goleak.VerifyTestMain(m)
}

// TestNemesis runs the scenario named by -nemesis.scenario, with interest
// routing when -nemesis.routing is set, and fails on any unaccounted loss,
// duplicate, reorder or unexplained client cut. Without any of
// -nemesis.scenario, -nemesis.routing and -nemesis.ops (the default test
// suite) it runs "short" twice, seed 1: without routing, then with it.
func TestNemesis(t *testing.T) {
	var run []Scenario
	if *scenarioFlag == "all" {
		run = Scenarios
	} else {
		sc, err := ScenarioByName(*scenarioFlag)
		if err != nil {
			t.Fatal(err)
		}
		run = []Scenario{sc}
	}
	if *opsFlag != "" {
		ops := strings.Split(*opsFlag, ",")
		for i := range run {
			run[i].Program = Random(ops, 2*time.Second, 4*time.Second)
			run[i].Name += "[" + *opsFlag + "]"
			if run[i].Duration == 0 {
				run[i].Duration = 30 * time.Second
			}
		}
	}
	routings := []bool{*routingFlag}
	if defaultRun() {
		routings = []bool{false, true}
	}
	var rows []string
	for _, sc := range run {
		for _, routing := range routings {
			runScenario(t, sc, routing, &rows)
		}
	}
	if *tableFlag {
		out := MarkdownHeader + "\n"
		for _, r := range rows {
			out += r + "\n"
		}
		t.Log("\n" + out)
		if *outFlag != "" {
			if err := os.WriteFile(*outFlag+"/table.md", []byte(out), 0o644); err != nil {
				t.Error(err)
			}
		}
	}
}

// defaultRun reports whether TestNemesis runs as in the default test suite:
// none of -nemesis.scenario, -nemesis.routing and -nemesis.ops given.
func defaultRun() bool {
	given := false
	flag.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "nemesis.scenario", "nemesis.routing", "nemesis.ops":
			given = true
		}
	})
	return !given
}

// runScenario runs sc (with interest routing when routing) as a subtest and
// adds its row of the markdown table to rows.
func runScenario(t *testing.T, sc Scenario, routing bool, rows *[]string) {
	name := sc.Name
	if routing {
		name += "+routing"
	}
	t.Run(name, func(t *testing.T) {
		if *scenarioFlag == "all" && sc.Name == "soak" && *durationFlag == 0 {
			t.Skip("soak runs only when asked by name or with -nemesis.duration")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
		defer cancel()
		h, v, err := RunScenario(ctx, sc, Options{Seed: *seedFlag, Duration: *durationFlag, Rate: *rateFlag,
			Routing: routing, Logf: t.Logf})
		if h == nil {
			t.Fatal(err)
		}
		t.Log("\n" + v.Table())
		*rows = append(*rows, v.MarkdownRow(sc.Defect))
		if *outFlag != "" {
			if werr := Write(*outFlag, h, v); werr != nil {
				t.Error(werr)
			}
		}
		if err != nil {
			if !v.OK() || *logsFlag {
				t.Log(err)
			} else {
				t.Error(err)
			}
		}
		if !v.OK() {
			t.Errorf("%s (seed %d): %s", name, *seedFlag, v.Failures())
		}
	})
}
