// Package function is the convert function: it turns an uploaded video's audio track into an MP3.
//
// It is invoked over HTTP with a dev.mp3converter.video.uploaded CloudEvent and replies, in the
// same response, with dev.mp3converter.mp3.converted or dev.mp3converter.conversion.failed so the
// broker routes the reply on. It is an HTTP function (not a CloudEvent one) because a conversion
// can outlast func-go's 30 s write timeout: Handle extends its own deadlines.
package function

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

const (
	typeUploaded  = "dev.mp3converter.video.uploaded"
	typeConverted = "dev.mp3converter.mp3.converted"
	typeFailed    = "dev.mp3converter.conversion.failed"
	eventSource   = "/functions/convert"

	chunkSizeBytes = 128 * 1024

	msgStorageDown = "storage unavailable, try again"
)

// Settings are the environment variables convert reads (README, "Configuration").
var Settings = []Setting{
	{Name: "MONGODB_URI", Kind: KindText, Required: true, Meaning: "the MongoDB that holds the videos and mp3s databases"},
	{Name: "MONGODB_DB_PREFIX", Kind: KindText, Meaning: "prefix of the database names, so several stacks can share one MongoDB"},
	{Name: "CONVERT_TIMEOUT", Kind: KindDuration, Default: "10m", Min: "1s", Meaning: "bound of one conversion"},
	{Name: "CONVERT_LEASE", Kind: KindDuration, Default: "30s", Min: "3s", Meaning: "how long a claim on a job lasts unless renewed (every third of it)"},
	{Name: "MAX_DURATION", Kind: KindDuration, Default: "4h", Min: "1s", Meaning: "longest input accepted"},
	{Name: "MP3_QUALITY", Kind: KindInt, Default: "2", Min: "0", Max: "9", Meaning: "ffmpeg's LAME -q:a, 0 (best) to 9; MP3 audio is copied, not re-encoded"},
	{Name: "KEEP_VIDEOS", Kind: KindBool, Default: "false", Meaning: "keep the uploaded video after a successful conversion"},
	{Name: "TMPDIR", Kind: KindText, Meaning: "where the video and the MP3 are staged; unset: the system's temporary directory"},
	{Name: "FFMPEG_PATH", Kind: KindText, Meaning: "ffmpeg to run; unset: found in PATH"},
	{Name: "FFPROBE_PATH", Kind: KindText, Meaning: "ffprobe to run; unset: found in PATH"},
}

// Function converts uploaded videos to MP3.
type Function struct {
	log     *slog.Logger
	started atomic.Bool // set once Start has finished; the fields below are read-only afterwards

	client      *mongo.Client
	prefix      string
	timeout     time.Duration // bound of one conversion (CONVERT_TIMEOUT)
	lease       time.Duration // how long a claim lasts unless renewed (CONVERT_LEASE)
	quality     int
	maxDuration time.Duration
	keepVideos  bool
	tmpDir      string
	ffmpeg      string
	ffprobe     string
	toolsErr    error // ffmpeg or ffprobe missing: Ready reports it

	// Test hooks, nil in production.
	onFFmpeg     func(args []string) // called before every ffmpeg run
	beforeUpload func()              // called after ffmpeg, before the MP3 is stored
}

// New returns a Function; Start configures it.
func New() *Function {
	return &Function{log: slog.Default().With("function", "convert")}
}

// Handle converts the video named by a video.uploaded CloudEvent and replies with the result event.
func (f *Function) Handle(w http.ResponseWriter, r *http.Request) {
	if !f.started.Load() {
		writeError(w, http.StatusServiceUnavailable, "starting up, try again")
		return
	}
	// A conversion may run for CONVERT_TIMEOUT; func-go's server would cut the response at 30 s.
	deadline := time.Now().Add(f.timeout + time.Minute)
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
	log = log.With("video_fid", up.VideoFID)

	// The work goes on if the broker hangs up: a redelivery then finds the finished MP3.
	res := f.process(context.WithoutCancel(r.Context()), log, oid, up)
	switch {
	case res.reply != nil:
		ctx := binding.WithForceBinary(r.Context())
		if err := cehttp.WriteResponseWriter(ctx, binding.ToMessage(res.reply), http.StatusOK, w); err != nil {
			log.Error("cannot write the reply event", "err", err)
		}
	case res.status == http.StatusOK:
		w.WriteHeader(http.StatusOK)
	default:
		if res.retryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(res.retryAfter.Seconds()))))
		}
		writeError(w, res.status, res.message)
	}
}

