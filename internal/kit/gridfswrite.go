package kit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// gridfsChunkSize is the size of every chunk but a file's last: FerretDB needs chunks well
// below GridFS's 255 KiB default for big files (its 48 MB message limit).
const gridfsChunkSize = 128 * 1024

// gridfsChunks holds the chunk buffers of every GridFSWriter in the process: a writer holds
// one, so an upload costs one chunk of memory, not the driver's fixed 16 MiB upload buffer.
var gridfsChunks = sync.Pool{New: func() any {
	b := make([]byte, 0, gridfsChunkSize)
	return &b
}}

var errGridFSWriterDone = errors.New("gridfs writer: already closed or aborted")

// GridFSWriter writes one file into a GridFS bucket the way the GridFS spec lays it out
// (<bucket>.chunks documents {_id, files_id, n, data}, then the <bucket>.files document
// {_id, length, chunkSize, uploadDate, filename, metadata} last), so any GridFS reader reads
// it. It streams: each chunk is inserted as soon as it fills, from one pooled buffer. Chunk
// _ids follow from the file's id and n (gridfsChunkID), for GridFSReader and the deleters.
//
// A file can be written across several writers (a resumable upload, one request at a time):
// Flush stores the partial last chunk, and ResumeGridFSWriter continues after it. Until Close
// writes the files document, readers do not see the file.
//
// Write, ReadFrom and Flush use the context given when the writer was made, as the driver's
// upload stream does, since io.Writer takes none. A writer is not safe for concurrent use.
type GridFSWriter struct {
	ctx    context.Context
	files  *mongo.Collection
	chunks *mongo.Collection
	id     any

	n       int32      // index of the chunk buf holds
	stored  int64      // bytes in chunks 0..n-1, all full
	buf     *[]byte    // pooled; holds the first len(*buf) bytes of chunk n; nil once done
	partial any        // _id of chunk n when a shorter version of it is stored (Flush, resume), else nil
	span    trace.Span // from the writer's start to Close or Abort
}

// NewGridFSWriter starts the file id in bucket (e.g. "fs") of db. Like the driver, it creates
// the spec's indexes first when the bucket has no file yet.
func NewGridFSWriter(ctx context.Context, db *mongo.Database, bucket string, id any) (*GridFSWriter, error) {
	w := newGridFSWriter(ctx, db, bucket, id)
	if err := w.ensureIndexes(); err != nil {
		w.release()
		return nil, err
	}
	return w, nil
}

// ResumeGridFSWriter continues the file id, whose first length bytes an earlier writer
// stored (Flush). A partial last chunk is read back into the buffer and replaced once it
// grows, so the file keeps one chunk per index.
func ResumeGridFSWriter(ctx context.Context, db *mongo.Database, bucket string, id any, length int64) (*GridFSWriter, error) {
	w := newGridFSWriter(ctx, db, bucket, id)
	w.n = int32(length / gridfsChunkSize)
	w.stored = int64(w.n) * gridfsChunkSize
	if rest := int(length % gridfsChunkSize); rest > 0 {
		var last struct {
			ID   any    `bson:"_id"`
			Data []byte `bson:"data"`
		}
		err := w.chunks.FindOne(ctx, bson.D{{Key: "_id", Value: gridfsChunkID(id, w.n)}}).Decode(&last)
		if errors.Is(err, mongo.ErrNoDocuments) { // stored before the kit named chunks
			err = w.chunks.FindOne(ctx, bson.D{{Key: "files_id", Value: id}, {Key: "n", Value: w.n}}).Decode(&last)
		}
		if err == nil && len(last.Data) != rest {
			err = fmt.Errorf("gridfs resume: chunk %d holds %d bytes, want %d", w.n, len(last.Data), rest)
		}
		if err != nil {
			w.release()
			return nil, err
		}
		*w.buf = append(*w.buf, last.Data...)
		w.partial = last.ID
	}
	return w, nil
}

