package engineio

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

type reqValueKey struct{}

// requestValues keeps net/http's two values alone only for the context of a
// plain http.Server; any other context keeps every value.
func TestRequestValues(t *testing.T) {
	cases := []struct {
		name      string
		wrap      func(http.Handler) http.Handler
		conn      bool // the server adds a value per connection (ConnContext)
		compact   bool
		wantValue bool
	}{
		{name: "plain server", wrap: func(h http.Handler) http.Handler { return h }, compact: true},
		{name: "value from middleware", wrap: func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), reqValueKey{}, "v")))
			})
		}, wantValue: true},
		{name: "value under a cancel from middleware", wrap: func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ctx, cancel := context.WithCancel(context.WithValue(r.Context(), reqValueKey{}, "v"))
				defer cancel()
				h.ServeHTTP(w, r.WithContext(ctx))
			})
		}, wantValue: true},
		{name: "value per connection", wrap: func(h http.Handler) http.Handler { return h }, conn: true, wantValue: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan context.Context, 1)
			var srv *http.Server
			hs := httptest.NewUnstartedServer(tc.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got <- requestValues(r.Context())
			})))
			srv = hs.Config
			if tc.conn {
				srv.ConnContext = func(ctx context.Context, _ net.Conn) context.Context {
					return context.WithValue(ctx, reqValueKey{}, "v")
				}
			}
			hs.Start()
			defer hs.Close()
			resp, err := http.Get(hs.URL)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			hs.Client().CloseIdleConnections()
			vals := <-got
			if _, compact := vals.(httpValues); compact != tc.compact {
				t.Errorf("compact = %v, want %v (%T)", compact, tc.compact, vals)
			}
			if s := vals.Value(http.ServerContextKey); s != srv {
				t.Errorf("ServerContextKey = %v, want the server", s)
			}
			if a, ok := vals.Value(http.LocalAddrContextKey).(net.Addr); !ok || a.String() != hs.Listener.Addr().String() {
				t.Errorf("LocalAddrContextKey = %v, want %v", a, hs.Listener.Addr())
			}
			if v := vals.Value(reqValueKey{}); (v == "v") != tc.wantValue {
				t.Errorf("middleware value = %v, want it: %v", v, tc.wantValue)
			}
			if vals.Done() != nil || vals.Err() != nil {
				t.Error("the values are cancelled")
			}
		})
	}
}