// Start reads the configuration. Backing services are not contacted: the client connects lazily.
func (f *Function) Start(ctx context.Context, cfg map[string]string) error {
	set, err := loadSettings(Settings, cfg)
	if err != nil {
		return err
	}
	f.timeout = set.duration("CONVERT_TIMEOUT")
	f.lease = set.duration("CONVERT_LEASE")
	f.maxDuration = set.duration("MAX_DURATION")
	f.quality = int(set.int("MP3_QUALITY"))
	f.keepVideos = set.bool("KEEP_VIDEOS")
	if f.tmpDir = set.text("TMPDIR"); f.tmpDir == "" {
		f.tmpDir = os.TempDir()
	}
	f.prefix = set.text("MONGODB_DB_PREFIX")
	uri := set.text("MONGODB_URI")
	f.client, err = mongo.Connect(options.Client().ApplyURI(uri).
		SetServerSelectionTimeout(5 * time.Second).SetConnectTimeout(5 * time.Second))
	if err != nil {
		return fmt.Errorf("MONGODB_URI: %w", err)
	}

	f.removeDeadTempDirs()

	var errs []error
	f.ffmpeg, err = findTool(set.text("FFMPEG_PATH"), "ffmpeg")
	errs = append(errs, err)
	f.ffprobe, err = findTool(set.text("FFPROBE_PATH"), "ffprobe")
	errs = append(errs, err)
	if f.toolsErr = errors.Join(errs...); f.toolsErr != nil {
		f.log.Error("conversions will fail until the image has ffmpeg and ffprobe", "err", f.toolsErr)
	}
	f.log.Info("started", "convert_timeout", f.timeout, "max_duration", f.maxDuration, "mp3_quality", f.quality,
		"keep_videos", f.keepVideos, "ffmpeg", f.ffmpeg, "ffprobe", f.ffprobe)
	f.started.Store(true)
	return nil
}

// removeDeadTempDirs removes the staging dirs (convert-*) that instances killed mid-conversion
// left in TMPDIR. A live conversion's dir changes within CONVERT_TIMEOUT, so a dir untouched
// for longer belongs to no conversion, of this process or of another sharing TMPDIR.
func (f *Function) removeDeadTempDirs() {
	dirs, _ := filepath.Glob(filepath.Join(f.tmpDir, "convert-*"))
	removed := 0
	for _, d := range dirs {
		info, err := os.Lstat(d)
		if err != nil || !info.IsDir() || time.Since(info.ModTime()) < f.timeout+time.Minute {
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			f.log.Warn("cannot remove a dead staging dir", "dir", d, "err", err)
			continue
		}
		removed++
	}
	if removed > 0 {
		f.log.Info("removed the staging dirs of killed conversions", "dirs", removed, "tmpdir", f.tmpDir)
	}
}

// Stop closes the MongoDB connections.
func (f *Function) Stop(ctx context.Context) error {
	if !f.started.Load() || f.client == nil {
		return nil
	}
	return f.client.Disconnect(ctx)
}

// Ready is true once Start has finished and ffmpeg and ffprobe were found.
func (f *Function) Ready(ctx context.Context) (bool, error) {
	if !f.started.Load() {
		return false, errors.New("starting up")
	}
	if f.toolsErr != nil {
		return false, f.toolsErr
	}
	return true, nil
}

// Alive is true while the process runs.
func (f *Function) Alive(ctx context.Context) (bool, error) {
	return true, nil
}

// result is what Handle answers: a reply event, a plain 200, or an error status.
type result struct {
	reply      *event.Event
	status     int
	message    string
	retryAfter time.Duration
}

var (
	noReply     = result{status: http.StatusOK}
	unavailable = result{status: http.StatusServiceUnavailable, message: msgStorageDown}
)