// TrimGridFSChunks cuts the unfinished file id back to its first length bytes: it drops the
// chunks after them and shortens the chunk they end in. A resumable upload stores bytes before
// it records how many it has, so a request that failed between the two leaves more than its
// record says; trimming first makes ResumeGridFSWriter at the recorded length exact.
func TrimGridFSChunks(ctx context.Context, db *mongo.Database, bucket string, id any, length int64) error {
	chunks := db.Collection(bucket + ".chunks")
	n := int32(length / gridfsChunkSize)
	rest := int(length % gridfsChunkSize)
	after := n
	if rest == 0 {
		after = n - 1 // chunk n would start at length: drop it too
	}
	if _, err := chunks.DeleteMany(ctx, bson.D{{Key: "files_id", Value: id}, {Key: "n", Value: bson.D{{Key: "$gt", Value: after}}}}); err != nil {
		return err
	}
	if rest == 0 {
		return nil
	}
	var last struct {
		ID   any    `bson:"_id"`
		Data []byte `bson:"data"`
	}
	err := chunks.FindOne(ctx, bson.D{{Key: "files_id", Value: id}, {Key: "n", Value: n}}).Decode(&last)
	if err != nil || len(last.Data) <= rest {
		return err // shorter: ResumeGridFSWriter reports it
	}
	_, err = chunks.UpdateOne(ctx, bson.D{{Key: "_id", Value: last.ID}}, bson.D{{Key: "$set", Value: bson.D{
		{Key: "data", Value: bson.Binary{Subtype: bson.TypeBinaryGeneric, Data: last.Data[:rest]}}}}})
	return err
}

func newGridFSWriter(ctx context.Context, db *mongo.Database, bucket string, id any) *GridFSWriter {
	ctx, span := startSpan(ctx, "gridfs.write", attribute.String("db.namespace", db.Name()), attribute.String("gridfs.bucket", bucket))
	return &GridFSWriter{
		span:   span,
		ctx:    ctx,
		files:  db.Collection(bucket + ".files"),
		chunks: db.Collection(bucket + ".chunks"),
		id:     id,
		buf:    gridfsChunks.Get().(*[]byte),
	}
}

// Length is the number of bytes written so far, stored or buffered.
func (w *GridFSWriter) Length() int64 {
	if w.buf == nil {
		return w.stored
	}
	return w.stored + int64(len(*w.buf))
}

// Write buffers p, storing each chunk as it fills.
func (w *GridFSWriter) Write(p []byte) (int, error) {
	if w.buf == nil {
		return 0, errGridFSWriterDone
	}
	written := 0
	for len(p) > 0 {
		if len(*w.buf) == gridfsChunkSize {
			if err := w.storeFull(); err != nil {
				return written, err
			}
		}
		k := min(len(p), gridfsChunkSize-len(*w.buf))
		*w.buf = append(*w.buf, p[:k]...)
		p = p[k:]
		written += k
	}
	return written, nil
}

