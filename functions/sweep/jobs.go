package function

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Reasons the sweep gives a job it fails (shown in /jobs and the email).
const (
	reasonNeverStarted = "the conversion never started, please upload again"
	reasonStuck        = "the conversion did not finish, please upload again"
	reasonExpired      = "the MP3 was deleted after the retention period"
)

// job is the part of a jobs document the sweep reads (events/job.schema.json). The sweep's
// own bookkeeping: redrives and redrive_after (video.uploaded sent again), renotifies and
// renotify_after (the result event sent again).
type job struct {
	ID              bson.ObjectID `bson:"_id"`
	Username        string        `bson:"username"`
	Filename        string        `bson:"filename"`
	ContentType     string        `bson:"content_type"`
	Size            int64         `bson:"size"`
	State           JobState      `bson:"state"`
	Reason          string        `bson:"reason"`
	DurationSeconds float64       `bson:"duration_seconds"`
	Redrives        int32         `bson:"redrives"`
	RedrivenAt      time.Time     `bson:"redriven_at"`
	Renotifies      int32         `bson:"renotifies"`
	Traceparent     string        `bson:"traceparent"` // of the upload: a re-drive links to its trace
}

// due matches the jobs whose field (a next-time of the sweep's) is unset or past.
func due(field string, now time.Time) bson.E {
	return bson.E{Key: "$or", Value: bson.A{
		bson.D{{Key: field, Value: bson.D{{Key: "$exists", Value: false}}}},
		bson.D{{Key: field, Value: bson.D{{Key: "$lte", Value: now}}}},
	}}
}

// backoff is how long the sweep waits after its n-th re-send of a job before the next one:
// the grace period, doubled each time, at most STUCK_AFTER. A job still queued behind others
// in the broker is then re-sent a few times, not every run.
func (rt *runtime) backoff(n int32) time.Duration {
	d := rt.grace
	for i := int32(1); i < n && d < rt.stuckAfter; i++ {
		d *= 2
	}
	return min(d, rt.stuckAfter)
}

// redriveUploaded re-sends the video.uploaded of jobs still uploaded after the grace period:
// the event never reached the broker (upload crashed after storing the job, the in-memory
// broker was restarted with it queued, ...). convert is idempotent.
func (rt *runtime) redriveUploaded(ctx context.Context, c *counts) error {
	now := rt.now()
	return rt.redrive(ctx, c, bson.D{{Key: "state", Value: JobUploaded},
		{Key: "updated_at", Value: bson.D{{Key: "$lt", Value: now.Add(-rt.grace)}}}, due("redrive_after", now)},
		reasonNeverStarted)
}

// redriveStuck re-sends the video.uploaded of jobs converting whose claim ended more than
// STUCK_AFTER ago: beyond the convert Trigger's whole retry window, so the broker has given
// up on (or lost) their event and its dead letter did not reach notify either.
func (rt *runtime) redriveStuck(ctx context.Context, c *counts) error {
	now := rt.now()
	return rt.redrive(ctx, c, bson.D{{Key: "state", Value: JobConverting},
		{Key: "lease_until", Value: bson.D{{Key: "$lt", Value: now.Add(-rt.stuckAfter)}}}, due("redrive_after", now)},
		reasonStuck)
}

// redrive re-sends video.uploaded for the jobs of filter, or fails a job once it has had
// SWEEP_REDRIVES re-drives and STUCK_AFTER since the last.
func (rt *runtime) redrive(ctx context.Context, c *counts, filter bson.D, reason string) error {
	var jobs []job
	if err := rt.find(ctx, rt.jobs(), filter, &jobs); err != nil {
		return err
	}
	for _, j := range jobs {
		now := rt.now()
		if live, err := rt.liveClaim(ctx, j.ID, now); err != nil || live {
			if err != nil {
				return err
			}
			continue
		}
		if j.Redrives >= rt.maxRedrives {
			if j.Redrives > 0 && now.Sub(j.RedrivenAt) < rt.stuckAfter {
				// Not yet: the last re-drive may still be in the broker's retries.
				if _, err := rt.jobs().UpdateOne(ctx, bson.D{{Key: "_id", Value: j.ID}},
					bson.D{{Key: "$set", Value: bson.D{{Key: "redrive_after", Value: j.RedrivenAt.Add(rt.stuckAfter)}}}}); err != nil {
					return err
				}
				continue
			}
			if err := rt.failJob(ctx, c, j, reason); err != nil {
				return err
			}
			continue
		}
		// Recorded before the event goes out: a crash in between costs a re-drive, never
		// re-drives without end.
		res, err := rt.jobs().UpdateOne(ctx, bson.D{{Key: "_id", Value: j.ID}, {Key: "state", Value: j.State}}, bson.D{
			{Key: "$set", Value: bson.D{{Key: "redriven_at", Value: now}, {Key: "redrive_after", Value: now.Add(rt.backoff(j.Redrives + 1))}}},
			{Key: "$inc", Value: bson.D{{Key: "redrives", Value: int32(1)}}},
		})
		if err != nil {
			return err
		}
		if res.MatchedCount == 0 {
			continue // moved on meanwhile
		}
		if err := rt.send(ctx, uploadedEvent(j), j.Traceparent); err != nil {
			return fmt.Errorf("re-drive %s: %w", j.ID.Hex(), err)
		}
		c.Redriven++
	}
	return nil
}

