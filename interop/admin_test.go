package interop

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/durasock/durasock/internal/redistest"
)

// chromiumPath is the Debian chromium package's browser.
const chromiumPath = "/usr/bin/chromium"

// TestAdminUIChromium runs js/admin-ui.mjs: the Admin UI build of the npm
// package, served by a durasock node, in headless Chromium, lists the sockets
// of two cluster nodes and disconnects one of them.
func TestAdminUIChromium(t *testing.T) {
	node := requireNode(t)
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("chromium is not installed (%v): %s", err, installAdvice)
	}
	uiDir, err := filepath.Abs("node_modules/@socket.io/admin-ui/ui/dist")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(uiDir, "index.html")); err != nil {
		t.Fatalf("@socket.io/admin-ui is missing in interop/node_modules (%v): %s", err, installAdvice)
	}
	const password = "interop-admin"
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	redis := redistest.Standalone(t)
	bin := buildDurasock(t)
	admin := []string{"-admin-ui", "-admin-ui-password-hash", string(hash), "-admin-ui-dir", uiDir}
	a := startDurasock(t, bin, redis.URL(), "token", admin...)
	b := startDurasock(t, bin, redis.URL(), "token", admin...)
	waitPeers(t, a, b)

	ctx, cancel := context.WithTimeout(context.Background(), 2*scenarioTimeout)
	defer cancel()
	sa, errA := a.status(ctx)
	sb, errB := b.status(ctx)
	if errA != nil || errB != nil {
		t.Fatalf("status: %v %v", errA, errB)
	}
	cmd := command(ctx, a.url, node, "js/admin-ui.mjs")
	cmd.Env = append(cmd.Env, "URL_A="+a.url, "URL_B="+b.url, "ADMIN_PASSWORD="+password,
		"NODE_A="+sa.Node, "NODE_B="+sb.Node,
		"SCREENSHOT="+filepath.Join(t.TempDir(), "admin-ui.png"))
	if shot := os.Getenv("ADMIN_UI_SCREENSHOT"); shot != "" {
		cmd.Env = append(cmd.Env, "SCREENSHOT="+shot)
	}
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil || !strings.Contains(out.String(), "PASS admin-ui") {
		t.Fatalf("admin-ui.mjs failed: %v\n%s\n--- node A log:\n%s\n--- node B log:\n%s",
			err, out.String(), a.log.String(), b.log.String())
	}
	t.Logf("%s", out.String())
}