// job is the part of a jobs document convert reads (events/job.schema.json).
type job struct {
	ID              bson.ObjectID `bson:"_id"`
	Username        string        `bson:"username"`
	Filename        string        `bson:"filename"`
	State           JobState      `bson:"state"`
	Reason          string        `bson:"reason"`
	DurationSeconds float64       `bson:"duration_seconds"`
	Attempts        int32         `bson:"attempts"`
}

// storedMP3 is a files document of the mp3s GridFS bucket.
type storedMP3 struct {
	Length   int64  `bson:"length"`
	Filename string `bson:"filename"`
	Metadata struct {
		DurationSeconds float64 `bson:"duration_seconds"`
	} `bson:"metadata"`
}

// process claims the job and converts the video, or explains why it does not.
//
// The claim is an insert of the claim document "<video_fid>/<attempt>" into the convert_claims
// collection: an insert with a unique _id is atomic on MongoDB and on FerretDB alike, whereas a
// conditional findAndModify is not atomic on FerretDB's SQLite backend (two deliveries could
// both claim the job and write two MP3s under one id). The job document mirrors the claim
// (state converting, attempts, lease_until) for the other functions to read.
func (f *Function) process(ctx context.Context, log *slog.Logger, oid bson.ObjectID, up uploaded) result {
	claimCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	j, err := f.readJob(claimCtx, oid, up)
	if err != nil {
		return f.storageError(log, "cannot read the job", err)
	}
	if j.State != JobUploaded && j.State != JobConverting {
		return f.replay(claimCtx, log, j)
	}
	now := time.Now().UTC()
	lease := now.Add(f.lease)
	n, heldUntil, err := f.claim(claimCtx, oid, j.Attempts, now, lease)
	if err != nil {
		return f.storageError(log, "cannot claim the job", err)
	}
	if n == 0 {
		log.Info("another delivery is converting this video", "lease_until", heldUntil)
		return result{status: http.StatusServiceUnavailable, retryAfter: max(time.Second, heldUntil.Sub(now)),
			message: "this video is being converted, try again later"}
	}
	j.Attempts = n
	log = log.With("attempt", n)
	res, err := f.videosDB().Collection("jobs").UpdateOne(claimCtx,
		bson.D{{Key: "_id", Value: oid}, {Key: "state", Value: bson.D{{Key: "$in", Value: bson.A{JobUploaded, JobConverting}}}}},
		bson.D{
			{Key: "$set", Value: bson.D{{Key: "state", Value: JobConverting}, {Key: "lease_until", Value: lease}, {Key: "updated_at", Value: now}}},
			{Key: "$max", Value: bson.D{{Key: "attempts", Value: n}}},
		})
	if err != nil {
		return f.transient(ctx, log, j, false, msgStorageDown, fmt.Errorf("mark the job converting: %w", err))
	}
	if res.MatchedCount == 0 {
		// Finished by another delivery between our read and our claim.
		f.releaseClaim(claimCtx, log, j)
		if j, err = f.readJob(claimCtx, oid, up); err != nil {
			return f.storageError(log, "cannot read the job", err)
		}
		return f.replay(claimCtx, log, j)
	}
	log.Info("claimed the job")
	// The claim is short and renewed while the work goes on: the claim of an
	// attempt that crashed ends within CONVERT_LEASE, so the broker's next
	// retry takes over instead of waiting out CONVERT_TIMEOUT. The work stops
	// if the claim cannot be renewed in time, so two claims never overlap.
	workCtx, cancelWork := context.WithTimeout(ctx, f.timeout)
	defer cancelWork()
	stopRenewing := f.renewClaim(workCtx, cancelWork, log, j, lease)
	defer stopRenewing()
	return f.convert(workCtx, log, j)
}

// renewClaim extends this delivery's claim every third of CONVERT_LEASE
// until stop is called; if the claim would lapse first, it calls lost.
func (f *Function) renewClaim(ctx context.Context, lost context.CancelFunc, log *slog.Logger, j job, lease time.Time) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ticker := time.NewTicker(f.lease / 3)
		defer ticker.Stop()
		claims := f.videosDB().Collection("convert_claims")
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
			if time.Now().After(lease) {
				log.Error("the claim lapsed before it could be renewed: stopping this attempt")
				lost()
				return
			}
			next := time.Now().UTC().Add(f.lease)
			rctx, cancel := context.WithDeadline(ctx, lease)
			_, err := claims.UpdateOne(rctx, bson.D{{Key: "_id", Value: claimID(j.ID, j.Attempts)}},
				bson.D{{Key: "$set", Value: bson.D{{Key: "lease_until", Value: next}}}})
			cancel()
			if err != nil {
				log.Warn("cannot renew the claim", "err", err)
				continue
			}
			lease = next
		}
	}()
	return func() { close(done); wg.Wait() }
}

