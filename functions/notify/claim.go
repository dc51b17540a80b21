package function

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"hash/fnv"
	"log/slog"
	"time"

	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// lock takes this process's lock on one job's document and returns its unlock.
func (rt *runtime) lock(fid string) func() {
	h := fnv.New32a()
	_, _ = h.Write([]byte(fid))
	m := &rt.locks[h.Sum32()%uint32(len(rt.locks))]
	m.Lock()
	return m.Unlock
}

func (rt *runtime) jobs() *mongo.Collection {
	return rt.client.Database(rt.prefix + "videos").Collection("jobs")
}

// notify claims the job's notification, sends the email and settles the claim.
func (rt *runtime) notify(ctx context.Context, log *slog.Logger, n notice) error {
	oid, err := bson.ObjectIDFromHex(n.videoFID)
	if err != nil {
		return nil // decode checked the pattern
	}
	claim, outcome, err := rt.claim(ctx, oid)
	switch {
	case err != nil:
		log.Error("storage unavailable", "err", err)
		return cehttp.NewResult(503, "storage unavailable, try again")
	case outcome == noJob:
		log.Warn("no such job, not emailing")
		return nil
	case outcome == notified:
		log.Info("already notified, nothing to send")
		return nil
	case outcome == inFlight:
		// The other send may still fail and release its claim: the broker must come back.
		log.Info("another delivery is sending this email, asking for a retry")
		return cehttp.NewResult(503, "notification in progress, try again")
	}
	// The claim is settled even when the request's context is gone.
	settle, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
	defer cancel()
	filter := bson.D{{Key: "_id", Value: oid}, {Key: "notify_claim", Value: claim}}
	update := func(u bson.D) error {
		defer rt.lock(n.videoFID)()
		_, err := rt.jobs().UpdateOne(settle, filter, u)
		return err
	}

	msg, subject, err := rt.message(n)
	if err == nil {
		err = rt.send(ctx, log, n, msg, subject)
	}
	switch {
	case err == nil:
		// The email is out: a claim left unsettled would look like a send that
		// died, and a later delivery would take it over and send again. So
		// settle it through a short MongoDB outage too (bounded by settle).
		for wait := 250 * time.Millisecond; ; wait *= 2 {
			uerr := update(bson.D{{Key: "$unset", Value: bson.D{{Key: "notify_claim", Value: ""}}}})
			if uerr == nil {
				break
			}
			if settle.Err() != nil {
				log.Error("email sent but the claim could not be settled", "err", uerr)
				break
			}
			log.Warn("email sent, settling the claim again", "err", uerr)
			select {
			case <-settle.Done():
			case <-time.After(wait):
			}
		}
		return nil
	case permanent(err):
		log.Error("email cannot be delivered (permanent), not retrying", "to", n.to, "err", err)
		msg := err.Error()
		if len(msg) > 1000 {
			msg = msg[:1000]
		}
		if uerr := update(bson.D{
			{Key: "$set", Value: bson.D{{Key: "notify_error", Value: msg}}},
			{Key: "$unset", Value: bson.D{{Key: "notify_claim", Value: ""}}}}); uerr != nil {
			log.Warn("could not record notify_error", "err", uerr)
		}
		return nil
	default:
		log.Warn("email not sent, releasing the claim for a retry", "to", n.to, "err", err)
		if uerr := update(bson.D{{Key: "$unset", Value: bson.D{
			{Key: "notified_at", Value: ""}, {Key: "notify_claim", Value: ""}}}}); uerr != nil {
			log.Error("could not release the claim; a redelivery takes it over once it is stale", "err", uerr)
		}
		return cehttp.NewResult(503, "mail server unavailable, try again")
	}
}

// Outcomes of a claim.
const (
	claimed  = iota // ours: send the email
	notified        // sent (or rejected for good) before: nothing to do
	inFlight        // another delivery is sending right now: ask for a retry
	noJob           // no such job: nothing to claim
)

// claim marks the job notified with a random token unless it already is. A claim whose
// send never settled (the process died mid-send) is taken over once it is stale.
func (rt *runtime) claim(ctx context.Context, oid bson.ObjectID) (token string, outcome int, err error) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	token = hex.EncodeToString(b[:])
	now := time.Now().UTC()
	filter := bson.D{{Key: "_id", Value: oid}, {Key: "$or", Value: bson.A{
		bson.D{{Key: "notified_at", Value: nil}},
		bson.D{{Key: "notify_claim", Value: bson.D{{Key: "$exists", Value: true}}},
			{Key: "notified_at", Value: bson.D{{Key: "$lt", Value: now.Add(-rt.staleAt)}}}},
	}}}
	update := bson.D{{Key: "$set", Value: bson.D{{Key: "notified_at", Value: now}, {Key: "notify_claim", Value: token}}}}
	unlock := rt.lock(oid.Hex())
	err = rt.jobs().FindOneAndUpdate(ctx, filter, update).Err()
	unlock()
	if err == nil {
		return token, claimed, nil
	} else if !errors.Is(err, mongo.ErrNoDocuments) {
		return "", 0, err
	}
	var j struct {
		Claim string `bson:"notify_claim"`
	}
	if err = rt.jobs().FindOne(ctx, bson.D{{Key: "_id", Value: oid}}).Decode(&j); errors.Is(err, mongo.ErrNoDocuments) {
		return "", noJob, nil
	} else if err != nil {
		return "", 0, err
	}
	if j.Claim != "" {
		return "", inFlight, nil
	}
	return "", notified, nil
}
