// Package function is the upload function: it streams a video (or audio) file into GridFS,
// records its conversion job and announces it with a dev.mp3converter.video.uploaded CloudEvent.
//
// This file holds the lifecycle and the request's path; source.go reads the upload, store.go
// writes it to GridFS and the jobs collection, publish.go announces it.
package function

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Settings are the environment variables upload reads (README, "Configuration").
var Settings = withTelemetry([]Setting{
	{Name: "MONGODB_URI", Kind: KindText, Required: true, Meaning: "the MongoDB that holds the videos database"},
	{Name: "MONGODB_DB_PREFIX", Kind: KindText, Meaning: "prefix of the database names, so several stacks can share one MongoDB"},
	{Name: "VALIDATE_URL", Kind: KindURL, Required: true, Meaning: "validate's endpoint, asked about bearer tokens"},
	{Name: "VALIDATE_CACHE_TTL", Kind: KindDuration, Default: "30s", Min: "0s", Meaning: "how long a token validate accepted is trusted without asking again"},
	{Name: "K_SINK", Kind: KindURL, Required: true, Meaning: "the broker ingress; a SinkBinding sets it on the cluster"},
	{Name: "PUBLIC_URL", Kind: KindURL, Meaning: "base of status_url; unset gives a relative /jobs/<fid>"},
	{Name: "MAX_UPLOAD_BYTES", Kind: KindInt, Default: "2147483648", Min: "1", Meaning: "largest upload accepted (2 GiB)"},
	{Name: "UPLOAD_TIMEOUT", Kind: KindDuration, Default: "1h", Min: "1s", Meaning: "time an identified caller gets to send the body"},
	{Name: "UPLOAD_CONCURRENCY", Kind: KindInt, Default: "5", Min: "1", Meaning: "uploads stored at once (the last guard behind containerConcurrency 5, which queues the rest), one user at most half of them; more wait up to UPLOAD_SLOT_WAIT, then get 503 with Retry-After"},
	{Name: "UPLOAD_SLOT_WAIT", Kind: KindDuration, Default: "20s", Min: "0s", Max: "25s", Meaning: "how long an upload beyond UPLOAD_CONCURRENCY or its user's share waits for a slot before 503 with Retry-After (it waits inside func-go's 30 s request timeouts)"},
	{Name: "UPLOAD_IDLE_TIMEOUT", Kind: KindDuration, Default: "30s", Min: "1s", Meaning: "an upload that sends no byte for this long is ended with 408"},
	{Name: "UPLOAD_EXPIRY", Kind: KindDuration, Default: "24h", Min: "1m", Meaning: "a resumable upload that receives no PATCH for this long expires; the sweep removes its chunks"},
})

// Function is the upload function. Its zero value is not usable: call New, then Start.
type Function struct {
	telemetry // traces and metrics: kit_telemetry.go

	log *slog.Logger
	lc  lifecycle[state]
}

// state is everything Start builds from the configuration.
type state struct {
	log       *slog.Logger
	mongo     *mongo.Client
	videos    *mongo.Database
	auth      *authClient
	events    cloudevents.Client
	publicURL string
	maxBytes  int64
	timeout   time.Duration
	idle      time.Duration // UPLOAD_IDLE_TIMEOUT
	expiry    time.Duration // UPLOAD_EXPIRY
	slots     *slots        // one per upload being stored (UPLOAD_CONCURRENCY), half of them per user
}

// New returns an upload function that answers 503 until Start has run.
func New() *Function {
	return &Function{log: withTraceIDs(slog.Default()).With("function", "upload")}
}

// Handle serves POST /upload: multipart/form-data with exactly one file part, or a raw
// video/*, audio/* or application/octet-stream body named by ?filename=; and resumable
// uploads under /upload/ (tus.go).
func (f *Function) Handle(w http.ResponseWriter, r *http.Request) { f.serveHTTP(w, r, f.handle) }

