package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/durasock/durasock/internal/redistest"
)

// TestDocs runs what README.md and docs/*.md tell a reader to run, so that the
// docs stay true:
//   - every Go block compiles and passes go vet (a fragment is wrapped in a
//     main function with the imports it names);
//   - every shell block passes bash -n, and each of its commands is checked
//     by kind: durasock invocations are parsed with the binary's real flags and,
//     where they reach only this machine, run (free ports, a Redis of the
//     test's own) until /readyz answers and SIGTERM drains them; curl commands
//     run against a node configured with the tokens they carry; go commands
//     name packages, tests and test flags that exist; other tools (redis-cli,
//     kill, apt-get) are only syntax-checked. A command of an unknown kind
//     fails the test, so that a new kind of command gets a rule here.
func TestDocs(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	files := []string{filepath.Join(root, "README.md")}
	more, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, more...)
	var goSnips, shSnips []snippet
	for _, f := range files {
		for _, s := range extractSnippets(t, f) {
			switch s.lang {
			case "go":
				goSnips = append(goSnips, s)
			case "sh":
				shSnips = append(shSnips, s)
			}
		}
	}
	if len(goSnips) == 0 || len(shSnips) < 5 {
		t.Fatalf("found %d Go and %d shell snippets: the extraction is broken", len(goSnips), len(shSnips))
	}
	// The two halves run side by side: one waits on the compiler, the other on
	// the nodes it starts.
	t.Run("go", func(t *testing.T) {
		t.Parallel()
		checkGoSnippets(t, root, goSnips)
	})
	t.Run("shell", func(t *testing.T) {
		t.Parallel()
		d := &docRunner{t: t, root: root}
		for _, s := range shSnips {
			d.snippet(s)
		}
		t.Logf("shell: %d snippets, %d commands: %d durasock runs, %d flag checks only, %d curl runs, %d go checks, %d syntax only",
			len(shSnips), d.commands, d.runs, d.flagOnly, d.curls, d.goCmds, d.syntaxOnly)
	})
}

// snippet is one code block of a Markdown file.
type snippet struct {
	file string
	line int
	lang string // "go", "sh", or the fence's info string
	text string
}

func (s snippet) String() string { return fmt.Sprintf("%s:%d", filepath.Base(s.file), s.line) }

// shellStart are the first words of an indented (4-space) block that make it
// a shell snippet.
var shellStart = regexp.MustCompile(`^(go|curl|durasock|\./durasock|\./scripts/\S+|redis-server|redis-cli)\b`)

func extractSnippets(t *testing.T, path string) []snippet {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	var out []snippet
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if info, ok := strings.CutPrefix(strings.TrimSpace(l), "```"); ok && strings.HasPrefix(strings.TrimSpace(l), "```") {
			start := i + 1
			j := start
			for j < len(lines) && strings.TrimSpace(lines[j]) != "```" {
				j++
			}
			lang := strings.TrimSpace(info)
			switch lang {
			case "sh", "bash", "shell", "console":
				lang = "sh"
			}
			out = append(out, snippet{file: path, line: start, lang: lang, text: strings.Join(lines[start:j], "\n")})
			i = j
			continue
		}
		// An indented block after a blank line.
		if strings.HasPrefix(l, "    ") && (i == 0 || strings.TrimSpace(lines[i-1]) == "") && shellStart.MatchString(strings.TrimSpace(l)) {
			start := i
			var body []string
			for i < len(lines) && (strings.HasPrefix(lines[i], "    ") || strings.TrimSpace(lines[i]) == "") {
				body = append(body, strings.TrimPrefix(lines[i], "    "))
				i++
			}
			out = append(out, snippet{file: path, line: start + 1, lang: "sh", text: strings.TrimSpace(strings.Join(body, "\n"))})
		}
	}
	return out
}

