package kit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// writeKit stores data as file id with the kit's writer.
func writeKit(t *testing.T, db *mongo.Database, id any, data []byte) {
	t.Helper()
	w, err := NewGridFSWriter(context.Background(), db, "fs", id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close("x.mp3", nil); err != nil {
		t.Fatal(err)
	}
}

// writeDriver stores data as file id with the driver's upload stream (ObjectID chunk ids).
func writeDriver(t *testing.T, db *mongo.Database, id any, data []byte) {
	t.Helper()
	up, err := db.GridFSBucket(options.GridFSBucket().SetChunkSizeBytes(100_000)).OpenUploadStreamWithID(context.Background(), id, "x.mp3")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := up.Close(); err != nil {
		t.Fatal(err)
	}
}

func readKit(t *testing.T, db *mongo.Database, id any, offset int64) []byte {
	t.Helper()
	r, err := OpenGridFSReader(context.Background(), db, "fs", id, offset)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("offset %d: %v", offset, err)
	}
	return got
}

// The writer names chunk n of a file "<id>/<n>", the _id the reader and deleters look up.
func TestGridFSWriterNamesChunksByFileAndIndex(t *testing.T) {
	db := gridfsTestDB(t)
	id := bson.NewObjectID()
	writeKit(t, db, id, randomBytes(gridfsChunkSize+1))
	cur, err := db.Collection("fs.chunks").Find(context.Background(), bson.D{{Key: "files_id", Value: id}},
		options.Find().SetSort(bson.D{{Key: "n", Value: 1}}))
	if err != nil {
		t.Fatal(err)
	}
	var chunks []struct {
		ID any   `bson:"_id"`
		N  int32 `bson:"n"`
	}
	if err := cur.All(context.Background(), &chunks); err != nil {
		t.Fatal(err)
	}
	if len(chunks) != 2 {
		t.Fatalf("%d chunks, want 2", len(chunks))
	}
	for i, c := range chunks {
		if want := fmt.Sprintf("%s/%d", id.Hex(), i); c.ID != want || c.N != int32(i) {
			t.Errorf("chunk %d: _id %v n %d, want _id %q", i, c.ID, c.N, want)
		}
	}
}

// The reader returns the bytes written, from any offset, for files of the kit's writer and,
// through the driver, of the driver's; a file without its files document is not found.
func TestGridFSReaderReadsKitAndDriverFiles(t *testing.T) {
	db := gridfsTestDB(t)
	data := randomBytes(3*gridfsChunkSize + 777)
	kitID, driverID := bson.NewObjectID(), bson.NewObjectID()
	writeKit(t, db, kitID, data)
	writeDriver(t, db, driverID, data)
	for _, id := range []bson.ObjectID{kitID, driverID} {
		for _, off := range []int64{0, 1, gridfsChunkSize, gridfsChunkSize + 5, int64(len(data)) - 1, int64(len(data))} {
			if got := readKit(t, db, id, off); !bytes.Equal(got, data[off:]) {
				t.Errorf("file %s from %d: %d bytes, not the ones written", id.Hex(), off, len(got))
			}
		}
	}
	if _, err := OpenGridFSReader(context.Background(), db, "fs", bson.NewObjectID(), 0); !errors.Is(err, mongo.ErrFileNotFound) {
		t.Errorf("no such file: %v, want ErrFileNotFound", err)
	}
	if _, err := OpenGridFSReader(context.Background(), db, "fs", kitID, int64(len(data))+1); err == nil {
		t.Error("an offset past the end opened")
	}
}

// A kit file that lost a chunk is an error, not a short file.
func TestGridFSReaderMissingChunk(t *testing.T) {
	db := gridfsTestDB(t)
	id := bson.NewObjectID()
	writeKit(t, db, id, randomBytes(2*gridfsChunkSize))
	if _, err := db.Collection("fs.chunks").DeleteOne(context.Background(), bson.D{{Key: "_id", Value: gridfsChunkID(id, 1)}}); err != nil {
		t.Fatal(err)
	}
	r, err := OpenGridFSReader(context.Background(), db, "fs", id, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err == nil || len(got) != gridfsChunkSize {
		t.Errorf("read %d bytes, err %v; want chunk 0 then an error", len(got), err)
	}
}

// DeleteGridFSFile deletes files written either way; without a files document it deletes the
// chunks a kit writer left (more than one batch of them) and answers ErrFileNotFound.
func TestDeleteGridFSFile(t *testing.T) {
	db := gridfsTestDB(t)
	ctx := context.Background()
	data := randomBytes(2*gridfsChunkSize + 1)
	kitID, driverID, keptID := bson.NewObjectID(), bson.NewObjectID(), bson.NewObjectID()
	writeKit(t, db, kitID, data)
	writeDriver(t, db, driverID, data)
	writeKit(t, db, keptID, data)
	for _, id := range []bson.ObjectID{kitID, driverID} {
		if err := DeleteGridFSFile(ctx, db, "fs", id); err != nil {
			t.Fatalf("%s: %v", id.Hex(), err)
		}
		if n := countChunks(t, db, id); n != 0 {
			t.Errorf("%s: %d chunks left", id.Hex(), n)
		}
		if _, err := OpenGridFSReader(ctx, db, "fs", id, 0); !errors.Is(err, mongo.ErrFileNotFound) {
			t.Errorf("%s: open after delete: %v", id.Hex(), err)
		}
	}
	if got := readKit(t, db, keptID, 0); !bytes.Equal(got, data) {
		t.Error("another file was touched")
	}

	// A writer that died after 65 chunks.
	partial := bson.NewObjectID()
	w, err := NewGridFSWriter(ctx, db, "fs", partial)
	if err != nil {
		t.Fatal(err)
	}
	chunk := randomBytes(gridfsChunkSize)
	for range 65 {
		if _, err := w.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := countChunks(t, db, partial); n != 65 {
		t.Fatalf("%d chunks stored, want %d", n, 65)
	}
	if err := DeleteGridFSFile(ctx, db, "fs", partial); !errors.Is(err, mongo.ErrFileNotFound) {
		t.Errorf("delete without a files document: %v, want ErrFileNotFound", err)
	}
	if n := countChunks(t, db, partial); n != 0 {
		t.Errorf("%d chunks left of the dead writer", n)
	}
	if got := readKit(t, db, keptID, 0); !bytes.Equal(got, data) {
		t.Error("another file was touched")
	}
}
