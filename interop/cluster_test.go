package interop

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/durasock/durasock/internal/redistest"
)

// TestClusterTwoProcesses runs the official client against two durasock processes
// (cmd/durasock, built by the test) that share one redis-server: chat messages and
// HTTP-API broadcasts sent through one process reach the clients of the other,
// complete and in order.
func TestClusterTwoProcesses(t *testing.T) {
	node := requireNode(t)
	redis := redistest.Standalone(t)
	bin := buildDurasock(t)

	const token = "interop-token"
	a := startDurasock(t, bin, redis.URL(), token)
	b := startDurasock(t, bin, redis.URL(), token)
	waitPeers(t, a, b)

	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	cmd := command(ctx, a.url, node, "js/cluster.mjs")
	cmd.Env = append(cmd.Env, "URL_A="+a.url, "URL_B="+b.url, "EMIT_TOKEN="+token)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil || !strings.Contains(out.String(), "PASS cluster") {
		t.Fatalf("cluster.mjs failed: %v\n%s\n--- node A log:\n%s\n--- node B log:\n%s",
			err, out.String(), a.log.String(), b.log.String())
	}
	t.Logf("%s", lastLine(out.String()))
}

// buildDurasock builds cmd/durasock into a temporary directory.
func buildDurasock(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is not on PATH: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "durasock")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", bin, "github.com/durasock/durasock/cmd/durasock")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/durasock: %v\n%s", err, out)
	}
	return bin
}

// durasockProc is one running durasock process.
type durasockProc struct {
	url string
	log *syncBuffer
}

// startDurasock runs the binary in cluster mode on a free port, with extra
// flags after the usual ones. At the end of the test it gets SIGTERM and must
// drain and exit with status 0 within its drain timeout.
func startDurasock(t *testing.T, bin, redisURL, token string, extra ...string) *durasockProc {
	t.Helper()
	port := redistest.FreePort(t)
	p := &durasockProc{url: "http://127.0.0.1:" + strconv.Itoa(port), log: &syncBuffer{}}
	args := []string{
		"-addr", "127.0.0.1:" + strconv.Itoa(port),
		"-redis", redisURL,
		"-emit-token", token,
		"-drain-timeout", "5s",
		"-log-level", "info",
	}
	cmd := exec.Command(bin, append(args, extra...)...)
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start durasock: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Errorf("SIGTERM to durasock: %v", err)
		}
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("durasock on %s did not drain cleanly: %v\n%s", p.url, err, p.log.String())
			}
		case <-time.After(15 * time.Second):
			if err := cmd.Process.Kill(); err != nil {
				t.Errorf("kill durasock: %v", err)
			}
			<-exited
			t.Errorf("durasock on %s did not exit within 15s of SIGTERM (drain timeout 5s)\n%s", p.url, p.log.String())
		}
	})
	return p
}

type statusReply struct {
	Ready      bool     `json:"ready"`
	Node       string   `json:"node"`
	Nodes      []string `json:"nodes"`
	OtherNodes []string `json:"other_nodes"` // the name /status gives them now
}

func (p *durasockProc) status(ctx context.Context) (statusReply, error) {
	var st statusReply
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url+"/status", nil)
	if err != nil {
		return st, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET /status: HTTP %d", res.StatusCode)
	}
	err = json.NewDecoder(res.Body).Decode(&st)
	return st, err
}

// waitPeers waits until both processes are ready and each lists the other as a
// cluster node.
func waitPeers(t *testing.T, a, b *durasockProc) {
	t.Helper()
	waitCluster(t, a, b, true)
}

// waitCluster is waitPeers that, unless ready, does not wait for the nodes to
// report themselves ready.
func waitCluster(t *testing.T, a, b *durasockProc, ready bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		sa, errA := a.status(ctx)
		sb, errB := b.status(ctx)
		switch {
		case errA != nil:
			last = errA
		case errB != nil:
			last = errB
		case ready && (!sa.Ready || !sb.Ready):
			last = fmt.Errorf("not ready: A %+v, B %+v", sa, sb)
		case !slices.Contains(append(sa.Nodes, sa.OtherNodes...), sb.Node) ||
			!slices.Contains(append(sb.Nodes, sb.OtherNodes...), sa.Node):
			last = fmt.Errorf("nodes do not see each other yet: A %+v, B %+v", sa, sb)
		default:
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("two durasock nodes did not form a cluster within 30s: %v\n--- A:\n%s\n--- B:\n%s",
				last, a.log.String(), b.log.String())
		case <-tick.C:
		}
	}
}