// goImports are the packages a Go fragment may use, by the name it uses.
var goImports = map[string]string{
	"context": "context", "log": "log", "http": "net/http", "time": "time", "fmt": "fmt",
	"errors": "errors", "slog": "log/slog", "os": "os", "json": "encoding/json",
	"socketio": "github.com/durasock/durasock/socketio", "engineio": "github.com/durasock/durasock/engineio",
	"cluster": "github.com/durasock/durasock/cluster", "redisbus": "github.com/durasock/durasock/bus/redisbus",
	"bus": "github.com/durasock/durasock/bus", "emitter": "github.com/durasock/durasock/emitter",
	"adapter": "github.com/durasock/durasock/adapter", "parser": "github.com/durasock/durasock/parser",
	"admin": "github.com/durasock/durasock/admin",
}

// goStandIns are values a fragment may use without declaring them: the
// surrounding program of the docs has them.
var goStandIns = []struct{ name, decl string }{
	{"srv", "srv := socketio.NewServer(nil)"},
	{"bcryptHash", `bcryptHash := "$2a$10$abcdefghijklmnopqrstuuN4r0BwDRvVwh2Y9KxZ1Y2d3nP4b5qWe"`},
}

// checkGoSnippets builds every Go snippet as a package of a scratch module
// that uses this checkout, then vets them.
func checkGoSnippets(t *testing.T, root string, snips []snippet) {
	dir := t.TempDir()
	gomod := fmt.Sprintf("module docsnippets\n\ngo 1.26\n\nrequire github.com/durasock/durasock v0.0.0\n\nreplace github.com/durasock/durasock => %s\n", root)
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644); err != nil {
		t.Fatal(err)
	}
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.sum"), sum, 0o644); err != nil {
		t.Fatal(err)
	}
	where := map[string]snippet{}
	for i, s := range snips {
		// Each snippet is a package of its own, not a main package: compiled and
		// type-checked like one, without the minutes of linking every binary.
		pkg := fmt.Sprintf("s%02d", i)
		src := s.text
		if !strings.HasPrefix(strings.TrimSpace(src), "package ") {
			src = wrapFragment(src)
		}
		src = regexp.MustCompile(`(?m)^package main$`).ReplaceAllString(src, "package "+pkg)
		where[pkg] = s
		if err := os.MkdirAll(filepath.Join(dir, pkg), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, pkg, "main.go"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"build", "./..."}, {"vet", "./..."}} {
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off")
		began := time.Now()
		out, err := cmd.CombinedOutput()
		t.Logf("go %s: %v", strings.Join(args, " "), time.Since(began).Round(time.Millisecond))
		if err != nil {
			msg := string(out)
			for pkg, s := range where {
				msg = strings.ReplaceAll(msg, "./"+pkg+"/main.go", s.String()+" (snippet)")
				msg = strings.ReplaceAll(msg, pkg+"/main.go", s.String()+" (snippet)")
			}
			t.Fatalf("go %s of the Go snippets: %v\n%s", strings.Join(args, " "), err, msg)
		}
	}
	t.Logf("go: %d snippets compile and vet", len(snips))
}

