package engineio_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/durasock/durasock/engineio"
)

// echo sends every message back to its sender.
type echo struct{}

func (echo) OnOpen(s *engineio.Session) {}

func (echo) OnMessage(s *engineio.Session, m engineio.Message) {
	if err := s.Send(m); err != nil {
		// The session is closed or its queue was full (then it is closed too).
		return
	}
}

func (echo) OnClose(s *engineio.Session, reason string) {}

// An echo server mounted on /engine.io/, spoken to with the polling transport.
func ExampleNewServer() {
	srv := engineio.NewServer(echo{}, &engineio.Options{
		PingInterval: 25 * time.Second,
		CORS:         &engineio.CORSOptions{Origins: []string{"*"}},
	})
	mux := http.NewServeMux()
	mux.Handle("/engine.io/", srv)
	hs := httptest.NewServer(mux)
	defer hs.Close()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			fmt.Println("shutdown:", err)
		}
	}()

	get := func(query string) string {
		res, err := http.Get(hs.URL + "/engine.io/?EIO=4&transport=polling" + query)
		if err != nil {
			return err.Error()
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err != nil {
			return err.Error()
		}
		return string(b)
	}
	open := get("")
	sid := open[len(`0{"sid":"`):strings.Index(open, `",`)]
	res, err := http.Post(hs.URL+"/engine.io/?EIO=4&transport=polling&sid="+sid, "text/plain", strings.NewReader("4hello\x1ebAQID"))
	if err != nil {
		fmt.Println(err)
		return
	}
	res.Body.Close()
	fmt.Printf("%q\n", get("&sid="+sid))
	// Output: "4hello\x1ebAQID"
}

// Shutdown closes hijacked WebSocket connections, which http.Server.Shutdown
// does not know; register it so one call drains both.
func ExampleServer_Shutdown() {
	eio := engineio.NewServer(echo{}, nil)
	hs := &http.Server{Addr: "127.0.0.1:0", Handler: eio}
	hs.RegisterOnShutdown(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := eio.Shutdown(ctx); err != nil {
			fmt.Println("engine.io shutdown:", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hs.Shutdown(ctx); err != nil {
		fmt.Println(err)
	}
	fmt.Println("sessions:", eio.Count())
	// Output: sessions: 0
}

// ExampleCORSOptions allows one site and its subdomains, with credentials
// (cookies), as a function given to the origin option of Node's cors package
// would. "*" would allow every site, but never with credentials.
func ExampleCORSOptions() {
	srv := engineio.NewServer(echo{}, &engineio.Options{CORS: &engineio.CORSOptions{
		Origins: []string{"https://example.com"},
		AllowOriginFunc: func(origin string, _ *http.Request) bool {
			return strings.HasPrefix(origin, "https://") && strings.HasSuffix(origin, ".example.com")
		},
		Credentials: true,
	}})
	defer srv.Close()

	req := httptest.NewRequest(http.MethodOptions, "/engine.io/?EIO=4&transport=polling", nil)
	req.Header.Set("Origin", "https://app.example.com")
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, req)
	fmt.Println(rec.Code, rec.Header().Get("Access-Control-Allow-Origin"), rec.Header().Get("Access-Control-Allow-Credentials"))
	// Output: 204 https://app.example.com true
}
