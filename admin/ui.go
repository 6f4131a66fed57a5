package admin

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
)

// ErrNoUI is returned by UIHandler when the directory holds no UI build.
var ErrNoUI = errors.New("admin: no Admin UI build in the directory")

// UIHandler serves the Admin UI's static build from dir, the ui/dist folder of
// the npm package @socket.io/admin-ui (npm install @socket.io/admin-ui). Mount
// it under a prefix ending in "/" with http.StripPrefix, for example
//
//	h, err := admin.UIHandler("node_modules/@socket.io/admin-ui/ui/dist")
//	mux.Handle("/admin/", http.StripPrefix("/admin/", h))
//
// then open /admin/ and connect the UI to the server's own URL.
func UIHandler(dir string) (http.Handler, error) {
	if _, err := os.Stat(filepath.Join(dir, "index.html")); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoUI, err)
	}
	fs := http.FileServer(http.Dir(dir))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		fs.ServeHTTP(w, r)
	}), nil
}