// readJob reads the job; a missing job reads as state "" (no JobState).
func (f *Function) readJob(ctx context.Context, oid bson.ObjectID, up uploaded) (job, error) {
	j := job{ID: oid}
	err := f.videosDB().Collection("jobs").FindOne(ctx, bson.D{{Key: "_id", Value: oid}}).Decode(&j)
	if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		return j, err
	}
	if j.Username == "" {
		j.Username = up.Username
	}
	if j.Filename == "" {
		j.Filename = up.Filename
	}
	return j, nil
}

// claim takes the claim that follows the job's last one (attempt `after`): a live claim means
// another delivery is converting; an expired one is skipped; the first free number is inserted.
// It returns the claim's attempt number, or 0 and the end of the live claim of another delivery.
func (f *Function) claim(ctx context.Context, oid bson.ObjectID, after int32, now, lease time.Time) (int32, time.Time, error) {
	claims := f.videosDB().Collection("convert_claims")
	n := after
	for range 100 {
		if n >= 1 {
			var c struct {
				LeaseUntil time.Time `bson:"lease_until"`
			}
			err := claims.FindOne(ctx, bson.D{{Key: "_id", Value: claimID(oid, n)}}).Decode(&c)
			if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
				return 0, time.Time{}, err
			}
			if err == nil && c.LeaseUntil.After(now) {
				return 0, c.LeaseUntil, nil
			}
			// Missing (the job finished and its claims were dropped) or over (crashed or gave up).
		}
		n++
		_, err := claims.InsertOne(ctx, bson.D{{Key: "_id", Value: claimID(oid, n)}, {Key: "video_fid", Value: oid},
			{Key: "attempt", Value: n}, {Key: "lease_until", Value: lease}, {Key: "created_at", Value: now}})
		if err == nil {
			return n, time.Time{}, nil
		}
		if !mongo.IsDuplicateKeyError(err) {
			return 0, time.Time{}, err
		}
	}
	return 0, now.Add(time.Minute), nil
}

func claimID(oid bson.ObjectID, attempt int32) string {
	return oid.Hex() + "/" + strconv.Itoa(int(attempt))
}

// releaseClaim ends this delivery's claim now, so the broker's next retry can claim at once.
func (f *Function) releaseClaim(ctx context.Context, log *slog.Logger, j job) {
	_, err := f.videosDB().Collection("convert_claims").UpdateOne(ctx, bson.D{{Key: "_id", Value: claimID(j.ID, j.Attempts)}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "lease_until", Value: time.Now().UTC()}}}})
	if err != nil {
		log.Warn("cannot release the claim; it expires by itself", "err", err)
	}
}

// dropClaims removes a finished job's claims: a later delivery finds the job done or failed.
func (f *Function) dropClaims(ctx context.Context, log *slog.Logger, oid bson.ObjectID) {
	if _, err := f.videosDB().Collection("convert_claims").DeleteMany(ctx, bson.D{{Key: "video_fid", Value: oid}}); err != nil {
		log.Warn("cannot delete the claims of a finished job", "err", err)
	}
}

