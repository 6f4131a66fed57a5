package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/internal/testwait"
)

// chromiumPath is Debian's chromium (scripts/test installs it).
const chromiumPath = "/usr/bin/chromium"

// startLocalCluster runs the launcher's cluster in-process on redis: two node
// processes of the built binary behind its load balancer, with the delivery
// checker at ticks per second (0: off). It returns the load balancer's URL.
func startLocalCluster(t *testing.T, redis redisControl, ticks int, nodes ...string) (*localCluster, string) {
	t.Helper()
	client, err := filepath.Abs(findDemoClient(filepath.Join("..", "..", "interop", "node_modules", "socket.io-client", "dist")))
	if err != nil || findDemoClient(client) == "" {
		t.Fatalf("socket.io-client is not installed in interop/node_modules (./scripts/test runs npm ci there): %v", err)
	}
	bin := buildBinary(t)
	logs := &syncBuffer{}
	lc := newLocalCluster(redis, bin, client, t.TempDir(), slog.New(slog.NewTextHandler(logs, nil)), logs)
	lc.checker.rate = ticks
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster logs:\n%s", logs.String())
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range nodes {
		if err := lc.addNode(name); err != nil {
			ln.Close()
			lc.stopAll()
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- lc.serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("load balancer: %v", err)
		}
	})
	testwait.Every(t, poll, 60*time.Second, "every node ready", func() bool {
		for _, n := range lc.nodeList() {
			if !n.health.ready.Load() || nodeID(n) == "" {
				return false
			}
		}
		return true
	})
	return lc, "http://" + ln.Addr().String()
}

func nodeID(n *nodeProc) string {
	n.health.mu.Lock()
	defer n.health.mu.Unlock()
	return n.health.id
}

// poll is how often the tests of this package check what they wait for: most
// conditions read a subprocess's HTTP endpoints or dump goroutines, not a
// variable.
const poll = 50 * time.Millisecond

// browserPage is one tab of headless Chromium.
type browserPage struct {
	t    *testing.T
	name string
	ctx  context.Context
}

// jsTrue polls expr in the page until it is true.
func (p *browserPage) waitJS(what, expr string) {
	p.t.Helper()
	var (
		held    bool
		lastErr error
	)
	defer func() { // also when the wait fails the test: what the page showed
		if !held {
			pill, _ := chromedp.Run(p.ctx, chromedp.Evaluate[string](`document.getElementById("pill").textContent`))
			logText, _ := chromedp.Run(p.ctx, chromedp.Evaluate[string](`document.getElementById("log").innerText`))
			p.t.Logf("%s: %s (last error %v)\npill: %s\nlog:\n%s", p.name, expr, lastErr, pill, logText)
		}
	}()
	// Generous: a loaded 2-core machine.
	testwait.Every(p.t, 100*time.Millisecond, 60*time.Second, p.name+": "+what, func() bool {
		ok, err := chromedp.Run(p.ctx, chromedp.Evaluate[bool](expr))
		lastErr = err
		return err == nil && ok
	})
	held = true
}

func (p *browserPage) evalString(expr string) string {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		p.t.Fatalf("%s: %s: %v", p.name, expr, err)
	}
	return v
}

func (p *browserPage) evalBool(expr string) bool {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[bool](expr))
	if err != nil {
		p.t.Fatalf("%s: %s: %v", p.name, expr, err)
	}
	return v
}

// send types text into the message box and presses Enter; it returns the id
// the page gave the message.
func (p *browserPage) send(text string) string {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, chromedp.SendKeys(chromedp.CSS("#text"), text+"\n")); err != nil {
		p.t.Fatalf("%s: send: %v", p.name, err)
	}
	id := p.evalString(`(() => { const m = [...document.querySelectorAll(".msg.mine")].pop(); return m ? m.dataset.id : ""; })()`)
	if id == "" {
		p.t.Fatalf("%s: the sent message is not shown", p.name)
	}
	return id
}

// mine is a JS expression for the element of a message this page sent.
func mine(id string) string {
	return fmt.Sprintf("document.querySelector('.msg.mine[data-id=%q]')", id)
}

