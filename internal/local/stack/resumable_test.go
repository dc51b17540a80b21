package stack_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	upload "mp3converter/functions/upload"
	"mp3converter/internal/client"
	"mp3converter/internal/local/funchost"
	"mp3converter/internal/stacktest"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// resumableVideo writes an MPEG-TS video of noise (about 35 MB a second: big, yet quick to
// make) of MP3C_TUS_SECONDS seconds (default 1; 6 makes the 200 MB case).
func resumableVideo(t *testing.T) (path string, size int64) {
	seconds := 1
	if s, err := strconv.Atoi(os.Getenv("MP3C_TUS_SECONDS")); err == nil && s > 0 {
		seconds = s
	}
	path = filepath.Join(t.TempDir(), "big.ts")
	stacktest.FFmpeg(t, path, "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25,noise=alls=100:allf=t",
		"-f", "lavfi", "-i", "sine=frequency=440", "-t", strconv.Itoa(seconds),
		"-c:v", "mpeg2video", "-q:v", "2", "-c:a", "mp2", "-shortest")
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, st.Size()
}

// countingTransport counts the bytes it writes to the network.
func countingTransport(written *atomic.Int64) *http.Transport {
	d := &net.Dialer{}
	return &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		return &countingConn{Conn: c, written: written}, err
	}}
}

type countingConn struct {
	net.Conn
	written *atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

// A resumable upload cut at about half (the connection closed mid-PATCH) is resumed on another
// instance of upload sharing the MongoDB: only the rest goes over the wire, the stored video
// is the file byte for byte, and it makes one job, one MP3, one email. Along the way: the
// refusals (another user's 404, a wrong offset 409, too long 413, not media 415).
func TestResumableUploadCutAndResumedElsewhere(t *testing.T) {
	e := startStack(t, stacktest.Options{Env: map[string]string{"KEEP_VIDEOS": "true"}})
	ctx := context.Background()
	video, size := resumableVideo(t)
	admin := e.Client(e.AdminToken)

	uploadURL, err := admin.CreateUpload(ctx, size, "big.ts", "video/mp2t")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(uploadURL)
	fid := strings.TrimPrefix(u.Path, "/upload/")

	// The first PATCH, through web, cut at half: the connection closes mid-body.
	half := size / 2
	f, err := os.Open(video)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "PATCH %s HTTP/1.1\r\nHost: %s\r\nTus-Resumable: 1.0.0\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: %d\r\n\r\n",
		u.Path, u.Host, e.AdminToken, size)
	if _, err := io.CopyN(conn, f, half); err != nil {
		t.Fatal(err)
	}
	conn.Close()

	// The server keeps what reached it once the cut request has ended there.
	var offset int64
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		st, err := admin.UploadOffset(ctx, uploadURL)
		if err == nil && st.Offset > 0 {
			offset = st.Offset
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server kept nothing of the cut PATCH: %+v %v", st, err)
		}
	}
	if offset > half {
		t.Fatalf("offset %d after sending %d", offset, half)
	}

	// Refusals, through web.
	bob := e.Client(e.AddUser(t, "bob@example.com"))
	if _, err := bob.UploadOffset(ctx, uploadURL); status(err) != http.StatusNotFound {
		t.Errorf("bob's HEAD: %v, want 404", err)
	}
	if _, err := bob.PatchUpload(ctx, uploadURL, offset, strings.NewReader("x"), 1); status(err) != http.StatusNotFound {
		t.Errorf("bob's PATCH: %v, want 404", err)
	}
	if _, err := admin.PatchUpload(ctx, uploadURL, offset-1, strings.NewReader("xy"), 2); status(err) != http.StatusConflict {
		t.Errorf("PATCH at a wrong offset: %v, want 409", err)
	}
	if _, err := admin.CreateUpload(ctx, 3<<30, "huge.ts", "video/mp2t"); status(err) != http.StatusRequestEntityTooLarge {
		t.Errorf("create over MAX_UPLOAD_BYTES: %v, want 413", err)
	}
	text := bytes.Repeat([]byte("not a video at all\n"), 20000)
	textURL, err := admin.CreateUpload(ctx, int64(len(text)), "notes.ts", "video/mp2t")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.PatchUpload(ctx, textURL, 0, bytes.NewReader(text), int64(len(text))); status(err) != http.StatusUnsupportedMediaType {
		t.Errorf("PATCH of text: %v, want 415", err)
	}
	videos := videosDB(t, e)
	textID, _ := bson.ObjectIDFromHex(strings.TrimPrefix(textURL[strings.LastIndex(textURL, "/upload/"):], "/upload/"))
	for _, coll := range []string{"uploads", "fs.chunks", "fs.files"} {
		key := "_id"
		if coll == "fs.chunks" {
			key = "files_id"
		}
		if n, _ := videos.Collection(coll).CountDocuments(ctx, bson.D{{Key: key, Value: textID}}); n != 0 {
			t.Errorf("the refused text left %d documents in %s", n, coll)
		}
	}

	// A second upload instance on the same MongoDB takes the rest.
	other := startUploadInstance(t, e)
	var written atomic.Int64
	elsewhere := &client.Client{Server: other, Token: e.AdminToken, HTTP: &http.Client{Transport: countingTransport(&written)}}
	otherURL := other + "/upload/" + fid
	var done *client.Uploaded
	for attempt := 0; done == nil; attempt++ {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		written.Store(0)
		st, err := elsewhere.PatchUpload(ctx, otherURL, offset, f, size-offset)
		if _, again := client.RetryUpload(err); again && status(err) == http.StatusLocked && attempt < 50 {
			continue // the cut request had not yet let go of the upload
		}
		if err != nil || st.Done == nil {
			t.Fatalf("resume: %+v %v", st, err)
		}
		done = st.Done
	}
	if sent := written.Load(); sent < size-offset || sent > size-offset+4096 {
		t.Errorf("the resume wrote %d bytes on the wire for the %d missing", sent, size-offset)
	} else {
		t.Logf("%d bytes cut at %d (%d kept by the server); the resume sent %d bytes on the wire", size, half, offset, sent)
	}
	if done.VideoFID != fid || !strings.HasSuffix(done.StatusURL, "/jobs/"+fid) {
		t.Errorf("done: %+v", done)
	}

	msg := nextMail(t, e.Mail)
	if !strings.Contains(msg.subject, "ready") {
		t.Fatalf("subject %q", msg.subject)
	}
	if job := jobOf(t, e, fid); job.State != "done" || job.Size != size || job.Filename != "big.ts" {
		t.Fatalf("job %+v", job)
	}
	jobs, _, err := admin.Jobs(ctx, 100, "")
	if err != nil || len(jobs) != 1 {
		t.Fatalf("%d jobs, want 1 (%v)", len(jobs), err)
	}
	if n, _ := mp3sDB(t, e).Collection("fs.files").CountDocuments(ctx, bson.D{}); n != 1 {
		t.Errorf("%d MP3s, want 1", n)
	}
	id, _ := bson.ObjectIDFromHex(fid)
	stored, err := videos.GridFSBucket().OpenDownloadStream(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	defer stored.Close()
	h1, h2 := sha256.New(), sha256.New()
	if _, err := io.Copy(h1, stored); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(h2, f)
	if !bytes.Equal(h1.Sum(nil), h2.Sum(nil)) {
		t.Error("the stored video differs from the file")
	}
	select {
	case m := <-e.Mail.Received:
		t.Errorf("a second email: %q", parseMail(t, m).subject)
	default:
	}
}

