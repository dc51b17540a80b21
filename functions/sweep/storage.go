package function

import (
	"context"
	"errors"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// GridFS ids are the video's ObjectID in both buckets (the MP3 takes its video's id).

// expireMP3s deletes the MP3s older than MP3_RETENTION; their job becomes expired first, so
// a download in between answers 410, never a broken stream.
func (rt *runtime) expireMP3s(ctx context.Context, c *counts) error {
	if rt.retention <= 0 {
		return nil
	}
	now := rt.now()
	var files []struct {
		ID bson.ObjectID `bson:"_id"`
	}
	err := rt.find(ctx, rt.mp3s().Collection("fs.files"),
		bson.D{{Key: "uploadDate", Value: bson.D{{Key: "$lt", Value: now.Add(-rt.retention)}}}}, &files)
	if err != nil {
		return err
	}
	for _, f := range files {
		_, err := rt.jobs().UpdateOne(ctx, bson.D{{Key: "_id", Value: f.ID}, {Key: "state", Value: JobDone}}, bson.D{
			{Key: "$set", Value: bson.D{{Key: "state", Value: JobExpired}, {Key: "reason", Value: reasonExpired},
				{Key: "expired_at", Value: now}, {Key: "updated_at", Value: now}}}})
		if err != nil {
			return err
		}
		if err := removeFile(ctx, rt.mp3s(), f.ID); err != nil {
			return err
		}
		c.Expired++
	}
	return nil
}

// removeVideos deletes videos that no job needs: of no job (a crash between the upload and
// the job's insert), or of a finished job (convert killed before its own delete, or a
// failure) unless KEEP_VIDEOS.
func (rt *runtime) removeVideos(ctx context.Context, c *counts) error {
	cutoff := rt.now().Add(-rt.grace)
	return rt.scan(ctx, rt.videos().Collection("fs.files"), "_id", 0,
		bson.D{{Key: "uploadDate", Value: bson.D{{Key: "$lt", Value: cutoff}}}},
		func(id bson.ObjectID) error {
			state, err := rt.jobState(ctx, id)
			if err != nil {
				return err
			}
			switch {
			case state == "":
			case state.final() && !rt.keepVideos:
			default:
				return nil
			}
			c.VideosRemoved++
			return removeFile(ctx, rt.videos(), id)
		})
}

// removeOrphanMP3s deletes MP3s whose job is gone (a crash between the job's delete and its
// files', or a job removed by hand).
func (rt *runtime) removeOrphanMP3s(ctx context.Context, c *counts) error {
	cutoff := rt.now().Add(-rt.grace)
	return rt.scan(ctx, rt.mp3s().Collection("fs.files"), "_id", 0,
		bson.D{{Key: "uploadDate", Value: bson.D{{Key: "$lt", Value: cutoff}}}},
		func(id bson.ObjectID) error {
			state, err := rt.jobState(ctx, id)
			if err != nil || state != "" {
				return err
			}
			c.MP3sRemoved++
			return removeFile(ctx, rt.mp3s(), id)
		})
}

// expireUploads removes the resumable uploads (upload's videos.uploads) whose expires_at has
// passed: upload sets it UPLOAD_EXPIRY after each PATCH, and past the end of a PATCH still
// running. An unfinished upload's chunks go with its record; a finished one's are its job's
// video, and only the record goes. Abandoned locks of uploads go too.
func (rt *runtime) expireUploads(ctx context.Context, c *counts) error {
	now := rt.now()
	uploads := rt.videos().Collection("uploads")
	expired := bson.D{{Key: "expires_at", Value: bson.D{{Key: "$lt", Value: now}}}}
	cur, err := uploads.Find(ctx, expired, options.Find().SetLimit(rt.batch).
		SetProjection(bson.D{{Key: "_id", Value: 1}, {Key: "done", Value: 1}}))
	if err != nil {
		return err
	}
	var docs []struct {
		ID   bson.ObjectID `bson:"_id"`
		Done bool          `bson:"done"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		return err
	}
	for _, u := range docs {
		// Only if it is still expired: a PATCH may have just moved it on.
		res, err := uploads.DeleteOne(ctx, append(bson.D{{Key: "_id", Value: u.ID}}, expired...))
		if err != nil {
			return err
		}
		if res.DeletedCount == 0 {
			continue
		}
		c.UploadsExpired++
		if !u.Done {
			if _, err := rt.videos().Collection("fs.chunks").DeleteMany(ctx, bson.D{{Key: "files_id", Value: u.ID}}); err != nil {
				return err
			}
		}
	}
	_, err = rt.videos().Collection("upload_locks").DeleteMany(ctx, bson.D{{Key: "until", Value: bson.D{{Key: "$lt", Value: now}}}})
	return err
}

// removeOrphanChunks deletes chunks without a files document: an upload or a conversion that
// died while storing (a resumable upload's are expireUploads' business). A file's chunks come before its files document, so only ids older than
// STUCK_AFTER (beyond upload's UPLOAD_TIMEOUT and convert's whole retry window) are taken,
// and never those of a job still uploaded or converting. Such chunks are rare (a writer killed
// mid-file), while a query on chunks reads every stored chunk on FerretDB's SQLite backend: a
// full pass rests SWEEP_CHUNK_SCAN_PAUSE before the next, so that a sweep every minute does
// not cost more with every MP3 stored.
func (rt *runtime) removeOrphanChunks(ctx context.Context, c *counts) error {
	cutoff := bson.NewObjectIDFromTimestamp(rt.now().Add(-rt.stuckAfter))
	for _, db := range []*mongo.Database{rt.videos(), rt.mp3s()} {
		err := rt.scan(ctx, db.Collection("fs.chunks"), "files_id", rt.chunkPause,
			bson.D{{Key: "n", Value: 0}, {Key: "files_id", Value: bson.D{{Key: "$lt", Value: cutoff}}}},
			func(id bson.ObjectID) error {
				n, err := db.Collection("fs.files").CountDocuments(ctx, bson.D{{Key: "_id", Value: id}}, options.Count().SetLimit(1))
				if err != nil || n > 0 {
					return err
				}
				// A resumable upload's chunks wait for their next PATCH until the upload expires.
				n, err = rt.videos().Collection("uploads").CountDocuments(ctx, bson.D{{Key: "_id", Value: id}}, options.Count().SetLimit(1))
				if err != nil || n > 0 {
					return err
				}
				state, err := rt.jobState(ctx, id)
				if err != nil || state == JobUploaded || state == JobConverting {
					return err
				}
				c.ChunksRemoved++
				_, err = db.Collection("fs.chunks").DeleteMany(ctx, bson.D{{Key: "files_id", Value: id}})
				return err
			})
		if err != nil {
			return err
		}
	}
	return nil
}

// jobState is the state of the job with this id, "" when there is none.
func (rt *runtime) jobState(ctx context.Context, id bson.ObjectID) (JobState, error) {
	var j struct {
		State JobState `bson:"state"`
	}
	err := rt.jobs().FindOne(ctx, bson.D{{Key: "_id", Value: id}}, options.FindOne().SetProjection(bson.D{{Key: "state", Value: 1}})).Decode(&j)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return "", nil
	}
	return j.State, err
}

// removeFile deletes a GridFS file's files document and chunks; either may be missing.
// Chunks go by _id where the kit's writer named them (no scan of every chunk on FerretDB).
func removeFile(ctx context.Context, db *mongo.Database, id bson.ObjectID) error {
	err := DeleteGridFSFile(ctx, db, "fs", id)
	if errors.Is(err, mongo.ErrFileNotFound) {
		return nil
	}
	return err
}

// scan visits at most SWEEP_BATCH ids of coll matching filter, in id order, from where the
// last run stopped: live files cannot hold the scan back, and every file is reached within
// a few runs. At the end of the collection it starts again from the beginning.
// Once a pass has reached the end, the next starts only when rest has gone by.
func (rt *runtime) scan(ctx context.Context, coll *mongo.Collection, field string, rest time.Duration, filter bson.D, visit func(bson.ObjectID) error) error {
	state := rt.videos().Collection("sweep")
	key := "cursor/" + coll.Database().Name() + "." + coll.Name()
	var cursor struct {
		After    bson.ObjectID `bson:"after"`
		PassedAt time.Time     `bson:"passed_at"` // when the last pass reached the end
	}
	if err := state.FindOne(ctx, bson.D{{Key: "_id", Value: key}}).Decode(&cursor); err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
		return err
	}
	if cursor.After.IsZero() && rt.now().Before(cursor.PassedAt.Add(rest)) {
		return nil
	}
	f := append(bson.D{{Key: "$and", Value: bson.A{bson.D{{Key: field, Value: bson.D{{Key: "$gt", Value: cursor.After}}}}}}}, filter...)
	cur, err := coll.Find(ctx, f, options.Find().SetSort(bson.D{{Key: field, Value: 1}}).SetLimit(rt.batch).
		SetProjection(bson.D{{Key: field, Value: 1}}))
	if err != nil {
		return err
	}
	var docs []bson.Raw
	if err := cur.All(ctx, &docs); err != nil {
		return err
	}
	next := bson.ObjectID{} // from the start again
	for _, d := range docs {
		id, ok := d.Lookup(field).ObjectIDOK()
		if !ok {
			continue // not one of ours
		}
		if err := visit(id); err != nil {
			return err
		}
		next = id
	}
	set := bson.D{{Key: "after", Value: next}, {Key: "at", Value: time.Now().UTC()}}
	if int64(len(docs)) < rt.batch {
		set = bson.D{{Key: "after", Value: bson.ObjectID{}}, {Key: "at", Value: time.Now().UTC()}, {Key: "passed_at", Value: rt.now().UTC()}}
	}
	_, err = state.UpdateOne(ctx, bson.D{{Key: "_id", Value: key}}, bson.D{{Key: "$set", Value: set}},
		options.UpdateOne().SetUpsert(true))
	return err
}