// received is a JS expression: this page shows a message of another page with text.
func received(text string) string {
	return fmt.Sprintf("[...document.querySelectorAll('.msg:not(.mine)')].some((m) => m.textContent.includes(%q))", text)
}

func (p *browserPage) screenshot(dir, name string, width, height int64) {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, chromedp.EmulateViewport(width, height)); err != nil {
		p.t.Fatalf("%s: viewport: %v", p.name, err)
	}
	png, err := chromedp.Run(p.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Fatalf("%s: screenshot: %v", p.name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		p.t.Fatal(err)
	}
}

// TestBrowserDemo drives the demo chat in headless Chromium, three pages on two
// node processes behind the local cluster's load balancer: receipts across
// nodes, a Redis outage (the page shows it, messages queue and are delivered
// with their receipts after the restart), and a drained node whose page
// reconnects to the other node. Screenshots at desktop and phone width go to
// $DURASOCK_SCREENSHOTS (or a temporary directory named in the log).
func TestBrowserDemo(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("Chromium is not installed (%v): apt-get install chromium (./scripts/test does)", err)
	}
	shots := os.Getenv("DURASOCK_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	phase := func(what string) { t.Logf("%5.1fs %s", time.Since(start).Seconds(), what) }
	redis := redistest.Standalone(t, redistest.WithAOF())
	lc, base := startLocalCluster(t, redis, 0, "node-1", "node-2")
	phase("cluster ready")
	id1, id2 := nodeID(lc.node("node-1"))[:6], nodeID(lc.node("node-2"))[:6]

	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(chromiumPath),
			chromedp.NoSandbox,
			chromedp.Flag("disable-gpu", true),
			chromedp.WindowSize(1280, 800),
		)...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	open := func(name, node string) *browserPage {
		ctx, cancel := chromedp.NewContext(browser)
		t.Cleanup(cancel)
		p := &browserPage{t: t, name: name, ctx: ctx}
		if err := chromedp.Do(ctx, chromedp.Navigate(base+"/?node="+node+"&name="+name)); err != nil {
			t.Fatalf("%s: open: %v", name, err)
		}
		return p
	}
	alice, bob, carol := open("alice", "node-1"), open("bob", "node-2"), open("carol", "node-1")
	for _, c := range []struct {
		p    *browserPage
		node string
	}{{alice, id1}, {bob, id2}, {carol, id1}} {
		c.p.waitJS("online on its node", fmt.Sprintf(`document.getElementById("pill").dataset.state === "online" && document.getElementById("node").textContent === %q`, c.node))
		c.p.waitJS("three people here", `document.getElementById("here").dataset.count === "3"`)
	}
	transport := alice.evalString(`document.getElementById("transport").textContent`)
	if transport != "websocket" && transport != "polling" {
		t.Errorf("transport shown: %q", transport)
	}

	phase("three pages online")

	// Across nodes: alice's message reaches bob (node-2) and carol (node-1), and
	// alice's page says so from their receipts.
	m1 := alice.send("hello from alice")
	bob.waitJS("alice's message", received("hello from alice"))
	carol.waitJS("alice's message", received("hello from alice"))
	alice.waitJS("receipts of 2 clients on 2 nodes", mine(m1)+`.dataset.receivers === "2" && `+mine(m1)+`.dataset.nodes === "2"`)
	st := alice.evalString(mine(m1) + `.querySelector(".st").textContent`)
	if !strings.Contains(st, "delivered to 2 clients on 2 nodes") {
		t.Errorf("receipt text: %q", st)
	}

	phase("receipts across nodes")

	// Redis down: the pages say so, presence stays, messages queue.
	if err := redis.Kill(); err != nil {
		t.Fatal(err)
	}
	alice.waitJS("the outage on the pill", `document.getElementById("pill").dataset.state === "degraded"`)
	bob.waitJS("the outage on the pill", `document.getElementById("pill").dataset.state === "degraded"`)
	m2 := alice.send("sent during the outage")
	carol.waitJS("the local copy at once", received("sent during the outage"))
	alice.waitJS("queued, delivered on its own node only", mine(m2)+`.dataset.status === "delivered" && `+mine(m2)+`.dataset.receivers === "1" && `+mine(m2)+`.querySelector(".st").textContent.includes("queued")`)
	if bob.evalBool(received("sent during the outage")) {
		t.Fatal("bob got a message through a Redis that is down")
	}
	if st := alice.evalString(`document.getElementById("here").dataset.count`); st != "3" {
		t.Errorf("presence during the outage: %s, want 3", st)
	}
	alice.screenshot(shots, "outage-desktop.png", 1280, 800)
	alice.screenshot(shots, "outage-390.png", 390, 844)
	for _, w := range []int64{390, 360} {
		if err := chromedp.Do(alice.ctx, chromedp.EmulateViewport(w, 740)); err != nil {
			t.Fatal(err)
		}
		alice.waitJS(fmt.Sprintf("everything within %d px", w), fmt.Sprintf(`[document.getElementById("join"), document.getElementById("pill"), document.querySelector("#form button"), document.getElementById("bus")].every((e) => e.getBoundingClientRect().right <= %d) && document.documentElement.scrollWidth <= %d`, w, w))
	}
	if err := chromedp.Do(alice.ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		t.Fatal(err)
	}

	phase("outage shown, message queued")

	// Redis back: the queued message reaches bob, and alice's receipt updates.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := redis.Start(ctx); err != nil {
		t.Fatal(err)
	}
	bob.waitJS("the queued message, late", received("sent during the outage"))
	alice.waitJS("receipts after the outage", mine(m2)+`.dataset.receivers === "2" && `+mine(m2)+`.dataset.nodes === "2"`)
	alice.waitJS("online again", `document.getElementById("pill").dataset.state === "online"`)

	phase("queued message delivered after the restart")

	// node-2 drained: bob's page reconnects to node-1 and chats on.
	if err := lc.node("node-2").drain(); err != nil {
		t.Fatal(err)
	}
	bob.waitJS("reconnected to node-1", fmt.Sprintf(`document.getElementById("pill").dataset.state === "online" && document.getElementById("node").textContent === %q`, id1))
	m3 := bob.send("bob after the drain")
	alice.waitJS("bob's message after the drain", received("bob after the drain"))
	bob.waitJS("receipts after the drain", mine(m3)+`.dataset.receivers === "2"`)
	alice.waitJS("still three here", `document.getElementById("here").dataset.count === "3"`)

	phase("bob reconnected to node-1 after the drain")
	alice.screenshot(shots, "alice-desktop.png", 1280, 800)
	bob.screenshot(shots, "bob-390.png", 390, 844)
	// A message over the limit is refused, and said so.
	long := strings.Repeat("x", maxTextLen+1)
	refused := alice.evalString(fmt.Sprintf(`(() => { const i = document.getElementById("text"); i.removeAttribute("maxlength"); i.value = %q; document.getElementById("form").requestSubmit(); return [...document.querySelectorAll(".msg.mine")].pop().dataset.id; })()`, long))
	alice.waitJS("the refusal", mine(refused)+`.dataset.status === "error"`)

	// A rename, keyboard only: Enter in the name field joins under the new name,
	// and the others see one notice, not a leave and a join.
	alice.evalString(`document.getElementById("name").value = ""`)
	if err := chromedp.Do(alice.ctx, chromedp.SendKeys(chromedp.CSS("#name"), "alicia\n")); err != nil {
		t.Fatal(err)
	}
	bob.waitJS("the rename", `document.getElementById("log").innerText.includes("alice is now alicia") && document.getElementById("here").textContent.includes("alicia")`)

	// What the issue saw must never show: receipts of "undefined" or "0", a
	// reconnected member printed as left, a line per failed reconnect attempt.
	for _, p := range []*browserPage{alice, bob, carol} {
		text := p.evalString(`document.getElementById("log").innerText`)
		for _, bad := range []string{"undefined", "delivered to 0", "bob left", "alice left", "alicia joined"} {
			if strings.Contains(text, bad) {
				t.Errorf("%s's page shows %q:\n%s", p.name, bad, text)
			}
		}
		if n := strings.Count(text, "cannot reach the server"); n > 1 {
			t.Errorf("%s's page says %d times that it cannot reach the server", p.name, n)
		}
	}

	t.Logf("screenshots in %s", shots)
}
