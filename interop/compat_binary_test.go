package interop

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/durasock/durasock/compat"
	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/internal/testwait"
)

// TestBinaryCompat runs cmd/durasock with the flags of the compatibility layer:
// on its streams bus with -emitters node,python, what @socket.io/redis-emitter
// and a python-socketio manager publish reaches its clients and is counted in
// /metrics; with -cluster-protocol node-redis-adapter it is one cluster with a
// Node socket.io server: its HTTP emit API reaches the Node server's clients,
// and the emitter reaches its own.
func TestBinaryCompat(t *testing.T) {
	node := requireNode(t)
	python := requirePython(t)
	requireNodePackages(t, "socket.io", "@socket.io/redis-adapter", "@socket.io/redis-emitter", "redis")
	redis := redistest.Standalone(t)
	bin := buildDurasock(t)
	const token = "compat-token"

	emit := func(key string, ops ...map[string]any) {
		t.Helper()
		b, _ := json.Marshal(ops)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := command(ctx, "", node, "js/emit.mjs")
		cmd.Env = append(cmd.Env, "REDIS_URL="+redis.URL(), "KEY="+key, "OPS="+string(b))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("emit.mjs: %v\n%s", err, out)
		}
	}

	t.Run("streams with emitters", func(t *testing.T) {
		d := startDurasock(t, bin, redis.URL(), token, "-emitters", "node,python", "-socketio-key", "bin-key", "-python-channel", "bin-py")
		waitReady(t, d)
		r := dialRecorder(t, d.url, "/", "client")
		emit("bin-key", map[string]any{"event": "from-node-emitter", "args": []any{1}})
		msg, _ := json.Marshal([]map[string]any{{"json": map[string]any{"method": "emit", "event": "from-python", "data": []any{2},
			"namespace": "/", "room": nil, "skip_sid": nil, "callback": nil, "host_id": "h"}}})
		if out, err := run(30*time.Second, "", python, "py/publish.py", redis.URL(), "bin-py", string(msg)); err != nil {
			t.Fatalf("publish.py: %v\n%s", err, out)
		}
		testwait.For(t, 15*time.Second, "both emitters' events", func() bool {
			return r.count("from-node-emitter") == 1 && r.count("from-python") == 1
		})
		metrics := get(t, d.url+"/metrics")
		for _, want := range []string{`durasock_emitters_received_total{source="emitter"} 1`, `durasock_emitters_received_total{source="python"} 1`} {
			if !strings.Contains(metrics, want) {
				t.Errorf("/metrics lacks %s\n%s", want, d.log.String())
			}
		}
	})

	t.Run("node-redis-adapter", func(t *testing.T) {
		n := startNodeServer(t, node, redis.URL(), compat.Classic, "bin-mixed", "N1")
		d := startDurasock(t, bin, redis.URL(), token, "-cluster-protocol", "node-redis-adapter", "-socketio-key", "bin-mixed")
		waitReady(t, d)
		onNode := dialRecorder(t, n, "/", "on-node")
		onDurasock := dialRecorder(t, d.url, "/", "on-durasock")
		body := `{"event":"from-api","args":["x"]}`
		req, _ := http.NewRequest(http.MethodPost, d.url+"/api/emit", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode/100 != 2 {
			t.Fatalf("POST /api/emit: %d %s", res.StatusCode, b)
		}
		emit("bin-mixed", map[string]any{"event": "from-emitter"})
		testwait.For(t, 15*time.Second, "the API emit on the Node server's client and the emitter's on both", func() bool {
			return onNode.count("from-api") == 1 && onDurasock.count("from-api") == 1 &&
				onNode.count("from-emitter") == 1 && onDurasock.count("from-emitter") == 1
		})
		// /status (from this machine: no token needed) shows the Node protocol,
		// its subscription up and what it received.
		var st struct {
			Ready  bool
			Mode   string
			Compat struct {
				Protocol string
				UID      string
				Cluster  struct {
					Connected bool
					Received  map[string]uint64
				}
			}
		}
		if err := json.Unmarshal([]byte(get(t, d.url+"/status")), &st); err != nil {
			t.Fatal(err)
		}
		if !st.Ready || st.Compat.Protocol != "node-redis-adapter" || st.Compat.UID == "" || !st.Compat.Cluster.Connected || st.Compat.Cluster.Received["emitter"] == 0 {
			t.Fatalf("/status of a node-redis-adapter node: %+v", st)
		}
	})
}

func waitReady(t *testing.T, d *durasockProc) {
	t.Helper()
	testwait.For(t, 30*time.Second, "durasock ready", func() bool {
		res, err := http.Get(d.url + "/readyz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	})
}

func get(t *testing.T, url string) string {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
