package engineio

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

var (
	memConns  = flag.Int("eio.conns", 2000, "WebSocket connections opened by BenchmarkIdleWebSocketMemory")
	memNoPoll = flag.Bool("eio.nopoll", false, "BenchmarkIdleWebSocketMemory without the poller: a reader goroutine per connection")
)

// nopHandler ignores every event.
type nopHandler struct{}

func (nopHandler) OnOpen(*Session)             {}
func (nopHandler) OnMessage(*Session, Message) {}
func (nopHandler) OnClose(*Session, string)    {}

// BenchmarkIdleWebSocketMemory measures the server memory (heap in use plus
// goroutine stacks) of idle WebSocket sessions. The clients run in a child
// process so that only the server side is counted.
func BenchmarkIdleWebSocketMemory(b *testing.B) {
	n := *memConns
	srv := NewServer(nopHandler{}, nil)
	if *memNoPoll {
		srv.pollErr = errPollerOff
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			b.Errorf("Shutdown: %v", err)
		}
	}()

	if os.Getenv("EIO_MEMORY_PROFILE") != "" {
		runtime.MemProfileRate = 1
	}
	heap0, stack0 := serverMemoryParts()
	cmd := exec.Command(os.Args[0], "-test.run=^TestMemoryClients$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		"EIO_MEMORY_CLIENT_URL=ws"+strings.TrimPrefix(hs.URL, "http")+"/?EIO=4&transport=websocket",
		"EIO_MEMORY_CLIENT_N="+strconv.Itoa(n))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = stdin.Close() // tells the child to close its connections and exit
		if err := cmd.Wait(); err != nil {
			b.Errorf("client process: %v", err)
		}
	}()
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() || sc.Text() != "ready" {
		b.Fatalf("client process did not get ready: %q", sc.Text())
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	if got := srv.Count(); got != n {
		b.Fatalf("Count = %d, want %d", got, n)
	}
	heap1, stack1 := serverMemoryParts()
	// Signed deltas: the stack of an earlier run's goroutines may be freed
	// meanwhile.
	dHeap, dStack := int64(heap1)-int64(heap0), int64(stack1)-int64(stack0)
	b.ReportMetric(float64(dHeap+dStack)/float64(n), "bytes/conn")
	b.ReportMetric(float64(dHeap)/float64(n), "heap-bytes/conn")
	b.ReportMetric(float64(dStack)/float64(n), "stack-bytes/conn")
	if os.Getenv("EIO_MEMORY_PROFILE") != "" {
		f, err := os.Create(os.Getenv("EIO_MEMORY_PROFILE"))
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(runtime.NumGoroutine()), "goroutines")
	for range b.N {
		// The measurement is the setup; the loop only satisfies the benchmark API.
	}
}

func serverMemoryParts() (heap, stack uint64) {
	var ms runtime.MemStats
	for range 3 {
		runtime.GC()
	}
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse, ms.StackInuse
}

// TestMemoryClients is the client process of BenchmarkIdleWebSocketMemory; it
// does nothing unless started by it.
func TestMemoryClients(t *testing.T) {
	url := os.Getenv("EIO_MEMORY_CLIENT_URL")
	if url == "" {
		t.Skip("client process of BenchmarkIdleWebSocketMemory only")
	}
	n, err := strconv.Atoi(os.Getenv("EIO_MEMORY_CLIENT_N"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conns := make([]*websocket.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			_ = c.CloseNow()
		}
	}()
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 0}}
	for range n {
		c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: client})
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if _, _, err := c.Read(ctx); err != nil { // the open packet
			t.Fatal(err)
		}
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
}
