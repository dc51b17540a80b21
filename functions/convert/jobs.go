package function

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

const msgStorageDown = "storage unavailable, try again"

// retryBudget bounds the bookkeeping of a retry: a MongoDB outage costs one server selection
// timeout, not one per step.
const retryBudget = 5 * time.Second

// job is the part of a jobs document convert reads (events/job/schema.json).
type job struct {
	ID              bson.ObjectID `bson:"_id"`
	OwnerID         string        `bson:"owner_id"` // absent on jobs stored before it existed
	Username        string        `bson:"username"`
	Filename        string        `bson:"filename"`
	ContentType     string        `bson:"content_type"`
	Size            int64         `bson:"size"`
	State           JobState      `bson:"state"`
	Reason          string        `bson:"reason"`
	DurationSeconds float64       `bson:"duration_seconds"`
	Attempts        int32         `bson:"attempts"`
}

// owner names the job's user for CONVERT_PER_USER: their id, or, for a job stored before
// owner_id existed, their address.
func (j job) owner() string {
	if j.OwnerID != "" {
		return "id:" + j.OwnerID
	}
	return "address:" + j.Username
}

func (s *state) jobs() *mongo.Collection { return s.videosDB().Collection("jobs") }

// readJob reads the job; a missing job reads as state "" (no JobState).
func (s *state) readJob(ctx context.Context, oid bson.ObjectID, up uploaded) (job, error) {
	j := job{ID: oid}
	err := s.jobs().FindOne(ctx, bson.D{{Key: "_id", Value: oid}}).Decode(&j)
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

// replay answers a delivery for a job that is not waiting for a conversion.
func (d *delivery) replay(ctx context.Context) result {
	j := d.job
	if j.State.final() {
		// An attempt that crashed after finishing the job leaves its claim.
		d.dropClaims(ctx)
	}
	switch j.State {
	case "":
		d.log.Warn("no job for this video: nothing to do")
		return noReply
	case JobDone:
		mp3, err := d.findMP3(ctx, j.ID)
		if errors.Is(err, mongo.ErrNoDocuments) {
			d.log.Error("the job is done but its MP3 is missing: nothing to send")
			return noReply
		}
		if err != nil {
			return d.storageError("cannot read the stored MP3", err)
		}
		d.log.Info("already converted: sending the result again")
		return result{reply: convertedEvent(j, mp3)}
	case JobFailed:
		reason := j.Reason
		if reason == "" {
			reason = "the conversion failed"
		}
		d.log.Info("already failed: sending the failure again", "reason", reason)
		return result{reply: failedEvent(j, reason)}
	case JobExpired:
		d.log.Info("the job's MP3 expired (MP3_RETENTION): nothing to send")
		return noReply
	default:
		d.log.Error("the job is in a state this function does not know: nothing to do", "state", j.State)
		return noReply
	}
}

// finish marks the job done, deletes the video and builds the mp3.converted reply.
func (d *delivery) finish(ctx context.Context, mp3 storedMP3) result {
	// The MP3 is stored: this bookkeeping may outlive the lease (a later claim would find the MP3).
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	j := d.job
	now := time.Now().UTC()
	_, err := d.jobs().UpdateOne(bctx, bson.D{{Key: "_id", Value: j.ID}}, bson.D{
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
		return d.retry(ctx, msgStorageDown, fmt.Errorf("mark the job done: %w", err))
	}
	d.dropClaims(bctx)
	d.log.InfoContext(ctx, "job done", "size", mp3.Length, "duration_seconds", mp3.Metadata.DurationSeconds)
	metricsOf(ctx).conversion(ctx, "done", "")
	res := result{reply: convertedEvent(j, mp3)}
	if !d.keepVideos {
		// After the reply: the video's delete need not hold the broker up. If convert dies
		// before it, the sweep removes the videos of finished jobs.
		res.after = d.deleteVideo
	}
	return res
}

// deleteVideo deletes the converted video.
func (d *delivery) deleteVideo(ctx context.Context) {
	if d.beforeDelete != nil {
		d.beforeDelete()
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// The driver's delete: one files_id query costs less than a query per chunk for a whole
	// video, and the videos bucket stays small (see download in store.go).
	err := d.videosDB().GridFSBucket().Delete(ctx, d.job.ID)
	if err != nil && !errors.Is(err, mongo.ErrFileNotFound) {
		d.log.Warn("cannot delete the converted video; the sweep will", "err", err)
	}
}

// fail marks the job failed for good and builds the conversion.failed reply.
func (d *delivery) fail(ctx context.Context, reason, detail string) result {
	d.log.WarnContext(ctx, "conversion failed", "reason", reason, "detail", detail)
	metricsOf(ctx).conversion(ctx, "failed", failureClass(reason))
	cctx, cancel := cleanupContext(ctx)
	defer cancel()
	_, err := d.jobs().UpdateOne(cctx, bson.D{{Key: "_id", Value: d.job.ID}}, bson.D{
		{Key: "$set", Value: bson.D{{Key: "state", Value: JobFailed}, {Key: "reason", Value: reason}, {Key: "updated_at", Value: time.Now().UTC()}}},
		{Key: "$unset", Value: bson.D{{Key: "lease_until", Value: ""}}},
	})
	if err != nil {
		return d.retry(ctx, msgStorageDown, fmt.Errorf("mark the job failed: %w", err))
	}
	d.dropClaims(cctx)
	return result{reply: failedEvent(d.job, reason)}
}

// retry releases the claim (the job stays converting, its attempts recorded) and answers 503
// so the broker retries; after its last retry the dead-letter path fails the job. What the
// bookkeeping cannot do within retryBudget is done by time (the lease).
func (d *delivery) retry(ctx context.Context, message string, cause error) result {
	d.log.Error("conversion interrupted, the broker will retry", "err", cause)
	return d.release(ctx, time.Now().Add(retryBudget), message)
}

// retryDroppingPartialMP3 is retry after storing the MP3 failed: it first deletes the chunks
// this delivery wrote (nobody else writes this MP3 while it holds the claim), within the same
// budget; what it cannot delete, the next claim does.
func (d *delivery) retryDroppingPartialMP3(ctx context.Context, cause error) result {
	d.log.Error("conversion interrupted, the broker will retry", "err", cause)
	budget := time.Now().Add(retryBudget)
	// Bounded by the work's context too: once the lease is over, the chunks may be another claim's.
	cctx, cancel := context.WithDeadline(ctx, budget)
	_, err := DeleteGridFSChunks(cctx, d.mp3sDB(), "fs", d.job.ID)
	cancel()
	if err != nil {
		d.log.Warn("cannot delete the chunks of the failed upload; the next attempt will", "err", err)
	}
	return d.release(ctx, budget, msgStorageDown)
}

// release ends the claim and the job's lease by budget and answers 503 with message.
func (d *delivery) release(ctx context.Context, budget time.Time, message string) result {
	metricsOf(ctx).conversion(ctx, "retried", "")
	cctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), budget)
	defer cancel()
	d.releaseClaim(cctx)
	now := time.Now().UTC()
	_, err := d.jobs().UpdateOne(cctx,
		bson.D{{Key: "_id", Value: d.job.ID}, {Key: "state", Value: JobConverting}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "lease_until", Value: now}, {Key: "updated_at", Value: now}}}})
	if err != nil {
		d.log.Warn("cannot update the job's lease", "err", err)
	}
	return result{status: http.StatusServiceUnavailable, message: message}
}

// storageError answers 503 when the storage fails before this delivery holds a claim.
func (d *delivery) storageError(msg string, err error) result {
	d.log.Error(msg, "err", err)
	return unavailable
}

// cleanupContext bounds bookkeeping that must happen even when the work's deadline has passed.
func cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
}
