package function

import (
	"context"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// A deleted user is recorded in videos.deleted_users (_id: the username, deleted_at): the
// event's delivery removes a first batch of their data and every run goes on with the rest,
// so a user with many files is removed in bounded steps and a crash loses nothing. Only jobs
// created before deleted_at go: a new account under the same email keeps its own.

// userDeleted records the deletion and removes a first batch of the user's jobs and files.
func (rt *runtime) userDeleted(ctx context.Context, username string, at time.Time) (int, error) {
	_, err := rt.videos().Collection("deleted_users").UpdateOne(ctx, bson.D{{Key: "_id", Value: username}},
		bson.D{{Key: "$max", Value: bson.D{{Key: "deleted_at", Value: at.UTC()}}}}, options.UpdateOne().SetUpsert(true))
	if err != nil {
		return 0, err
	}
	var c counts
	_, err = rt.purgeUser(ctx, &c, username, at)
	return c.UserJobs, err
}

// purgeDeletedUsers goes on removing the data of the recorded deleted users, and forgets a
// user once nothing of theirs is left.
func (rt *runtime) purgeDeletedUsers(ctx context.Context, c *counts) error {
	var users []struct {
		Username  string    `bson:"_id"`
		DeletedAt time.Time `bson:"deleted_at"`
	}
	if err := rt.find(ctx, rt.videos().Collection("deleted_users"), bson.D{}, &users); err != nil {
		return err
	}
	for _, u := range users {
		more, err := rt.purgeUser(ctx, c, u.Username, u.DeletedAt)
		if err != nil {
			return err
		}
		if !more {
			if _, err := rt.videos().Collection("deleted_users").DeleteOne(ctx,
				bson.D{{Key: "_id", Value: u.Username}, {Key: "deleted_at", Value: u.DeletedAt}}); err != nil {
				return err
			}
		}
	}
	return nil
}

// purgeUser removes up to SWEEP_BATCH of the user's jobs created before `before`: the video,
// the MP3 and the claims first, the job last, so a crash in between leaves the job to find
// again. more reports whether a full batch was removed (there may be more).
func (rt *runtime) purgeUser(ctx context.Context, c *counts, username string, before time.Time) (more bool, err error) {
	var jobs []job
	err = rt.find(ctx, rt.jobs(), bson.D{{Key: "username", Value: username},
		{Key: "created_at", Value: bson.D{{Key: "$lt", Value: before}}}}, &jobs)
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
