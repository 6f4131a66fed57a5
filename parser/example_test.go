package parser_test

import (
	"fmt"

	"github.com/durasock/durasock/parser"
)

// A []byte nested in a Go value travels as a binary attachment, with a
// placeholder in its place, as with the reference server.
func ExampleEventPacket() {
	type file struct {
		Name string `json:"name"`
		Data []byte `json:"data"`
	}
	p, err := parser.EventPacket("/", "upload", file{Name: "a.bin", Data: []byte{1, 2, 3}})
	if err != nil {
		fmt.Println(err)
		return
	}
	e := parser.Encode(p)
	fmt.Printf("%s\n%v\n", e.Text, e.Attachments)
	// Output:
	// 51-["upload",{"name":"a.bin","data":{"_placeholder":true,"num":0}}]
	// [[1 2 3]]
}

// A packet as a socket.io-msgpack-parser client receives it, and back.
func ExampleMsgpack() {
	e := parser.Encode(&parser.Packet{Type: parser.Event, Namespace: "/", Data: []byte(`["hello",{"_placeholder":true,"num":0}]`), Attachments: [][]byte{{1, 2}}})
	frames, err := parser.Msgpack.Frames(e)
	if err != nil {
		panic(err)
	}
	fmt.Println(len(frames), frames[0].Binary)
	p, err := parser.DecodeMsgpack(frames[0].Data, 0)
	if err != nil {
		panic(err)
	}
	fmt.Println(string(p.Data), p.Attachments)
	// Output:
	// 1 true
	// ["hello",{"_placeholder":true,"num":0}] [[1 2]]
}
