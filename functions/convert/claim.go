package function

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// delivery is one delivery of a video.uploaded event being worked on: the function's state,
// the job it is about and a log that names both (and the attempt, once claimed).
type delivery struct {
	*state
	log *slog.Logger
	job job
}

// process claims the job and converts the video, or explains why it does not.
//
// The claim is an insert of the claim document "<video_fid>/<attempt>" into the convert_claims
// collection: an insert with a unique _id is atomic on MongoDB and on FerretDB alike, whereas a
// conditional findAndModify is not atomic on FerretDB's SQLite backend (two deliveries could
// both claim the job and write two MP3s under one id). The job document mirrors the claim
// (state converting, attempts, lease_until) for the other functions to read.
func (d *delivery) process(ctx context.Context, oid bson.ObjectID, up uploaded) result {
	claimCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var err error
	if d.job, err = d.readJob(claimCtx, oid, up); err != nil {
		return d.storageError("cannot read the job", err)
	}
	// Anyone who reaches convert can post an event: one that does not describe its job as
	// upload published it (a forger knows at most the id) gets no conversion and no reply,
	// which would carry the owner's address and file name.
	if d.job.State != "" && (d.job.Username != up.Username || d.job.Filename != up.Filename ||
		d.job.ContentType != up.ContentType || d.job.Size != up.Size) {
		d.log.Warn("event disagrees with its job, dropped")
		return noReply
	}
	if d.job.State != JobUploaded && d.job.State != JobConverting {
		return d.replay(claimCtx)
	}
	now := time.Now().UTC()
	lease := now.Add(d.lease)
	n, heldUntil, err := d.claim(claimCtx, oid, d.job.owner(), d.job.Attempts, now, lease)
	if err != nil {
		return d.storageError("cannot claim the job", err)
	}
	if n == 0 {
		d.log.Info("another delivery is converting this video", "lease_until", heldUntil)
		return result{status: http.StatusServiceUnavailable, retryAfter: max(time.Second, heldUntil.Sub(now)),
			message: "this video is being converted, try again later"}
	}
	if res, ok := d.fairShare(claimCtx, oid, n, now); !ok {
		return res
	}
	d.job.Attempts = n
	d.log = d.log.With("attempt", n)
	res, err := d.jobs().UpdateOne(claimCtx,
		bson.D{{Key: "_id", Value: oid}, {Key: "state", Value: bson.D{{Key: "$in", Value: bson.A{JobUploaded, JobConverting}}}}},
		bson.D{
			{Key: "$set", Value: bson.D{{Key: "state", Value: JobConverting}, {Key: "lease_until", Value: lease}, {Key: "updated_at", Value: now}}},
			{Key: "$max", Value: bson.D{{Key: "attempts", Value: n}}},
		})
	if err != nil {
		return d.retry(ctx, msgStorageDown, fmt.Errorf("mark the job converting: %w", err))
	}
	if res.MatchedCount == 0 {
		// Finished by another delivery between our read and our claim.
		d.releaseClaim(claimCtx)
		if d.job, err = d.readJob(claimCtx, oid, up); err != nil {
			return d.storageError("cannot read the job", err)
		}
		return d.replay(claimCtx)
	}
	d.log.Info("claimed the job")
	// The claim is short and renewed while the work goes on: the claim of an
	// attempt that crashed ends within CONVERT_LEASE, so the broker's next
	// retry takes over instead of waiting out CONVERT_TIMEOUT. The work stops
	// if the claim cannot be renewed in time, so two claims never overlap.
	workCtx, cancelWork := context.WithTimeoutCause(ctx, d.timeout, errConvertTimeout)
	defer cancelWork()
	stopRenewing := d.renewClaim(workCtx, cancelWork, lease)
	defer stopRenewing()
	metricsOf(ctx).jobsInFlight.Add(ctx, 1)
	defer metricsOf(ctx).jobsInFlight.Add(ctx, -1)
	return d.convert(workCtx)
}