// wrapFragment turns statements into a main package with the imports they
// name, stand-ins for the values they use without declaring them, and a use
// of every variable they declare (a fragment shows a step, not a program).
func wrapFragment(body string) string {
	var pre, post []string
	declared := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s*([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)\s*:=`).FindAllStringSubmatch(body, -1) {
		for _, name := range strings.Split(m[1], ",") {
			if name = strings.TrimSpace(name); name != "_" && !declared[name] {
				declared[name] = true
				post = append(post, "\t_ = "+name)
			}
		}
	}
	for _, si := range goStandIns {
		if !declared[si.name] && regexp.MustCompile(`\b`+si.name+`\b`).MatchString(body) {
			pre = append(pre, "\t"+si.decl)
		}
	}
	code := strings.Join(pre, "\n") + "\n" + body + "\n" + strings.Join(post, "\n")
	var imports []string
	for name, path := range goImports {
		if regexp.MustCompile(`\b` + name + `\.`).MatchString(code) {
			imports = append(imports, fmt.Sprintf("%q", path))
		}
	}
	if !slices.Contains(imports, `"context"`) {
		imports = append(imports, `"context"`)
	}
	slices.Sort(imports)
	return "package main\n\nimport (\n\t" + strings.Join(imports, "\n\t") + "\n)\n\nfunc main() {\n\tctx := context.Background()\n\t_ = ctx\n" + code + "\n}\n"
}

// docRunner checks shell snippets.
type docRunner struct {
	t     *testing.T
	root  string
	bin   string            // the durasock binary, built on first use
	redis *redistest.Server // the Redis durasock runs use, started on first use
	// counts for the log
	commands, runs, flagOnly, curls, goCmds, syntaxOnly int
}

func (d *docRunner) snippet(s snippet) {
	t := d.t
	if out, err := exec.Command("bash", "-n", "-c", s.text).CombinedOutput(); err != nil {
		t.Errorf("%s: bash -n: %v\n%s", s, err, out)
		return
	}
	for _, line := range logicalLines(s.text) {
		for _, cmd := range splitCommands(line) {
			d.commands++
			d.command(s, cmd)
		}
	}
}

// logicalLines joins continued lines and drops comments and blank lines.
func logicalLines(text string) []string {
	var out []string
	cur := ""
	for _, l := range strings.Split(text, "\n") {
		if strings.HasSuffix(l, "\\") {
			cur += strings.TrimSuffix(l, "\\") + " "
			continue
		}
		cur += l
		if s := strings.TrimSpace(cur); s != "" && !strings.HasPrefix(s, "#") {
			out = append(out, s)
		}
		cur = ""
	}
	return out
}

// splitCommands splits a line into commands at unquoted ;, &&, ||, | and &,
// each as words with quotes removed; an unquoted # ends the line.
func splitCommands(line string) [][]string {
	var cmds [][]string
	var words []string
	var w strings.Builder
	inWord := false
	flushWord := func() {
		if inWord {
			words = append(words, w.String())
			w.Reset()
			inWord = false
		}
	}
	flushCmd := func() {
		flushWord()
		if len(words) > 0 {
			cmds = append(cmds, words)
		}
		words = nil
	}
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				j = len(line) - i - 1
			}
			w.WriteString(line[i+1 : i+1+j])
			inWord = true
			i += j + 1
		case c == '"':
			j := i + 1
			for j < len(line) && line[j] != '"' {
				if line[j] == '\\' && j+1 < len(line) {
					j++
				}
				j++
			}
			w.WriteString(strings.ReplaceAll(line[i+1:min(j, len(line))], `\"`, `"`))
			inWord = true
			i = j
		case c == '#' && !inWord:
			flushCmd()
			return cmds
		case c == ' ' || c == '\t':
			flushWord()
		case c == ';' || c == '|' || c == '&':
			flushCmd()
			if i+1 < len(line) && (line[i+1] == '&' || line[i+1] == '|') {
				i++
			}
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	flushCmd()
	return cmds
}

// syntaxOnlyTools are commands the docs use whose effect the test does not
// reproduce; bash -n checked them.
var syntaxOnlyTools = map[string]bool{
	"redis-server": true, "redis-cli": true, "kill": true, "apt-get": true, "sudo": true,
	"echo": true, "cat": true, "cd": true, "export": true, "npm": true, "htpasswd": true,
}

func (d *docRunner) command(s snippet, words []string) {
	t := d.t
	env := map[string]string{}
	for len(words) > 0 && regexp.MustCompile(`^[A-Z_][A-Z0-9_]*=`).MatchString(words[0]) {
		k, v, _ := strings.Cut(words[0], "=")
		env[k] = v
		words = words[1:]
	}
	if len(words) == 0 {
		return
	}
	switch name := words[0]; {
	case name == "durasock" || name == "./durasock":
		d.durasock(s, words[1:], env)
	case name == "go":
		d.goCommand(s, words[1:], env)
	case name == "curl":
		d.curl(s, words[1:])
	case strings.HasPrefix(name, "./scripts/") || strings.HasPrefix(name, "scripts/"):
		name = "./" + strings.TrimPrefix(name, "./")
		fi, err := os.Stat(filepath.Join(d.root, name))
		if err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("%s: %s is not an executable script of the repository", s, name)
		}
		if name == "./scripts/run" && len(words) > 1 {
			// It runs go run ./cmd/durasock with its arguments: check them,
			// without the npm and apt-get steps of the script.
			d.durasockFlagsOnly(s, words[1:], env)
			return
		}
		d.syntaxOnly++
	case syntaxOnlyTools[name]:
		d.syntaxOnly++
	default:
		t.Errorf("%s: no rule checks the command %q: add one to TestDocs", s, strings.Join(words, " "))
	}
}

// goCommand checks go run, build, install, get, test.
func (d *docRunner) goCommand(s snippet, args []string, env map[string]string) {
	t := d.t
	d.goCmds++
	if len(args) == 0 {
		t.Errorf("%s: bare go command", s)
		return
	}
	sub, rest := args[0], args[1:]
	pkgDir := func(p string) bool {
		p = strings.TrimSuffix(p, "/...")
		if m, ok := strings.CutPrefix(p, "github.com/durasock/durasock"); ok {
			p = "." + m
			if p == "." {
				return true
			}
		}
		if !strings.HasPrefix(p, "./") {
			return false
		}
		fi, err := os.Stat(filepath.Join(d.root, p))
		return err == nil && fi.IsDir()
	}
	switch sub {
	case "version", "env":
	case "run":
		var pkg string
		var i int
		for i = 0; i < len(rest); i++ {
			if !strings.HasPrefix(rest[i], "-") {
				pkg = rest[i]
				break
			}
		}
		if pkg == "./cmd/durasock" {
			d.goCmds--
			d.durasock(s, rest[i+1:], env)
			return
		}
		if !pkgDir(pkg) {
			t.Errorf("%s: go run %s: no such package", s, pkg)
		}
	case "build", "install", "get":
		for i := 0; i < len(rest); i++ {
			a := rest[i]
			if a == "-o" || a == "-ldflags" || a == "-tags" {
				i++
				continue
			}
			if strings.HasPrefix(a, "-") {
				continue
			}
			p, _, _ := strings.Cut(a, "@")
			if sub != "build" && !strings.HasPrefix(p, "github.com/durasock/durasock") {
				t.Errorf("%s: go %s %s: not this module (github.com/durasock/durasock)", s, sub, a)
			}
			if !pkgDir(p) {
				t.Errorf("%s: go %s %s: no such package in this module", s, sub, a)
			}
		}
	case "test":
		d.goTest(s, rest)
	default:
		t.Errorf("%s: no rule checks go %s", s, sub)
	}
}

// goTest checks that the packages, the -run tests and the custom test flags
// of a go test command exist.
func (d *docRunner) goTest(s snippet, args []string) {
	t := d.t
	var pkgs, runs, custom []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-run" || a == "-bench":
			if i+1 < len(args) {
				runs = append(runs, args[i+1])
				i++
			}
		case strings.HasPrefix(a, "-") && strings.Contains(strings.SplitN(a, "=", 2)[0], "."):
			custom = append(custom, strings.TrimLeft(strings.SplitN(a, "=", 2)[0], "-"))
			if !strings.Contains(a, "=") && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				i++
			}
		case strings.HasPrefix(a, "-"):
			// A standard flag; its value, if any, follows.
			if !strings.Contains(a, "=") && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") && !strings.HasPrefix(args[i+1], "./") {
				i++
			}
		default:
			pkgs = append(pkgs, a)
		}
	}
	var sources []byte
	for _, p := range pkgs {
		dir := filepath.Join(d.root, strings.TrimSuffix(p, "/..."))
		files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
		if err != nil || len(files) == 0 {
			t.Errorf("%s: go test %s: no tests there", s, p)
			continue
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			sources = append(sources, b...)
		}
	}
	for _, r := range runs {
		name := strings.Trim(strings.SplitN(r, "/", 2)[0], "^$")
		if !regexp.MustCompile(`func (Test|Benchmark)?` + regexp.QuoteMeta(strings.TrimPrefix(strings.TrimPrefix(name, "Test"), "Benchmark")) + `\w*\(`).Match(sources) {
			t.Errorf("%s: go test -run %s: no such test in %v", s, r, pkgs)
		}
	}
	for _, f := range custom {
		if !bytes.Contains(sources, []byte(`"`+f+`"`)) {
			t.Errorf("%s: go test -%s: no such flag in %v", s, f, pkgs)
		}
	}
}

// durasock checks an invocation with the binary's flags and, when it reaches
// only this machine, runs it.
func (d *docRunner) durasock(s snippet, args []string, env map[string]string) {
	t := d.t
	args = d.standIns(args)
	if len(args) > 0 && args[0] == "cluster" {
		// The local cluster starts redis-server and a browser: checked, not run.
		d.durasockFlagsOnly(s, args, env)
		return
	}
	getenv := func(k string) string { return env[k] }
	cfg, err := parseConfig(args, getenv, io.Discard)
	if err != nil {
		t.Errorf("%s: durasock %s: %v", s, strings.Join(args, " "), err)
		return
	}
	if cfg.Version {
		d.runs++
		out, err := exec.Command(d.binary(), "-version").Output()
		if err != nil || !strings.HasPrefix(string(out), "durasock ") {
			t.Errorf("%s: durasock -version: %v %q", s, err, out)
		}
		return
	}
	if cfg.RedisURL != "" && !localURL(cfg.RedisURL) {
		d.flagOnly++ // an address of the reader's network: never contacted
		return
	}
	d.runs++
	// Run it: the same flags, with free ports, a directory and a Redis of the test.
	run := slices.Clone(args)
	set := func(flag, value string) {
		for i := 0; i < len(run); i++ {
			name, _, hasValue := strings.Cut(strings.TrimLeft(run[i], "-"), "=")
			if name != flag || !strings.HasPrefix(run[i], "-") {
				continue
			}
			if hasValue {
				run[i] = "-" + flag + "=" + value
			} else if i+1 < len(run) {
				run[i+1] = value
			}
			return
		}
		run = append(run, "-"+flag, value)
	}
	addr := freeAddr(t)
	set("addr", addr)
	if cfg.AdminAddr != "" {
		set("admin-addr", freeAddr(t))
	}
	if cfg.Outbox.Dir != "" {
		set("outbox-dir", t.TempDir())
	}
	if cfg.RedisURL != "" {
		set("redis", d.redisURL())
	}
	cmd := exec.Command(d.binary(), run...)
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var logs syncBuffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-exited:
			t.Errorf("%s: durasock %s exited at start: %v\n%s", s, strings.Join(run, " "), err, logs.String())
			return
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: durasock %s never became ready\n%s", s, strings.Join(run, " "), logs.String())
			return
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("%s: durasock %s: exit after SIGTERM: %v\n%s", s, strings.Join(run, " "), err, logs.String())
		}
	case <-time.After(cfg.ShutdownDelay + cfg.DrainTimeout + 20*time.Second):
		t.Errorf("%s: durasock %s still runs after SIGTERM\n%s", s, strings.Join(run, " "), logs.String())
	}
	if l := logs.String(); !strings.Contains(l, "durasock listening") || !strings.Contains(l, "msg=drained") {
		t.Errorf("%s: durasock %s: logs lack the listening or drained line\n%s", s, strings.Join(run, " "), l)
	}
}

// standIns replaces, in durasock arguments, what the reader provides: the
// value of a command substitution ($(...)) and directories they install.
func (d *docRunner) standIns(args []string) []string {
	out := slices.Clone(args)
	for i := 1; i < len(out); i++ {
		flag := strings.TrimLeft(out[i-1], "-")
		switch {
		case flag == "admin-ui-password-hash" && strings.Contains(out[i], "$("):
			h, err := bcrypt.GenerateFromPassword([]byte("a-good-password"), bcrypt.MinCost)
			if err != nil {
				d.t.Fatal(err)
			}
			out[i] = string(h)
		case flag == "admin-ui-dir" || flag == "demo-client-dir":
			dir := d.t.TempDir()
			for _, f := range []string{"index.html", "socket.io.min.js", "socket.io.js"} {
				if err := os.WriteFile(filepath.Join(dir, f), []byte("stand-in"), 0o644); err != nil {
					d.t.Fatal(err)
				}
			}
			out[i] = dir
		case strings.Contains(out[i], "$("):
			d.t.Errorf("durasock %s: no stand-in for the command substitution in -%s", strings.Join(args, " "), flag)
		}
	}
	return out
}

// durasockFlagsOnly checks an invocation's flags (those of the cluster
// subcommand with "cluster" first) without running it.
func (d *docRunner) durasockFlagsOnly(s snippet, args []string, env map[string]string) {
	d.flagOnly++
	args = d.standIns(args)
	if len(args) > 0 && args[0] == "cluster" {
		for _, a := range args[1:] {
			if strings.HasPrefix(a, "-") && (a == "-h" || a == "-help") {
				return
			}
		}
		if len(args) > 1 {
			d.t.Errorf("%s: durasock cluster %s: flags of the cluster subcommand have no rule in TestDocs", s, strings.Join(args[1:], " "))
		}
		return
	}
	if _, err := parseConfig(args, func(k string) string { return env[k] }, io.Discard); err != nil {
		d.t.Errorf("%s: durasock %s: %v", s, strings.Join(args, " "), err)
	}
}

// localURL says whether every host of a Redis URL is this machine.
func localURL(raw string) bool {
	red := redactURL(raw)
	_, rest, ok := strings.Cut(red, "://")
	if !ok {
		return false
	}
	if strings.HasPrefix(raw, "unix://") {
		return false // a socket path of the reader's machine
	}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		rest = rest[at+1:]
	}
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		rest = rest[:i]
	}
	for _, hp := range strings.Split(rest, ",") {
		host, _, err := net.SplitHostPort(hp)
		if err != nil {
			host = hp
		}
		if host != "localhost" {
			if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
				return false
			}
		}
	}
	return true
}

func (d *docRunner) binary() string {
	if d.bin == "" {
		d.bin = buildBinary(d.t)
	}
	return d.bin
}

func (d *docRunner) redisURL() string {
	if d.redis == nil {
		d.redis = redistest.Standalone(d.t)
	}
	return d.redis.URL()
}

// curl runs a curl command against a node given the tokens the command
// carries, and wants a 2xx answer.
func (d *docRunner) curl(s snippet, args []string) {
	t := d.t
	d.curls++
	method, body, target := "GET", "", ""
	header := map[string]string{}
	for i := 0; i < len(args); i++ {
		switch a := args[i]; a {
		case "-s", "-S", "-f", "-i", "-v", "--silent", "--fail":
		case "-H", "--header":
			i++
			k, v, _ := strings.Cut(args[i], ":")
			header[strings.TrimSpace(k)] = strings.TrimSpace(v)
		case "-d", "--data", "--data-raw":
			i++
			body, method = args[i], "POST"
		case "-X", "--request":
			i++
			method = args[i]
		default:
			if strings.HasPrefix(a, "-") {
				t.Errorf("%s: curl option %s has no rule in TestDocs", s, a)
				return
			}
			target = a
		}
	}
	if !strings.Contains(target, "://") {
		target = "http://" + target
	}
	u, err := url.Parse(target)
	if err != nil || (u.Hostname() != "localhost" && u.Hostname() != "127.0.0.1") {
		t.Errorf("%s: curl %s: the docs' curl commands target this machine", s, target)
		return
	}
	var flags []string
	if token, ok := strings.CutPrefix(header["Authorization"], "Bearer "); ok {
		if u.Path == "/api/emit" {
			flags = append(flags, "-emit-token", token)
		} else {
			flags = append(flags, "-admin-token", token)
		}
	}
	r := launch(t, nil, flags...)
	code, _, answer := request(t, method, r.url+u.RequestURI(), header, body)
	if code/100 != 2 {
		t.Errorf("%s: curl %s: %d %s", s, target, code, answer)
	}
	if err := r.stop(); err != nil {
		t.Errorf("%s: drain after curl: %v", s, err)
	}
}

// TestDocsFlagTable: the flag table of docs/OPERATIONS.md lists every flag of
// the binary, and no flag it does not have.
func TestDocsFlagTable(t *testing.T) {
	b, err := os.ReadFile("../../docs/OPERATIONS.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	cell := regexp.MustCompile("`(-[a-z][a-z0-9-]*)`")
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, "| `-") {
			continue
		}
		first := strings.SplitN(l, " | ", 2)[0]
		for _, m := range cell.FindAllStringSubmatch(first, -1) {
			documented[strings.TrimPrefix(m[1], "-")] = true
		}
	}
	fs, _ := flagSet(&config{})
	fs.VisitAll(func(f *flag.Flag) {
		if !documented[f.Name] {
			t.Errorf("flag -%s is not in the flag table of docs/OPERATIONS.md", f.Name)
		}
		delete(documented, f.Name)
	})
	for name := range documented {
		t.Errorf("docs/OPERATIONS.md documents -%s, which the binary does not have", name)
	}
}

