package interop

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/cluster"
	"github.com/durasock/durasock/compat"
	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/internal/sioclient"
	"github.com/durasock/durasock/internal/testwait"
	"github.com/durasock/durasock/socketio"
)

// emitterNode is a durasock node on the streams cluster bus that also listens
// to the Node and Python emitters.
type emitterNode struct {
	url      string
	listener *compat.Listener
	mu       sync.Mutex
	sse      []string // server-side events received: "event args"
}

func (n *emitterNode) serverEvents() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.sse)
}

func startEmitterNode(t *testing.T, redisURL, prefix, key, pyChannel string) *emitterNode {
	t.Helper()
	ctx := context.Background()
	b, err := redisbus.Open(ctx, redisURL, &redisbus.Options{Kind: redisbus.Streams, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := cluster.New(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	opt, err := rueidis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	opt.DisableCache = true
	client, err := rueidis.NewClient(opt)
	if err != nil {
		t.Fatal(err)
	}
	l, err := compat.NewListener(client, &compat.ListenerOptions{Node: true, Key: key, Python: true, PythonChannel: pyChannel})
	if err != nil {
		t.Fatal(err)
	}
	n := &emitterNode{listener: l}
	srv := socketio.NewServer(&socketio.Options{Adapter: l.Wrap(cl.Adapter)})
	for _, name := range []string{"/", "/admin"} {
		nsp := srv.Of(name)
		nsp.OnServerSideEmit("tick", func(e *socketio.Event) {
			var parts []string
			for _, a := range e.Args {
				parts = append(parts, string(a))
			}
			n.mu.Lock()
			n.sse = append(n.sse, "tick "+strings.Join(parts, " "))
			n.mu.Unlock()
		})
		nsp.OnConnection(func(s *socketio.Socket) {
			var auth struct {
				Rooms []string `json:"rooms"`
			}
			_ = json.Unmarshal(s.Handshake().Auth, &auth)
			s.Join(auth.Rooms...)
		})
	}
	n.url = startHTTP(t, srv, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := srv.Shutdown(ctx)
		_ = l.Close(ctx)
		_ = cl.Close(ctx)
		_ = b.Close(ctx)
		client.Close()
		return err
	})
	return n
}

// recorder is a client that records what it receives and answers every event
// that asks for an ack with "pong".
type recorder struct {
	name   string
	c      *sioclient.Client
	mu     sync.Mutex
	events []recorded
	gone   chan struct{}
}

type recorded struct {
	name string
	args []json.RawMessage
	atts [][]byte
}

func dialRecorder(t *testing.T, url, nsp, name string, rooms ...string) *recorder {
	t.Helper()
	r := &recorder{name: name, gone: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := sioclient.Dial(ctx, url, &sioclient.Options{
		Namespace: nsp,
		Auth:      map[string]any{"rooms": rooms},
		OnEvent: func(e *sioclient.Event) {
			args, _ := e.Args()
			rec := recorded{name: e.Name}
			for _, a := range args {
				rec.args = append(rec.args, slices.Clone(a))
			}
			for _, a := range e.Attachments {
				rec.atts = append(rec.atts, slices.Clone(a))
			}
			r.mu.Lock()
			r.events = append(r.events, rec)
			r.mu.Unlock()
			if e.HasAck() {
				ev := *e
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					_ = ev.Ack(ctx, "pong")
				}()
			}
		},
		OnDisconnect: func(error) { close(r.gone) },
	})
	if err != nil {
		t.Fatalf("dial %s%s: %v", url, nsp, err)
	}
	r.c = c
	t.Cleanup(func() { _ = c.Close() })
	return r
}

func (r *recorder) count(event string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e.name == event {
			n++
		}
	}
	return n
}

func (r *recorder) get(event string) (recorded, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if e.name == event {
			return e, true
		}
	}
	return recorded{}, false
}

func (r *recorder) disconnected() bool {
	select {
	case <-r.gone:
		return true
	default:
		return false
	}
}

// checkDeliveries waits for a fence event on every client in fenced, then
// checks that each event reached exactly the clients listed.
func checkDeliveries(t *testing.T, all []*recorder, fence string, want map[string][]*recorder) {
	t.Helper()
	testwait.For(t, 20*time.Second, "fence "+fence, func() bool {
		for _, r := range all {
			if !r.disconnected() && r.count(fence) == 0 {
				return false
			}
		}
		return true
	})
	for event, to := range want {
		for _, r := range all {
			n := r.count(event)
			if w := map[bool]int{true: 1, false: 0}[slices.Contains(to, r)]; n != w {
				t.Errorf("%s: event %q received %d times, want %d", r.name, event, n, w)
			}
		}
	}
}

