package admin_test

import (
	"log"
	"net/http"

	"golang.org/x/crypto/bcrypt"

	"github.com/durasock/durasock/admin"
	"github.com/durasock/durasock/socketio"
)

// Instrument a server for the Admin UI and serve the UI's build.
func ExampleNew() {
	srv := socketio.NewServer(nil)
	hash, err := bcrypt.GenerateFromPassword([]byte("a-good-password"), bcrypt.DefaultCost)
	if err != nil {
		log.Fatal(err)
	}
	a, err := admin.New(srv, &admin.Options{Auth: &admin.BasicAuth{Username: "admin", Password: string(hash)}})
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()

	mux := http.NewServeMux()
	mux.Handle("/socket.io/", srv)
	if ui, err := admin.UIHandler("node_modules/@socket.io/admin-ui/ui/dist"); err == nil {
		mux.Handle("/admin/", http.StripPrefix("/admin/", ui))
	}
	// http.ListenAndServe(":3000", mux), then open http://localhost:3000/admin/
}
