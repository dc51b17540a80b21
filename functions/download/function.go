// Package function is the download function: it streams converted MP3s out of GridFS (with
// Range and conditional requests) and reports conversion jobs, to their owner or an admin.
//
// This file holds the lifecycle and the routes; mp3.go serves an MP3 (conditions and ranges
// in ranges.go), jobs.go the jobs, owned.go who may see what.
package function

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Settings are the environment variables download reads (README, "Configuration").
var Settings = withTelemetry([]Setting{
	{Name: "MONGODB_URI", Kind: KindText, Required: true, Meaning: "the MongoDB that holds the videos and mp3s databases"},
	{Name: "MONGODB_DB_PREFIX", Kind: KindText, Meaning: "prefix of the database names, so several stacks can share one MongoDB"},
	{Name: "VALIDATE_URL", Kind: KindURL, Required: true, Meaning: "validate's endpoint, asked about bearer tokens"},
	{Name: "VALIDATE_CACHE_TTL", Kind: KindDuration, Default: "30s", Min: "0s", Meaning: "how long a token validate accepted is trusted without asking again"},
	{Name: "PUBLIC_URL", Kind: KindURL, Meaning: "base of download_url; unset gives a relative /download?fid=<fid>"},
	{Name: "DOWNLOAD_TIMEOUT", Kind: KindDuration, Default: "1h", Min: "1s", Meaning: "write deadline of one response"},
	{Name: "LINK_SECRET", Kind: KindText, Required: true, Meaning: "key of the signed download links (at least 32 bytes; a Secret)"},
	{Name: "LINK_SECRET_PREVIOUS", Kind: KindText, Meaning: "the key before LINK_SECRET, still accepted while links made with it live"},
	{Name: "LINK_TTL", Kind: KindDuration, Default: "168h", Min: "1m", Meaning: "how long a job's signed download_url works"},
})

// Function is the download function. Its zero value is not usable: call New, then Start.
type Function struct {
	telemetry // traces and metrics: kit_telemetry.go

	log *slog.Logger
	lc  lifecycle[state]
}

// state is everything Start builds from the configuration.
type state struct {
	log         *slog.Logger
	mongo       *mongo.Client
	videos      *mongo.Database
	mp3s        *mongo.Database
	auth        *authClient
	publicURL   string
	links       linkSigner
	linkTTL     time.Duration
	timeout     time.Duration
	jobsIndexed atomic.Bool
}

// New returns a download function that answers 503 until Start has run.
func New() *Function {
	return &Function{log: withTraceIDs(slog.Default()).With("function", "download")}
}

// Handle serves GET|HEAD /download?fid=, /jobs/{video_fid} and /jobs.
func (f *Function) Handle(w http.ResponseWriter, r *http.Request) { f.serveHTTP(w, r, f.handle) }

// handle is Handle inside the request's trace.
func (f *Function) handle(w http.ResponseWriter, r *http.Request) {
	s := f.lc.load()
	if s == nil {
		writeError(w, http.StatusServiceUnavailable, "starting, try again")
		return
	}
	// func-go's server cuts responses after 30 s; a big download over a slow link takes longer.
	if err := http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.timeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		f.log.Warn("cannot extend write deadline", "err", err)
	}

	rt, arg := route(r.URL.Path)
	if rt == nil {
		writeError(w, http.StatusNotFound, "not found")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "use GET or HEAD")
		return
	}
	if rt.signedLinks && r.URL.Query().Has("sig") {
		// A signed link is its own proof: no token, as in a plain browser tab.
		w.Header().Set("Cache-Control", "private")
		s.downloadSigned(w, r)
		return
	}
	who, aerr := s.auth.identify(r.Context(), r.Header.Get("Authorization"))
	if aerr != nil {
		aerr.write(w)
		return
	}
	// Answers depend on who asks: shared caches must not keep them.
	w.Header().Set("Cache-Control", "private")
	w.Header().Add("Vary", "Authorization")
	rt.serve(s, w, r, who, arg)
}

// routes are the answers download gives, by the last segments of the path, so that the
// function works behind any prefix. The first match wins; the empty path is a download.
var routes = []routeEntry{
	{"download", true, func(s *state, w http.ResponseWriter, r *http.Request, who identity, _ string) { s.download(w, r, who) }},
	{"jobs", false, func(s *state, w http.ResponseWriter, r *http.Request, who identity, _ string) { s.listJobs(w, r, who) }},
	{"jobs/*", false, (*state).getJob},
}

type routeEntry struct {
	last        string // "jobs/*": a job, its video_fid as arg
	signedLinks bool   // a signed link (?sig=) may stand for the token
	serve       func(s *state, w http.ResponseWriter, r *http.Request, who identity, arg string)
}

// route finds the answer to path and the argument its last segment carries.
func route(p string) (rt *routeEntry, arg string) {
	p = strings.TrimSuffix(p, "/")
	for i := range routes {
		rt := &routes[i]
		if dir, ok := strings.CutSuffix(rt.last, "/*"); ok {
			if path.Base(path.Dir(p)) == dir {
				return rt, path.Base(p)
			}
		} else if path.Base(p) == rt.last || (p == "" && rt.last == "download") {
			return rt, ""
		}
	}
	return nil, ""
}

// Start reads the configuration. It fails only on bad configuration, never because MongoDB or
// validate is down: both are reached per request.
func (f *Function) Start(ctx context.Context, cfg map[string]string) error {
	if err := f.startTelemetry(ctx, "download", cfg); err != nil {
		return err
	}
	set, err := loadSettings(Settings, cfg)
	if err != nil {
		return err
	}
	// Defaults first, so that options spelled in the URI win.
	opts := options.Client().
		SetServerSelectionTimeout(5 * time.Second).
		SetConnectTimeout(5 * time.Second).
		ApplyURI(set.text("MONGODB_URI"))
	client, err := mongo.Connect(opts) // does not dial
	if err != nil {
		return fmt.Errorf("MONGODB_URI: %w", err)
	}
	secret := set.text("LINK_SECRET")
	if len(secret) < minLinkSecret {
		_ = client.Disconnect(ctx)
		return fmt.Errorf("LINK_SECRET: %d bytes, want at least %d", len(secret), minLinkSecret)
	}
	prefix := set.text("MONGODB_DB_PREFIX")
	s := &state{
		log:       f.log,
		mongo:     client,
		videos:    client.Database(prefix + "videos"),
		mp3s:      client.Database(prefix + "mp3s"),
		auth:      newAuthClient(set.text("VALIDATE_URL"), set.duration("VALIDATE_CACHE_TTL")),
		publicURL: set.text("PUBLIC_URL"),
		links:     newLinkSigner(secret, set.text("LINK_SECRET_PREVIOUS")),
		linkTTL:   set.duration("LINK_TTL"),
		timeout:   set.duration("DOWNLOAD_TIMEOUT"),
	}
	if old := f.lc.start(s); old != nil {
		_ = old.mongo.Disconnect(ctx)
	}
	f.log.Info("started", "download_timeout", s.timeout.String())
	return nil
}

// Stop closes the MongoDB connections.
func (f *Function) Stop(ctx context.Context) error {
	defer f.stopTelemetry(ctx) // after the work in flight: its spans are exported
	s := f.lc.stop()
	if s == nil {
		return nil
	}
	return s.mongo.Disconnect(ctx)
}

// Ready reports whether Start has finished.
func (f *Function) Ready(ctx context.Context) (bool, error) {
	return f.lc.started(), nil
}

// Alive always reports true: the process serves (503 while a backing service is down).
func (f *Function) Alive(ctx context.Context) (bool, error) {
	return true, nil
}
