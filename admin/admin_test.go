package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/durasock/durasock/internal/sioclient"
	"github.com/durasock/durasock/internal/testwait"
	"github.com/durasock/durasock/socketio"
)

func serve(t *testing.T, opts *Options) (*socketio.Server, string) {
	t.Helper()
	srv := socketio.NewServer(nil)
	a, err := New(srv, opts)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		a.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		hs.Close()
	})
	return srv, hs.URL + "/socket.io/"
}

func hash(t *testing.T, password string) string {
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func TestNewChecksAuth(t *testing.T) {
	srv := socketio.NewServer(nil)
	defer srv.Close()
	if _, err := New(srv, nil); !errors.Is(err, ErrNoAuth) {
		t.Fatalf("no auth: %v", err)
	}
	if _, err := New(srv, &Options{Auth: &BasicAuth{Username: "u", Password: "plain"}}); !errors.Is(err, ErrPasswordHash) {
		t.Fatalf("plain password: %v", err)
	}
}

// events collects the events an admin client receives.
type events struct {
	ch chan *sioclient.Event
}

func dialAdmin(t *testing.T, url string, auth any) (*sioclient.Client, *events, error) {
	t.Helper()
	ev := &events{ch: make(chan *sioclient.Event, 256)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := sioclient.Dial(ctx, url, &sioclient.Options{
		Namespace: DefaultNamespace,
		Auth:      auth,
		OnEvent: func(e *sioclient.Event) {
			cp := *e
			cp.Data = append(json.RawMessage(nil), e.Data...)
			select {
			case ev.ch <- &cp:
			default:
			}
		},
	})
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, ev, err
}

// wait returns the arguments of the next event named name.
func (ev *events) wait(t *testing.T, name string) []json.RawMessage {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e := <-ev.ch:
			if e.Name != name {
				continue
			}
			var args []json.RawMessage
			if err := json.Unmarshal(e.Data, &args); err != nil {
				t.Fatalf("%s: %s: %v", name, e.Data, err)
			}
			return args[1:]
		case <-timeout:
			t.Fatalf("no %q event within 10s", name)
		}
	}
}

func TestAdminNamespace(t *testing.T) {
	srv, url := serve(t, &Options{Auth: &BasicAuth{Username: "admin", Password: hash(t, "secret")}})
	for _, auth := range []any{nil, map[string]string{"username": "admin", "password": "wrong"},
		map[string]string{"username": "other", "password": "secret"}, map[string]string{"sessionId": "made-up"}} {
		if _, _, err := dialAdmin(t, url, auth); err == nil || !strings.Contains(err.Error(), "invalid credentials") {
			t.Fatalf("auth %v: %v, want invalid credentials", auth, err)
		}
	}
	// A client of the main namespace, to be listed and disconnected.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	user, err := sioclient.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer user.Close()

	adm, ev, err := dialAdmin(t, url, map[string]string{"username": "admin", "password": "secret"})
	if err != nil {
		t.Fatal(err)
	}
	var session string
	if err := json.Unmarshal(ev.wait(t, "session")[0], &session); err != nil || session == "" {
		t.Fatalf("session: %q %v", session, err)
	}
	var cfg struct {
		SupportedFeatures []string `json:"supportedFeatures"`
	}
	if err := json.Unmarshal(ev.wait(t, "config")[0], &cfg); err != nil || !slices.Contains(cfg.SupportedFeatures, "MDISCONNECT") {
		t.Fatalf("config %+v: %v", cfg, err)
	}
	var list []socketInfo
	if err := json.Unmarshal(ev.wait(t, "all_sockets")[0], &list); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(list, func(s socketInfo) bool { return s.ID == user.ID() && s.Nsp == "/" && s.Transport == "websocket" }) {
		t.Fatalf("all_sockets %+v does not list %s", list, user.ID())
	}
	var st stats
	if err := json.Unmarshal(ev.wait(t, "server_stats")[0], &st); err != nil || st.ClientsCount < 2 ||
		!slices.ContainsFunc(st.Namespaces, func(n namespaceStat) bool { return n.Name == "/" && n.SocketsCount == 1 }) {
		t.Fatalf("server_stats %+v: %v", st, err)
	}

	// The session id lets the UI in again without the password.
	_, ev2, err := dialAdmin(t, url, map[string]string{"sessionId": session})
	if err != nil {
		t.Fatalf("with the session id: %v", err)
	}
	ev2.wait(t, "config")

	// Join from the UI, seen as room_joined; then disconnect from the UI.
	sock := srv.Of("/").LocalSocket(user.ID())
	if err := adm.Emit(ctx, "join", "/", "vip", user.ID()); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 10*time.Second, "join from the UI", func() bool { return slices.Contains(sock.Rooms(), "vip") })
	if args := ev.wait(t, "room_joined"); string(args[1]) != `"vip"` {
		t.Fatalf("room_joined %s", args)
	}
	if err := adm.Emit(ctx, "_disconnect", "/", false, user.ID()); err != nil {
		t.Fatal(err)
	}
	if args := ev.wait(t, "socket_disconnected"); string(args[1]) != `"`+user.ID()+`"` || string(args[2]) != `"server namespace disconnect"` {
		t.Fatalf("socket_disconnected %s", args)
	}
	// The dashboard's histogram gets the disconnection with its reason.
	for range 3 {
		var st stats
		if err := json.Unmarshal(ev.wait(t, "server_stats")[0], &st); err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(st.AggregatedEvents, func(e aggregated) bool {
			return e.Type == "rawDisconnection" && e.SubType == "server namespace disconnect" && e.Count == 1 && e.Timestamp%1000 == 0
		}) {
			return
		}
	}
	t.Fatal("no rawDisconnection in three server_stats")
}

func TestReadOnly(t *testing.T) {
	srv, url := serve(t, &Options{NoAuth: true, ReadOnly: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	user, err := sioclient.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer user.Close()
	adm, ev, err := dialAdmin(t, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		SupportedFeatures []string `json:"supportedFeatures"`
	}
	if err := json.Unmarshal(ev.wait(t, "config")[0], &cfg); err != nil {
		t.Fatal(err)
	}
	for _, f := range cfg.SupportedFeatures {
		if f != featureAggregatedEvents && f != featureAllEvents {
			t.Fatalf("read-only announces %q", f)
		}
	}
	if err := adm.Emit(ctx, "_disconnect", "/", true, user.ID()); err != nil {
		t.Fatal(err)
	}
	// A round trip on the main namespace after the refused action: still there.
	ev.wait(t, "server_stats")
	if srv.Of("/").LocalSocket(user.ID()) == nil {
		t.Fatal("read-only UI disconnected a socket")
	}
}
