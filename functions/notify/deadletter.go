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
)

// deadLetterReason is the job's reason when the broker gave up on its video.uploaded event.
const deadLetterReason = "conversion could not be completed, please upload again"

// job is the part of a jobs document notify reads.
type job struct {
	Username        string   `bson:"username"`
	Filename        string   `bson:"filename"`
	State           JobState `bson:"state"`
	Reason          string   `bson:"reason"`
	MP3FID          string   `bson:"mp3_fid"`
	DurationSeconds float64  `bson:"duration_seconds"`
}

// deadLetter fails the job of a video.uploaded event the broker gave up on (unless it is
// already done or failed) and returns the email its owner should get. ok is false when
// there is nothing to send (no such job).
func (rt *runtime) deadLetter(ctx context.Context, log *slog.Logger, d uploadedData) (n notice, ok bool, err error) {
	oid, err := bson.ObjectIDFromHex(d.VideoFID)
	if err != nil {
		return n, false, nil // decode checked the pattern
	}
	unlock := rt.lock(d.VideoFID)
	res, err := rt.jobs().UpdateOne(ctx,
		bson.D{{Key: "_id", Value: oid}, {Key: "state", Value: bson.D{{Key: "$nin", Value: bson.A{JobDone, JobFailed}}}}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "state", Value: JobFailed}, {Key: "reason", Value: deadLetterReason},
			{Key: "updated_at", Value: time.Now().UTC()}}}})
	unlock()
	if err != nil {
		return n, false, err
	}
	var j job
	if err := rt.jobs().FindOne(ctx, bson.D{{Key: "_id", Value: oid}}).Decode(&j); errors.Is(err, mongo.ErrNoDocuments) {
		log.Warn("dead letter for an unknown job, nothing to do", "video_fid", d.VideoFID)
		return n, false, nil
	} else if err != nil {
		return n, false, err
	}
	if res.ModifiedCount > 0 {
		log.Info("job failed: its conversion was dead-lettered", "video_fid", d.VideoFID)
	}
	n = notice{videoFID: d.VideoFID, to: d.Username}
	switch j.State {
	case JobDone: // the conversion did finish: the user gets the ready email
		n.kind, n.mp3FID, n.duration = kindReady, orDefault(j.MP3FID, d.VideoFID), j.DurationSeconds
		n.name, err = rt.mp3Name(ctx, oid, orDefault(j.Filename, d.Filename))
		if err != nil {
			return n, false, err
		}
	case JobFailed:
		n.kind, n.name, n.reason = kindFailed, orDefault(j.Filename, d.Filename), orDefault(j.Reason, deadLetterReason)
	default:
		log.Error("job neither done nor failed after a dead letter", "video_fid", d.VideoFID, "state", j.State)
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
