package redisbus

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/internal/testwait"
)

var bothKinds = []Kind{Streams, PubSub}

func TestTLS(t *testing.T) {
	t.Parallel()
	srv := redistest.Standalone(t, redistest.WithTLS())
	files := srv.TLS()
	q := url.Values{"ca": {files.CACert}, "cert": {files.ClientCert}, "key": {files.ClientKey}}
	withParams := "rediss://" + srv.Addr() + "?" + q.Encode()
	for _, kind := range bothKinds {
		t.Run(kind.String()+"/url-params", func(t *testing.T) {
			testTransport(t, kind, urlFactory(withParams, nil))
		})
	}
	t.Run("options-files", func(t *testing.T) {
		testTransport(t, Streams, urlFactory("rediss://"+srv.Addr(), func(o *Options) {
			o.CAFile, o.CertFile, o.KeyFile = files.CACert, files.ClientCert, files.ClientKey
		}))
	})
	t.Run("options-tls-config", func(t *testing.T) {
		testTransport(t, PubSub, urlFactory("rediss://"+srv.Addr(), func(o *Options) {
			o.TLSConfig = srv.TLSConfig()
		}))
	})
	t.Run("unknown-ca", func(t *testing.T) {
		// The system pool does not know the test CA: the handshake fails and
		// so does every call, promptly.
		o := faultOpts(Streams)
		o.CertFile, o.KeyFile = files.ClientCert, files.ClientKey
		// Time enough for a handshake on a loaded machine: the test is
		// about the error, and a dial that times out first says nothing of
		// the certificate.
		o.DialTimeout, o.WriteTimeout = 15*time.Second, 15*time.Second
		tr := newTransport(t, "rediss://"+srv.Addr(), o)
		err := tr.Ping(context.Background())
		if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("Ping with an unknown CA: %v, want ErrUnavailable about the certificate", err)
		}
	})
	t.Run("plain-to-tls-port", func(t *testing.T) {
		tr := newTransport(t, "redis://"+srv.Addr(), faultOpts(Streams))
		ctx, cancel := context.WithTimeout(context.Background(), failFast)
		defer cancel()
		if err := tr.Ping(ctx); err == nil {
			t.Error("Ping in plain text to a TLS port succeeded")
		}
	})
}

func TestACL(t *testing.T) {
	t.Parallel()
	srv := redistest.Standalone(t, redistest.WithUser("busnode", "s3cret-pw"))
	for _, kind := range bothKinds {
		t.Run(kind.String(), func(t *testing.T) {
			testTransport(t, kind, urlFactory(srv.URL(), nil))
		})
	}
	t.Run("options-credentials", func(t *testing.T) {
		testTransport(t, Streams, urlFactory("redis://"+srv.Addr(), func(o *Options) {
			o.Username, o.Password = "busnode", "s3cret-pw"
		}))
	})
	t.Run("wrong-password", func(t *testing.T) {
		tr := newTransport(t, "redis://busnode:wrong@"+srv.Addr(), faultOpts(Streams))
		err := tr.Ping(context.Background())
		if !errors.Is(err, ErrUnavailable) || !strings.Contains(strings.ToUpper(err.Error()), "WRONGPASS") {
			t.Errorf("Ping with a wrong password: %v, want ErrUnavailable with WRONGPASS", err)
		}
	})
	t.Run("no-credentials", func(t *testing.T) {
		tr := newTransport(t, "redis://"+srv.Addr(), faultOpts(Streams))
		if err := tr.Ping(context.Background()); err == nil {
			t.Error("Ping without credentials succeeded on a server whose default user is off")
		}
	})
}

func TestUnixSocket(t *testing.T) {
	t.Parallel()
	// Socket paths are limited to about 100 bytes: t.TempDir can be longer.
	dir, err := os.MkdirTemp("", "rb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Error(err)
		}
	})
	sock := filepath.Join(dir, "redis.sock")
	redistest.Standalone(t, redistest.WithConfig("unixsocket "+sock, "unixsocketperm 700"))
	for _, kind := range bothKinds {
		t.Run(kind.String(), func(t *testing.T) {
			testTransport(t, kind, urlFactory("unix://"+sock, nil))
		})
	}
	t.Run("missing-socket", func(t *testing.T) {
		tr := newTransport(t, "unix://"+filepath.Join(dir, "nothing.sock"), faultOpts(Streams))
		expectUnavailable(t, tr)
	})
}

