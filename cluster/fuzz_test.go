package cluster

import "testing"

// FuzzParseOffset: recovery offsets come from clients (the offset a returning
// client sends). Parsing never panics, and an accepted offset prints as one
// that parses to the same value.
func FuzzParseOffset(f *testing.F) {
	for _, s := range []string{"1700000000000-0~1f~a", "p~0~0", "~1~1", "a~~1", "a~1~", "a~ffffffffffffffff~3w5e11264sgsf", "a~1~1~1", "a~-1~1", "", "1-0~1f~a~3~2-0", "1-0~1f~a~-1~2-0", "1-0~1f~a~3~", "-~0~0~0~-", "1-0~1~1~9223372036854775807~1-0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, ok := parseOffset(s)
		if !ok {
			return
		}
		if o.pos == "" {
			t.Fatalf("%q accepted with an empty position", s)
		}
		back, ok := parseOffset(o.String())
		if !ok || back != o {
			t.Fatalf("%q -> %+v prints as %q, which parses to %+v, %v", s, o, o.String(), back, ok)
		}
	})
}
