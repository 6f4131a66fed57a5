package compat

import (
	"net/textproto"
	"slices"
	"strings"
)

func sortedKeys(m map[string][]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func lower(s string) string           { return strings.ToLower(s) }
func joinComma(vs []string) string    { return strings.Join(vs, ", ") }
func canonicalHeader(s string) string { return textproto.CanonicalMIMEHeaderKey(s) }