// TestNodeEmitter publishes with @socket.io/redis-emitter into a durasock
// cluster that runs its own streams bus and listens to the emitter channels:
// emits to all, rooms, except, another namespace, binary, socketsJoin,
// socketsLeave, disconnectSockets and serverSideEmit reach the clients and
// servers of both nodes.
func TestNodeEmitter(t *testing.T) {
	node := requireNode(t)
	requireNodePackages(t, "@socket.io/redis-emitter", "redis")
	redis := redistest.Standalone(t)
	const key = "emitter-test"
	n1 := startEmitterNode(t, redis.URL(), "emitter-bus", key, "py-unused")
	n2 := startEmitterNode(t, redis.URL(), "emitter-bus", key, "py-unused")
	var all, roomA, roomB, both []*recorder
	var admins []*recorder
	for i, n := range []*emitterNode{n1, n2} {
		a := dialRecorder(t, n.url, "/", fmt.Sprintf("n%d-a", i), "a")
		b := dialRecorder(t, n.url, "/", fmt.Sprintf("n%d-b", i), "b")
		ab := dialRecorder(t, n.url, "/", fmt.Sprintf("n%d-ab", i), "a", "b")
		ad := dialRecorder(t, n.url, "/admin", fmt.Sprintf("n%d-admin", i))
		all = append(all, a, b, ab, ad)
		roomA, roomB, both = append(roomA, a, ab), append(roomB, b, ab), append(both, ab)
		admins = append(admins, ad)
	}
	main := slices.DeleteFunc(slices.Clone(all), func(r *recorder) bool { return slices.Contains(admins, r) })
	emit := func(ops ...map[string]any) {
		t.Helper()
		b, err := json.Marshal(ops)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := command(ctx, "", node, "js/emit.mjs")
		cmd.Env = append(cmd.Env, "REDIS_URL="+redis.URL(), "KEY="+key, "OPS="+string(b))
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "PASS emit") {
			t.Fatalf("emit.mjs: %v\n%s", err, out)
		}
	}
	fence := func(name string) map[string]any {
		return map[string]any{"event": name}
	}
	adminFence := func(name string) map[string]any {
		return map[string]any{"nsp": "/admin", "event": name}
	}
	emit(
		map[string]any{"event": "e-all", "args": []any{"x", map[string]any{"$binary": []int{1, 2, 3}}, map[string]any{"k": 1}}},
		map[string]any{"to": []string{"a"}, "event": "e-a"},
		map[string]any{"to": []string{"a"}, "except": []string{"b"}, "event": "e-a-not-b"},
		map[string]any{"to": []string{"a", "b"}, "event": "e-a-or-b"},
		map[string]any{"nsp": "/admin", "event": "e-admin"},
		map[string]any{"serverSideEmit": []any{"tick", 1, "two"}},
		map[string]any{"to": []string{"b"}, "socketsJoin": []string{"j"}},
		map[string]any{"to": []string{"j"}, "event": "e-j"},
		map[string]any{"to": []string{"a"}, "socketsLeave": []string{"j"}},
		map[string]any{"to": []string{"j"}, "event": "e-j-after-leave"},
		fence("fence-1"), adminFence("fence-1"),
	)
	checkDeliveries(t, all, "fence-1", map[string][]*recorder{
		"e-all":           main,
		"e-a":             roomA,
		"e-a-not-b":       slices.DeleteFunc(slices.Clone(roomA), func(r *recorder) bool { return slices.Contains(both, r) }),
		"e-a-or-b":        main,
		"e-admin":         admins,
		"e-j":             roomB,
		"e-j-after-leave": slices.DeleteFunc(slices.Clone(roomB), func(r *recorder) bool { return slices.Contains(roomA, r) }),
	})
	for _, r := range main {
		e, ok := r.get("e-all")
		if !ok {
			continue
		}
		if len(e.args) != 3 || string(e.args[0]) != `"x"` || len(e.atts) != 1 || string(e.atts[0]) != "\x01\x02\x03" || string(e.args[2]) != `{"k":1}` {
			t.Errorf("%s: e-all args %s attachments %q", r.name, e.args, e.atts)
		}
	}
	for i, n := range []*emitterNode{n1, n2} {
		testwait.For(t, 10*time.Second, "server-side emit on every node", func() bool { return len(n.serverEvents()) >= 1 })
		if got := n.serverEvents(); !slices.Equal(got, []string{`tick 1 "two"`}) {
			t.Errorf("node %d: server-side events %q", i, got)
		}
	}
	// disconnectSockets, with close.
	emit(map[string]any{"to": []string{"a"}, "disconnect": true})
	for _, r := range roomA {
		testwait.For(t, 10*time.Second, r.name+" disconnected", r.disconnected)
	}
	emit(fence("fence-2"), adminFence("fence-2"))
	checkDeliveries(t, all, "fence-2", nil)
	for _, r := range all {
		if r.disconnected() != slices.Contains(roomA, r) {
			t.Errorf("%s: disconnected %v", r.name, r.disconnected())
		}
	}
	for i, n := range []*emitterNode{n1, n2} {
		st := n.listener.Stats()
		if st.Received["emitter"] == 0 || len(st.NotApplied) != 0 {
			t.Errorf("node %d: listener stats %+v", i, st)
		}
	}
}