// replay answers a delivery for a job that is not waiting for a conversion.
func (f *Function) replay(ctx context.Context, log *slog.Logger, j job) result {
	if j.State.final() {
		// An attempt that crashed after finishing the job leaves its claim.
		f.dropClaims(ctx, log, j.ID)
	}
	switch j.State {
	case "":
		log.Warn("no job for this video: nothing to do")
		return noReply
	case JobDone:
		var mp3 storedMP3
		err := f.mp3Bucket().GetFilesCollection().FindOne(ctx, bson.D{{Key: "_id", Value: j.ID}}).Decode(&mp3)
		if errors.Is(err, mongo.ErrNoDocuments) {
			log.Error("the job is done but its MP3 is missing: nothing to send")
			return noReply
		}
		if err != nil {
			return f.storageError(log, "cannot read the stored MP3", err)
		}
		log.Info("already converted: sending the result again")
		return result{reply: convertedEvent(j, mp3)}
	case JobFailed:
		reason := j.Reason
		if reason == "" {
			reason = "the conversion failed"
		}
		log.Info("already failed: sending the failure again", "reason", reason)
		return result{reply: failedEvent(j, reason)}
	case JobExpired:
		log.Info("the job's MP3 expired (MP3_RETENTION): nothing to send")
		return noReply
	default:
		log.Error("the job is in a state this function does not know: nothing to do", "state", j.State)
		return noReply
	}
}

func (f *Function) storageError(log *slog.Logger, msg string, err error) result {
	log.Error(msg, "err", err)
	return unavailable
}

// convert does the claimed job: reuse a stored MP3, or run ffmpeg and store its output.
func (f *Function) convert(ctx context.Context, log *slog.Logger, j job) result {
	oid := j.ID
	bucket := f.mp3Bucket()

	// A complete MP3 from an earlier delivery that crashed before marking the job done.
	var mp3 storedMP3
	err := bucket.GetFilesCollection().FindOne(ctx, bson.D{{Key: "_id", Value: oid}}).Decode(&mp3)
	if err == nil {
		log.Info("the MP3 was stored by an earlier delivery")
		return f.finish(ctx, log, j, mp3)
	}
	if !errors.Is(err, mongo.ErrNoDocuments) {
		return f.transient(ctx, log, j, false, msgStorageDown, fmt.Errorf("read the mp3s bucket: %w", err))
	}
	// Chunks without a files document are the remains of a crashed attempt: we
	// hold the lease. The first attempt has no predecessor, so it skips the
	// delete (a scan of every chunk on FerretDB).
	if j.Attempts > 1 {
		if _, err := bucket.GetChunksCollection().DeleteMany(ctx, bson.D{{Key: "files_id", Value: oid}}); err != nil {
			return f.transient(ctx, log, j, false, msgStorageDown, fmt.Errorf("delete stray chunks: %w", err))
		}
	}

	dir, err := os.MkdirTemp(f.tmpDir, "convert-")
	if err != nil {
		return f.transient(ctx, log, j, false, "no room to convert, try again", err)
	}
	defer os.RemoveAll(dir)
	// MP4s with their index at the end cannot be read from a pipe: ffmpeg gets a file.
	in := filepath.Join(dir, "input")
	if err := f.download(ctx, oid, in); err != nil {
		if errors.Is(err, mongo.ErrFileNotFound) {
			return f.fail(ctx, log, j, "the uploaded file is missing", err.Error())
		}
		return f.transient(ctx, log, j, false, "cannot read the video, try again", err)
	}

	info, err := f.probe(ctx, in)
	if err != nil {
		var pe *probeError
		if errors.As(err, &pe) {
			reason := "this file is not a video or audio file we can read"
			if strings.Contains(pe.stderr, "moov atom not found") {
				reason = "the file is incomplete or damaged: its MP4 index is missing"
			}
			return f.fail(ctx, log, j, reason, pe.Error())
		}
		return f.transient(ctx, log, j, false, toolMessage(err, "cannot inspect the video, try again"), err)
	}
	if info.audioCodec == "" && info.picture {
		return f.fail(ctx, log, j, "this file is a picture, not a video with sound", "ffprobe read a still image")
	}
	if info.audioCodec == "" {
		return f.fail(ctx, log, j, "the video has no audio track", "ffprobe found no audio stream")
	}
	if info.duration > f.maxDuration {
		return f.fail(ctx, log, j, "the video is longer than "+f.maxDuration.String(),
			"duration "+info.duration.String())
	}

	out := filepath.Join(dir, "audio.mp3")
	copyAudio := info.audioCodec == "mp3"
	if err := f.runFFmpeg(ctx, in, out, copyAudio); err != nil {
		var fe *ffmpegError
		if errors.As(err, &fe) {
			return f.fail(ctx, log, j, "the audio track could not be converted: the file may be damaged", fe.Error())
		}
		return f.transient(ctx, log, j, false, toolMessage(err, "the conversion did not finish, try again"), err)
	}
	outInfo, err := f.probe(ctx, out)
	if err != nil {
		var pe *probeError
		if !errors.As(err, &pe) {
			return f.transient(ctx, log, j, false, toolMessage(err, "cannot inspect the MP3, try again"), err)
		}
		outInfo = mediaInfo{}
	}
	if outInfo.duration <= 0 {
		return f.fail(ctx, log, j, "the file is damaged: no audio could be decoded", "the MP3 has no duration")
	}
	seconds := math.Round(outInfo.duration.Seconds()*1000) / 1000
	log.Info("converted", "copied", copyAudio, "input_codec", info.audioCodec, "duration_seconds", seconds)

	if f.beforeUpload != nil {
		f.beforeUpload()
	}
	stored, err := f.upload(ctx, j, out, seconds)
	if errors.Is(err, errStoredByOther) {
		return f.transient(ctx, log, j, false, msgStorageDown, err)
	}
	if err != nil {
		// Our own partial chunks go too: nobody else writes this MP3 while we hold the claim.
		return f.transient(ctx, log, j, true, msgStorageDown, fmt.Errorf("store the MP3: %w", err))
	}
	return f.finish(ctx, log, j, stored)
}

