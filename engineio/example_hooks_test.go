package engineio_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/durasock/durasock/engineio"
)

// A cookie with the session id lets a load balancer keep each client on one
// server; the header hooks add headers of the application's own, and
// refused requests are reported with the reference server's codes.
func ExampleOptions_Cookie() {
	srv := engineio.NewServer(echo{}, &engineio.Options{
		Cookie: &http.Cookie{Name: "io"},
		OnInitialHeaders: func(h http.Header, r *http.Request) {
			h.Set("X-Served-By", "node-1")
		},
		OnConnectionError: func(e *engineio.RequestError) {
			fmt.Println("refused:", e.Code, e.Message, e.Context["transport"])
		},
		// Polling responses of 1 KiB or more are gzip- or deflate-compressed
		// for clients that accept it (the default); -1 turns it off.
		HTTPCompressionThreshold: 1024,
	})
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()

	res, err := http.Get(hs.URL + "/?EIO=4&transport=polling")
	if err != nil {
		fmt.Println(err)
		return
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	fmt.Println(res.Cookies()[0].Name, res.Cookies()[0].HttpOnly, res.Header.Get("X-Served-By"))

	res, err = http.Get(hs.URL + "/?EIO=4&transport=carrier-pigeon")
	if err != nil {
		fmt.Println(err)
		return
	}
	res.Body.Close()
	// Output:
	// io true node-1
	// refused: 0 Transport unknown carrier-pigeon
}
