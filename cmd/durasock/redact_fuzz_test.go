package main

import (
	"strings"
	"testing"
)

// FuzzRedactURL: whatever a password holds, the redacted URL is the URL with
// exactly the password replaced, in the user information or in
// sentinel_password, and a scrubbed error never shows it.
func FuzzRedactURL(f *testing.F) {
	for _, p := range []string{"s3cret", "pa/ss?w#rd", "p@ss", "x%40y", "::::", "@@@"} {
		f.Add(p, "host:6379/0")
		f.Add(p, "s1:26379,s2:26379/mymaster")
	}
	f.Fuzz(func(t *testing.T, pass, rest string) {
		if pass == "" || strings.ContainsAny(rest, "@?&#") || strings.ContainsAny(pass, "\n\r") ||
			strings.Contains(rest, pass) || strings.Contains(hidden, pass) {
			t.Skip()
		}
		cases := []struct{ url, want string }{
			{"redis://user:" + pass + "@" + rest, "redis://user:" + hidden + "@" + rest},
		}
		if !strings.Contains(pass, "&") { // an unescaped & ends a query value
			cases = append(cases, struct{ url, want string }{
				"redis+sentinel://" + rest + "?sentinel_password=" + pass,
				"redis+sentinel://" + rest + "?sentinel_password=" + hidden,
			})
		}
		for _, c := range cases {
			if got := redactURL(c.url); got != c.want {
				t.Fatalf("redactURL(%q) = %q, want %q", c.url, got, c.want)
			}
			ideal := "dial " + c.want + " failed: auth " + hidden
			if len(pass) < 3 || strings.Contains(ideal, pass) {
				continue // too short to be scrubbed from free text, or ordinary text
			}
			// Scrubbing may hide more than the password, never less.
			if s := newScrubber(c.url).scrub("dial " + c.url + " failed: auth " + pass); strings.Contains(s, pass) {
				t.Fatalf("scrub of %q shows the password: %q", c.url, s)
			}
		}
	})
}
