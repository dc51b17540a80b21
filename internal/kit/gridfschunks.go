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
// FerretDB's SQLite backend pushes down to its primary key for a read. Any other filter,
// files_id included, reads and parses every chunk of the collection, so it costs more with
// every file ever stored. Files written otherwise (by the driver, before the kit wrote chunks
// so) have ObjectID chunk ids: the reader falls back to the files_id query for them.

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

// Deletes go by files_id, in one command per file: FerretDB's SQLite backend reads every chunk
// stored for a delete whatever its filter (measured: 160 chunks deleted one _id at a time took
// 18 s beside 60 MiB of other chunks, by files_id 1.4 s), so one pass per file is the least.

// DeleteGridFSFile deletes file id of bucket in db: its files document, then its chunks.
// It answers mongo.ErrFileNotFound when there was no files document, as the driver's
// Delete does, after deleting whatever chunks it had.
func DeleteGridFSFile(ctx context.Context, db *mongo.Database, bucket string, id any) error {
	err := db.Collection(bucket+".files").FindOneAndDelete(ctx, bson.D{{Key: "_id", Value: id}}).Err()
	missing := errors.Is(err, mongo.ErrNoDocuments)
	if err != nil && !missing {
		return err // the files document may still be there: its chunks stay with it
	}
	if _, err := DeleteGridFSChunks(ctx, db, bucket, id); err != nil {
		return err
	}
	if missing {
		return mongo.ErrFileNotFound
	}
	return nil
}

// DeleteGridFSChunks deletes the chunks of file id (a writer that died before Close leaves
// chunks without a files document), and returns how many there were.
func DeleteGridFSChunks(ctx context.Context, db *mongo.Database, bucket string, id any) (int64, error) {
	res, err := db.Collection(bucket+".chunks").DeleteMany(ctx, bson.D{{Key: "files_id", Value: id}})
	if err != nil {
		return 0, err
	}
	return res.DeletedCount, nil
}
