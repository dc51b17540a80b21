// Package function is the notify function of mp3converter: it emails the owner of a job
// when its MP3 is ready or its conversion failed, and it is the dead-letter sink of
// video.uploaded events, so that no job stays converting forever.
//
// This file holds the lifecycle and the event's path; events.go reads the events,
// job.go reads the job the event names (and fails the job of a dead-lettered upload), claim.go makes each email go out
// once, mail.go writes it and smtp.go sends it.
package function

import (
	"context"
	"fmt"
	"log/slog"
	"net/mail"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	gomail "github.com/wneessen/go-mail"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Settings are the environment variables notify reads (README, "Configuration").
var Settings = withTelemetry([]Setting{
	{Name: "MONGODB_URI", Kind: KindText, Required: true, Meaning: "the MongoDB that holds the videos and mp3s databases"},
	{Name: "MONGODB_DB_PREFIX", Kind: KindText, Meaning: "prefix of the database names, so several stacks can share one MongoDB"},
	{Name: "SMTP_URL", Kind: KindText, Meaning: "smtp://user:pass@host:587 (STARTTLS when offered) or smtps://...:465; unset: .eml files in MAIL_DIR"},
	{Name: "MAIL_FROM", Kind: KindText, Default: "mp3converter <no-reply@localhost>", Meaning: "the sender of the emails"},
	{Name: "MAIL_DIR", Kind: KindText, Default: "outbox", Meaning: "the outbox when SMTP_URL is unset"},
	{Name: "PUBLIC_URL", Kind: KindURL, Default: "http://127.0.0.1:8080", Meaning: "base of the download links in the emails"},
	{Name: "SMTP_TIMEOUT", Kind: KindDuration, Default: "30s", Min: "1s", Meaning: "bound of one whole send"},
	{Name: "LINK_SECRET", Kind: KindText, Required: true, Meaning: "key of the signed download links in the emails (at least 32 bytes; a Secret)"},
	{Name: "LINK_TTL", Kind: KindDuration, Default: "168h", Min: "1m", Meaning: "how long the link in an email works"},
})

// Function is the notify CloudEvents function.
type Function struct {
	telemetry // traces and metrics: kit_telemetry.go

	log *slog.Logger
	lc  lifecycle[runtime]
}

// New returns a notify function that answers 503 until Start has run.
func New() *Function {
	return &Function{log: withTraceIDs(slog.Default()).With("function", "notify")}
}

// Handle emails the user about a finished or failed conversion, and fails the job of a
// dead-lettered video.uploaded event. It never replies with an event. A transient failure
// (MongoDB or SMTP unavailable) returns 503 so that the broker retries; everything else
// (done, duplicate, bad data, permanent SMTP rejection) returns 200.
func (f *Function) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
	return f.handleEvent(ctx, e, f.handle)
}

// handle is Handle inside the event's trace.
func (f *Function) handle(ctx context.Context, e event.Event) (*event.Event, error) {
	rt := f.lc.load()
	if rt == nil {
		return nil, cehttp.NewResult(503, "notify is starting, try again")
	}
	log := f.log.With("event_id", e.ID(), "event_type", e.Type(), "event_subject", e.Subject())

	// The event only names the job: recipient, file name and outcome come from the job.
	var n notice
	var ok bool
	var err error
	switch e.Type() {
	case typeConverted:
		var d convertedData
		if err := decode(e, &d); err != nil {
			log.Error("event data does not match the mp3.converted schema, dropped", "err", err)
			return nil, nil
		}
		n, ok, err = rt.outcome(ctx, log, d.VideoFID, JobDone)
	case typeFailed:
		var d failedData
		if err := decode(e, &d); err != nil {
			log.Error("event data does not match the conversion.failed schema, dropped", "err", err)
			return nil, nil
		}
		n, ok, err = rt.outcome(ctx, log, d.VideoFID, JobFailed)
	case typeUploaded:
		// Only the broker's dead-letter sink routes video.uploaded here.
		ext := e.Extensions()
		log = log.With("knativeerrorcode", ext["knativeerrorcode"], "knativeerrordest", ext["knativeerrordest"])
		log.Warn("video.uploaded dead-lettered: the broker gave up on its conversion")
		var d uploadedData
		if err := decode(e, &d); err != nil {
			log.Error("event data does not match the video.uploaded schema, dropped", "err", err)
			return nil, nil
		}
		n, ok, err = rt.deadLetter(ctx, log, d)
	default:
		log.Warn("unexpected event type, dropped")
		return nil, nil
	}
	if err != nil {
		log.Error("storage unavailable", "err", err)
		return nil, cehttp.NewResult(503, "storage unavailable, try again")
	} else if !ok {
		return nil, nil
	}
	return nil, rt.notify(ctx, log.With("video_fid", n.videoFID, "kind", n.kind), n)
}