// TestDocsProxyConfigs checks every nginx and HAProxy configuration in README
// and docs with the real programs (nginx -t, haproxy -c), installed by
// scripts/test: a load balancer config a user copies must load.
func TestDocsProxyConfigs(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, filepath.Join(root, "README.md"))
	checked := 0
	for _, f := range files {
		for _, s := range extractSnippets(t, f) {
			switch s.lang {
			case "nginx":
				checkNginx(t, s)
			case "haproxy":
				checkHAProxy(t, s)
			default:
				continue
			}
			checked++
		}
	}
	if checked < 2 {
		t.Fatalf("found %d proxy configurations; README has an nginx and an HAProxy one", checked)
	}
}

// sbinTool finds a program that Debian installs in /usr/sbin, which a user's
// PATH may lack.
func sbinTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	p := "/usr/sbin/" + name
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s is not installed (./scripts/test installs it: apt-get install nginx-light haproxy)", name)
	}
	return p
}

// checkNginx loads an http-context snippet inside a minimal nginx.conf.
func checkNginx(t *testing.T, s snippet) {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The snippet's certificate paths are the user's: point them at a
	// certificate made here, so that nginx can load them.
	cert, key := selfSignedCert(t, dir)
	text := regexp.MustCompile(`ssl_certificate\s+[^;]+;`).ReplaceAllString(s.text, "ssl_certificate "+cert+";")
	text = regexp.MustCompile(`ssl_certificate_key\s+[^;]+;`).ReplaceAllString(text, "ssl_certificate_key "+key+";")
	if err := os.WriteFile(filepath.Join(dir, "snippet.conf"), []byte(text+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf("pid %[1]s/nginx.pid;\nerror_log %[1]s/logs/error.log;\nevents {}\nhttp {\n    access_log off;\n    include %[1]s/snippet.conf;\n}\n", dir)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sbinTool(t, "nginx"), "-t", "-q", "-p", dir, "-c", filepath.Join(dir, "nginx.conf")).CombinedOutput()
	if err != nil {
		t.Errorf("%s: nginx -t refuses the configuration: %v\n%s", s, err, out)
	}
}

// checkHAProxy checks a whole haproxy.cfg snippet.
func checkHAProxy(t *testing.T, s snippet) {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(s.text+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sbinTool(t, "haproxy"), "-c", "-q", "-f", cfg).CombinedOutput()
	if err != nil {
		t.Errorf("%s: haproxy -c refuses the configuration: %v\n%s", s, err, out)
	}
}

// selfSignedCert writes a certificate and its key for 127.0.0.1 into dir.
func selfSignedCert(t *testing.T, dir string) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}
