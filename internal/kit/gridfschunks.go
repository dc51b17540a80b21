package kit

import (
	"context"
	"errors"
	"strconv"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// Chunk ids. The GridFS spec asks only that a chunk's _id be unique; readers find chunks by
// {files_id, n}. The kit's writer gives chunk n of file id the _id "<id>/<n>" (id as hex for
// an ObjectID), so the kit's reader and deleter reach a chunk by _id equality: the one filter
// FerretDB's SQLite backend pushes down to its primary key. Any other filter, files_id
// included, reads and parses every chunk of the collection, so it costs more with every
// file ever stored. Files written otherwise (by the driver, before the kit wrote chunks so)
// have ObjectID chunk ids: the reader and deleter fall back to the files_id query for them.

// gridfsChunkID is the _id of chunk n of file id, or nil when id is neither an ObjectID nor
// a string (the writer then gives the chunk an ObjectID).
func gridfsChunkID(id any, n int32) any {
	switch id := id.(type) {
	case bson.ObjectID:
		return id.Hex() + "/" + strconv.Itoa(int(n))
	case string:
		return id + "/" + strconv.Itoa(int(n))
	}
	return nil
}

// gridfsDeleteBatch is how many chunk ids one delete command names.
const gridfsDeleteBatch = 64

// DeleteGridFSFile deletes file id of bucket in db: its files document, then its chunks.
// It answers mongo.ErrFileNotFound when there was no files document, as the driver's
// Delete does, after deleting the chunks a kit writer left (DeleteGridFSChunks).
func DeleteGridFSFile(ctx context.Context, db *mongo.Database, bucket string, id any) error {
	var file struct {
		Length    int64 `bson:"length"`
		ChunkSize int64 `bson:"chunkSize"`
	}
	err := db.Collection(bucket+".files").FindOneAndDelete(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&file)
	if errors.Is(err, mongo.ErrNoDocuments) {
		if _, err := DeleteGridFSChunks(ctx, db, bucket, id); err != nil {
			return err
		}
		return mongo.ErrFileNotFound
	}
	if err != nil {
		return err
	}
	chunks := db.Collection(bucket + ".chunks")
	want := int64(0)
	if file.ChunkSize > 0 {
		want = (file.Length + file.ChunkSize - 1) / file.ChunkSize
	}
	deleted, err := deleteGridFSChunkRange(ctx, chunks, id, 0, int32(want))
	if err != nil || deleted == want {
		return err
	}
	// Not all by _id: chunks written otherwise.
	_, err = chunks.DeleteMany(ctx, bson.D{{Key: "files_id", Value: id}})
	return err
}

// DeleteGridFSChunks deletes the chunks a kit writer stored for file id without its files
// document (a writer that died before Close), and returns how many. A writer stores chunks
// in order, so they are deleted a batch of ids at a time until a batch comes up short.
// Chunks with other ids (see gridfsChunkID) stay: only a files_id query finds them.
func DeleteGridFSChunks(ctx context.Context, db *mongo.Database, bucket string, id any) (int64, error) {
	chunks := db.Collection(bucket + ".chunks")
	var total int64
	for from := int32(0); ; from += gridfsDeleteBatch {
		deleted, err := deleteGridFSChunkRange(ctx, chunks, id, from, from+gridfsDeleteBatch)
		total += deleted
		if err != nil || deleted < gridfsDeleteBatch {
			return total, err
		}
	}
}

// deleteGridFSChunkRange deletes chunks from..to-1 of file id by their kit _id, in commands of
// gridfsDeleteBatch ids, and returns how many there were.
func deleteGridFSChunkRange(ctx context.Context, chunks *mongo.Collection, id any, from, to int32) (int64, error) {
	if gridfsChunkID(id, 0) == nil {
		return 0, nil
	}
	var total int64
	for from < to {
		end := min(to, from+gridfsDeleteBatch)
		models := make([]mongo.WriteModel, 0, end-from)
		for n := from; n < end; n++ {
			models = append(models, mongo.NewDeleteOneModel().SetFilter(bson.D{{Key: "_id", Value: gridfsChunkID(id, n)}}))
		}
		res, err := chunks.BulkWrite(ctx, models)
		if err != nil {
			return total, err
		}
		total += res.DeletedCount
		from = end
	}
	return total, nil
}
