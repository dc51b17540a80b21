// Package function is the sweep function of mp3converter: the reconciler beside the event
// path. The jobs in MongoDB are the truth; a PingSource fires a run every minute, and each
// run re-drives what the event path dropped and removes what nothing needs any more:
//
//   - jobs left in uploaded (or stuck in converting) get their video.uploaded again, and are
//     failed after SWEEP_REDRIVES re-drives;
//   - finished jobs never notified get their mp3.converted or conversion.failed again;
//   - MP3s older than MP3_RETENTION are deleted and their job becomes expired;
//   - GridFS files and chunks that no job needs are deleted;
//   - the jobs and files of deleted users (dev.mp3converter.user.deleted) are deleted.
//
// A run is bounded (SWEEP_BATCH items of each kind, runTimeout in all: the rest next run),
// idempotent, and alone: a lease in MongoDB makes a second replica's run do nothing.
package function

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Event types sweep consumes.
const (
	typePing        = "dev.knative.sources.ping" // a PingSource's tick: run
	typeUserDeleted = "dev.mp3converter.user.deleted"
)

// runTimeout bounds one run: func-go cuts a response at 30 s, and the broker's delivery
// timeout of the sweep Trigger is 30 s. What is left over waits for the next tick.
const runTimeout = 25 * time.Second

// Settings are the environment variables sweep reads (README, "Configuration").
var Settings = withTelemetry([]Setting{
	{Name: "MONGODB_URI", Kind: KindText, Required: true, Meaning: "the MongoDB that holds the videos and mp3s databases"},
	{Name: "MONGODB_DB_PREFIX", Kind: KindText, Meaning: "prefix of the database names, so several stacks can share one MongoDB"},
	{Name: "K_SINK", Kind: KindURL, Required: true, Meaning: "the broker ingress the re-sent events go to; a SinkBinding sets it on the cluster"},
	{Name: "SWEEP_GRACE", Kind: KindDuration, Default: "2m", Min: "1s", Meaning: "how old a job or file must be before the sweep touches it"},
	{Name: "SWEEP_BATCH", Kind: KindInt, Default: "100", Min: "1", Max: "10000", Meaning: "items of each kind one run handles at most; the rest next run"},
	{Name: "SWEEP_CHUNK_SCAN_PAUSE", Kind: KindDuration, Default: "1h", Min: "0s", Meaning: "rest between two full passes of the orphan-chunk scan (a chunk query reads every stored chunk on FerretDB's SQLite backend)"},
	{Name: "SWEEP_REDRIVES", Kind: KindInt, Default: "3", Min: "0", Max: "100", Meaning: "re-drives of a stalled job before it is failed"},
	{Name: "STUCK_AFTER", Kind: KindDuration, Default: "70m", Min: "1s", Meaning: "a converting job whose claim ended this long ago is stuck: beyond the convert Trigger's whole retry window (about 62 min) and upload's UPLOAD_TIMEOUT"},
	{Name: "MP3_RETENTION", Kind: KindDuration, Default: "720h", Min: "0s", Meaning: "MP3s older than this are deleted and their job becomes expired (720h: 30 days); 0 keeps them forever"},
	{Name: "KEEP_VIDEOS", Kind: KindBool, Default: "false", Meaning: "keep the videos of finished jobs (as convert's KEEP_VIDEOS)"},
})

// Function is the sweep CloudEvents function.
type Function struct {
	telemetry // traces and metrics: kit_telemetry.go

	log *slog.Logger
	lc  lifecycle[runtime]
}

// New returns a sweep function that answers 503 until Start has run.
func New() *Function {
	return &Function{log: withTraceIDs(slog.Default()).With("function", "sweep")}
}

// Handle runs a sweep on a PingSource tick, and removes a deleted user's data on
// user.deleted. It never replies with an event. MongoDB unavailable answers 503 (the broker
// retries a user.deleted; a missed tick is made up by the next one).
func (f *Function) Handle(ctx context.Context, e event.Event) (*event.Event, error) {
	return f.handleEvent(ctx, e, f.handle)
}