// finish marks the job done, deletes the video and builds the mp3.converted reply.
func (f *Function) finish(ctx context.Context, log *slog.Logger, j job, mp3 storedMP3) result {
	// The MP3 is stored: this bookkeeping may outlive the lease (a later claim would find the MP3).
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	now := time.Now().UTC()
	_, err := f.videosDB().Collection("jobs").UpdateOne(bctx, bson.D{{Key: "_id", Value: j.ID}}, bson.D{
		{Key: "$set", Value: bson.D{
			{Key: "state", Value: JobDone},
			{Key: "mp3_fid", Value: j.ID.Hex()},
			{Key: "duration_seconds", Value: mp3.Metadata.DurationSeconds},
			{Key: "reason", Value: ""},
			{Key: "updated_at", Value: now},
		}},
		{Key: "$unset", Value: bson.D{{Key: "lease_until", Value: ""}}},
	})
	if err != nil {
		return f.transient(ctx, log, j, false, msgStorageDown, fmt.Errorf("mark the job done: %w", err))
	}
	if !f.keepVideos {
		err := f.videosDB().GridFSBucket().Delete(bctx, j.ID)
		if err != nil && !errors.Is(err, mongo.ErrFileNotFound) {
			log.Warn("cannot delete the converted video", "err", err)
		}
	}
	f.dropClaims(bctx, log, j.ID)
	log.Info("job done", "size", mp3.Length, "duration_seconds", mp3.Metadata.DurationSeconds)
	return result{reply: convertedEvent(j, mp3)}
}

// fail marks the job failed for good and builds the conversion.failed reply.
func (f *Function) fail(ctx context.Context, log *slog.Logger, j job, reason, detail string) result {
	log.Warn("conversion failed", "reason", reason, "detail", detail)
	cctx, cancel := cleanupContext(ctx)
	defer cancel()
	_, err := f.videosDB().Collection("jobs").UpdateOne(cctx, bson.D{{Key: "_id", Value: j.ID}}, bson.D{
		{Key: "$set", Value: bson.D{{Key: "state", Value: JobFailed}, {Key: "reason", Value: reason}, {Key: "updated_at", Value: time.Now().UTC()}}},
		{Key: "$unset", Value: bson.D{{Key: "lease_until", Value: ""}}},
	})
	if err != nil {
		return f.transient(ctx, log, j, false, msgStorageDown, fmt.Errorf("mark the job failed: %w", err))
	}
	f.dropClaims(cctx, log, j.ID)
	return result{reply: failedEvent(j, reason)}
}

