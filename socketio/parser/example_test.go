package parser_test

import (
	"fmt"

	"github.com/durasock/durasock/socketio/parser"
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