// ReadFrom reads r straight into the chunk buffer (io.Copy uses it), storing each chunk as it
// fills, until r ends.
func (w *GridFSWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.buf == nil {
		return 0, errGridFSWriterDone
	}
	var total int64
	for {
		if len(*w.buf) == gridfsChunkSize {
			if err := w.storeFull(); err != nil {
				return total, err
			}
		}
		b := *w.buf
		k, err := r.Read(b[len(b):gridfsChunkSize])
		*w.buf = b[:len(b)+k]
		total += int64(k)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Flush stores the buffered part of the last chunk, so that ResumeGridFSWriter at Length can
// go on from here. The writer goes on too: a later store of that chunk replaces it.
func (w *GridFSWriter) Flush() error {
	if w.buf == nil {
		return errGridFSWriterDone
	}
	if len(*w.buf) == 0 {
		return nil
	}
	return w.storeChunk(w.ctx)
}

// Close stores the last chunk and then the files document, which makes the file visible to
// readers. On an error the chunks stay: Abort removes them.
func (w *GridFSWriter) Close(filename string, metadata any) error {
	if w.buf == nil {
		return errGridFSWriterDone
	}
	length := w.Length()
	if len(*w.buf) > 0 {
		if err := w.storeChunk(w.ctx); err != nil {
			return err
		}
	}
	w.release()
	w.span.SetAttributes(attribute.Int64("gridfs.length", length))
	defer w.span.End()
	doc := bson.D{
		{Key: "_id", Value: w.id},
		{Key: "length", Value: length},
		{Key: "chunkSize", Value: int32(gridfsChunkSize)},
		{Key: "uploadDate", Value: bson.NewDateTimeFromTime(time.Now())},
		{Key: "filename", Value: filename},
	}
	if metadata != nil {
		doc = append(doc, bson.E{Key: "metadata", Value: metadata})
	}
	_, err := w.files.InsertOne(w.ctx, doc)
	return err
}

// Abort deletes every chunk of the file, this writer's and earlier ones', and ends the writer.
// It takes its own context: the writer's may have ended, and a client that hangs up must
// leave nothing behind.
func (w *GridFSWriter) Abort(ctx context.Context) error {
	w.release()
	w.span.SetStatus(codes.Error, "aborted")
	defer w.span.End()
	_, err := w.chunks.DeleteMany(ctx, bson.D{{Key: "files_id", Value: w.id}}) // one pass: see gridfschunks.go
	return err
}

// storeFull stores the full chunk in the buffer and moves on to the next one.
func (w *GridFSWriter) storeFull() error {
	if err := w.storeChunk(w.ctx); err != nil {
		return err
	}
	w.n++
	w.stored += gridfsChunkSize
	*w.buf = (*w.buf)[:0]
	w.partial = nil
	return nil
}

// storeChunk inserts the buffer as chunk n, or replaces the shorter version of it stored before.
func (w *GridFSWriter) storeChunk(ctx context.Context) error {
	id := w.partial
	if id == nil {
		id = gridfsChunkID(w.id, w.n)
	}
	if id == nil {
		id = bson.NewObjectID()
	}
	doc := bson.D{
		{Key: "_id", Value: id},
		{Key: "files_id", Value: w.id},
		{Key: "n", Value: w.n},
		{Key: "data", Value: bson.Binary{Subtype: bson.TypeBinaryGeneric, Data: *w.buf}},
	}
	var err error
	if w.partial != nil {
		_, err = w.chunks.ReplaceOne(ctx, bson.D{{Key: "_id", Value: id}}, doc)
	} else {
		_, err = w.chunks.InsertOne(ctx, doc)
	}
	if err != nil {
		return fmt.Errorf("gridfs chunk %d: %w", w.n, err)
	}
	w.partial = id
	return nil
}

// ensureIndexes creates the spec's indexes when the bucket has no file yet, as the driver does
// before its first write: a unique {files_id, n} on chunks, {filename, uploadDate} on files.
func (w *GridFSWriter) ensureIndexes() error {
	err := w.files.FindOne(w.ctx, bson.D{}).Err()
	if !errors.Is(err, mongo.ErrNoDocuments) {
		return err // nil: the bucket has files, so it has its indexes
	}
	if _, err := w.files.Indexes().CreateOne(w.ctx, mongo.IndexModel{
		Keys: bson.D{{Key: "filename", Value: int32(1)}, {Key: "uploadDate", Value: int32(1)}},
	}); err != nil {
		return err
	}
	_, err = w.chunks.Indexes().CreateOne(w.ctx, mongo.IndexModel{
		Keys:    bson.D{{Key: "files_id", Value: int32(1)}, {Key: "n", Value: int32(1)}},
		Options: options.Index().SetUnique(true),
	})
	return err
}

// release hands the buffer back to the pool; the writer is done.
func (w *GridFSWriter) release() {
	if w.buf != nil {
		*w.buf = (*w.buf)[:0]
		gridfsChunks.Put(w.buf)
		w.buf = nil
	}
}
