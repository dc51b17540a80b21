package kit

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"mp3converter/internal/local/standins"
)

// gridfsTestDB returns a fresh database on MONGODB_URI, or on an in-process FerretDB started
// once for the package's tests.
func gridfsTestDB(t *testing.T) *mongo.Database {
	t.Helper()
	uri := mongoForTests(t)
	client, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	db := client.Database("kit_gridfs_" + bson.NewObjectID().Hex())
	t.Cleanup(func() {
		_ = db.Drop(context.Background())
		_ = client.Disconnect(context.Background())
	})
	return db
}

var testMongo struct {
	once sync.Once
	uri  string
	err  error
}

func mongoForTests(t *testing.T) string {
	testMongo.once.Do(func() {
		if testMongo.uri = os.Getenv("MONGODB_URI"); testMongo.uri != "" {
			return
		}
		dir, err := os.MkdirTemp("", "kit-ferretdb-")
		if err != nil {
			testMongo.err = err
			return
		}
		m, err := standins.StartMongoDB("127.0.0.1:0", dir)
		if err != nil {
			testMongo.err = err
			return
		}
		testMongo.uri = m.URI
		stopTestMongo = func() { m.Close(); os.RemoveAll(dir) }
	})
	if testMongo.err != nil {
		t.Fatal(testMongo.err)
	}
	return testMongo.uri
}

var stopTestMongo = func() {}

func TestMain(m *testing.M) {
	code := m.Run()
	stopTestMongo()
	os.Exit(code)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(uint64(n), 7))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// readBack reads the file id through the driver's own GridFS reader.
func readBack(t *testing.T, db *mongo.Database, id any) ([]byte, bson.M) {
	t.Helper()
	ctx := context.Background()
	down, err := db.GridFSBucket().OpenDownloadStream(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	got, err := io.ReadAll(down)
	if err != nil {
		t.Fatal(err)
	}
	var files bson.M
	if err := db.Collection("fs.files").FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&files); err != nil {
		t.Fatal(err)
	}
	return got, files
}

