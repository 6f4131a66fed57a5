package redisbus

import (
	"errors"
	"strings"
	"testing"
)

// TestRedaction: no secret of a Redis URL, in any form, valid or not, shows in
// what the package prints: URL errors (their URL and their reason),
// Endpoint.String and RedactURL. Every secret below is made of SECRa and
// SECRb, so no piece of it may appear.
func TestRedaction(t *testing.T) {
	tests := []struct {
		url   string
		valid bool
		show  string // what the redacted form must still show
	}{
		{"redis://user:SECRaSECRb@h:6379/2", true, "redis://user:xxxxx@h:6379/2"},
		{"redis://:SECRaSECRb@h", true, "redis://:xxxxx@h:6379"},
		{"redis://u:SECRa%2FSECRb@h", true, "redis://u:xxxxx@h:6379"},
		{"redis://u:SECRa@SECRb@h", true, "u:xxxxx@h:6379"},
		{"rediss://u:SECRa:SECRb@h:6380", true, "rediss://u:xxxxx@h:6380"},
		{"unix://u:SECRaSECRb@/tmp/r.sock?db=3", true, "unix://u:xxxxx@/tmp/r.sock?db=3"},
		{"redis+sentinel://u:SECRa@s1,s2:1/m/1?sentinel_username=su&sentinel_password=SECRb&dial_timeout=2s", true,
			"redis+sentinel://u:xxxxx@s1:26379,s2:1/m/1?"},
		{"redis+sentinel://s1/m?sentinel_password=SECRa%26SECRb", true, "sentinel_password=xxxxx"},
		{"rediss+cluster://u:SECRaSECRb@h1:7000,h2:7001", true, "rediss+cluster://u:xxxxx@h1:7000,h2:7001"},
		// Unescaped / ? # in the password: the URL is malformed and where the
		// password ends is a guess.
		{"redis://u:SECRa/SECRb@h:6379", false, "u:xxxxx"},
		{"redis://u:SECRa?SECRb@h:6379", false, "u:xxxxx"},
		{"redis://u:SECRa#SECRb@h:6379", false, "u:xxxxx"},
		{"redis://u:SECRa/0?db=1#SECRb@h", false, "redis://u:xxxxx"},
		{"redis+sentinel://u:SECRa/SECRb@s1/m", false, "redis+sentinel://u:xxxxx"},
		{"rediss+cluster://u:SECRa/SECRb@h1,h2", false, "u:xxxxx"},
		{"unix://u:SECRa?SECRb@/tmp/r.sock", false, "unix://u:xxxxx"},
		{"redis://u:SECRa%zzSECRb@h", false, "redis://u:xxxxx@h"},
		{"redis://u:SECRaSECRb@h:bad", false, "redis://u:xxxxx@h:bad"},
		{"redis://u:SECRaSECRb@h/x/y", false, "@h/x/y"},
		// Secrets in the query, escaped or not.
		{"redis+sentinel://s1/m?sentinel_password=SECRa&SECRb", false, "sentinel_password=xxxxx"},
		{"redis+sentinel://s1/m?sentinel_password=SECRa#SECRb", false, "sentinel_password=xxxxx"},
		{"redis+sentinel://s1/m?sentinel_password=%zzSECRaSECRb", false, "sentinel_password=xxxxx"},
		{"redis://h?sentinel_password=SECRaSECRb", false, "redis://h?sentinel_password=xxxxx"},
		{"redis://h?password=SECRaSECRb", false, "redis://h?password=xxxxx"},
		{"redis://h?db=1&auth_token=SECRaSECRb", false, "redis://h?db=1&auth_token=xxxxx"},
		{"redis://h?Client_Secret=SECRaSECRb", false, "Client_Secret=xxxxx"},
		{"redis://h?pwd=SECRaSECRb", false, "pwd=xxxxx"},
		// No scheme, or an unknown one.
		{"u:SECRaSECRb@h:6379", false, "u:xxxxx@h:6379"},
		{"http://u:SECRaSECRb@h", false, "http://u:xxxxx@h"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			hidden := func(what, out string) {
				t.Helper()
				if strings.Contains(out, "SECR") || strings.Contains(out, "ECRa") || strings.Contains(out, "ECRb") {
					t.Errorf("%s shows a secret: %s", what, out)
				}
			}
			red := RedactURL(tt.url)
			hidden("RedactURL", red)
			if !strings.Contains(red, tt.show) {
				t.Errorf("RedactURL = %q, want it to show %q", red, tt.show)
			}
			ep, err := ParseEndpoint(tt.url)
			if tt.valid {
				if err != nil {
					t.Fatalf("ParseEndpoint: %v", err)
				}
				hidden("Endpoint.String", ep.String())
				// The redacted form names the same deployment.
				back, err := ParseEndpoint(ep.String())
				if err != nil {
					t.Fatalf("Endpoint.String() %q does not parse: %v", ep.String(), err)
				}
				if back.Password != "" {
					back.Password = ep.Password
				}
				if back.SentinelPassword != "" {
					back.SentinelPassword = ep.SentinelPassword
				}
				if back.String() != ep.String() || len(back.Addrs) != len(ep.Addrs) || back.DB != ep.DB || back.MasterName != ep.MasterName {
					t.Errorf("round trip: %+v, want %+v", back, ep)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseEndpoint accepted %q: %+v", tt.url, ep)
			}
			hidden("error", err.Error())
			var ue *URLError
			if !errors.As(err, &ue) {
				t.Fatalf("error %T is not a *URLError", err)
			}
			hidden("URLError.URL", ue.URL)
			hidden("URLError.Reason", ue.Reason)
			if _, err := ParseURL(tt.url); err == nil {
				t.Fatal("ParseURL accepted it")
			} else {
				hidden("ParseURL error", err.Error())
			}
			if _, err := NewTransport(&Options{URL: tt.url}); err == nil {
				t.Fatal("NewTransport accepted it")
			} else {
				hidden("NewTransport error", err.Error())
			}
		})
	}
}

// TestRedactionKeepsUsefulReasons: a URL error without a secret in sight
// still says what is wrong.
func TestRedactionKeepsUsefulReasons(t *testing.T) {
	_, err := ParseEndpoint("redis://u:SECRaSECRb@h?timeout=1s")
	if err == nil || !strings.Contains(err.Error(), `unknown parameter "timeout"`) || strings.Contains(err.Error(), "SECR") {
		t.Errorf("error = %v", err)
	}
	_, err = ParseEndpoint("redis://u:SECRa/SECRb@h")
	if err == nil || !strings.Contains(err.Error(), "Escape / ? # @") {
		t.Errorf("error = %v, want advice to escape the password", err)
	}
}
