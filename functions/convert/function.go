// Package function is the convert function: it turns an uploaded video's audio track into an MP3.
//
// It is invoked over HTTP with a dev.mp3converter.video.uploaded CloudEvent and replies, in the
// same response, with dev.mp3converter.mp3.converted or dev.mp3converter.conversion.failed so the
// broker routes the reply on. It is an HTTP function (not a CloudEvent one) because a conversion
// can outlast func-go's 30 s write timeout: Handle extends its own deadlines.
//
// This file holds the lifecycle and the request's path; events.go reads the event and writes
// the reply, claim.go claims the job for one delivery, pipeline.go converts it (ffprobe and
// ffmpeg in media.go), store.go moves the files through GridFS, jobs.go ends the job.
package function

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Settings are the environment variables convert reads (README, "Configuration").
var Settings = withTelemetry([]Setting{
	{Name: "MONGODB_URI", Kind: KindText, Required: true, Meaning: "the MongoDB that holds the videos and mp3s databases"},
	{Name: "MONGODB_DB_PREFIX", Kind: KindText, Meaning: "prefix of the database names, so several stacks can share one MongoDB"},
	{Name: "CONVERT_TIMEOUT", Kind: KindDuration, Default: "10m", Min: "1s", Meaning: "bound of one conversion"},
	{Name: "CONVERT_LEASE", Kind: KindDuration, Default: "30s", Min: "3s", Meaning: "how long a claim on a job lasts unless renewed (every third of it)"},
	{Name: "CONVERT_PER_USER", Kind: KindInt, Default: "2", Min: "1", Meaning: "conversions of one user at once; more wait for the broker's retries (503 with Retry-After)"},
	{Name: "MAX_DURATION", Kind: KindDuration, Default: "4h", Min: "1s", Meaning: "longest input accepted"},
	{Name: "MP3_QUALITY", Kind: KindInt, Default: "2", Min: "0", Max: "9", Meaning: "ffmpeg's LAME -q:a, 0 (best) to 9; MP3 audio is copied, not re-encoded"},
	{Name: "KEEP_VIDEOS", Kind: KindBool, Default: "false", Meaning: "keep the uploaded video after a successful conversion"},
	{Name: "TMPDIR", Kind: KindText, Meaning: "where the MP3 is staged; unset: the system's temporary directory"},
	{Name: "FFMPEG_PATH", Kind: KindText, Meaning: "ffmpeg to run; unset: found in PATH"},
	{Name: "FFPROBE_PATH", Kind: KindText, Meaning: "ffprobe to run; unset: found in PATH"},
})

// Function converts uploaded videos to MP3. Its zero value is not usable: call New, then Start.
type Function struct {
	telemetry // traces and metrics: kit_telemetry.go

	log *slog.Logger
	lc  lifecycle[state]

	// Test hooks, nil in production; set before Start, which hands them to the state.
	onFFmpeg      func(args []string) // called before every ffmpeg run
	beforeUpload  func()              // called after ffmpeg, before the MP3 is stored
	beforeDelete  func()              // called after the reply, before the video is deleted
	progressEvery time.Duration       // how often the progress is written (default progressEvery)
}

// state is everything Start builds from the configuration.
type state struct {
	client      *mongo.Client
	prefix      string
	timeout     time.Duration // bound of one conversion (CONVERT_TIMEOUT)
	lease       time.Duration // how long a claim lasts unless renewed (CONVERT_LEASE)
	perUser     int           // one user's conversions at once (CONVERT_PER_USER)
	quality     int
	maxDuration time.Duration
	keepVideos  bool
	tmpDir      string
	ffmpeg      string
	ffprobe     string
	toolsErr    error // ffmpeg or ffprobe missing: Ready reports it

	onFFmpeg      func(args []string)
	beforeUpload  func()
	beforeDelete  func()
	progressEvery time.Duration
}

// New returns a Function that answers 503 until Start has run.
func New() *Function {
	return &Function{log: withTraceIDs(slog.Default()).With("function", "convert")}
}

// Handle converts the video named by a video.uploaded CloudEvent and replies with the result event.
func (f *Function) Handle(w http.ResponseWriter, r *http.Request) { f.serveHTTP(w, r, f.handle) }