// TestPythonEmitter publishes what python-socketio's write-only managers
// publish into a durasock cluster on the streams bus: the JSON form of 5.14 and
// later (emit to all, rooms, skip_sid, binary, enter_room, leave_room,
// close_room, disconnect, an emit with a callback answered back) reaches the
// clients; what the installed (Debian) python3-socketio publishes, pickled, is
// refused and counted.
func TestPythonEmitter(t *testing.T) {
	python := requirePython(t)
	redis := redistest.Standalone(t)
	const channel = "socketio-test"
	n1 := startEmitterNode(t, redis.URL(), "py-bus", "unused-key", channel)
	n2 := startEmitterNode(t, redis.URL(), "py-bus", "unused-key", channel)
	var all, roomA []*recorder
	for i, n := range []*emitterNode{n1, n2} {
		a := dialRecorder(t, n.url, "/", fmt.Sprintf("n%d-a", i), "a")
		o := dialRecorder(t, n.url, "/", fmt.Sprintf("n%d-o", i))
		all = append(all, a, o)
		roomA = append(roomA, a)
	}
	publish := func(ops ...map[string]any) string {
		t.Helper()
		b, err := json.Marshal(ops)
		if err != nil {
			t.Fatal(err)
		}
		out, err := run(30*time.Second, "", python, "py/publish.py", redis.URL(), channel, string(b))
		if err != nil || !strings.Contains(out, "PASS publish") {
			t.Fatalf("publish.py: %v\n%s", err, out)
		}
		return out
	}
	emit := func(event string, data []any, room, skip any) map[string]any {
		return map[string]any{"json": map[string]any{"method": "emit", "event": event, "data": data, "binary": false,
			"namespace": "/", "room": room, "skip_sid": skip, "callback": nil, "host_id": "publisher"}}
	}
	victim, target := all[1], all[3] // the clients in no room
	publish(
		emit("p-all", []any{"x", map[string]any{"k": 1}}, nil, nil),
		emit("p-a", []any{1}, "a", nil),
		emit("p-a-skip", []any{1}, "a", roomA[0].c.ID()),
		emit("p-list", []any{1}, []string{"a", target.c.ID()}, nil),
		map[string]any{"binary_emit": map[string]any{"method": "emit", "event": "p-bin", "data": []any{"b", map[string]any{"$binary": []int{9, 8}}},
			"namespace": "/", "room": nil, "skip_sid": nil, "callback": nil, "host_id": "publisher"}},
		map[string]any{"json": map[string]any{"method": "enter_room", "sid": target.c.ID(), "room": "r", "namespace": "/", "host_id": "publisher"}},
		emit("p-r", nil, "r", nil),
		map[string]any{"json": map[string]any{"method": "leave_room", "sid": target.c.ID(), "room": "r", "namespace": "/", "host_id": "publisher"}},
		emit("p-r-after-leave", nil, "r", nil),
		map[string]any{"json": map[string]any{"method": "close_room", "room": "a", "namespace": "/", "host_id": "publisher"}},
		emit("p-a-after-close", nil, "a", nil),
		map[string]any{"pickled_emit": []any{"p-pickled", "x", nil}},
		emit("fence", nil, nil, nil),
	)
	checkDeliveries(t, all, "fence", map[string][]*recorder{
		"p-all":           all,
		"p-a":             roomA,
		"p-a-skip":        roomA[1:],
		"p-list":          append(slices.Clone(roomA), target),
		"p-bin":           all,
		"p-r":             {target},
		"p-r-after-leave": nil,
		"p-a-after-close": nil,
		"p-pickled":       nil,
	})
	for _, r := range all {
		if e, ok := r.get("p-bin"); ok && (len(e.atts) != 1 || string(e.atts[0]) != "\x09\x08") {
			t.Errorf("%s: p-bin attachments %q", r.name, e.atts)
		}
	}
	for i, n := range []*emitterNode{n1, n2} {
		testwait.For(t, 10*time.Second, "the pickled message counted", func() bool { return n.listener.Stats().NotApplied["pickle"] == 1 })
		if st := n.listener.Stats(); st.Received["python"] != 13 {
			t.Errorf("node %d: listener stats %+v", i, st)
		}
	}
	// An emit with a callback: the client's ack goes back to the publisher.
	out := publish(
		map[string]any{"subscribe": true},
		map[string]any{"json": map[string]any{"method": "emit", "event": "p-cb", "data": []any{"q"}, "namespace": "/",
			"room": target.c.ID(), "skip_sid": nil, "callback": []any{target.c.ID(), "/", 7}, "host_id": "asker"}},
		map[string]any{"await_callback": "asker"},
	)
	if !strings.Contains(out, `"args": ["pong"]`) || !strings.Contains(out, `"id": 7`) || !strings.Contains(out, `"sid": "`+target.c.ID()+`"`) {
		t.Errorf("callback: %s", out)
	}
	// disconnect.
	publish(map[string]any{"json": map[string]any{"method": "disconnect", "sid": victim.c.ID(), "namespace": "/", "host_id": "publisher"}})
	testwait.For(t, 10*time.Second, "the python disconnect", victim.disconnected)
}
