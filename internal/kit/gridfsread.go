package kit

import (
	"context"
	"errors"
	"fmt"
	"io"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// GridFSReader reads one GridFS file, chunk by chunk by _id (see gridfsChunkID), so that
// its cost does not grow with the other files stored. A file whose chunks have other ids is
// read through the driver's download stream (a files_id query) instead.
//
// Read uses the context given to OpenGridFSReader, as the driver's stream does. A reader is
// not safe for concurrent use.
type GridFSReader struct {
	ctx       context.Context
	db        *mongo.Database
	bucket    string
	id        any
	length    int64
	chunkSize int64

	pos     int64  // offset of the next byte Read returns
	n       int32  // index of the chunk in data
	data    []byte // chunk n, or nil before the first fetch
	ahead   []chan fetched
	aheadAt int32 // index of the chunk ahead[0] brings
	driver  *mongo.GridFSDownloadStream
}

// gridfsReadAhead is how many chunk queries a reader keeps in flight: each is one round
// trip to the database, which would otherwise add up chunk after chunk.
const gridfsReadAhead = 4

type fetched struct {
	data []byte
	err  error
}

// OpenGridFSReader opens file id of bucket in db, to be read from offset (0 for the whole
// file). It answers mongo.ErrFileNotFound when the file has no files document.
func OpenGridFSReader(ctx context.Context, db *mongo.Database, bucket string, id any, offset int64) (*GridFSReader, error) {
	var file struct {
		Length    int64 `bson:"length"`
		ChunkSize int64 `bson:"chunkSize"`
	}
	err := db.Collection(bucket+".files").FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&file)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, mongo.ErrFileNotFound
	}
	if err != nil {
		return nil, err
	}
	if file.Length > 0 && file.ChunkSize <= 0 {
		return nil, fmt.Errorf("gridfs file %v: chunk size %d", id, file.ChunkSize)
	}
	if offset < 0 || offset > file.Length {
		return nil, fmt.Errorf("gridfs file %v: offset %d outside its %d bytes", id, offset, file.Length)
	}
	return &GridFSReader{ctx: ctx, db: db, bucket: bucket, id: id, length: file.Length,
		chunkSize: file.ChunkSize, pos: offset, n: -1}, nil
}

// Length is the file's size in bytes.
func (r *GridFSReader) Length() int64 { return r.length }

// Read reads the next bytes of the file, fetching one chunk when it needs it.
func (r *GridFSReader) Read(p []byte) (int, error) {
	if r.driver != nil {
		return r.driver.Read(p)
	}
	if r.pos >= r.length {
		return 0, io.EOF
	}
	if n := int32(r.pos / r.chunkSize); n != r.n {
		if err := r.fetch(n); err != nil {
			return 0, err
		}
		if r.driver != nil {
			return r.driver.Read(p)
		}
	}
	k := copy(p, r.data[r.pos-int64(r.n)*r.chunkSize:])
	r.pos += int64(k)
	return k, nil
}

// Close waits for the chunk queries in flight and ends the driver's stream, if any.
func (r *GridFSReader) Close() error {
	r.dropAhead()
	if r.driver != nil {
		return r.driver.Close()
	}
	return nil
}

// query starts fetching chunk n by its kit _id.
func (r *GridFSReader) query(n int32) chan fetched {
	ch := make(chan fetched, 1)
	cid := gridfsChunkID(r.id, n)
	if cid == nil {
		ch <- fetched{err: mongo.ErrNoDocuments}
		return ch
	}
	go func() {
		var chunk struct {
			Data []byte `bson:"data"`
		}
		err := r.db.Collection(r.bucket+".chunks").FindOne(r.ctx, bson.D{{Key: "_id", Value: cid}}).Decode(&chunk)
		ch <- fetched{chunk.Data, err}
	}()
	return ch
}

// dropAhead waits for the queries in flight and forgets their chunks.
func (r *GridFSReader) dropAhead() {
	for _, ch := range r.ahead {
		<-ch
	}
	r.ahead = nil
}

// fetch reads chunk n by its kit _id. When the first chunk fetched is not there under that
// _id, the file was written otherwise: the reader goes on through the driver's stream.
func (r *GridFSReader) fetch(n int32) error {
	if len(r.ahead) == 0 || r.aheadAt != n {
		r.dropAhead()
		r.aheadAt = n
	}
	last := int32((r.length - 1) / r.chunkSize)
	for k := r.aheadAt + int32(len(r.ahead)); k <= last && len(r.ahead) < gridfsReadAhead; k++ {
		r.ahead = append(r.ahead, r.query(k))
	}
	res := <-r.ahead[0]
	r.ahead, r.aheadAt = r.ahead[1:], r.aheadAt+1
	chunk, err := struct{ Data []byte }{res.data}, res.err
	switch {
	case errors.Is(err, mongo.ErrNoDocuments) && r.data == nil:
		r.dropAhead()
		return r.openDriverStream()
	case errors.Is(err, mongo.ErrNoDocuments):
		return fmt.Errorf("gridfs file %v: chunk %d is missing", r.id, n)
	case err != nil:
		return err
	}
	want := min(r.chunkSize, r.length-int64(n)*r.chunkSize)
	if int64(len(chunk.Data)) != want {
		return fmt.Errorf("gridfs file %v: chunk %d holds %d bytes, want %d", r.id, n, len(chunk.Data), want)
	}
	r.n, r.data = n, chunk.Data
	return nil
}

// openDriverStream goes on reading at pos through the driver (a files_id query).
func (r *GridFSReader) openDriverStream() error {
	ds, err := r.db.GridFSBucket(options.GridFSBucket().SetName(r.bucket)).OpenDownloadStream(r.ctx, r.id)
	if err != nil {
		return err
	}
	if r.pos > 0 {
		// No Seek in the driver's stream: Skip reads (and discards) whole chunks up to pos.
		if k, err := ds.Skip(r.pos); err != nil || k != r.pos {
			ds.Close()
			return fmt.Errorf("gridfs file %v: skipped %d of %d bytes: %v", r.id, k, r.pos, err)
		}
	}
	r.driver = ds
	return nil
}
