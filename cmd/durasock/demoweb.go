package main

import (
	"bytes"
	"embed"
	"html/template"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
)

// web holds the demo page. The Socket.IO browser client is not part of it: it
// comes from npm (socket.io-client) and is served from -demo-client-dir.
//
//go:embed web/index.html web/demo.js web/demo.css web/cluster.html web/cluster.js web/cluster.css
var web embed.FS

// demoClientCandidates are where the binary looks for the browser client when
// -demo-client-dir is not given, relative to the working directory: an
// `npm install socket.io-client` there, or the one ./scripts/run and ./scripts/test
// install for the interop tests.
var demoClientCandidates = []string{
	"node_modules/socket.io-client/dist",
	"interop/node_modules/socket.io-client/dist",
}

// demoClientFiles are the files of socket.io-client's dist directory that are
// served, at <path><name>, as the reference server does.
var demoClientFiles = []string{"socket.io.min.js", "socket.io.min.js.map", "socket.io.js", "socket.io.js.map"}

// clientMissingAdvice says how to get the browser client.
const clientMissingAdvice = "the Socket.IO browser client is not installed: run ./scripts/run, " +
	"or `npm install socket.io-client` and start durasock with -demo-client-dir node_modules/socket.io-client/dist"

// findDemoClient returns the directory that holds socket.io.min.js: dir when
// given, else the first candidate that has it; "" when there is none.
func findDemoClient(dir string) string {
	list := demoClientCandidates
	if dir != "" {
		list = []string{dir}
	}
	for _, d := range list {
		if st, err := os.Stat(filepath.Join(d, "socket.io.min.js")); err == nil && st.Mode().IsRegular() {
			return d
		}
	}
	return ""
}

// demoCSP allows the page only its own scripts, styles and connections: no
// inline script, no framing, no form posts elsewhere.
const demoCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
	"frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// secureHeaders sets the headers every demo response carries.
func secureHeaders(h http.Header) {
	h.Set("Content-Security-Policy", demoCSP)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
}

var pageTemplate = template.Must(template.ParseFS(web, "web/index.html"))

// mountDemo serves the demo page at / and the browser client at
// <sioPath>socket.io.min.js. When the client is missing it says so in the log
// and on the page.
func mountDemo(mux *http.ServeMux, sioPath, clientDir string, log *slog.Logger) {
	dir := findDemoClient(clientDir)
	if dir == "" {
		where := "-demo-client-dir " + clientDir
		if clientDir == "" {
			where = "the working directory"
		}
		log.Warn("demo: "+clientMissingAdvice, "looked_in", where)
	}
	var page bytes.Buffer
	if err := pageTemplate.Execute(&page, map[string]any{"Path": sioPath, "ClientMissing": dir == "", "Advice": clientMissingAdvice}); err != nil {
		panic("durasock: demo page template: " + err.Error()) // a build defect, not input
	}
	serve := func(body []byte, ctype string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			secureHeaders(w.Header())
			w.Header().Set("Content-Type", ctype)
			// A write error means the browser went away.
			_, _ = w.Write(body)
		}
	}
	mux.HandleFunc("GET /{$}", serve(page.Bytes(), "text/html; charset=utf-8"))
	mux.HandleFunc("GET /demo.js", serve(mustRead("web/demo.js"), "text/javascript; charset=utf-8"))
	mux.HandleFunc("GET /demo.css", serve(mustRead("web/demo.css"), "text/css; charset=utf-8"))
	for _, name := range demoClientFiles {
		mux.HandleFunc("GET "+sioPath+name, func(w http.ResponseWriter, r *http.Request) {
			secureHeaders(w.Header())
			if dir == "" {
				http.Error(w, "durasock: "+clientMissingAdvice, http.StatusNotFound)
				return
			}
			http.ServeFile(w, r, filepath.Join(dir, name))
		})
	}
}

func mustRead(name string) []byte {
	b, err := web.ReadFile(name)
	if err != nil {
		panic("durasock: embedded file missing: " + name) // a build defect, not input
	}
	return b
}
