package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// bucket is a GridFS bucket with the chunk size every function writes with.
func bucket(c *mongo.Client, db string) *mongo.GridFSBucket {
	return c.Database(db).GridFSBucket(options.GridFSBucket().SetChunkSizeBytes(chunkSize))
}

// gridfsRead streams a GridFS file into w, as convert reads a video and
// download an MP3.
func gridfsRead(ctx context.Context, c *mongo.Client, db string, id bson.ObjectID, w io.Writer) (int64, error) {
	ds, err := bucket(c, db).OpenDownloadStream(ctx, id)
	if err != nil {
		return 0, err
	}
	defer ds.Close()
	return io.Copy(w, ds)
}

// gridfsReadFile is gridfsRead into a new file, as convert does before ffmpeg.
func gridfsReadFile(ctx context.Context, c *mongo.Client, db string, id bson.ObjectID, name string) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if _, err := gridfsRead(ctx, c, db, id, f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// gridfsWrite streams r into a new GridFS file with 128 KiB chunks.
func gridfsWrite(ctx context.Context, c *mongo.Client, db string, id bson.ObjectID, name string, r io.Reader, meta bson.D) (int64, error) {
	opts := options.GridFSUpload().SetChunkSizeBytes(chunkSize)
	if meta != nil {
		opts.SetMetadata(meta)
	}
	us, err := bucket(c, db).OpenUploadStreamWithID(ctx, id, name, opts)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(us, r)
	if err != nil {
		us.Abort()
		return n, err
	}
	return n, us.Close()
}

func gridfsWriteFile(ctx context.Context, c *mongo.Client, db string, id bson.ObjectID, path string, meta bson.D) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return gridfsWrite(ctx, c, db, id, "bench.mp3", f, meta)
}

// generated is a deterministic stream of n bytes: an MP4 ftyp box (so the
// upload sniffs it as video/mp4), then a fixed 1 MiB block of pseudo-random
// bytes, repeated. Random bytes do not compress, as real media does not.
type generated struct {
	n, off int64
	head   []byte
}

var randomBlock = func() []byte {
	b := make([]byte, 1<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i+8 <= len(b); i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}()

// ftyp is an ISO BMFF file type box: size 24, "ftyp", brand mp42, version, compatible isom, mp42.
var ftyp = []byte{0, 0, 0, 24, 'f', 't', 'y', 'p', 'm', 'p', '4', '2', 0, 0, 0, 0, 'i', 's', 'o', 'm', 'm', 'p', '4', '2'}

// id3 starts an MP3 with an (empty) ID3v2 tag.
var id3 = []byte{'I', 'D', '3', 4, 0, 0, 0, 0, 0, 0}

func newGenerated(n int64, head []byte) *generated { return &generated{n: n, head: head} }

func (g *generated) Read(p []byte) (int, error) {
	if g.off >= g.n {
		return 0, io.EOF
	}
	if int64(len(p)) > g.n-g.off {
		p = p[:g.n-g.off]
	}
	var k int
	if g.off < int64(len(g.head)) {
		k = copy(p, g.head[g.off:])
	} else {
		k = copy(p, randomBlock[g.off%int64(len(randomBlock)):])
	}
	g.off += int64(k)
	return k, nil
}

// postEvent POSTs a CloudEvent in binary mode, as the Broker delivers it, and
// returns the reply's type.
func postEvent(ctx context.Context, url, typ, id, source string, data any) (string, error) {
	body, err := json.Marshal(data)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("Ce-Specversion", "1.0")
	h.Set("Ce-Id", id)
	h.Set("Ce-Type", typ)
	h.Set("Ce-Source", source)
	h.Set("Ce-Subject", id)
	h.Set("Ce-Time", time.Now().UTC().Format(time.RFC3339Nano))
	resp, err := httpClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	reply, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s event: %d %s", typ, resp.StatusCode, reply)
	}
	return resp.Header.Get("Ce-Type"), nil
}
