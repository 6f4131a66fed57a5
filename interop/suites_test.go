package interop

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/durasock/durasock/examples/protocol-suite/suiteserver"
)

// suiteTimeout bounds one run of a protocol suite file. A full run takes 5-15 s.
const suiteTimeout = 90 * time.Second

func TestEngineIOProtocolSuite(t *testing.T) {
	runProtocolSuite(t, "js/engineio-v4-suite.test.mjs")
}

func TestSocketIOProtocolSuite(t *testing.T) {
	runProtocolSuite(t, "js/socketio-v5-suite.test.mjs")
}

// runProtocolSuite runs a node:test port of an official protocol suite against the
// protocol-suite server on a real TCP port.
//
// The suites hard-code a 300 ms ping interval and assert, for example, that the
// packet after a CONNECT is the "auth" event and not a ping: a client process that
// is descheduled for 300 ms fails such a case against any server (the Node.js
// reference server too) on a loaded machine; one case aborts a poll 5 ms after
// sending it, which fails whenever the request has not reached the server by
// then. Cases that fail are therefore run again, alone, on a fresh server, up to
// twice; the test fails when a case fails every time, and each failure is logged.
func runProtocolSuite(t *testing.T, file string) {
	node := requireNode(t)
	url := startSuiteServer(t)
	failed, out, err := runNodeTests(t, node, url, file, nil)
	if err == nil {
		t.Logf("%s: %s", file, summary(out))
		return
	}
	for again := 1; ; again++ {
		if len(failed) == 0 {
			t.Fatalf("%s failed with no failing case reported: %v\n%s", file, err, out)
		}
		t.Logf("%s: run %d failed (%v), running the failed cases again:\n  %s\n%s",
			file, again, err, strings.Join(failed, "\n  "), out)
		failed, out, err = runNodeTests(t, node, startSuiteServer(t), file, failed)
		if err == nil {
			t.Logf("%s: the failed cases passed when run again: %s", file, summary(out))
			return
		}
		if again == 2 {
			t.Fatalf("%s: cases failed three times: %v\n%s", file, err, out)
		}
	}
}

func startSuiteServer(t *testing.T) string {
	t.Helper()
	srv := suiteserver.New(nil)
	return startHTTP(t, srv, srv.Close)
}

// runNodeTests runs node --test on file, limited to the named cases when names is
// not empty, and returns the names of the cases that failed.
func runNodeTests(t *testing.T, node, url, file string, names []string) (failed []string, out string, err error) {
	t.Helper()
	tap := filepath.Join(t.TempDir(), "report.tap")
	args := []string{
		"--test",
		"--test-reporter=spec", "--test-reporter-destination=stdout",
		"--test-reporter=tap", "--test-reporter-destination=" + tap,
	}
	for _, n := range names {
		args = append(args, "--test-name-pattern=^"+regexp.QuoteMeta(n)+"$")
	}
	args = append(args, file)
	out, err = run(suiteTimeout, url, node, args...)
	report, rerr := os.ReadFile(tap)
	if rerr != nil {
		return nil, out, fmt.Errorf("%w; no TAP report: %w", err, rerr)
	}
	return failedCases(string(report)), out, err
}

var notOK = regexp.MustCompile(`^\s*not ok \d+ - (.*?)(?: # .*)?$`)

// failedCases returns the names of the failed test cases (not suites) of a TAP
// report written by node's tap reporter.
func failedCases(tap string) []string {
	lines := strings.Split(tap, "\n")
	var names []string
	for i, line := range lines {
		m := notOK.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		suite := false
		for _, l := range lines[i+1:] {
			l = strings.TrimSpace(l)
			if l == "..." {
				break
			}
			if l == "type: 'suite'" {
				suite = true
			}
		}
		if !suite {
			name := strings.NewReplacer(`\#`, "#", `\\`, `\`).Replace(m[1])
			names = append(names, name)
		}
	}
	return names
}

// summary returns the counts node prints at the end of a run.
func summary(out string) string {
	var parts []string
	for _, line := range strings.Split(out, "\n") {
		for _, key := range []string{"tests", "pass", "fail", "duration_ms"} {
			if v, ok := strings.CutPrefix(line, "ℹ "+key+" "); ok {
				parts = append(parts, key+" "+v)
			}
		}
	}
	return strings.Join(parts, ", ")
}
