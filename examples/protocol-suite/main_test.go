package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/durasock/durasock/examples/protocol-suite/suiteserver"
	"github.com/durasock/durasock/internal/testwait"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestRunRejectsBadFlags(t *testing.T) {
	if err := run(context.Background(), []string{"-nope"}); err == nil {
		t.Fatal("run accepted an unknown flag")
	}
	if err := run(context.Background(), []string{"-addr", "256.0.0.1:1"}); err == nil {
		t.Fatal("run accepted an address it cannot listen on")
	}
}

// TestServeAndStop serves both endpoints on a real port and stops when the
// context ends, with a WebSocket session still open.
func TestServeAndStop(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, suiteserver.New(nil)) }()

	base := "http://" + ln.Addr().String()
	for _, path := range []string{"/engine.io/", "/socket.io/"} {
		body := get(t, base+path+"?EIO=4&transport=polling")
		if !strings.HasPrefix(body, `0{"sid":`) || !strings.Contains(body, `"pingInterval":300`) {
			t.Errorf("handshake on %s: %q", path, body)
		}
	}
	// A polling GET that waits for data on the server when it stops. The
	// suite's 300 ms ping can answer a GET before it is seen waiting (a loaded
	// machine); then a new session tries again.
	var pending chan string
	for attempt := 1; ; attempt++ {
		body := get(t, base+"/engine.io/?EIO=4&transport=polling")
		sid := body[len(`0{"sid":"`):strings.Index(body, `","upgrades"`)]
		pending = make(chan string, 1)
		go func() { pending <- get(t, base+"/engine.io/?EIO=4&transport=polling&sid="+sid) }()
		waiting := false
		testwait.For(t, 10*time.Second, "the poll to wait on the server or be answered", func() bool {
			waiting = pollWaiting()
			return waiting || len(pending) == 1
		})
		if waiting {
			break
		}
		if attempt == 20 {
			t.Fatal("no poll was seen waiting on the server in 20 tries")
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return within 10s of cancel")
	}
	select {
	case <-pending:
	case <-time.After(10 * time.Second):
		t.Fatal("the pending poll did not end")
	}
}

// pollWaiting reports whether a polling GET is held by the server, waiting
// for something to send.
func pollWaiting() bool {
	var b bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
	return strings.Contains(b.String(), "servePoll")
}

func get(t *testing.T, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Error(err)
		return ""
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return "error: " + err.Error()
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return "error: " + err.Error()
	}
	return string(b)
}