// handle is Handle inside the event's trace.
func (f *Function) handle(ctx context.Context, e event.Event) (*event.Event, error) {
	rt := f.lc.load()
	if rt == nil {
		return nil, cehttp.NewResult(503, "sweep is starting, try again")
	}
	log := f.log.With("event_id", e.ID(), "event_type", e.Type())
	ctx, cancel := context.WithTimeout(ctx, runTimeout)
	defer cancel()
	switch e.Type() {
	case typePing:
		c, ran, err := rt.run(ctx, log)
		if err != nil {
			log.Error("sweep run stopped", "err", err, "counts", c)
			return nil, cehttp.NewResult(503, "storage unavailable, try again")
		}
		if !ran {
			log.Info("another sweep run holds the lease: nothing to do")
		}
		return nil, nil
	case typeUserDeleted:
		var d userDeletedData
		if err := decodeUserDeleted(e, &d); err != nil {
			log.Error("event data does not match the user.deleted schema, dropped", "err", err)
			return nil, nil
		}
		at := e.Time()
		if at.IsZero() {
			at = time.Now().UTC()
		}
		removed, err := rt.userDeleted(ctx, deletedUser{UserID: d.UserID, Username: d.Username, DeletedAt: at.UTC()})
		if err != nil {
			log.Error("storage unavailable", "err", err)
			return nil, cehttp.NewResult(503, "storage unavailable, try again")
		}
		log.Info("user deleted: removing their jobs and files", "user", d.Username, "user_id", d.UserID, "jobs_removed", removed)
		return nil, nil
	}
	log.Warn("unexpected event type, dropped")
	return nil, nil
}

// Start reads the configuration. MongoDB and the broker are reached lazily, so the function
// comes up while they are down.
func (f *Function) Start(ctx context.Context, cfg map[string]string) error {
	if err := f.startTelemetry(ctx, "sweep", cfg); err != nil {
		return err
	}
	rt, err := newRuntime(cfg)
	if err != nil {
		return err
	}
	if old := f.lc.start(rt); old != nil {
		_ = old.client.Disconnect(ctx)
	}
	f.log.Info("started", "grace", rt.grace, "batch", rt.batch, "redrives", rt.maxRedrives,
		"stuck_after", rt.stuckAfter, "mp3_retention", rt.retention, "keep_videos", rt.keepVideos, "db_prefix", rt.prefix)
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
	client      *mongo.Client
	events      cloudevents.Client
	prefix      string
	grace       time.Duration
	batch       int64
	maxRedrives int32
	stuckAfter  time.Duration
	chunkPause  time.Duration // rest between two full passes of the orphan-chunk scan
	retention   time.Duration // 0: MP3s are kept forever
	keepVideos  bool
	now         func() time.Time // time.Now, but tests may move it
}

func newRuntime(cfg map[string]string) (*runtime, error) {
	set, err := loadSettings(Settings, cfg)
	if err != nil {
		return nil, err
	}
	rt := &runtime{
		prefix:      set.text("MONGODB_DB_PREFIX"),
		grace:       set.duration("SWEEP_GRACE"),
		batch:       set.int("SWEEP_BATCH"),
		maxRedrives: int32(set.int("SWEEP_REDRIVES")),
		stuckAfter:  set.duration("STUCK_AFTER"),
		chunkPause:  set.duration("SWEEP_CHUNK_SCAN_PAUSE"),
		retention:   set.duration("MP3_RETENTION"),
		keepVideos:  set.bool("KEEP_VIDEOS"),
		now:         func() time.Time { return time.Now().UTC() },
	}
	proto, err := cehttp.New(cehttp.WithTarget(set.text("K_SINK")))
	if err != nil {
		return nil, fmt.Errorf("K_SINK: %w", err)
	}
	if rt.events, err = cloudevents.NewClient(proto); err != nil {
		return nil, fmt.Errorf("cloudevents client: %w", err)
	}
	rt.client, err = mongo.Connect(options.Client().ApplyURI(set.text("MONGODB_URI")).
		SetServerSelectionTimeout(5 * time.Second).SetConnectTimeout(5 * time.Second).SetTimeout(15 * time.Second))
	if err != nil {
		return nil, fmt.Errorf("MONGODB_URI: %w", err)
	}
	return rt, nil
}

func (rt *runtime) videos() *mongo.Database { return rt.client.Database(rt.prefix + "videos") }
func (rt *runtime) mp3s() *mongo.Database   { return rt.client.Database(rt.prefix + "mp3s") }
func (rt *runtime) jobs() *mongo.Collection { return rt.videos().Collection("jobs") }

// stopped reports whether err only says the run's time is up (the rest waits for the next run).
func stopped(ctx context.Context, err error) bool {
	return ctx.Err() != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || mongo.IsTimeout(err))
}
