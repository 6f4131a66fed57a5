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
	scenarioFlag = flag.String("nemesis.scenario", "short", "scenario to run (see Scenarios); \"all\" runs every one")
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

// TestNemesis runs the scenario named by -nemesis.scenario (default "short",
// the seeded run of the default test suite), with interest routing when
// -nemesis.routing is set, and fails on any unaccounted loss, duplicate,
// reorder or unexplained client cut.
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
	var rows []string
	for _, sc := range run {
		name := sc.Name
		if *routingFlag {
			name += "+routing"
		}
		t.Run(name, func(t *testing.T) {
			if *scenarioFlag == "all" && sc.Name == "soak" && *durationFlag == 0 {
				t.Skip("soak runs only when asked by name or with -nemesis.duration")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
			defer cancel()
			h, v, err := RunScenario(ctx, sc, Options{Seed: *seedFlag, Duration: *durationFlag, Rate: *rateFlag,
				Routing: *routingFlag, Logf: t.Logf})
			if h == nil {
				t.Fatal(err)
			}
			t.Log("\n" + v.Table())
			rows = append(rows, v.MarkdownRow(sc.Defect))
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
				t.Errorf("%s (seed %d): %s", sc.Name, *seedFlag, v.Failures())
			}
		})
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
