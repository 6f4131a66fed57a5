package interop

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/durasock/durasock/compat"
	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/socketio"
)

// TestMixedCluster runs two Node socket.io 4.8 servers (@socket.io/redis-adapter)
// and two durasock servers (compat.NodeCluster) on one Redis, with clients on
// all four, and runs every cross-node operation from every node (js/mixed.mjs):
// nothing may be lost, duplicated or delivered where it should not, in the
// classic protocol and in the sharded one.
func TestMixedCluster(t *testing.T) {
	node := requireNode(t)
	requireNodePackages(t, "socket.io", "@socket.io/redis-adapter", "redis")
	for _, mode := range []compat.Mode{compat.Classic, compat.Sharded} {
		t.Run(mode.String(), func(t *testing.T) {
			redis := redistest.Standalone(t)
			key := "mixed-" + mode.String()
			n1 := startNodeServer(t, node, redis.URL(), mode, key, "N1")
			d1 := startMixedDurasock(t, redis.URL(), mode, key, "D1")
			n2 := startNodeServer(t, node, redis.URL(), mode, key, "N2")
			d2 := startMixedDurasock(t, redis.URL(), mode, key, "D2")
			nodes := "N1=" + n1 + ",D1=" + d1 + ",N2=" + n2 + ",D2=" + d2
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			cmd := command(ctx, n1, node, "js/mixed.mjs")
			cmd.Env = append(cmd.Env, "NODES="+nodes, "PER_NODE=3")
			var out syncBuffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Run(); err != nil || !strings.Contains(out.String(), "PASS mixed") {
				t.Fatalf("mixed.mjs failed: %v\n%s", err, out.String())
			}
			for _, line := range strings.Split(out.String(), "\n") {
				if strings.Contains(line, "deliveries:") {
					t.Log(strings.TrimSpace(line))
				}
			}
		})
	}
}

// requireNodePackages fails the test when an npm package of interop/ is missing.
func requireNodePackages(t testing.TB, pkgs ...string) {
	t.Helper()
	for _, pkg := range pkgs {
		if _, err := os.Stat(filepath.Join("node_modules", pkg, "package.json")); err != nil {
			t.Fatalf("npm package %s is missing in interop/node_modules (%v): %s", pkg, err, installAdvice)
		}
	}
}

// startNodeServer runs js/node-server.mjs and returns its URL once it listens.
func startNodeServer(t *testing.T, node, redisURL string, mode compat.Mode, key, name string) string {
	t.Helper()
	port := redistest.FreePort(t)
	url := "http://127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(node, "js/node-server.mjs")
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "REDIS_URL="+redisURL,
		"MODE="+mode.String(), "KEY="+key, "NAME="+name)
	pr, pw := io.Pipe()
	w := watchLines(pr, "READY")
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("start node-server.mjs: %v", err)
	}
	exited := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		pw.Close()
		<-w.done
		exited <- err
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("node-server.mjs %s did not exit within 10s of SIGTERM\n%s", name, w.out.String())
		}
	})
	select {
	case <-w.found:
	case err := <-exited:
		t.Fatalf("node-server.mjs %s exited: %v\n%s", name, err, w.out.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("node-server.mjs %s not ready within 30s\n%s", name, w.out.String())
	}
	return url
}

// mixedCmd is an operation a client asks its server to run (see mixed.mjs).
type mixedCmd struct {
	Op        string            `json:"op"`
	Room      string            `json:"room"`
	Rooms     []string          `json:"rooms"`
	Except    []string          `json:"except"`
	Event     string            `json:"event"`
	Args      []json.RawMessage `json:"args"`
	Target    string            `json:"target"`
	TimeoutMs int               `json:"timeoutMs"`
}

