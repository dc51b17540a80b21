package function

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// counts is what one run did, logged in one line.
type counts struct {
	Redriven       int `json:"redriven"`        // video.uploaded sent again
	Failed         int `json:"failed"`          // jobs failed after their last re-drive
	Renotified     int `json:"renotified"`      // mp3.converted / conversion.failed sent again
	Expired        int `json:"expired"`         // MP3s past MP3_RETENTION deleted, job expired
	VideosRemoved  int `json:"videos_removed"`  // videos of finished jobs, or of no job
	MP3sRemoved    int `json:"mp3s_removed"`    // MP3s of no job
	ChunksRemoved  int `json:"chunks_removed"`  // GridFS files (by id) with chunks but no files document
	UploadsExpired int `json:"uploads_expired"` // resumable uploads past their UPLOAD_EXPIRY, unfinished ones with their chunks
	UserJobs       int `json:"user_jobs"`       // jobs (with their files) of deleted users removed
}

// The run's lease: one document in videos.sweep. Inserting a document with a given _id is
// atomic on MongoDB and on FerretDB alike (a conditional findAndModify is not atomic on
// FerretDB's SQLite backend), so of two runs at once exactly one inserts it; the other finds
// it held and does nothing. A lease left by a run that died ends after leaseFor.
const (
	leaseID  = "lease"
	leaseFor = 2 * runTimeout
)

// run does one sweep if it can take the lease. ran is false when another run holds it.
func (rt *runtime) run(ctx context.Context, log *slog.Logger) (c counts, ran bool, err error) {
	token, err := rt.takeLease(ctx)
	if err != nil || token == "" {
		return c, false, err
	}
	defer rt.releaseLease(context.WithoutCancel(ctx), log, token)

	steps := []struct {
		name string
		do   func(context.Context, *counts) error
	}{
		{"stalled uploads", rt.redriveUploaded},
		{"stuck conversions", rt.redriveStuck},
		{"unsent notifications", rt.renotify},
		{"retention", rt.expireMP3s},
		{"deleted users", rt.purgeDeletedUsers},
		{"videos", rt.removeVideos},
		{"orphan MP3s", rt.removeOrphanMP3s},
		{"expired uploads", rt.expireUploads},
		{"orphan chunks", rt.removeOrphanChunks},
	}
	for _, s := range steps {
		if err = s.do(ctx, &c); err != nil {
			if stopped(ctx, err) {
				log.Warn("sweep run out of time: the rest waits for the next run", "at", s.name)
				err = nil
			}
			break
		}
	}
	if err == nil {
		log.Info("sweep run", "redriven", c.Redriven, "failed", c.Failed, "renotified", c.Renotified,
			"expired", c.Expired, "videos_removed", c.VideosRemoved, "mp3s_removed", c.MP3sRemoved,
			"chunks_removed", c.ChunksRemoved, "uploads_expired", c.UploadsExpired, "user_jobs_removed", c.UserJobs)
	}
	return c, true, err
}

// takeLease returns a token when this run holds the lease now, "" when another run does.
func (rt *runtime) takeLease(ctx context.Context) (string, error) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	coll := rt.videos().Collection("sweep")
	for range 2 {
		now := rt.now()
		_, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: leaseID}, {Key: "token", Value: token},
			{Key: "until", Value: now.Add(leaseFor)}})
		if err == nil {
			return token, nil
		}
		if !mongo.IsDuplicateKeyError(err) {
			return "", err
		}
		var held struct {
			Token string    `bson:"token"`
			Until time.Time `bson:"until"`
		}
		err = coll.FindOne(ctx, bson.D{{Key: "_id", Value: leaseID}}).Decode(&held)
		if errors.Is(err, mongo.ErrNoDocuments) {
			continue // released meanwhile
		}
		if err != nil {
			return "", err
		}
		if held.Until.After(now) {
			return "", nil
		}
		// Left by a run that died: remove exactly that lease (not one taken since), then race
		// the others for the insert.
		if _, err := coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: leaseID}, {Key: "token", Value: held.Token}}); err != nil {
			return "", err
		}
	}
	return "", nil
}

func (rt *runtime) releaseLease(ctx context.Context, log *slog.Logger, token string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := rt.videos().Collection("sweep").DeleteOne(ctx, bson.D{{Key: "_id", Value: leaseID}, {Key: "token", Value: token}})
	if err != nil {
		log.Warn("cannot release the sweep lease; it ends by itself", "err", err, "lease", leaseFor)
	}
}