func TestSentinel(t *testing.T) {
	t.Parallel()
	ss := redistest.Sentinel(t, redistest.WithAOF())
	for _, kind := range bothKinds {
		t.Run(kind.String(), func(t *testing.T) {
			testTransport(t, kind, urlFactory(ss.URL(), nil))
		})
	}
	t.Run("wrong-master-name", func(t *testing.T) {
		u := strings.Replace(ss.URL(), "/"+ss.MasterName(), "/nosuchmaster", 1)
		tr := newTransport(t, u, faultOpts(Streams))
		expectUnavailable(t, tr)
	})
	// Last: it moves the primary.
	t.Run("failover", func(t *testing.T) {
		testFailover(t, ss.URL(), func(ctx context.Context) error {
			if _, err := ss.KillPrimary(); err != nil {
				return err
			}
			_, err := ss.WaitFailover(ctx)
			return err
		})
	})
}

func TestCluster(t *testing.T) {
	t.Parallel()
	cs := redistest.Cluster(t)
	for _, kind := range bothKinds {
		t.Run(kind.String(), func(t *testing.T) {
			testTransport(t, kind, urlFactory(cs.URL(), nil))
		})
	}
	t.Run("partitions-spread", func(t *testing.T) {
		ctx := context.Background()
		node := cs.Nodes()[0]
		slots := map[int64]bool{}
		primaries := map[string]bool{}
		for p := range DefaultStreamPartitions {
			v, err := node.Do(ctx, "CLUSTER", "KEYSLOT", StreamKey(DefaultPrefix, p))
			if err != nil {
				t.Fatal(err)
			}
			slot, ok := v.(int64)
			if !ok {
				t.Fatalf("CLUSTER KEYSLOT reply %T", v)
			}
			slots[slot] = true
			srv, err := cs.PrimaryOfSlot(ctx, int(slot))
			if err != nil {
				t.Fatal(err)
			}
			primaries[srv.Addr()] = true
		}
		if len(slots) != DefaultStreamPartitions {
			t.Errorf("%d partitions in %d slots, want one slot each", DefaultStreamPartitions, len(slots))
		}
		if len(primaries) != 3 {
			t.Errorf("%d partitions on %d of 3 primaries", DefaultStreamPartitions, len(primaries))
		}
	})
	t.Run("direct-spread", func(t *testing.T) { testDirectSpread(t, cs) })
	t.Run("not-a-cluster", func(t *testing.T) {
		srv := redistest.Standalone(t)
		tr := newTransport(t, "redis+cluster://"+srv.Addr(), faultOpts(Streams))
		if err := tr.Ping(context.Background()); !errors.Is(err, ErrBadURL) {
			t.Errorf("redis+cluster URL of a standalone server: %v, want ErrBadURL", err)
		}
	})
	t.Run("failover", func(t *testing.T) {
		testFailover(t, cs.URL(), func(ctx context.Context) error {
			if _, err := cs.KillPrimaryOf(ctx, StreamKey("failover", 0)); err != nil {
				return err
			}
			return cs.WaitHealthy(ctx)
		})
	})
}