// startMixedDurasock serves a durasock server of the mixed cluster, driven by
// the same commands as node-server.mjs.
func startMixedDurasock(t *testing.T, redisURL string, mode compat.Mode, key, name string) string {
	t.Helper()
	opt, err := rueidis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	opt.DisableCache = true
	client, err := rueidis.NewClient(opt)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := compat.NewNodeCluster(client, &compat.Options{Mode: mode, Key: key, RequestTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	srv := socketio.NewServer(&socketio.Options{Adapter: nc.Adapter})
	main := srv.Of("/")
	var mu sync.Mutex
	var sse []map[string]string
	main.OnServerSideEmit("hello", func(e *socketio.Event) {
		var from string
		_ = e.Bind(&from)
		mu.Lock()
		sse = append(sse, map[string]string{"event": "hello", "from": from})
		mu.Unlock()
	})
	main.OnServerSideEmit("question", func(e *socketio.Event) {
		var from string
		_ = e.Bind(&from)
		mu.Lock()
		sse = append(sse, map[string]string{"event": "question", "from": from})
		mu.Unlock()
		_ = e.Ack(name)
	})
	main.OnConnection(func(s *socketio.Socket) {
		var auth struct {
			Label string `json:"label"`
		}
		_ = json.Unmarshal(s.Handshake().Auth, &auth)
		if err := s.SetData(map[string]string{"node": name, "label": auth.Label}); err != nil {
			t.Errorf("SetData: %v", err)
		}
		s.On("cmd", func(e *socketio.Event) {
			var c mixedCmd
			if err := e.Bind(&c); err != nil {
				_ = e.Ack(map[string]any{"ok": false, "error": err.Error()})
				return
			}
			result, err := runMixedCmd(s, main, name, c, func() any {
				mu.Lock()
				defer mu.Unlock()
				return slices.Clone(sse)
			})
			if err != nil {
				_ = e.Ack(map[string]any{"ok": false, "error": err.Error()})
				return
			}
			_ = e.Ack(map[string]any{"ok": true, "result": result})
		})
	})
	return startHTTP(t, srv, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := srv.Shutdown(ctx)
		if cerr := nc.Close(ctx); err == nil {
			err = cerr
		}
		client.Close()
		return err
	})
}

func runMixedCmd(s *socketio.Socket, main *socketio.Namespace, name string, c mixedCmd, sseLog func() any) (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sel := main.To(c.Rooms...).Except(c.Except...)
	switch c.Op {
	case "join":
		s.Join(c.Room)
		return "joined", nil
	case "broadcast":
		args := make([]any, len(c.Args))
		for i, a := range c.Args {
			var bin struct {
				Binary []byte `json:"$binary"`
			}
			var nums struct {
				Binary []int `json:"$binary"`
			}
			if json.Unmarshal(a, &nums) == nil && nums.Binary != nil {
				for _, n := range nums.Binary {
					bin.Binary = append(bin.Binary, byte(n))
				}
				args[i] = bin.Binary
				continue
			}
			args[i] = a
		}
		return "sent", sel.Emit(ctx, c.Event, args...)
	case "ask":
		replies, err := sel.Timeout(time.Duration(c.TimeoutMs)*time.Millisecond).EmitWithAck(ctx, c.Event, name)
		if err != nil {
			return nil, err
		}
		out := make([]string, 0, len(replies))
		for _, r := range replies {
			var label string
			if r.Args.Len() == 0 || r.Args.Bind(&label) != nil {
				return nil, fmt.Errorf("ack %v: want a label", r.Args)
			}
			out = append(out, label)
		}
		slices.Sort(out)
		return out, nil
	case "fetch", "fetchData":
		sockets, err := sel.FetchSockets(ctx)
		if err != nil {
			return nil, err
		}
		if c.Op == "fetch" {
			ids := make([]string, 0, len(sockets))
			for _, rs := range sockets {
				ids = append(ids, rs.ID)
			}
			slices.Sort(ids)
			return ids, nil
		}
		out := make([]map[string]any, 0, len(sockets))
		for _, rs := range sockets {
			rooms := slices.Sorted(slices.Values(rs.Rooms))
			out = append(out, map[string]any{"id": rs.ID, "rooms": rooms, "data": rs.Data, "auth": rs.Handshake.Auth})
		}
		return out, nil
	case "sse":
		return "sent", main.ServerSideEmit(ctx, "hello", name)
	case "sseAck":
		ctx, cancel := context.WithTimeout(ctx, time.Duration(c.TimeoutMs)*time.Millisecond)
		defer cancel()
		replies, err := main.ServerSideEmitWithAck(ctx, "question", name)
		if err != nil {
			return nil, err
		}
		out := make([]string, 0, len(replies))
		for _, r := range replies {
			var from string
			if r.Args.Len() == 0 || r.Args.Bind(&from) != nil {
				return nil, fmt.Errorf("server-side reply %v: want a name", r.Args)
			}
			out = append(out, from)
		}
		slices.Sort(out)
		return out, nil
	case "sseLog":
		return sseLog(), nil
	case "socketsJoin":
		return "sent", sel.SocketsJoin(ctx, c.Target)
	case "socketsLeave":
		return "sent", sel.SocketsLeave(ctx, c.Target)
	case "disconnect":
		return "sent", sel.DisconnectSockets(ctx, true)
	}
	return nil, fmt.Errorf("unknown op %q", c.Op)
}