// Start reads the configuration. It fails only on bad configuration: MongoDB and SMTP are
// reached lazily, so the function comes up while they are down and recovers by itself.
func (f *Function) Start(ctx context.Context, cfg map[string]string) error {
	if err := f.startTelemetry(ctx, "notify", cfg); err != nil {
		return err
	}
	rt, err := newRuntime(cfg)
	if err != nil {
		return err
	}
	if old := f.lc.start(rt); old != nil {
		_ = old.client.Disconnect(ctx)
	}
	mode := "outbox " + rt.mailDir
	if rt.smtp != nil {
		mode = "smtp " + rt.smtpAddr
	}
	f.log.Info("started", "mail", mode, "mail_from", rt.from, "public_url", rt.publicURL, "db_prefix", rt.prefix)
	return nil
}

// Stop disconnects from MongoDB.
func (f *Function) Stop(ctx context.Context) error {
	defer f.stopTelemetry(ctx) // after the work in flight: its spans are exported
	rt := f.lc.stop()
	if rt == nil {
		return nil
	}
	return rt.client.Disconnect(ctx)
}

// Ready reports whether Start has finished.
func (f *Function) Ready(ctx context.Context) (bool, error) {
	return f.lc.started(), nil
}

// Alive reports that the process is alive.
func (f *Function) Alive(ctx context.Context) (bool, error) {
	return true, nil
}

// runtime is the configuration and clients that Start builds.
type runtime struct {
	client    *mongo.Client
	prefix    string
	smtp      *gomail.Client // nil: write .eml files into mailDir
	smtpAddr  string         // scheme://host:port, for logs (never the credentials)
	from      string
	mailDir   string
	publicURL string
	links     linkSigner
	linkTTL   time.Duration
	timeout   time.Duration
	staleAt   time.Duration // a claim older than this whose send never finished may be taken over

	// locks serialise this process's writes to one job. MongoDB applies findAndModify
	// atomically, which is what makes the claim safe across replicas; FerretDB (the local
	// stack's MongoDB) reads and writes in two steps (FerretDB issues #2168, #3040), so
	// within a process the claim must not race itself.
	locks [64]sync.Mutex
}

func newRuntime(cfg map[string]string) (*runtime, error) {
	set, err := loadSettings(Settings, cfg)
	if err != nil {
		return nil, err
	}
	rt := &runtime{
		prefix:    set.text("MONGODB_DB_PREFIX"),
		from:      set.text("MAIL_FROM"),
		mailDir:   set.text("MAIL_DIR"),
		publicURL: set.text("PUBLIC_URL"),
		links:     newLinkSigner(set.text("LINK_SECRET"), ""),
		linkTTL:   set.duration("LINK_TTL"),
		timeout:   set.duration("SMTP_TIMEOUT"),
	}
	if n := len(set.text("LINK_SECRET")); n < minLinkSecret {
		return nil, fmt.Errorf("LINK_SECRET: %d bytes, want at least %d", n, minLinkSecret)
	}
	// A send takes at most about SMTP_TIMEOUT (see newSMTPClient): a claim this old whose
	// send never settled belongs to a process that died mid-send.
	rt.staleAt = 2*rt.timeout + time.Minute
	if _, err := mail.ParseAddress(rt.from); err != nil {
		return nil, fmt.Errorf("MAIL_FROM %q is not an email address: %w", rt.from, err)
	}
	if s := set.text("SMTP_URL"); s != "" {
		c, addr, err := newSMTPClient(s, rt.timeout)
		if err != nil {
			return nil, err
		}
		rt.smtp, rt.smtpAddr = c, addr
	}
	cli, err := mongo.Connect(options.Client().ApplyURI(set.text("MONGODB_URI")).
		SetServerSelectionTimeout(5 * time.Second).SetConnectTimeout(5 * time.Second).SetTimeout(15 * time.Second))
	if err != nil {
		return nil, fmt.Errorf("MONGODB_URI: %w", err)
	}
	rt.client = cli
	return rt, nil
}
