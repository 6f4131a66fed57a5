package redisbus

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/durasock/durasock/bus"
)

func TestParseEndpoint(t *testing.T) {
	tests := []struct {
		url  string
		want Endpoint
	}{
		{"redis://localhost", Endpoint{Topology: Standalone, Addrs: []string{"localhost:6379"}}},
		{"redis://127.0.0.1:7000/3", Endpoint{Topology: Standalone, Addrs: []string{"127.0.0.1:7000"}, DB: 3}},
		{"REDIS://h:1/", Endpoint{Topology: Standalone, Addrs: []string{"h:1"}}},
		{"redis://u:p%40ss@h:1?db=2&client_name=node-1", Endpoint{Topology: Standalone, Addrs: []string{"h:1"}, Username: "u", Password: "p@ss", DB: 2, ClientName: "node-1"}},
		{"redis://:secret@h", Endpoint{Topology: Standalone, Addrs: []string{"h:6379"}, Password: "secret"}},
		{"redis://user@h", Endpoint{Topology: Standalone, Addrs: []string{"h:6379"}, Username: "user"}},
		{"redis://a:b:c@h", Endpoint{Topology: Standalone, Addrs: []string{"h:6379"}, Username: "a", Password: "b:c"}},
		{"redis://[::1]:6380", Endpoint{Topology: Standalone, Addrs: []string{"[::1]:6380"}}},
		{"redis://[::1]", Endpoint{Topology: Standalone, Addrs: []string{"[::1]:6379"}}},
		{"redis://h?inboxes=256", Endpoint{Topology: Standalone, Addrs: []string{"h:6379"}, Inboxes: 256}},
		{"redis+cluster://h1,h2?inboxes=1&client_name=n", Endpoint{Topology: Cluster, Addrs: []string{"h1:6379", "h2:6379"}, Inboxes: 1, ClientName: "n"}},
		{"redis://h?dial_timeout=250ms&write_timeout=2s", Endpoint{Topology: Standalone, Addrs: []string{"h:6379"}, DialTimeout: 250 * time.Millisecond, WriteTimeout: 2 * time.Second}},
		{"rediss://h:6380?ca=/ca.pem&cert=/c.pem&key=/k.pem&server_name=redis.local&skip_verify=false", Endpoint{Topology: Standalone, TLS: true, Addrs: []string{"h:6380"}, CAFile: "/ca.pem", CertFile: "/c.pem", KeyFile: "/k.pem", ServerName: "redis.local"}},
		{"rediss://h?skip_verify", Endpoint{Topology: Standalone, TLS: true, Addrs: []string{"h:6379"}, InsecureSkipVerify: true}},
		{"unix:///var/run/redis.sock", Endpoint{Topology: Unix, Addrs: []string{"/var/run/redis.sock"}}},
		{"unix://u:p@/tmp/r.sock?db=5", Endpoint{Topology: Unix, Addrs: []string{"/tmp/r.sock"}, Username: "u", Password: "p", DB: 5}},
		{"redis+sentinel://s1,s2:26380,s3:1/mymaster", Endpoint{Topology: Sentinel, Addrs: []string{"s1:26379", "s2:26380", "s3:1"}, MasterName: "mymaster"}},
		{"redis+sentinel://u:p@s1:26379/mymaster/2?sentinel_username=su&sentinel_password=sp", Endpoint{Topology: Sentinel, Addrs: []string{"s1:26379"}, MasterName: "mymaster", DB: 2, Username: "u", Password: "p", SentinelUsername: "su", SentinelPassword: "sp"}},
		{"rediss+sentinel://s1/m?ca=/ca.pem", Endpoint{Topology: Sentinel, TLS: true, Addrs: []string{"s1:26379"}, MasterName: "m", CAFile: "/ca.pem"}},
		{"redis+cluster://h1:7000,h2:7001,h3", Endpoint{Topology: Cluster, Addrs: []string{"h1:7000", "h2:7001", "h3:6379"}}},
		{"rediss+cluster://u:p@h1:7000/", Endpoint{Topology: Cluster, TLS: true, Addrs: []string{"h1:7000"}, Username: "u", Password: "p"}},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			got, err := ParseEndpoint(tt.url)
			if err != nil {
				t.Fatalf("ParseEndpoint: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseEndpoint mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseEndpointErrors(t *testing.T) {
	tests := []struct {
		url, reason string
	}{
		{"", "empty URL"},
		{"localhost:6379", "missing scheme"},
		{"http://h", `unknown scheme "http"`},
		{"redis://", "missing host"},
		{"redis://:6379", "empty host"},
		{"redis://h:0", "bad port"},
		{"redis://h:65536", "bad port"},
		{"redis://h:port", "bad port"},
		{"redis://h/x", `bad database number "x"`},
		{"redis://h/-1", "bad database number"},
		{"redis://h/1/2", "unexpected path"},
		{"redis://h1,h2", "use redis+cluster://"},
		{"redis://h?db=x", "bad database number"},
		{"redis://h?dial_timeout=5", "not a positive duration"},
		{"redis://h?write_timeout=-1s", "not a positive duration"},
		{"redis://h?timeout=1s", `unknown parameter "timeout"`},
		{"redis://h?db=1&db=2", "given 2 times"},
		{"redis://h?ca=/ca.pem", "need a rediss scheme"},
		{"redis://h?skip_verify=1", "need a rediss scheme"},
		{"rediss://h?skip_verify=maybe", "not a bool"},
		{"rediss://h?cert=/c.pem", "cert and key must be given together"},
		{"redis://h?sentinel_password=x", "need a redis+sentinel URL"},
		{"redis://h#frag", "fragment"},
		{"redis://h?client_name=a%20b", "client_name"},
		{"redis://::1", "must be in brackets"},
		{"redis://[::1", "unclosed"},
		{"redis://[::1]x", "bad host"},
		{"redis://u:p@h%zz", "bad host"},
		{"redis://u%zz:p@h", "bad escape in user name"},
		{"redis://u:p%zz@h", "bad escape in password"},
		{"unix://", "missing socket path"},
		{"unix://host/path.sock", "write unix:///path"},
		{"redis+sentinel://s1,s2", "missing master name"},
		{"redis+sentinel://s1/m/1/2", "unexpected path"},
		{"redis+sentinel://s1,,s2/m", "empty host in list"},
		{"redis+cluster://h1/1", "only database 0"},
		{"redis+cluster://h1?db=1", "only database 0"},
		{"redis://h?q=%zz", "bad query"},
		{"redis://h?inboxes=0", `inboxes "0" is not a count from 1 to 1024`},
		{"redis://h?inboxes=-4", `inboxes "-4" is not a count from 1 to 1024`},
		{"redis://h?inboxes=1025", `inboxes "1025" is not a count from 1 to 1024`},
		{"redis://h?inboxes=many", `inboxes "many" is not a count`},
		{"redis://h?inboxes=", `inboxes "" is not a count`},
		{"redis://h?inboxes=8&inboxes=8", "given 2 times"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			_, err := ParseEndpoint(tt.url)
			if err == nil {
				t.Fatalf("ParseEndpoint(%q) = nil error, want %q", tt.url, tt.reason)
			}
			if !errors.Is(err, ErrBadURL) {
				t.Errorf("error %v does not wrap ErrBadURL", err)
			}
			var ue *URLError
			if !errors.As(err, &ue) {
				t.Fatalf("error %T is not a *URLError", err)
			}
			if !strings.Contains(ue.Reason, tt.reason) {
				t.Errorf("reason %q does not contain %q", ue.Reason, tt.reason)
			}
		})
	}
}

func TestURLErrorHidesPassword(t *testing.T) {
	_, err := ParseEndpoint("redis://user:hunter2@h:bad")
	if err == nil {
		t.Fatal("want an error")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error shows the password: %v", err)
	}
	if !strings.Contains(err.Error(), "user:xxxxx@h") {
		t.Errorf("error %q does not show the redacted URL", err)
	}
}

func TestParseURL(t *testing.T) {
	co, err := ParseURL("redis://u:p@h:7000/4?dial_timeout=1s&write_timeout=3s&client_name=n")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := co.InitAddress, []string{"h:7000"}; !cmp.Equal(got, want) {
		t.Errorf("InitAddress = %v, want %v", got, want)
	}
	if co.Username != "u" || co.Password != "p" || co.SelectDB != 4 || co.ClientName != "n" {
		t.Errorf("auth/db/name = %q %q %d %q", co.Username, co.Password, co.SelectDB, co.ClientName)
	}
	if co.Dialer.Timeout != time.Second || co.ConnWriteTimeout != 3*time.Second {
		t.Errorf("timeouts = %v %v", co.Dialer.Timeout, co.ConnWriteTimeout)
	}
	if !co.DisableRetry || !co.DisableCache || !co.ForceSingleClient {
		t.Errorf("DisableRetry %v DisableCache %v ForceSingleClient %v, want all true", co.DisableRetry, co.DisableCache, co.ForceSingleClient)
	}
	if co.TLSConfig != nil {
		t.Error("TLS on for redis://")
	}

	co, err = ParseURL("redis+sentinel://u:p@s1,s2/m?sentinel_username=su&sentinel_password=sp")
	if err != nil {
		t.Fatal(err)
	}
	if co.Sentinel.MasterSet != "m" || co.Sentinel.Username != "su" || co.Sentinel.Password != "sp" || co.Username != "u" {
		t.Errorf("sentinel option = %+v, user %q", co.Sentinel, co.Username)
	}
	if co.ForceSingleClient {
		t.Error("ForceSingleClient for sentinel")
	}

	co, err = ParseURL("redis+cluster://h1:1,h2:2")
	if err != nil {
		t.Fatal(err)
	}
	if len(co.InitAddress) != 2 || co.ForceSingleClient {
		t.Errorf("cluster option: %v single=%v", co.InitAddress, co.ForceSingleClient)
	}

	co, err = ParseURL("unix:///tmp/x.sock")
	if err != nil {
		t.Fatal(err)
	}
	if co.DialCtxFn == nil || !co.ForceSingleClient {
		t.Error("unix URL without unix dialer")
	}

	co, err = ParseURL("rediss://h?skip_verify=true&server_name=x")
	if err != nil {
		t.Fatal(err)
	}
	if co.TLSConfig == nil || !co.TLSConfig.InsecureSkipVerify || co.TLSConfig.ServerName != "x" {
		t.Errorf("TLS config = %+v", co.TLSConfig)
	}
}

func TestParseURLTLSFiles(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	if _, err := ParseURL("rediss://h?ca=" + missing); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing CA file: err = %v, want os.ErrNotExist", err)
	}
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseURL("rediss://h?ca=" + junk); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("junk CA file: err = %v", err)
	}
	if _, err := ParseURL("rediss://h?cert=" + junk + "&key=" + junk); err == nil || !strings.Contains(err.Error(), "client certificate") {
		t.Errorf("junk client cert: err = %v", err)
	}
}

