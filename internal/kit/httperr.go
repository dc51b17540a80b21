package kit

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// httpError is an answer to the client plus, for the log, what caused it.
type httpError struct {
	status     int
	msg        string
	cause      error
	wwwAuth    string        // WWW-Authenticate, for a 401
	retryAfter time.Duration // Retry-After (rounded up to seconds), for a 429 or 503
}

func (e *httpError) write(w http.ResponseWriter) {
	if e.wwwAuth != "" {
		w.Header().Set("WWW-Authenticate", e.wwwAuth)
	}
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(int64((e.retryAfter+time.Second-1)/time.Second), 10))
	}
	writeError(w, e.status, e.msg)
}

// writeJSON answers v as JSON; nosniff keeps browsers from reading it as anything else.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers {"error": msg}: every function's error body.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// methodNotAllowed answers 405 with the methods a route allows.
func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
	}
}