// liveClaim reports whether a convert delivery holds a claim on the job now.
func (rt *runtime) liveClaim(ctx context.Context, oid bson.ObjectID, now time.Time) (bool, error) {
	n, err := rt.videos().Collection("convert_claims").CountDocuments(ctx, bson.D{{Key: "video_fid", Value: oid},
		{Key: "lease_until", Value: bson.D{{Key: "$gt", Value: now}}}}, options.Count().SetLimit(1))
	return n > 0, err
}

// failJob fails the job and sends its conversion.failed. The job is the truth: it is failed
// first, so the event agrees with it; if the event is lost, renotify sends it again.
func (rt *runtime) failJob(ctx context.Context, c *counts, j job, reason string) error {
	now := rt.now()
	res, err := rt.jobs().UpdateOne(ctx, bson.D{{Key: "_id", Value: j.ID}, {Key: "state", Value: j.State}}, bson.D{
		{Key: "$set", Value: bson.D{{Key: "state", Value: JobFailed}, {Key: "reason", Value: reason}, {Key: "updated_at", Value: now},
			{Key: "renotify_after", Value: now.Add(rt.grace)}}},
		{Key: "$unset", Value: bson.D{{Key: "lease_until", Value: ""}, {Key: "redrive_after", Value: ""}}},
	})
	if err != nil || res.MatchedCount == 0 {
		return err
	}
	c.Failed++
	j.State, j.Reason = JobFailed, reason
	if err := rt.send(ctx, failedEvent(j), j.Traceparent); err != nil {
		return fmt.Errorf("fail %s: %w", j.ID.Hex(), err)
	}
	return nil
}

// renotify re-sends the result event of finished jobs that notify never settled (no
// notified_at after the grace period): notify failed past its retries, or the event was
// lost. notify sends at most one email per job.
func (rt *runtime) renotify(ctx context.Context, c *counts) error {
	now := rt.now()
	var jobs []job
	err := rt.find(ctx, rt.jobs(), bson.D{
		{Key: "state", Value: bson.D{{Key: "$in", Value: bson.A{JobDone, JobFailed}}}},
		{Key: "notified_at", Value: bson.D{{Key: "$exists", Value: false}}},
		{Key: "updated_at", Value: bson.D{{Key: "$lt", Value: now.Add(-rt.grace)}}},
		due("renotify_after", now),
	}, &jobs)
	if err != nil {
		return err
	}
	for _, j := range jobs {
		e := failedEvent(j)
		if j.State == JobDone {
			var mp3 storedMP3
			err := rt.mp3s().Collection("fs.files").FindOne(ctx, bson.D{{Key: "_id", Value: j.ID}}).Decode(&mp3)
			if errors.Is(err, mongo.ErrNoDocuments) {
				continue // nothing to link to; retention or the user's deletion removes the job
			}
			if err != nil {
				return err
			}
			e = convertedEvent(j, mp3)
		}
		now = rt.now()
		res, err := rt.jobs().UpdateOne(ctx, bson.D{{Key: "_id", Value: j.ID}, {Key: "notified_at", Value: bson.D{{Key: "$exists", Value: false}}}}, bson.D{
			{Key: "$set", Value: bson.D{{Key: "renotify_after", Value: now.Add(rt.backoff(j.Renotifies + 1))}}},
			{Key: "$inc", Value: bson.D{{Key: "renotifies", Value: int32(1)}}},
		})
		if err != nil {
			return err
		}
		if res.MatchedCount == 0 {
			continue
		}
		if err := rt.send(ctx, e, j.Traceparent); err != nil {
			return fmt.Errorf("renotify %s: %w", j.ID.Hex(), err)
		}
		c.Renotified++
	}
	return nil
}

// find reads at most SWEEP_BATCH documents of filter, oldest id first.
func (rt *runtime) find(ctx context.Context, coll *mongo.Collection, filter bson.D, out any) error {
	cur, err := coll.Find(ctx, filter, options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}).SetLimit(rt.batch))
	if err != nil {
		return err
	}
	return cur.All(ctx, out)
}