func countChunks(t *testing.T, db *mongo.Database, id any) int64 {
	t.Helper()
	n, err := db.Collection("fs.chunks").CountDocuments(context.Background(), bson.D{{Key: "files_id", Value: id}})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// A file written by the writer reads back unchanged through the driver's GridFS reader, with
// the spec's files document, for sizes around the chunk boundaries.
func TestGridFSWriterReadsBackThroughTheDriver(t *testing.T) {
	db := gridfsTestDB(t)
	ctx := context.Background()
	for _, size := range []int{0, 1, gridfsChunkSize - 1, gridfsChunkSize, gridfsChunkSize + 1, 3*gridfsChunkSize + 12345} {
		want := randomBytes(size)
		id := bson.NewObjectID()
		w, err := NewGridFSWriter(ctx, db, "fs", id)
		if err != nil {
			t.Fatal(err)
		}
		// Half through Write in odd pieces, half through ReadFrom (what io.Copy uses).
		half := size / 2
		for p := want[:half]; len(p) > 0; {
			k := min(len(p), 1000+len(p)%7777)
			if n, err := w.Write(p[:k]); err != nil || n != k {
				t.Fatalf("size %d: Write = %d, %v", size, n, err)
			}
			p = p[k:]
		}
		if n, err := w.ReadFrom(bytes.NewReader(want[half:])); err != nil || n != int64(size-half) {
			t.Fatalf("size %d: ReadFrom = %d, %v", size, n, err)
		}
		meta := bson.D{{Key: "username", Value: "ann"}}
		if err := w.Close("clip.mp4", meta); err != nil {
			t.Fatal(err)
		}
		got, files := readBack(t, db, id)
		if !bytes.Equal(got, want) {
			t.Errorf("size %d: read back %d bytes, not the ones written", size, len(got))
		}
		wantChunks := int64((size + gridfsChunkSize - 1) / gridfsChunkSize)
		if n := countChunks(t, db, id); n != wantChunks {
			t.Errorf("size %d: %d chunks, want %d", size, n, wantChunks)
		}
		if files["length"] != int64(size) || files["chunkSize"] != int32(gridfsChunkSize) || files["filename"] != "clip.mp4" {
			t.Errorf("size %d: files document %v", size, files)
		}
		if m, _ := files["metadata"].(bson.D); len(m) != 1 || m[0] != meta[0] {
			t.Errorf("size %d: metadata %v", size, files["metadata"])
		}
		if _, ok := files["uploadDate"].(bson.DateTime); !ok {
			t.Errorf("size %d: uploadDate %v", size, files["uploadDate"])
		}
		if _, err := w.Write([]byte("x")); !errors.Is(err, errGridFSWriterDone) {
			t.Errorf("Write after Close: %v", err)
		}
	}
}

// Chunks are stored as they fill, before Close; the file stays invisible to readers until
// Close writes its files document; Abort removes every chunk.
func TestGridFSWriterStreamsAndAbortRemovesChunks(t *testing.T) {
	db := gridfsTestDB(t)
	ctx := context.Background()
	id := bson.NewObjectID()
	w, err := NewGridFSWriter(ctx, db, "fs", id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(randomBytes(2*gridfsChunkSize + 10)); err != nil {
		t.Fatal(err)
	}
	if n := countChunks(t, db, id); n != 2 {
		t.Errorf("before Close: %d chunks stored, want the 2 full ones", n)
	}
	if _, err := db.GridFSBucket().OpenDownloadStream(ctx, id); !errors.Is(err, mongo.ErrFileNotFound) {
		t.Errorf("before Close, opening the file: %v, want ErrFileNotFound", err)
	}
	if err := w.Abort(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := countChunks(t, db, id); n != 0 {
		t.Errorf("after Abort: %d chunks left", n)
	}
	if err := w.Close("x", nil); !errors.Is(err, errGridFSWriterDone) {
		t.Errorf("Close after Abort: %v", err)
	}
	n, err := db.Collection("fs.files").CountDocuments(ctx, bson.D{})
	if err != nil || n != 0 {
		t.Errorf("after Abort: %d files documents, %v", n, err)
	}
}

// Abort deletes with its own context after the writer's was cancelled (a client hung up).
func TestGridFSWriterAbortAfterCancel(t *testing.T) {
	db := gridfsTestDB(t)
	ctx, cancel := context.WithCancel(context.Background())
	id := bson.NewObjectID()
	w, err := NewGridFSWriter(ctx, db, "fs", id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(randomBytes(gridfsChunkSize + 1)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := w.Write(randomBytes(gridfsChunkSize)); err == nil {
		t.Error("Write with a cancelled context stored a chunk")
	}
	if err := w.Abort(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := countChunks(t, db, id); n != 0 {
		t.Errorf("after Abort: %d chunks left", n)
	}
}

// A file written in three sittings (Flush, then a new writer resumed at Length, as a resumable
// upload would across requests) reads back whole, with one chunk per index.
func TestGridFSWriterResumes(t *testing.T) {
	db := gridfsTestDB(t)
	ctx := context.Background()
	want := randomBytes(4*gridfsChunkSize + 999)
	cuts := []int{gridfsChunkSize + 500, gridfsChunkSize + 700, 3 * gridfsChunkSize}
	id := bson.NewObjectID()
	w, err := NewGridFSWriter(ctx, db, "fs", id)
	if err != nil {
		t.Fatal(err)
	}
	from := 0
	for _, to := range cuts {
		if _, err := w.Write(want[from:to]); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		if w.Length() != int64(to) {
			t.Fatalf("Length %d, want %d", w.Length(), to)
		}
		w.release() // the request ends; the next one resumes
		if w, err = ResumeGridFSWriter(ctx, db, "fs", id, int64(to)); err != nil {
			t.Fatal(err)
		}
		from = to
	}
	if _, err := w.Write(want[from:]); err != nil {
		t.Fatal(err)
	}
	if err := w.Close("resumed.mp4", nil); err != nil {
		t.Fatal(err)
	}
	got, files := readBack(t, db, id)
	if !bytes.Equal(got, want) || files["length"] != int64(len(want)) {
		t.Errorf("read back %d bytes (length %v), want the %d written", len(got), files["length"], len(want))
	}
	if n := countChunks(t, db, id); n != 5 {
		t.Errorf("%d chunks, want 5", n)
	}

	// Resuming at a length the stored chunks do not hold fails instead of corrupting the file.
	if _, err := ResumeGridFSWriter(ctx, db, "fs", id, int64(gridfsChunkSize+3)); err == nil {
		t.Error("resumed at a length that splits a full chunk")
	}
}

// A request that stored more than its upload recorded (it failed between the two) is trimmed
// back to the record, and the file resumed from there reads back exactly.
func TestTrimGridFSChunks(t *testing.T) {
	db := gridfsTestDB(t)
	ctx := context.Background()
	want := randomBytes(3*gridfsChunkSize + 10)
	for _, recorded := range []int{0, 700, gridfsChunkSize, gridfsChunkSize + 5} {
		id := bson.NewObjectID()
		w, err := NewGridFSWriter(ctx, db, "fs", id)
		if err != nil {
			t.Fatal(err)
		}
		garbage := append(append([]byte{}, want[:recorded]...), randomBytes(2*gridfsChunkSize+77)...)
		if _, err := w.Write(garbage); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		w.release()
		if err := TrimGridFSChunks(ctx, db, "fs", id, int64(recorded)); err != nil {
			t.Fatal(err)
		}
		if recorded == 0 {
			w, err = NewGridFSWriter(ctx, db, "fs", id)
		} else {
			w, err = ResumeGridFSWriter(ctx, db, "fs", id, int64(recorded))
		}
		if err != nil {
			t.Fatalf("recorded %d: %v", recorded, err)
		}
		if _, err := w.Write(want[recorded:]); err != nil {
			t.Fatal(err)
		}
		if err := w.Close("trimmed.mp4", nil); err != nil {
			t.Fatal(err)
		}
		if got, _ := readBack(t, db, id); !bytes.Equal(got, want) {
			t.Errorf("recorded %d: read back %d bytes, not the %d written", recorded, len(got), len(want))
		}
		if n := countChunks(t, db, id); n != 4 {
			t.Errorf("recorded %d: %d chunks, want 4", recorded, n)
		}
	}
}