func TestOptionsOverrideURL(t *testing.T) {
	ep, err := ParseEndpoint("redis+sentinel://u:p@s1/m?sentinel_password=a")
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Username: "ou", Password: "op", SentinelPassword: "b", DialTimeout: 2 * time.Second, InsecureSkipVerify: true}
	o.setDefaults()
	co, err := clientOption(ep, &o)
	if err != nil {
		t.Fatal(err)
	}
	if co.Username != "ou" || co.Password != "op" || co.Sentinel.Password != "b" {
		t.Errorf("credentials not overridden: %q %q %q", co.Username, co.Password, co.Sentinel.Password)
	}
	if co.Dialer.Timeout != 2*time.Second {
		t.Errorf("dial timeout %v", co.Dialer.Timeout)
	}
	if co.TLSConfig == nil || !co.TLSConfig.InsecureSkipVerify || co.Sentinel.TLSConfig == nil {
		t.Error("InsecureSkipVerify option did not turn TLS on for master and sentinels")
	}
}

func TestOptionsValidate(t *testing.T) {
	bad := []Options{
		{Kind: Kind(7)},
		{Partitions: -1},
		{Partitions: maxPartitions + 1},
		{StreamMaxLen: -2},
		{StreamRetention: -2},
		{StreamRetention: time.Microsecond},
		{ReadBytes: -2},
		{BlockTimeout: time.Millisecond},
		{ReadCount: -1},
		{WaitReplicas: -1},
		{WaitTimeout: -time.Second},
		{DialTimeout: -1},
		{Prefix: "a{b}"},
		{Prefix: "a b"},
		{Inboxes: -1},
		{Kind: PubSub, Inboxes: 1},
		{Partitions: 8, Inboxes: maxPartitions - 7},
		{Partitions: maxPartitions, Inboxes: 1},
	}
	for _, o := range bad {
		o.URL = "redis://127.0.0.1:1"
		if _, err := NewTransport(&o); !errors.Is(err, ErrBadOptions) {
			t.Errorf("NewTransport(%+v) error = %v, want ErrBadOptions", o, err)
		}
	}
	// The retention follows the outbox max age it must cover.
	for _, tt := range []struct {
		o    Options
		want time.Duration
	}{
		{Options{}, bus.DefaultOutboxMaxAge + time.Minute},
		{Options{Bus: bus.Config{Outbox: bus.OutboxConfig{MaxAge: time.Hour}}}, time.Hour + time.Minute},
		{Options{Bus: bus.Config{Outbox: bus.OutboxConfig{MaxAge: -1}}}, bus.DefaultOutboxMaxAge + time.Minute},
		{Options{StreamRetention: time.Second, Bus: bus.Config{Outbox: bus.OutboxConfig{MaxAge: time.Hour}}}, time.Second},
	} {
		tt.o.setDefaults()
		if tt.o.StreamRetention != tt.want {
			t.Errorf("StreamRetention default with outbox max age %v: %v, want %v", tt.o.Bus.Outbox.MaxAge, tt.o.StreamRetention, tt.want)
		}
	}
	if _, err := NewTransport(&Options{URL: "nope"}); !errors.Is(err, ErrBadURL) {
		t.Errorf("bad URL: err = %v, want ErrBadURL", err)
	}
	if _, err := NewTransport(nil); !errors.Is(err, ErrBadURL) {
		t.Errorf("nil options: err = %v, want ErrBadURL (no URL)", err)
	}
}