// handle is Handle inside the request's trace.
func (f *Function) handle(w http.ResponseWriter, r *http.Request) {
	s := f.lc.load()
	if s == nil {
		writeError(w, http.StatusServiceUnavailable, "starting, try again")
		return
	}
	if strings.HasPrefix(r.URL.Path, tusPath) {
		s.serveTus(w, r) // resumable uploads (tus.go)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		refuse(w, http.StatusMethodNotAllowed, "use POST")
		return
	}
	who, aerr := s.auth.identify(r.Context(), r.Header.Get("Authorization"))
	if aerr != nil {
		w.Header().Set("Connection", "close") // don't wait for a body we will not read
		aerr.write(w)
		return
	}
	if r.ContentLength > s.maxBytes {
		refuse(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("upload larger than %d bytes", s.maxBytes))
		return
	}
	release, ok := s.slots.take(r.Context(), who.UserID)
	if !ok {
		w.Header().Set("Connection", "close") // don't wait for a body we will not read
		errNoSlot.write(w)
		return
	}
	defer release()
	r.Body = s.timedBody(w, r, s.maxBytes)

	src, herr := openSource(r)
	if herr != nil {
		herr.write(w)
		return
	}
	fid, herr := s.store(r.Context(), who, src)
	if herr != nil {
		if herr.status >= 500 {
			f.log.Error("upload failed", "user", who.Username, "status", herr.status, "err", herr.cause)
		} else {
			f.log.Info("upload rejected", "user", who.Username, "status", herr.status, "reason", herr.msg, "err", herr.cause)
		}
		herr.write(w)
		return
	}

	statusURL := s.publicURL + "/jobs/" + fid.Hex()
	metricsOf(r.Context()).uploaded(r.Context(), src.size)
	f.log.InfoContext(r.Context(), "upload accepted", "user", who.Username, "video_fid", fid.Hex(), "filename", src.name, "content_type", src.contentType, "size", src.size)
	w.Header().Set("Location", statusURL)
	writeJSON(w, http.StatusAccepted, map[string]string{"video_fid": fid.Hex(), "status_url": statusURL})
}

// Start reads the configuration. It fails only on bad configuration, never because a backing
// service is down: MongoDB is dialled lazily, validate and the broker per request.
func (f *Function) Start(ctx context.Context, cfg map[string]string) error {
	if err := f.startTelemetry(ctx, "upload", cfg); err != nil {
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
	proto, err := cehttp.New(cehttp.WithTarget(set.text("K_SINK")))
	if err != nil {
		_ = client.Disconnect(ctx)
		return fmt.Errorf("K_SINK: %w", err)
	}
	events, err := cloudevents.NewClient(proto)
	if err != nil {
		_ = client.Disconnect(ctx)
		return fmt.Errorf("cloudevents client: %w", err)
	}

	s := &state{
		log:       f.log,
		mongo:     client,
		videos:    client.Database(set.text("MONGODB_DB_PREFIX") + "videos"),
		auth:      newAuthClient(set.text("VALIDATE_URL"), set.duration("VALIDATE_CACHE_TTL")),
		events:    events,
		publicURL: set.text("PUBLIC_URL"),
		// Each upload stored holds a chunk buffer and a database write: bound how
		// many are stored at once, and one user's share of them.
		slots:    newSlots(int(set.int("UPLOAD_CONCURRENCY")), set.duration("UPLOAD_SLOT_WAIT")),
		maxBytes: set.int("MAX_UPLOAD_BYTES"),
		timeout:  set.duration("UPLOAD_TIMEOUT"),
		idle:     set.duration("UPLOAD_IDLE_TIMEOUT"),
		expiry:   set.duration("UPLOAD_EXPIRY"),
	}
	if old := f.lc.start(s); old != nil {
		_ = old.mongo.Disconnect(ctx)
	}
	f.log.Info("started", "max_upload_bytes", s.maxBytes, "upload_timeout", s.timeout.String())
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

// refuse answers before any of the body is read: closing the connection
// spares the server from reading (and the client from sending) the body.
// Refusals after the body has started (sniffing, parts, size) keep the
// connection: the client is mid-send, and a close could cut it off before it
// reads the answer.
func refuse(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Connection", "close")
	writeError(w, status, msg)
}
