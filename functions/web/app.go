package function

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
)

// The web app: plain HTML, CSS and JavaScript modules, no build step and no other origin.
//
//go:embed app
var appFiles embed.FS

// contentSecurityPolicy lets the page load only what web serves: no inline script or style,
// no other origin, no framing.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// appHandler serves the app's files with the security headers; a path that is no file gets
// the JSON 404 every function answers.
func appHandler() http.Handler {
	files, _ := fs.Sub(appFiles, "app")
	server := http.FileServerFS(files)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			methodNotAllowed("GET, HEAD")(w, r)
			return
		}
		name := path.Clean(r.URL.Path)
		if name == "/" {
			name = "/index.html"
		}
		if st, err := fs.Stat(files, name[1:]); err != nil || st.IsDir() {
			writeError(w, http.StatusNotFound, "no such path")
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-cache") // a new revision's app is seen at once
		server.ServeHTTP(w, r)
	})
}