func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"redis://localhost", "redis://u:p@h:1/2?db=3", "rediss://h?skip_verify",
		"unix:///tmp/r.sock?db=1", "redis+sentinel://a,b:1/m/2?sentinel_password=x",
		"redis+cluster://a:1,b:2", "redis://[::1]:7", "redis://h?dial_timeout=1s",
		"redis://%zz@h", "redis://h:99999", "redis+sentinel:///", "",
		"redis://h?inboxes=256", "redis://h?inboxes=0",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ep, err := ParseEndpoint(s)
		red := RedactURL(s)
		if err != nil {
			if !errors.Is(err, ErrBadURL) {
				t.Fatalf("error %v does not wrap ErrBadURL", err)
			}
			return
		}
		// The redacted form names the same deployment, secrets aside.
		back, err := ParseEndpoint(red)
		if err != nil {
			t.Fatalf("RedactURL(%q) = %q does not parse: %v", s, red, err)
		}
		want := ep
		if want.Password != "" {
			want.Password = Redacted
		}
		if want.SentinelPassword != "" {
			want.SentinelPassword = Redacted
		}
		if diff := cmp.Diff(want, back); diff != "" {
			t.Fatalf("RedactURL(%q) = %q names another deployment (-want +got):\n%s", s, red, diff)
		}
		if len(ep.Addrs) == 0 {
			t.Fatalf("%q parsed with no address", s)
		}
		if ep.Topology == Sentinel && ep.MasterName == "" {
			t.Fatalf("%q: sentinel without master name", s)
		}
		// TLS files are not read for a URL without them, so a parsed URL
		// always yields a client configuration.
		if ep.CAFile == "" && ep.CertFile == "" {
			if _, err := ParseURL(s); err != nil {
				t.Fatalf("ParseURL(%q) = %v after ParseEndpoint succeeded", s, err)
			}
		}
	})
}
