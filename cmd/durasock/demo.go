package main

import (
	"context"
	"embed"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/durasock/durasock/socketio"
)

// web holds the demo page and the official Socket.IO browser client (MIT), served
// at <path>socket.io.min.js as the reference server does.
//
//go:embed web/index.html web/socket.io.min.js
var web embed.FS

func mountDemo(mux *http.ServeMux, sioPath string) {
	page, client := mustRead("web/index.html"), mustRead("web/socket.io.min.js")
	if sioPath != "/socket.io/" {
		page = []byte(strings.ReplaceAll(string(page), "/socket.io/", sioPath))
	}
	serve := func(body []byte, ctype string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", ctype)
			w.Header().Set("Cache-Control", "no-cache")
			// A write error means the browser went away.
			_, _ = w.Write(body)
		}
	}
	mux.HandleFunc("GET /{$}", serve(page, "text/html; charset=utf-8"))
	for _, name := range []string{"socket.io.js", "socket.io.min.js"} {
		mux.HandleFunc("GET "+sioPath+name, serve(client, "application/javascript; charset=utf-8"))
	}
}

func mustRead(name string) []byte {
	b, err := web.ReadFile(name)
	if err != nil {
		panic("durasock: embedded file missing: " + name) // a build defect, not input
	}
	return b
}

// Limits of the demo chat's input.
const (
	maxNameLen = 32
	maxRoomLen = 32
	maxTextLen = 2000
)

type joinMsg struct {
	Room string `json:"room"`
	Name string `json:"name"`
}

type chatMsg struct {
	Room string `json:"room"`
	Text string `json:"text"`
	Name string `json:"name,omitempty"`
}

type presenceMsg struct {
	Room   string `json:"room"`
	Name   string `json:"name"`
	Joined bool   `json:"joined"`
}

// member is what the demo keeps per socket (Socket.Data, visible to FetchSockets
// on every node).
type member struct {
	Name string `json:"name"`
	Room string `json:"room"`
}

// setupDemo registers the chat of the demo page on the main namespace: rooms,
// typing notices (volatile) and acknowledged messages. It works the same on one
// process and on a cluster.
func setupDemo(srv *socketio.Server, log *slog.Logger) {
	nsp := srv.Of("/")
	nsp.OnConnection(func(s *socketio.Socket) {
		var me member
		ctx := func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 5*time.Second)
		}

		leave := func() {
			if me.Room == "" {
				return
			}
			c, cancel := ctx()
			defer cancel()
			s.Leave(me.Room)
			if err := s.To(me.Room).Emit(c, "presence", presenceMsg{Room: me.Room, Name: me.Name}); err != nil {
				log.Warn("demo: presence not sent", "err", err)
			}
		}
		s.On("join", func(e *socketio.Event) {
			var m joinMsg
			if err := e.Bind(&m); err != nil || !validText(m.Room, maxRoomLen) || !validText(m.Name, maxNameLen) {
				replyError(e, "join wants {room, name}: non-empty, at most 32 characters")
				return
			}
			leave()
			me = member{Name: m.Name, Room: m.Room}
			if err := s.SetData(me); err != nil {
				log.Warn("demo: socket data", "err", err)
			}
			s.Join(m.Room)
			c, cancel := ctx()
			defer cancel()
			if err := s.To(m.Room).Emit(c, "presence", presenceMsg{Room: m.Room, Name: m.Name, Joined: true}); err != nil {
				replyError(e, "joined, but the room was not told: "+err.Error())
				return
			}
			n := 1
			if sockets, err := nsp.In(m.Room).FetchSockets(c); err == nil {
				n = len(sockets)
			}
			ackOrLog(e, log, map[string]int{"members": n})
		})
		s.On("chat", func(e *socketio.Event) {
			var m chatMsg
			if err := e.Bind(&m); err != nil || m.Room != me.Room || me.Room == "" || !validText(m.Text, maxTextLen) {
				replyError(e, "chat wants {room, text} for the room you joined")
				return
			}
			m.Name = me.Name
			c, cancel := ctx()
			defer cancel()
			if err := s.To(m.Room).Emit(c, "chat", m); err != nil {
				replyError(e, "not delivered: "+err.Error())
				return
			}
			n := 0
			if sockets, err := nsp.In(m.Room).FetchSockets(c); err == nil {
				n = len(sockets) - 1
			}
			ackOrLog(e, log, map[string]int{"delivered": n})
		})
		s.On("typing", func(e *socketio.Event) {
			if me.Room == "" {
				return
			}
			c, cancel := ctx()
			defer cancel()
			// Typing notices are volatile: losing one is harmless.
			if err := s.To(me.Room).Volatile().Emit(c, "typing", map[string]string{"name": me.Name}); err != nil {
				log.Debug("demo: typing not sent", "err", err)
			}
		})
		s.OnDisconnect(func(string) { leave() })
	})
}

func validText(s string, max int) bool {
	s = strings.TrimSpace(s)
	return s != "" && len(s) <= max
}

func replyError(e *socketio.Event, msg string) {
	if e.HasAck() {
		// The client may be gone; nothing else to do with the error.
		_ = e.Ack(map[string]string{"error": msg})
	}
}

func ackOrLog(e *socketio.Event, log *slog.Logger, v any) {
	if !e.HasAck() {
		return
	}
	if err := e.Ack(v); err != nil {
		log.Debug("demo: ack not sent", "err", err)
	}
}
