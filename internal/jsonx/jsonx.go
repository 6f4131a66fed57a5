// Package jsonx holds the small JSON byte checks that the packet format, the
// adapters and the test client share, so that each is written once.
package jsonx

// FirstByte returns the first byte of b that is not JSON white space (space, tab,
// line feed, carriage return), or 0 when there is none. It tells a JSON array,
// object or string apart without parsing it.
func FirstByte(b []byte) byte {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		}
		return c
	}
	return 0
}