// handle is Handle inside the request's trace.
func (f *Function) handle(w http.ResponseWriter, r *http.Request) {
	s := f.lc.load()
	if s == nil {
		writeError(w, http.StatusServiceUnavailable, "starting up, try again")
		return
	}
	// A conversion may run for CONVERT_TIMEOUT; func-go's server would cut the response at 30 s.
	deadline := time.Now().Add(s.timeout + time.Minute)
	rc := http.NewResponseController(w)
	if err := rc.SetReadDeadline(deadline); err != nil && !errors.Is(err, http.ErrNotSupported) {
		f.log.Warn("cannot extend the read deadline", "err", err)
	}
	if err := rc.SetWriteDeadline(deadline); err != nil && !errors.Is(err, http.ErrNotSupported) {
		f.log.Warn("cannot extend the write deadline", "err", err)
	}

	ev, err := cehttp.NewEventFromHTTPRequest(r)
	if err != nil {
		f.log.Warn("request is not a CloudEvent", "err", err)
		writeError(w, http.StatusBadRequest, "expected a CloudEvent")
		return
	}
	log := f.log.With("event_id", ev.ID(), "event_type", ev.Type())
	if ev.Type() != typeUploaded {
		log.Warn("ignoring an event of a type this function does not handle")
		w.WriteHeader(http.StatusOK)
		return
	}
	up, oid, err := parseUploaded(ev.Data())
	if err != nil {
		log.Warn("ignoring a video.uploaded event with invalid data", "err", err)
		w.WriteHeader(http.StatusOK)
		return
	}
	d := &delivery{state: s, log: log.With("video_fid", up.VideoFID)}

	// The work goes on if the broker hangs up: a redelivery then finds the finished MP3.
	res := d.process(context.WithoutCancel(r.Context()), oid, up)
	res.write(r.Context(), w, d.log)
	if res.after != nil {
		// The broker has its answer (flushed, with its length); the rest does not hold it up.
		if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
			d.log.Warn("cannot flush the reply", "err", err)
		}
		res.after(context.WithoutCancel(r.Context()))
	}
}

// Start reads the configuration. Backing services are not contacted: the client connects lazily.
func (f *Function) Start(ctx context.Context, cfg map[string]string) error {
	if err := f.startTelemetry(ctx, "convert", cfg); err != nil {
		return err
	}
	set, err := loadSettings(Settings, cfg)
	if err != nil {
		return err
	}
	s := &state{
		prefix:        set.text("MONGODB_DB_PREFIX"),
		timeout:       set.duration("CONVERT_TIMEOUT"),
		lease:         set.duration("CONVERT_LEASE"),
		perUser:       int(set.int("CONVERT_PER_USER")),
		maxDuration:   set.duration("MAX_DURATION"),
		quality:       int(set.int("MP3_QUALITY")),
		keepVideos:    set.bool("KEEP_VIDEOS"),
		tmpDir:        set.text("TMPDIR"),
		onFFmpeg:      f.onFFmpeg,
		beforeUpload:  f.beforeUpload,
		beforeDelete:  f.beforeDelete,
		progressEvery: cmp.Or(f.progressEvery, progressEvery),
	}
	if s.tmpDir == "" {
		s.tmpDir = os.TempDir()
	}
	s.removeDeadTempDirs(f.log)
	s.client, err = mongo.Connect(options.Client().ApplyURI(set.text("MONGODB_URI")).
		SetServerSelectionTimeout(5 * time.Second).SetConnectTimeout(5 * time.Second))
	if err != nil {
		return fmt.Errorf("MONGODB_URI: %w", err)
	}

	var errs []error
	s.ffmpeg, err = findTool(set.text("FFMPEG_PATH"), "ffmpeg")
	errs = append(errs, err)
	s.ffprobe, err = findTool(set.text("FFPROBE_PATH"), "ffprobe")
	errs = append(errs, err)
	if s.toolsErr = errors.Join(errs...); s.toolsErr != nil {
		f.log.Error("conversions will fail until the image has ffmpeg and ffprobe", "err", s.toolsErr)
	}
	if old := f.lc.start(s); old != nil {
		_ = old.client.Disconnect(ctx)
	}
	f.log.Info("started", "convert_timeout", s.timeout, "max_duration", s.maxDuration, "mp3_quality", s.quality,
		"keep_videos", s.keepVideos, "ffmpeg", s.ffmpeg, "ffprobe", s.ffprobe)
	return nil
}

// removeDeadTempDirs removes the staging dirs (convert-*) that instances killed mid-conversion
// left in TMPDIR. A live conversion's dir changes within CONVERT_TIMEOUT, so a dir untouched
// for longer belongs to no conversion, of this process or of another sharing TMPDIR.
func (s *state) removeDeadTempDirs(log *slog.Logger) {
	dirs, _ := filepath.Glob(filepath.Join(s.tmpDir, "convert-*"))
	removed := 0
	for _, d := range dirs {
		info, err := os.Lstat(d)
		if err != nil || !info.IsDir() || time.Since(info.ModTime()) < s.timeout+time.Minute {
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			log.Warn("cannot remove a dead staging dir", "dir", d, "err", err)
			continue
		}
		removed++
	}
	if removed > 0 {
		log.Info("removed the staging dirs of killed conversions", "dirs", removed, "tmpdir", s.tmpDir)
	}
}

// Stop closes the MongoDB connections.
func (f *Function) Stop(ctx context.Context) error {
	defer f.stopTelemetry(ctx) // after the work in flight: its spans are exported
	s := f.lc.stop()
	if s == nil {
		return nil
	}
	return s.client.Disconnect(ctx)
}

// Ready is true once Start has finished and ffmpeg and ffprobe were found.
func (f *Function) Ready(ctx context.Context) (bool, error) {
	s := f.lc.load()
	if s == nil {
		return false, errors.New("starting up")
	}
	if s.toolsErr != nil {
		return false, s.toolsErr
	}
	return true, nil
}

// Alive is true while the process runs.
func (f *Function) Alive(ctx context.Context) (bool, error) {
	return true, nil
}