// renewClaim extends this delivery's claim every third of CONVERT_LEASE
// until stop is called; if the claim would lapse first, it calls lost.
func (d *delivery) renewClaim(ctx context.Context, lost context.CancelFunc, lease time.Time) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ticker := time.NewTicker(d.lease / 3)
		defer ticker.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
			if time.Now().After(lease) {
				d.log.Error("the claim lapsed before it could be renewed: stopping this attempt")
				lost()
				return
			}
			next := time.Now().UTC().Add(d.lease)
			rctx, cancel := context.WithDeadline(ctx, lease)
			_, err := d.claims().UpdateOne(rctx, bson.D{{Key: "_id", Value: claimID(d.job.ID, d.job.Attempts)}},
				bson.D{{Key: "$set", Value: bson.D{{Key: "lease_until", Value: next}}}})
			cancel()
			if err != nil {
				d.log.Warn("cannot renew the claim", "err", err)
				continue
			}
			lease = next
		}
	}()
	return func() { close(done); wg.Wait() }
}

// claim takes the claim that follows the job's last one (attempt `after`): a live claim means
// another delivery is converting; an expired one is skipped; the first free number is inserted.
// It returns the claim's attempt number, or 0 and the end of the live claim of another delivery.
func (s *state) claim(ctx context.Context, oid bson.ObjectID, owner string, after int32, now, lease time.Time) (int32, time.Time, error) {
	ctx, span := startSpan(ctx, "job.claim")
	defer span.End()
	claims := s.claims()
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
		_, err := claims.InsertOne(ctx, bson.D{{Key: "_id", Value: claimID(oid, n)}, {Key: "video_fid", Value: oid}, {Key: "owner", Value: owner},
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

// fairShare keeps one user's uploads from holding every converter: when CONVERT_PER_USER
// live claims of the same user came before this one (earlier, or as early with a smaller
// id, so that of two racing claims one goes on), this claim is withdrawn and the delivery
// answered 503 with Retry-After: the broker retries it later (the convert Trigger's retries
// span about two minutes, then the dead letter fails the job), while other users' uploads
// get the converters. ok is false when the claim was withdrawn (or could not be checked).
func (d *delivery) fairShare(ctx context.Context, oid bson.ObjectID, attempt int32, now time.Time) (result, bool) {
	mine := claimID(oid, attempt)
	cur, err := d.claims().Find(ctx, bson.D{{Key: "owner", Value: d.job.owner()},
		{Key: "lease_until", Value: bson.D{{Key: "$gt", Value: now}}}, {Key: "video_fid", Value: bson.D{{Key: "$ne", Value: oid}}}})
	var others []struct {
		ID        string    `bson:"_id"`
		CreatedAt time.Time `bson:"created_at"`
	}
	if err == nil {
		err = cur.All(ctx, &others)
	}
	ahead := 0
	for _, c := range others {
		if c.CreatedAt.Before(now) || (c.CreatedAt.Equal(now) && c.ID < mine) {
			ahead++
		}
	}
	if err == nil && ahead < d.perUser {
		return result{}, true
	}
	if _, derr := d.claims().DeleteOne(ctx, bson.D{{Key: "_id", Value: mine}}); derr != nil {
		d.log.Warn("cannot withdraw the claim; it expires by itself", "err", derr)
	}
	if err != nil {
		return d.storageError("cannot count the user's conversions", err), false
	}
	d.log.Info("the user's other conversions hold their share of the converters, asking for a retry", "in_flight", ahead)
	return result{status: http.StatusServiceUnavailable, retryAfter: d.lease,
		message: "your other files are being converted, this one follows"}, false
}

func claimID(oid bson.ObjectID, attempt int32) string {
	return oid.Hex() + "/" + strconv.Itoa(int(attempt))
}

// releaseClaim ends this delivery's claim now, so the broker's next retry can claim at once.
func (d *delivery) releaseClaim(ctx context.Context) {
	_, err := d.claims().UpdateOne(ctx, bson.D{{Key: "_id", Value: claimID(d.job.ID, d.job.Attempts)}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "lease_until", Value: time.Now().UTC()}}}})
	if err != nil {
		d.log.Warn("cannot release the claim; it expires by itself", "err", err)
	}
}

// dropClaims removes a finished job's claims: a later delivery finds the job done or failed.
func (d *delivery) dropClaims(ctx context.Context) {
	if _, err := d.claims().DeleteMany(ctx, bson.D{{Key: "video_fid", Value: d.job.ID}}); err != nil {
		d.log.Warn("cannot delete the claims of a finished job", "err", err)
	}
}

func (s *state) claims() *mongo.Collection { return s.videosDB().Collection("convert_claims") }
