package sioclient

import (
	"testing"
	"time"
)

// FuzzReceive feeds server messages to the client's decoding: the Engine.IO open
// packet, the CONNECT reply, and packets after connect (text and binary). It must
// never panic, and whatever it decides must be an error or a delivery.
func FuzzReceive(f *testing.F) {
	for _, s := range []string{
		`0{"sid":"a","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`,
		`40{"sid":"x"}`, `44{"message":"no","data":{"a":1}}`, `44"plain"`, `40/admin,{"sid":"y"}`,
		`42["ev",1,{"a":"b"}]`, `42/admin,["ev"]`, `4217["q",1]`, `43[1]`, `430["ok"]`,
		`451-["b",{"_placeholder":true,"num":0}]`, `461-3[{"_placeholder":true,"num":0}]`,
		`41`, `6`, `3`, `1`, `4`, `42["a\"b"]`, `42[3]`, "42[\"\\u0041\"]", `9`, ``,
	} {
		f.Add([]byte(s), false)
	}
	f.Add([]byte{1, 2, 3}, true)
	f.Fuzz(func(t *testing.T, b []byte, binary bool) {
		if op, err := parseOpen(b); err == nil && op.SID == "" {
			t.Fatal("open packet without sid accepted")
		}
		c := &Client{
			opts:    (&Options{OnEvent: func(e *Event) { _, _ = e.Args() }}).withDefaults(),
			acks:    map[uint64]*pendingAck{},
			closing: make(chan struct{}),
		}
		c.acks[0] = &pendingAck{ch: make(chan ackResult, 1)}
		c.acks[3] = &pendingAck{fn: func(Ack, error) {}, timer: time.NewTimer(time.Hour)}
		if len(b) > 0 {
			rest := b[1:]
			sid, err := c.parseConnectReply(rest)
			if err == nil && sid == "" && (len(rest) < 2 || rest[1] != '/') {
				t.Fatalf("CONNECT reply %q of the main namespace accepted without a sid", rest)
			}
		}
		// Pings write to the connection; this client has none.
		for range 2 {
			if binary {
				_ = c.handleBinary(append([]byte(nil), b...))
			} else if len(b) == 0 || b[0] != '2' {
				_ = c.handleText(b)
			}
		}
	})
}