// startUploadInstance hosts another upload function configured as the stack's own, and
// returns its base URL.
func startUploadInstance(t *testing.T, e *stacktest.Stack) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- funchost.Serve(ctx, funchost.Function{Name: "upload", Instance: upload.New(), Listener: ln,
			Config: map[string]string{"MONGODB_URI": e.MongoURI, "MONGODB_DB_PREFIX": e.Env["MONGODB_DB_PREFIX"],
				"VALIDATE_URL": e.Functions["validate"] + "/validate", "K_SINK": e.BrokerURL, "PUBLIC_URL": e.URL}})
	}()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("second upload: %v", err)
		}
	})
	base := "http://" + ln.Addr().String()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		req, _ := http.NewRequest(http.MethodOptions, base+"/upload/", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the second upload instance did not start")
		}
	}
}

func mongoDB(t *testing.T, e *stacktest.Stack, name string) *mongo.Database {
	c, err := mongo.Connect(options.Client().ApplyURI(e.MongoURI))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return c.Database(e.Env["MONGODB_DB_PREFIX"] + name)
}

func videosDB(t *testing.T, e *stacktest.Stack) *mongo.Database { return mongoDB(t, e, "videos") }
func mp3sDB(t *testing.T, e *stacktest.Stack) *mongo.Database   { return mongoDB(t, e, "mp3s") }
