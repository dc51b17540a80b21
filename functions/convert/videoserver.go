package function

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// videoServer lends one stored video to ffprobe and ffmpeg over loopback HTTP, Range
// requests included, straight from GridFS. ffmpeg converts while the video is being read,
// instead of after a full copy to disk, and an MP4 whose index sits at the end still works:
// ffmpeg seeks to it with a Range request. Only the tools of this delivery know the URL (a
// random path on a port of its own).
//
// A storage error while the tools read is kept: a tool that failed because storage did is
// retried, not reported as a damaged file.
type videoServer struct {
	url  string
	srv  *http.Server
	span trace.Span // gridfs.read: from serveVideo to close
	once sync.Once

	mu      sync.Mutex
	readErr error // the first storage error a request met
}

// serveVideo starts serving the video oid (mongo.ErrFileNotFound when there is none).
func (d *delivery) serveVideo(ctx context.Context, oid bson.ObjectID) (*videoServer, error) {
	// Opening reads the files document: a missing video is known before any tool runs.
	db := d.videosDB()
	file, err := OpenGridFSReader(ctx, db, "fs", oid, 0)
	if err != nil {
		return nil, err
	}
	size := file.Length()
	file.Close()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("serve the video to ffmpeg: %w", err)
	}
	_, span := startSpan(ctx, "gridfs.read", attribute.String("gridfs.bucket", d.prefix+"videos/fs"),
		attribute.Int64("gridfs.length", size))
	path := "/" + rand.Text()
	v := &videoServer{url: "http://" + ln.Addr().String() + path, span: span}
	v.srv = &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != path || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
				http.NotFound(w, r)
				return
			}
			f := &storedVideo{ctx: r.Context(), db: db, oid: oid, size: size}
			defer f.Close()
			w.Header().Set("Content-Type", "application/octet-stream") // no sniffing read
			http.ServeContent(w, r, "", time.Time{}, f)
			if f.err != nil && r.Context().Err() == nil {
				v.failed(f.err)
			}
		}),
	}
	go v.srv.Serve(ln)
	return v, nil
}

// close stops the server and ends its span; later calls do nothing.
func (v *videoServer) close() {
	v.once.Do(func() {
		v.srv.Close()
		endSpan(v.span, v.err())
	})
}

// err is the first storage error a tool's request met, nil when none did.
func (v *videoServer) err() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.readErr
}

func (v *videoServer) failed(err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.readErr == nil {
		v.readErr = fmt.Errorf("read the video: %w", err)
	}
}

// storedVideo is the video as an io.ReadSeeker for http.ServeContent: a seek only moves
// the offset, and the first read after it opens a GridFS reader there.
type storedVideo struct {
	ctx  context.Context
	db   *mongo.Database
	oid  bson.ObjectID
	size int64

	pos int64
	r   *GridFSReader
	err error // the storage error a read met
}

func (f *storedVideo) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		offset += f.pos
	case io.SeekEnd:
		offset += f.size
	}
	if offset < 0 {
		return f.pos, errors.New("seek before the start of the video")
	}
	if offset != f.pos {
		f.Close()
		f.pos = offset
	}
	return f.pos, nil
}

func (f *storedVideo) Read(p []byte) (int, error) {
	if f.pos >= f.size {
		return 0, io.EOF
	}
	if f.r == nil {
		r, err := OpenGridFSReader(f.ctx, f.db, "fs", f.oid, f.pos)
		if err != nil {
			f.err = err
			return 0, err
		}
		f.r = r
	}
	n, err := f.r.Read(p)
	f.pos += int64(n)
	if err != nil && err != io.EOF {
		f.err = err
	}
	return n, err
}

// Close ends the GridFS reader, if one is open.
func (f *storedVideo) Close() error {
	if f.r == nil {
		return nil
	}
	err := f.r.Close()
	f.r = nil
	return err
}
