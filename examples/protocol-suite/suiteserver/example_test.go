package suiteserver_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/durasock/durasock/examples/protocol-suite/suiteserver"
)

// The official suites expect the server at the root of an HTTP server; here it
// answers an Engine.IO handshake with the suites' settings.
func Example() {
	srv := suiteserver.New(nil)
	ts := httptest.NewServer(srv)
	defer ts.Close()
	defer srv.Close()

	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet,
		ts.URL+"/socket.io/?EIO=4&transport=polling", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		fmt.Println(err)
		return
	}
	open := string(body)
	fmt.Println(res.StatusCode, open[:1], strings.Contains(open, `"pingInterval":300,"pingTimeout":200,"maxPayload":1000000`))
	// Output: 200 0 true
}
