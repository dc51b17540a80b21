// Package function is the web function: the system's one public entry point. It serves the
// web app (app/, embedded) and sends the public API paths to the functions that serve them,
// by the route table in routes.go.
//
// This file holds the lifecycle; routes.go the table, proxy.go how a request is passed on,
// app.go the static files and their security headers.
package function

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
)

// Settings are the environment variables web reads (README, "Configuration").
var Settings = withTelemetry([]Setting{
	{Name: "LOGIN_URL", Kind: KindURL, Required: true, Meaning: "base URL of the login function (/login, /users)"},
	{Name: "UPLOAD_URL", Kind: KindURL, Required: true, Meaning: "base URL of the upload function (/upload)"},
	{Name: "DOWNLOAD_URL", Kind: KindURL, Required: true, Meaning: "base URL of the download function (/download, /jobs)"},
	{Name: "VALIDATE_URL", Kind: KindURL, Required: true, Meaning: "base URL of the validate function (/validate, /.well-known/jwks.json); no path, unlike the other functions' VALIDATE_URL"},
	{Name: "TRANSFER_TIMEOUT", Kind: KindDuration, Default: "1h", Min: "1s", Meaning: "time an upload or a download may take through web; longer than UPLOAD_TIMEOUT and DOWNLOAD_TIMEOUT, so those functions answer first"},
})

// Function is the web function. Its zero value is not usable: call New, then Start.
type Function struct {
	telemetry // traces and metrics: kit_telemetry.go

	log *slog.Logger
	lc  lifecycle[state]
}

// state is everything Start builds from the configuration.
type state struct {
	handler http.Handler // the app and the routes
}

// New returns a web function that answers 503 until Start has run.
func New() *Function {
	return &Function{log: withTraceIDs(slog.Default()).With("function", "web")}
}

// Handle serves the web app and passes the API paths on (routes.go).
func (f *Function) Handle(w http.ResponseWriter, r *http.Request) { f.serveHTTP(w, r, f.handle) }

// handle is Handle inside the request's trace.
func (f *Function) handle(w http.ResponseWriter, r *http.Request) {
	s := f.lc.load()
	if s == nil {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "starting, try again")
		return
	}
	s.handler.ServeHTTP(w, r)
}

// Start reads the functions' URLs and builds the route table.
func (f *Function) Start(ctx context.Context, cfg map[string]string) error {
	if err := f.startTelemetry(ctx, "web", cfg); err != nil {
		return err
	}
	set, err := loadSettings(Settings, cfg)
	if err != nil {
		return err
	}
	targets := map[string]*url.URL{}
	for fn, name := range Upstreams {
		u, _ := url.Parse(set.text(name)) // parsed by loadSettings already
		if u.Path != "" || u.RawQuery != "" {
			return fmt.Errorf("%s: %q must be a base URL without a path: requests keep theirs", name, set.text(name))
		}
		targets[fn] = u
	}
	f.lc.start(&state{handler: newRouter(targets, set.duration("TRANSFER_TIMEOUT"), f.log)})
	f.log.Info("started", "transfer_timeout", set.duration("TRANSFER_TIMEOUT").String())
	return nil
}

// Stop forgets the routes; web holds no connections of its own.
func (f *Function) Stop(ctx context.Context) error {
	defer f.stopTelemetry(ctx) // after the work in flight: its spans are exported
	f.lc.stop()
	return nil
}

// Ready reports whether Start has finished.
func (f *Function) Ready(ctx context.Context) (bool, error) {
	return f.lc.started(), nil
}

// Alive always reports true.
func (f *Function) Alive(ctx context.Context) (bool, error) {
	return true, nil
}
