package adapter_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/adapter/adaptertest"
	"github.com/durasock/durasock/parser"
)

// The in-memory adapter serves one namespace of one server process. The socketio
// package does what this example does by hand: it makes the adapter with the
// Factory, joins each socket when it connects, and broadcasts through it.
func ExampleNewMemory() {
	nsp := adaptertest.NewNamespace("/chat")
	var factory adapter.Factory = adapter.NewMemory
	a, err := factory(nsp)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer a.Close()
	nsp.Bind(a)

	alice := nsp.Connect("alice", adaptertest.SocketOptions{Rooms: []string{"lobby"}})
	bob := nsp.Connect("bob", adaptertest.SocketOptions{})
	a.Join("bob", "lobby", "games")

	p, err := parser.EventPacket("/chat", "message", "hello", 1)
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	if err := a.Broadcast(ctx, p, adapter.Options{Rooms: []string{"lobby"}, Except: []string{"games"}}); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("alice got", len(alice.Messages()), "bob got", len(bob.Messages()))
	fmt.Printf("%s\n", alice.Messages()[0].Encoded.Text)
	fmt.Println("bob's rooms:", a.Rooms("bob"))
	// Output:
	// alice got 1 bob got 0
	// 2/chat,["message","hello",1]
	// bob's rooms: [bob games lobby]
}

// BroadcastWithAck collects one reply per socket; when the context expires first
// it returns the replies that arrived and a *MissingRepliesError.
func ExampleMemory_BroadcastWithAck() {
	nsp := adaptertest.NewNamespace("/")
	a, err := adapter.NewLocal(nsp)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer a.Close()
	nsp.Bind(a)
	nsp.Connect("fast", adaptertest.SocketOptions{Ack: adaptertest.ReplyID})
	nsp.Connect("silent", adaptertest.SocketOptions{Ack: adaptertest.Silent})
	defer nsp.Wait()

	p, err := parser.EventPacket("/", "ping")
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	replies, err := a.BroadcastWithAck(ctx, p, adapter.Options{})
	for _, r := range replies {
		fmt.Printf("%s replied %s\n", r.From, r.Args)
	}
	fmt.Println(err)
	// Output:
	// fast replied ["fast"]
	// adapter: 1 of 2 replies before timeout; missing: silent
}

// An Adapter of another kind checks what it is asked to send with CheckPacket,
// so that every adapter rejects the same packets with the same errors.
func ExampleCheckPacket() {
	p, err := parser.EventPacket("", "hello", "world")
	if err != nil {
		fmt.Println(err)
		return
	}
	q, err := adapter.CheckPacket(p, "/chat", false)
	fmt.Println(q.Namespace, err)
	p.HasID, p.ID = true, 7
	_, err = adapter.CheckPacket(p, "/chat", false)
	fmt.Println(errors.Is(err, adapter.ErrInvalidPacket))
	fmt.Println(errors.Is(adapter.CheckEvent(""), adapter.ErrInvalidEvent))
	// Output:
	// /chat <nil>
	// true
	// true
}