// testFailover runs a streams transport with WAIT 1 through a failover: frames
// Publish confirmed while the subscriber was away are read after the failover,
// and the transports work on the new primary without being rebuilt.
func testFailover(t *testing.T, url string, failover func(ctx context.Context) error) {
	o := faultOpts(Streams)
	o.Prefix = "failover"
	o.WaitReplicas = 1
	// A replica acknowledges within 5 s even on a loaded machine; the last
	// check waits this long for the replica that is gone.
	o.WaitTimeout = 5 * time.Second
	pub, subT := newTransport(t, url, o), newTransport(t, url, o)
	sub := startSubscribe(t, subT, "s")
	syncSubscribed(t, pub, "s", sub)
	publish(t, pub, numbered(0, 100, o.Partitions))
	sub.waitFor(t, "frames before the failover", countNumbered(0, 100))
	if err := sub.stop(t); !errors.Is(err, context.Canceled) {
		t.Errorf("Subscribe after cancel: %v", err)
	}
	// Confirmed by a replica, not yet read by anyone.
	publish(t, pub, numbered(100, 150, o.Partitions))
	// A pub/sub subscriber whose partition 0 shares its slot (hash tag) with
	// stream 0: it must end with an error when that primary dies.
	po := faultOpts(PubSub)
	po.Prefix, po.Partitions = o.Prefix, o.Partitions
	psT := newTransport(t, url, po)
	psSub := startSubscribe(t, psT, "p")
	syncSubscribed(t, psT, "p", psSub)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := failover(ctx); err != nil {
		t.Fatal(err)
	}
	if err := psSub.waitEnded(t, waitLong); err == nil {
		t.Error("pub/sub Subscribe returned nil when its primary died")
	}
	// The killed primary stays down, so the new one has no replica: WAIT 1
	// cannot succeed any more, and a publisher without WAIT carries on.
	o.WaitReplicas = 0
	pub2 := newTransport(t, url, o)
	eventually(t, "Publish on the new primary", func(ctx context.Context) error {
		return pub2.Publish(ctx, numbered(150, 160, o.Partitions))
	})
	sub2 := startResubscribe(t, subT, "s")
	sub2.waitFor(t, "frames after the failover", countNumbered(100, 160))
	checkNumbered(t, sub2.snapshot(), 100, 160, o.Partitions)
	checkNumbered(t, append(sub.snapshot(), sub2.snapshot()...), 0, 160, o.Partitions)
	eventually(t, "WAIT 1 reporting the missing replica", func(context.Context) error {
		// Longer than the 2 s of eventually: WAIT itself takes WaitTimeout.
		ctx, cancel := context.WithTimeout(context.Background(), 2*o.WaitTimeout+time.Second)
		defer cancel()
		err := pub.Publish(ctx, []bus.Frame{{Partition: 0, Data: []byte("x")}})
		if errors.Is(err, ErrNotReplicated) {
			return nil
		}
		return fmt.Errorf("got %v, want ErrNotReplicated", err)
	})
}

// TestClusterTakeoverRefusesBatch: a replica takes over the slot of a
// partition (CLUSTER FAILOVER TAKEOVER) while the old primary keeps running,
// so no connection breaks. The next Publish to that partition is refused with
// ErrPrimaryChanged (the old primary answers MOVED) and writes nothing: the
// bus must republish what the old primary acknowledged last before anything
// newer. The publish after it goes to the new primary.
func TestClusterTakeoverRefusesBatch(t *testing.T) {
	t.Parallel()
	cs := redistest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opts := faultOpts(Streams)
	opts.Prefix = "takeover"
	tr := newTransport(t, cs.URL(), opts)
	publish(t, tr, numbered(0, 8, opts.Partitions))
	key := StreamKey(opts.Prefix, 0)
	primary, err := cs.PrimaryOfSlot(ctx, redistest.KeySlot(key))
	if err != nil {
		t.Fatal(err)
	}
	reps, err := cs.ReplicasOf(ctx, primary)
	if err != nil || len(reps) == 0 {
		t.Fatalf("replicas of %s: %v, %v", primary.Addr(), reps, err)
	}
	if err := cs.Failover(ctx, reps[0], "TAKEOVER"); err != nil {
		t.Fatal(err)
	}
	refused := bus.Frame{Partition: 0, Data: []byte("refused")}
	err = tr.Publish(ctx, []bus.Frame{refused})
	if !errors.Is(err, ErrPrimaryChanged) || !errors.Is(err, bus.ErrPrimaryChanged) {
		t.Fatalf("Publish after the takeover: %v, want ErrPrimaryChanged", err)
	}
	after := bus.Frame{Partition: 0, Data: []byte("after")}
	tries := 0
	testwait.For(t, 10*time.Second, "a publish on the new primary", func() bool {
		tries++
		return tr.Publish(ctx, []bus.Frame{after}) == nil
	})
	entries, err := reps[0].Do(ctx, "XRANGE", key, "-", "+")
	if err != nil {
		t.Fatal(err)
	}
	var refusedN, afterN int
	for _, e := range entries.([]any) {
		fv := e.([]any)[1].([]any)
		switch fv[1] {
		case "refused":
			refusedN++
		case "after":
			afterN++
		}
	}
	if refusedN != 0 || afterN != 1 {
		t.Fatalf("new primary holds %d refused and %d later frames, want 0 and 1 (%d tries)", refusedN, afterN, tries)
	}
}
