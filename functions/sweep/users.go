package function

import (
	"context"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// A deleted user is recorded in videos.deleted_users (user_id, username, deleted_at; _id is
// the id, or the username when the event had none): the event's delivery removes a first
// batch of their data and every run goes on with the rest, so a user with many files is
// removed in bounded steps and a crash loses nothing.
//
// Whose data goes: the jobs owned by the user's id (owner_id), whenever they were made (an
// upload let through by a token cached in upload after the deletion too); and jobs stored
// before owner_id existed, by address, made before the deletion. A new account under the
// same address is a new id, and keeps its own.

// deletedUser is a document of videos.deleted_users.
type deletedUser struct {
	ID        string    `bson:"_id"`
	UserID    string    `bson:"user_id,omitempty"`
	Username  string    `bson:"username"`
	DeletedAt time.Time `bson:"deleted_at"`
}

// userDeleted records the deletion and removes a first batch of the user's jobs and files.
func (rt *runtime) userDeleted(ctx context.Context, u deletedUser) (int, error) {
	u.ID = u.Username
	if u.UserID != "" {
		u.ID = "id:" + u.UserID
	}
	_, err := rt.videos().Collection("deleted_users").UpdateOne(ctx, bson.D{{Key: "_id", Value: u.ID}},
		bson.D{
			{Key: "$set", Value: bson.D{{Key: "user_id", Value: u.UserID}, {Key: "username", Value: u.Username}}},
			{Key: "$max", Value: bson.D{{Key: "deleted_at", Value: u.DeletedAt}}},
		}, options.UpdateOne().SetUpsert(true))
	if err != nil {
		return 0, err
	}
	var c counts
	_, err = rt.purgeUser(ctx, &c, u)
	return c.UserJobs, err
}

// purgeDeletedUsers goes on removing the data of the recorded deleted users, and forgets a
// user once nothing of theirs is left.
func (rt *runtime) purgeDeletedUsers(ctx context.Context, c *counts) error {
	var users []deletedUser
	if err := rt.find(ctx, rt.videos().Collection("deleted_users"), bson.D{}, &users); err != nil {
		return err
	}
	for _, u := range users {
		if u.Username == "" { // recorded before user_id existed: _id is the username
			u.Username = u.ID
		}
		more, err := rt.purgeUser(ctx, c, u)
		if err != nil {
			return err
		}
		if !more {
			if _, err := rt.videos().Collection("deleted_users").DeleteOne(ctx,
				bson.D{{Key: "_id", Value: u.ID}, {Key: "deleted_at", Value: u.DeletedAt}}); err != nil {
				return err
			}
		}
	}
	return nil
}

// jobsOf selects the deleted user's jobs (see above).
func jobsOf(u deletedUser) bson.D {
	byAddress := bson.D{{Key: "username", Value: u.Username}, {Key: "created_at", Value: bson.D{{Key: "$lt", Value: u.DeletedAt}}}}
	if u.UserID == "" {
		return byAddress
	}
	legacy := append(bson.D{{Key: "owner_id", Value: bson.D{{Key: "$exists", Value: false}}}}, byAddress...)
	return bson.D{{Key: "$or", Value: bson.A{bson.D{{Key: "owner_id", Value: u.UserID}}, legacy}}}
}

// purgeUser removes up to SWEEP_BATCH of the user's jobs: the video, the MP3 and the claims
// first, the job last, so a crash in between leaves the job to find again. more reports
// whether a full batch was removed (there may be more).
func (rt *runtime) purgeUser(ctx context.Context, c *counts, u deletedUser) (more bool, err error) {
	var jobs []job
	err = rt.find(ctx, rt.jobs(), jobsOf(u), &jobs)
	if err != nil {
		return false, err
	}
	for _, j := range jobs {
		if err := removeFile(ctx, rt.videos(), j.ID); err != nil {
			return false, err
		}
		if err := removeFile(ctx, rt.mp3s(), j.ID); err != nil {
			return false, err
		}
		if _, err := rt.videos().Collection("convert_claims").DeleteMany(ctx, bson.D{{Key: "video_fid", Value: j.ID}}); err != nil {
			return false, err
		}
		if _, err := rt.jobs().DeleteOne(ctx, bson.D{{Key: "_id", Value: j.ID}}); err != nil {
			return false, err
		}
		c.UserJobs++
	}
	return int64(len(jobs)) == rt.batch, nil
}
