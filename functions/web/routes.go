package function

import (
	"log/slog"
	"net/http"
	"net/url"
	"time"
)

// Upstreams are the functions web passes requests to, each with the setting that holds its
// base URL (the local stack and the knative/ validation read it too). convert and notify
// have no public path: they receive events only.
var Upstreams = map[string]string{
	"login":    "LOGIN_URL",
	"upload":   "UPLOAD_URL",
	"download": "DOWNLOAD_URL",
	"validate": "VALIDATE_URL",
}

// route sends the requests matching an http.ServeMux pattern to a function.
type route struct {
	pattern  string
	function string
	transfer bool // uploads and downloads: deadlines extended to TRANSFER_TIMEOUT
}

// routes is the system's one table of public API paths. Everything else is the web app.
var routes = []route{
	{pattern: "/login", function: "login"},
	{pattern: "/users", function: "login"},
	{pattern: "/users/", function: "login"},
	{pattern: "/upload", function: "upload", transfer: true},
	{pattern: "/upload/", function: "upload", transfer: true}, // resumable uploads (tus)
	{pattern: "/download", function: "download", transfer: true},
	{pattern: "/jobs", function: "download"},
	{pattern: "/jobs/", function: "download"},
	{pattern: "/validate", function: "validate"},
	{pattern: "/.well-known/jwks.json", function: "validate"},
}

// newRouter returns the handler of every path: the routes to targets (function name to base
// URL), and the app for the rest.
func newRouter(targets map[string]*url.URL, transferTimeout time.Duration, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	for _, rt := range routes {
		var timeout time.Duration
		if rt.transfer {
			timeout = transferTimeout
		}
		mux.Handle(rt.pattern, newProxy(rt.function, targets[rt.function], timeout, log))
	}
	mux.Handle("/", appHandler())
	return mux
}
