// Package gateway is the local stand-in for the cluster's ingress: one port
// whose paths are routed to the functions that serve them. It streams bodies
// both ways (uploads and downloads are large) and adds nothing else.
package gateway

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
)

// Route sends requests matching an http.ServeMux pattern to a function.
type Route struct {
	Pattern  string   // e.g. "/jobs/"
	Function string   // for errors and logs
	Target   *url.URL // the function's base URL
}

// New returns the gateway handler for routes. Unknown paths get a JSON 404
// that lists what is served; a function that is down gets a JSON 502.
func New(routes []Route, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	var patterns []string
	for _, rt := range routes {
		mux.Handle(rt.Pattern, proxy(rt, log))
		patterns = append(patterns, rt.Pattern)
	}
	sort.Strings(patterns)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "no such path", "paths": patterns})
	})
	return mux
}

func proxy(rt Route, log *slog.Logger) http.Handler {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(rt.Target)
			pr.SetXForwarded()
		},
		// Stream responses (downloads, event replies) as they come.
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the client went away; nobody to answer
			}
			log.Warn("function unreachable", "function", rt.Function, "path", r.URL.Path, "err", err)
			writeJSON(w, http.StatusBadGateway, map[string]string{"error": rt.Function + " is unavailable, try again"})
		},
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
