package jsonx

import "testing"

func TestFirstByte(t *testing.T) {
	for in, want := range map[string]byte{
		"":           0,
		" \t\r\n":    0,
		"[1]":        '[',
		" \n\t{}":    '{',
		"\r\n \"x\"": '"',
		"\v[":        '\v', // not JSON white space
	} {
		if got := FirstByte([]byte(in)); got != want {
			t.Errorf("FirstByte(%q) = %q, want %q", in, got, want)
		}
	}
}
