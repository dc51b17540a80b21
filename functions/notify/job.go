package function

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Events are triggers, the job document is the truth: anyone who reaches the broker can
// post an event, so the recipient, the file name and the outcome of an email come from the
// job, and an event whose claim the job does not bear out is logged and dropped.

// deadLetterReason is the job's reason when the broker gave up on its video.uploaded event.
const deadLetterReason = "conversion could not be completed, please upload again"

// job is the part of a jobs document notify reads.
type job struct {
	Username        string   `bson:"username"`
	Filename        string   `bson:"filename"`
	ContentType     string   `bson:"content_type"`
	Size            int64    `bson:"size"`
	State           JobState `bson:"state"`
	Reason          string   `bson:"reason"`
	MP3FID          string   `bson:"mp3_fid"`
	DurationSeconds float64  `bson:"duration_seconds"`
}

// outcome returns the email a mp3.converted (want JobDone) or conversion.failed (want
// JobFailed) event stands for, taken from the job. ok is false when there is nothing to
// send: no such job, or the job's state does not agree with the event.
func (rt *runtime) outcome(ctx context.Context, log *slog.Logger, fid string, want JobState) (n notice, ok bool, err error) {
	oid, err := bson.ObjectIDFromHex(fid)
	if err != nil {
		return n, false, nil // decode checked the pattern
	}
	j, found, err := rt.job(ctx, oid)
	if err != nil {
		return n, false, err
	} else if !found {
		log.Warn("no such job, not emailing", "video_fid", fid)
		return n, false, nil
	}
	if j.State != want {
		log.Warn("event disagrees with the job's state, dropped", "video_fid", fid, "state", j.State, "want", want)
		return n, false, nil
	}
	return rt.noticeOf(ctx, log, oid, j)
}

// deadLetter fails the job of a video.uploaded event the broker gave up on, if the job is
// still waiting on that delivery (uploaded or converting) and is the one the event
// describes (owner, file name, type and size: a forger knows at most the id), and returns
// the email its owner should get. ok is false when there is nothing to send.
func (rt *runtime) deadLetter(ctx context.Context, log *slog.Logger, d uploadedData) (n notice, ok bool, err error) {
	oid, err := bson.ObjectIDFromHex(d.VideoFID)
	if err != nil {
		return n, false, nil // decode checked the pattern
	}
	// A duplicate of the event (a sweep's re-drive, a redelivery) may be converting the job
	// right now: convert answered the dead-lettered delivery "being converted, try later"
	// (503) for longer than the convert Trigger's retries last (about 2 minutes of backoff,
	// where a conversion may take CONVERT_TIMEOUT). The job does not wait on that delivery;
	// the one converting decides its outcome.
	if busy, err := rt.convertingNow(ctx, oid); err != nil || busy {
		if busy {
			log.Info("dead letter while another delivery converts the job, dropped", "video_fid", d.VideoFID)
		}
		return n, false, err
	}
	unlock := rt.lock(d.VideoFID)
	res, err := rt.jobs().UpdateOne(ctx,
		bson.D{{Key: "_id", Value: oid}, {Key: "state", Value: bson.D{{Key: "$in", Value: bson.A{JobUploaded, JobConverting}}}},
			{Key: "username", Value: d.Username}, {Key: "filename", Value: d.Filename},
			{Key: "content_type", Value: d.ContentType}, {Key: "size", Value: d.Size}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: JobFailed}, {Key: "reason", Value: deadLetterReason},
			{Key: "updated_at", Value: time.Now().UTC()}}}})
	unlock()
	if err != nil {
		return n, false, err
	}
	j, found, err := rt.job(ctx, oid)
	if err != nil {
		return n, false, err
	} else if !found {
		log.Warn("dead letter for an unknown job, nothing to do", "video_fid", d.VideoFID)
		return n, false, nil
	}
	if j.Username != d.Username || j.Filename != d.Filename || j.ContentType != d.ContentType || j.Size != d.Size {
		log.Warn("dead letter disagrees with the job, dropped", "video_fid", d.VideoFID)
		return n, false, nil
	}
	if res.ModifiedCount > 0 {
		log.Info("job failed: its conversion was dead-lettered", "video_fid", d.VideoFID)
	}
	return rt.noticeOf(ctx, log, oid, j)
}

// convertingNow reports whether a convert delivery holds a live claim on the job
// (convert_claims, convert's claim.go).
func (rt *runtime) convertingNow(ctx context.Context, oid bson.ObjectID) (bool, error) {
	n, err := rt.jobs().Database().Collection("convert_claims").CountDocuments(ctx, bson.D{{Key: "video_fid", Value: oid},
		{Key: "lease_until", Value: bson.D{{Key: "$gt", Value: time.Now().UTC()}}}}, options.Count().SetLimit(1))
	return n > 0, err
}

// job reads a jobs document; found is false when there is none.
func (rt *runtime) job(ctx context.Context, oid bson.ObjectID) (j job, found bool, err error) {
	err = rt.jobs().FindOne(ctx, bson.D{{Key: "_id", Value: oid}}).Decode(&j)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return j, false, nil
	}
	return j, err == nil, err
}

// noticeOf is the email a finished job's owner gets: ready when done, failed when failed.
func (rt *runtime) noticeOf(ctx context.Context, log *slog.Logger, oid bson.ObjectID, j job) (n notice, ok bool, err error) {
	n = notice{videoFID: oid.Hex(), to: j.Username}
	switch j.State {
	case JobDone:
		n.kind, n.mp3FID, n.duration = kindReady, orDefault(j.MP3FID, oid.Hex()), j.DurationSeconds
		n.name, err = rt.mp3Name(ctx, oid, j.Filename)
		if err != nil {
			return n, false, err
		}
	case JobFailed:
		n.kind, n.name, n.reason = kindFailed, j.Filename, orDefault(j.Reason, deadLetterReason)
	default:
		log.Error("job neither done nor failed, not emailing", "video_fid", oid.Hex(), "state", j.State)
		return n, false, nil
	}
	return n, true, nil
}

// mp3Name is the stored MP3's filename, or the video's base name + ".mp3" when it has none.
func (rt *runtime) mp3Name(ctx context.Context, oid bson.ObjectID, video string) (string, error) {
	var f struct {
		Filename string `bson:"filename"`
	}
	err := rt.client.Database(rt.prefix+"mp3s").Collection("fs.files").
		FindOne(ctx, bson.D{{Key: "_id", Value: oid}}).Decode(&f)
	if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		return "", err
	}
	if f.Filename != "" {
		return f.Filename, nil
	}
	return strings.TrimSuffix(video, filepath.Ext(video)) + ".mp3", nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