// transient releases the claim (the job stays converting, its attempts recorded) and answers 503
// so the broker retries; after its last retry the dead-letter path fails the job. With
// cleanChunks it first deletes the partial chunks of the MP3 this delivery was storing. The bookkeeping shares a 5 s budget,
// so a MongoDB outage costs one server selection timeout, not one per step; what it cannot do
// is done by the next claim (stray chunks) or by time (the lease).
func (f *Function) transient(ctx context.Context, log *slog.Logger, j job, cleanChunks bool, message string, cause error) result {
	log.Error("conversion interrupted, the broker will retry", "err", cause)
	budget := time.Now().Add(5 * time.Second)
	if cleanChunks {
		// Bounded by the work's context too: once the lease is over, the chunks may be another claim's.
		cctx, cancel := context.WithDeadline(ctx, budget)
		_, err := f.mp3Bucket().GetChunksCollection().DeleteMany(cctx, bson.D{{Key: "files_id", Value: j.ID}})
		cancel()
		if err != nil {
			log.Warn("cannot delete the chunks of the failed upload; the next attempt will", "err", err)
		}
	}
	cctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), budget)
	defer cancel()
	f.releaseClaim(cctx, log, j)
	now := time.Now().UTC()
	_, err := f.videosDB().Collection("jobs").UpdateOne(cctx,
		bson.D{{Key: "_id", Value: j.ID}, {Key: "state", Value: JobConverting}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "lease_until", Value: now}, {Key: "updated_at", Value: now}}}})
	if err != nil {
		log.Warn("cannot update the job's lease", "err", err)
	}
	return result{status: http.StatusServiceUnavailable, message: message}
}

// download copies the video from GridFS to a file.
func (f *Function) download(ctx context.Context, oid bson.ObjectID, name string) error {
	src, err := f.videosDB().GridFSBucket().OpenDownloadStream(ctx, oid)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.Create(name)
	if err != nil {
		return err
	}
	if _, err := dst.ReadFrom(src); err != nil {
		dst.Close()
		return fmt.Errorf("download the video: %w", err)
	}
	return dst.Close()
}

// errStoredByOther: another delivery is storing the same MP3 (a duplicate key on its chunks).
var errStoredByOther = errors.New("another delivery is storing this MP3")

// upload stores the MP3 in the mp3s bucket under the video's id.
func (f *Function) upload(ctx context.Context, j job, name string, seconds float64) (storedMP3, error) {
	src, err := os.Open(name)
	if err != nil {
		return storedMP3{}, err
	}
	defer src.Close()
	mp3 := storedMP3{Filename: mp3Name(j.Filename)}
	mp3.Metadata.DurationSeconds = seconds
	meta := bson.D{
		{Key: "username", Value: j.Username},
		{Key: "video_fid", Value: j.ID.Hex()},
		{Key: "duration_seconds", Value: seconds},
	}
	bucket := f.mp3Bucket()
	dst, err := bucket.OpenUploadStreamWithID(ctx, j.ID, mp3.Filename, options.GridFSUpload().SetMetadata(meta))
	if err != nil {
		return storedMP3{}, err
	}
	n, err := src.WriteTo(dst)
	if err == nil {
		err = dst.Close()
	}
	if mongo.IsDuplicateKeyError(err) {
		// Another delivery finished first: its MP3 is the result. Its chunks are not ours to delete.
		err = bucket.GetFilesCollection().FindOne(ctx, bson.D{{Key: "_id", Value: j.ID}}).Decode(&mp3)
		if err != nil {
			err = fmt.Errorf("%w: %w", errStoredByOther, err)
		}
		return mp3, err
	}
	mp3.Length = n
	return mp3, err
}

func (f *Function) videosDB() *mongo.Database { return f.client.Database(f.prefix + "videos") }

// mp3Bucket returns a fresh bucket handle (a GridFSBucket is not safe for concurrent use).
func (f *Function) mp3Bucket() *mongo.GridFSBucket {
	return f.client.Database(f.prefix + "mp3s").GridFSBucket(options.GridFSBucket().SetChunkSizeBytes(chunkSizeBytes))
}

// cleanupContext bounds bookkeeping that must happen even when the work's deadline has passed.
func cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
}

func convertedEvent(j job, mp3 storedMP3) *event.Event {
	fid := j.ID.Hex()
	return newEvent(typeConverted, "mp3-"+fid, fid, map[string]any{
		"video_fid":        fid,
		"mp3_fid":          fid,
		"username":         j.Username,
		"filename":         mp3.Filename,
		"size":             mp3.Length,
		"duration_seconds": mp3.Metadata.DurationSeconds,
	})
}

func failedEvent(j job, reason string) *event.Event {
	fid := j.ID.Hex()
	return newEvent(typeFailed, "failed-"+fid, fid, map[string]any{
		"video_fid": fid,
		"username":  j.Username,
		"filename":  j.Filename,
		"reason":    reason,
	})
}

func newEvent(typ, id, subject string, data any) *event.Event {
	e := event.New()
	e.SetID(id)
	e.SetType(typ)
	e.SetSource(eventSource)
	e.SetSubject(subject)
	e.SetTime(time.Now().UTC())
	_ = e.SetData(event.ApplicationJSON, data) // plain maps always marshal
	return &e
}

// mp3Name is the video's base name with its extension replaced by .mp3.
func mp3Name(video string) string {
	base := path.Base(strings.ReplaceAll(video, `\`, "/"))
	base = strings.TrimSuffix(base, path.Ext(base))
	if base == "" || base == "." || base == "/" {
		base = "audio"
	}
	return base + ".mp3"
}

// findTool resolves a program: the configured path, else PATH, else the usual install places.
func findTool(configured, name string) (string, error) {
	if configured != "" {
		p, err := exec.LookPath(configured)
		if err != nil {
			return configured, fmt.Errorf("%s not found at %q: %w", name, configured, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/bin", "/usr/local/bin", "/bin", "/"} {
		if p, err := exec.LookPath(filepath.Join(dir, name)); err == nil {
			return p, nil
		}
	}
	return name, fmt.Errorf("%s not found in PATH: the image needs ffmpeg (see functions/convert/README.md)", name)
}

// toolMessage tells the caller when ffmpeg or ffprobe is missing from the image.
func toolMessage(err error, def string) string {
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
		return "the converter (ffmpeg) is not available here, try again later"
	}
	return def
}

// uploaded is the data of a video.uploaded event (events/video.uploaded.schema.json).
type uploaded struct {
	VideoFID    string
	Username    string
	Filename    string
	ContentType string
	Size        int64
}

// parseUploaded checks data against the shape of events/video.uploaded.schema.json.
func parseUploaded(data []byte) (uploaded, bson.ObjectID, error) {
	var up uploaded
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil || fields == nil {
		return up, bson.ObjectID{}, errors.New("data is not a JSON object")
	}
	for k := range fields {
		switch k {
		case "video_fid", "username", "filename", "content_type", "size":
		default:
			return up, bson.ObjectID{}, fmt.Errorf("unexpected field %q", k)
		}
	}
	str := func(key string, minLen, maxLen int) (string, error) {
		raw, ok := fields[key]
		if !ok {
			return "", fmt.Errorf("missing %s", key)
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil || string(raw) == "null" {
			return "", fmt.Errorf("%s is not a string", key)
		}
		if n := utf8.RuneCountInString(s); n < minLen || n > maxLen {
			return "", fmt.Errorf("%s must have %d to %d characters", key, minLen, maxLen)
		}
		return s, nil
	}
	var err error
	if up.VideoFID, err = str("video_fid", 24, 24); err != nil {
		return up, bson.ObjectID{}, err
	}
	if strings.Trim(up.VideoFID, "0123456789abcdef") != "" {
		return up, bson.ObjectID{}, errors.New("video_fid is not a lowercase hex ObjectID")
	}
	oid, err := bson.ObjectIDFromHex(up.VideoFID)
	if err != nil {
		return up, bson.ObjectID{}, fmt.Errorf("video_fid: %w", err)
	}
	if up.Username, err = str("username", 3, 255); err != nil {
		return up, oid, err
	}
	if up.Filename, err = str("filename", 1, 255); err != nil {
		return up, oid, err
	}
	if up.ContentType, err = str("content_type", 1, 255); err != nil {
		return up, oid, err
	}
	raw, ok := fields["size"]
	if !ok {
		return up, oid, errors.New("missing size")
	}
	if up.Size, err = strconv.ParseInt(string(raw), 10, 64); err != nil || up.Size < 1 {
		return up, oid, errors.New("size must be a positive integer")
	}
	return up, oid, nil
}
