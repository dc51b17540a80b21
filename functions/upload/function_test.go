package function

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

const (
	aliceToken = "alice-token"
	alice      = "alice@example.com"
	bobToken   = "bob-token"
	bob        = "bob@example.com"
	aliceID    = "7" // their user ids: what uploads are owned by
	bobID      = "8"
	mib        = 1 << 20
)

// testEnv is one started Function on a fresh database prefix, behind a real HTTP server,
// with a stub validate and a stub broker.
type testEnv struct {
	prefix   string
	db       *mongo.Database // <prefix>videos, for assertions
	fn       *Function
	srv      *httptest.Server
	handled  chan struct{} // receives once each time Handle returns
	validate *validateStub
	broker   *brokerStub
}

// newEnv starts a Function; cfg overrides the defaults, an empty value removes a key.
func newEnv(t testing.TB, cfg map[string]string) *testEnv {
	t.Helper()
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	e := &testEnv{
		prefix:   "t" + hex.EncodeToString(rnd[:]) + "_",
		handled:  make(chan struct{}, 16),
		validate: newValidateStub(t),
		broker:   newBrokerStub(t),
	}
	client, err := mongo.Connect(options.Client().ApplyURI(mongoURI))
	if err != nil {
		t.Fatal(err)
	}
	e.db = client.Database(e.prefix + "videos")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, name := range []string{e.prefix + "videos", e.prefix + "mp3s"} {
			if err := client.Database(name).Drop(ctx); err != nil {
				t.Errorf("drop %s: %v", name, err)
			}
		}
		_ = client.Disconnect(ctx)
	})

	full := map[string]string{
		"MONGODB_URI":       mongoURI,
		"MONGODB_DB_PREFIX": e.prefix,
		"VALIDATE_URL":      e.validate.srv.URL + "/validate",
		"K_SINK":            e.broker.srv.URL,
	}
	for k, v := range cfg {
		if v == "" {
			delete(full, k)
		} else {
			full[k] = v
		}
	}
	e.fn = New()
	if err := e.fn.Start(context.Background(), full); err != nil {
		t.Fatal("Start:", err)
	}
	t.Cleanup(func() { _ = e.fn.Stop(context.Background()) })
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.fn.Handle(w, r)
		select {
		case e.handled <- struct{}{}:
		default:
		}
	}))
	t.Cleanup(e.srv.Close)
	return e
}

// validateStub answers like validate: alice-token is alice, anything else is refused.
type validateStub struct {
	srv   *httptest.Server
	calls atomic.Int64
}

func newValidateStub(t testing.TB) *validateStub {
	v := &validateStub{}
	v.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v.calls.Add(1)
		user := map[string]string{"Bearer " + aliceToken: alice, "Bearer " + bobToken: bob}[r.Header.Get("Authorization")]
		sub := map[string]string{alice: aliceID, bob: bobID}[user]
		if user == "" {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":"invalid token"}`)
			return
		}
		now := time.Now().Unix()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"username": user, "admin": false, "sub": sub, "iss": "mp3converter", "aud": []string{"mp3converter"},
			"iat": now, "nbf": now, "exp": now + 3600, "jti": "0123456789abcdef0123456789abcdef",
		})
	}))
	t.Cleanup(v.srv.Close)
	return v
}

// brokerStub is a broker ingress: it answers 500 to the first `failures` requests (all of
// them when negative), then 202, and keeps what it accepted.
type brokerStub struct {
	srv      *httptest.Server
	mu       sync.Mutex
	failures int
	status   int // the failure status, 500 unless set
	attempts int
	events   []cloudevents.Event
}

func newBrokerStub(t testing.TB) *brokerStub {
	b := &brokerStub{}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.attempts++
		if b.failures != 0 {
			if b.failures > 0 {
				b.failures--
			}
			status := b.status
			if status == 0 {
				status = http.StatusInternalServerError
			}
			w.WriteHeader(status)
			return
		}
		ev, err := cehttp.NewEventFromHTTPRequest(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if len(b.events) < 100 {
			b.events = append(b.events, *ev)
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *brokerStub) set(failures, status int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures, b.status = failures, status
}

func (b *brokerStub) snapshot() (attempts int, events []cloudevents.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.attempts, append([]cloudevents.Event(nil), b.events...)
}

// mediaReader yields n bytes that sniff as video/mp4: an ftyp box, then a deterministic
// pseudo-random stream.
func mediaReader(n int64, seed byte) io.Reader {
	ftyp := []byte("\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom")
	var key [32]byte
	key[0] = seed
	return io.LimitReader(io.MultiReader(bytes.NewReader(ftyp), mrand.NewChaCha8(key)), n)
}

func mediaBytes(t testing.TB, n int64, seed byte) []byte {
	b, err := io.ReadAll(mediaReader(n, seed))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type formPart struct {
	field, filename, contentType string
	data                         []byte
	file                         bool // add a filename parameter even when filename is ""
}

func multipartBody(t testing.TB, parts ...formPart) (body []byte, contentType string) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		h := textproto.MIMEHeader{}
		cd := fmt.Sprintf(`form-data; name=%q`, p.field)
		if p.file || p.filename != "" {
			cd += fmt.Sprintf(`; filename=%q`, p.filename)
		}
		h.Set("Content-Disposition", cd)
		if p.contentType != "" {
			h.Set("Content-Type", p.contentType)
		}
		w, err := mw.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write(p.data)
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), mw.FormDataContentType()
}

func (e *testEnv) request(t testing.TB, query, contentType string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/upload"+query, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+aliceToken)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return req
}

// do sends req and returns the status and the decoded JSON body.
func do(t testing.TB, req *http.Request) (*http.Response, map[string]string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("status %d: body is not JSON: %v", resp.StatusCode, err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	return resp, out
}

func (e *testEnv) counts(t testing.TB) (files, chunks, jobs int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n := func(coll string) int64 {
		c, err := e.db.Collection(coll).CountDocuments(ctx, bson.D{})
		if err != nil {
			t.Fatalf("count %s: %v", coll, err)
		}
		return c
	}
	return n("fs.files"), n("fs.chunks"), n("jobs")
}

func (e *testEnv) assertNothingLeft(t testing.TB) {
	t.Helper()
	if files, chunks, jobs := e.counts(t); files+chunks+jobs != 0 {
		t.Errorf("left behind: %d fs.files, %d fs.chunks, %d jobs", files, chunks, jobs)
	}
}

// stored reads a GridFS file back and returns its SHA-256 and files document.
func (e *testEnv) stored(t testing.TB, fid bson.ObjectID) ([32]byte, *mongo.GridFSFile) {
	t.Helper()
	ds, err := e.db.GridFSBucket().OpenDownloadStream(context.Background(), fid)
	if err != nil {
		t.Fatal("open stored file:", err)
	}
	defer ds.Close()
	h := sha256.New()
	if _, err := io.Copy(h, ds); err != nil {
		t.Fatal("read stored file:", err)
	}
	return [32]byte(h.Sum(nil)), ds.GetFile()
}

type jobDoc struct {
	ID          bson.ObjectID `bson:"_id"`
	OwnerID     string        `bson:"owner_id"`
	Username    string        `bson:"username"`
	Filename    string        `bson:"filename"`
	ContentType string        `bson:"content_type"`
	Size        int64         `bson:"size"`
	State       string        `bson:"state"`
	Reason      string        `bson:"reason"`
	MP3FID      string        `bson:"mp3_fid"`
	Attempts    int32         `bson:"attempts"`
	CreatedAt   time.Time     `bson:"created_at"`
	UpdatedAt   time.Time     `bson:"updated_at"`
}

func (e *testEnv) job(t testing.TB, fid bson.ObjectID) jobDoc {
	t.Helper()
	var raw bson.Raw
	if err := e.db.Collection("jobs").FindOne(context.Background(), bson.D{{Key: "_id", Value: fid}}).Decode(&raw); err != nil {
		t.Fatal("job:", err)
	}
	validateJob(t, raw)
	var j jobDoc
	if err := bson.Unmarshal(raw, &j); err != nil {
		t.Fatal("job:", err)
	}
	return j
}

// validateJob checks a jobs document against ../../events/job/schema.json, the job contract.
func validateJob(t testing.TB, doc bson.Raw) {
	t.Helper()
	data, err := bson.MarshalExtJSON(doc, false, false)
	if err != nil {
		t.Fatal(err)
	}
	sch, err := jsonschema.NewCompiler().Compile("../../events/job/schema.json")
	if err != nil {
		t.Fatal(err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if err := sch.Validate(inst); err != nil {
		t.Errorf("job %s does not match events/job/schema.json: %v", data, err)
	}
}

func validateEventData(t testing.TB, data []byte) {
	t.Helper()
	sch, err := jsonschema.NewCompiler().Compile("../../events/video.uploaded.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if err := sch.Validate(inst); err != nil {
		t.Errorf("event data %s does not match the schema: %v", data, err)
	}
}

func accepted(t testing.TB, resp *http.Response, out map[string]string) bson.ObjectID {
	t.Helper()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d %v, want 202", resp.StatusCode, out)
	}
	fid, err := bson.ObjectIDFromHex(out["video_fid"])
	if err != nil {
		t.Fatalf("video_fid %q: %v", out["video_fid"], err)
	}
	if resp.Header.Get("Location") != out["status_url"] {
		t.Errorf("Location %q != status_url %q", resp.Header.Get("Location"), out["status_url"])
	}
	return fid
}

func TestUploadMultipartStoresFileJobAndEvent(t *testing.T) {
	e := newEnv(t, map[string]string{"PUBLIC_URL": "https://mp3.example.com/"})
	data := mediaBytes(t, 5*mib+12345, 1)
	body, ct := multipartBody(t,
		formPart{field: "title", data: []byte("ignored field")},
		formPart{field: "video", filename: "holiday clip.mp4", contentType: "video/mp4", data: data},
		formPart{field: "note", data: []byte("ignored too")},
	)
	resp, out := do(t, e.request(t, "", ct, bytes.NewReader(body)))
	fid := accepted(t, resp, out)
	if want := "https://mp3.example.com/jobs/" + fid.Hex(); out["status_url"] != want {
		t.Errorf("status_url = %q, want %q", out["status_url"], want)
	}

	sum, file := e.stored(t, fid)
	if sum != sha256.Sum256(data) || file.Length != int64(len(data)) {
		t.Errorf("stored file differs from the upload (length %d, want %d)", file.Length, len(data))
	}
	if file.ChunkSize != 128*1024 || file.Name != "holiday clip.mp4" {
		t.Errorf("files doc: chunkSize %d, filename %q", file.ChunkSize, file.Name)
	}
	var meta struct{ Owner_id, Username, Filename, Content_type string }
	if err := bson.Unmarshal(file.Metadata, &meta); err != nil || meta.Owner_id != aliceID || meta.Username != alice || meta.Filename != "holiday clip.mp4" || meta.Content_type != "video/mp4" {
		t.Errorf("metadata %+v (%v)", meta, err)
	}

	j := e.job(t, fid)
	if j.OwnerID != aliceID || j.Username != alice || j.Filename != "holiday clip.mp4" || j.ContentType != "video/mp4" || j.Size != int64(len(data)) ||
		j.State != "uploaded" || j.Reason != "" || j.MP3FID != "" || j.Attempts != 0 || j.CreatedAt.IsZero() || !j.UpdatedAt.Equal(j.CreatedAt) {
		t.Errorf("job = %+v", j)
	}

	attempts, events := e.broker.snapshot()
	if attempts != 1 || len(events) != 1 {
		t.Fatalf("broker saw %d attempts, %d events", attempts, len(events))
	}
	ev := events[0]
	if ev.ID() != fid.Hex() || ev.Type() != "dev.mp3converter.video.uploaded" || ev.Source() != "/functions/upload" ||
		ev.Subject() != fid.Hex() || ev.DataContentType() != "application/json" || ev.SpecVersion() != "1.0" {
		t.Errorf("event attributes: %s", ev)
	}
	validateEventData(t, ev.Data())
	var d map[string]any
	if err := json.Unmarshal(ev.Data(), &d); err != nil {
		t.Fatal(err)
	}
	if d["video_fid"] != fid.Hex() || d["username"] != alice || d["filename"] != "holiday clip.mp4" ||
		d["content_type"] != "video/mp4" || d["size"] != float64(len(data)) {
		t.Errorf("event data = %v", d)
	}
}

func TestUploadRawBody(t *testing.T) {
	e := newEnv(t, nil)
	data := mediaBytes(t, 300*1024, 2)

	resp, out := do(t, e.request(t, "?filename="+url.QueryEscape("../../etc/My\x07 \u202eClip\x00.mp4"), "video/mp4", bytes.NewReader(data)))
	fid := accepted(t, resp, out)
	if out["status_url"] != "/jobs/"+fid.Hex() {
		t.Errorf("status_url without PUBLIC_URL = %q", out["status_url"])
	}
	if j := e.job(t, fid); j.Filename != "My Clip.mp4" || j.ContentType != "video/mp4" || j.Size != int64(len(data)) {
		t.Errorf("job = %+v", j)
	}
	if sum, _ := e.stored(t, fid); sum != sha256.Sum256(data) {
		t.Error("stored file differs from the upload")
	}

	// No name, octet-stream: the name and type come from sniffing.
	req := e.request(t, "", "application/octet-stream", bytes.NewReader(data))
	req.ContentLength = -1 // chunked
	resp, out = do(t, req)
	fid = accepted(t, resp, out)
	if j := e.job(t, fid); j.Filename != "upload.mp4" || j.ContentType != "video/mp4" || j.Size != int64(len(data)) {
		t.Errorf("job = %+v", j)
	}
	if n := e.validate.calls.Load(); n != 1 {
		t.Errorf("validate called %d times for one token, want 1 (cache)", n)
	}
	if _, events := e.broker.snapshot(); len(events) != 2 {
		t.Errorf("%d events, want 2", len(events))
	}
}

// endless is a body that never ends; the server must stop reading it.
type endless struct{}

func (endless) Read(p []byte) (int, error) { return len(p), nil }

func TestUploadRejectsAndLeavesNothing(t *testing.T) {
	e := newEnv(t, map[string]string{"MAX_UPLOAD_BYTES": fmt.Sprint(20 * mib)})
	media := mediaBytes(t, 4096, 3)
	png := append([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), make([]byte, 100)...)
	pdf := []byte("%PDF-1.7\n1 0 obj\n<<>>\nendobj\n")

	multi := func(parts ...formPart) func() *http.Request {
		return func() *http.Request {
			body, ct := multipartBody(t, parts...)
			return e.request(t, "", ct, bytes.NewReader(body))
		}
	}
	raw := func(ct string, body []byte) func() *http.Request {
		return func() *http.Request { return e.request(t, "", ct, bytes.NewReader(body)) }
	}
	cases := []struct {
		name    string
		req     func() *http.Request
		status  int
		wwwAuth string
	}{
		{"413 by Content-Length before reading", func() *http.Request {
			req := e.request(t, "", "video/mp4", io.LimitReader(endless{}, 21*mib))
			req.ContentLength = 21 * mib
			return req
		}, http.StatusRequestEntityTooLarge, ""},
		{"413 while streaming a chunked body", func() *http.Request {
			req := e.request(t, "", "video/mp4", mediaReader(24*mib, 4))
			req.ContentLength = -1
			return req
		}, http.StatusRequestEntityTooLarge, ""},
		{"415 text file part", multi(formPart{field: "f", filename: "notes.mp4", contentType: "video/mp4", data: []byte("just some text, not a video at all\n")}), http.StatusUnsupportedMediaType, ""},
		{"415 PNG raw", raw("application/octet-stream", png), http.StatusUnsupportedMediaType, ""},
		{"415 PNG part declared video", multi(formPart{field: "f", filename: "a.mp4", contentType: "video/mp4", data: png}), http.StatusUnsupportedMediaType, ""},
		{"415 PDF part", multi(formPart{field: "f", filename: "a.pdf", contentType: "application/octet-stream", data: pdf}), http.StatusUnsupportedMediaType, ""},
		{"415 part declared image", multi(formPart{field: "f", filename: "a.bin", contentType: "image/jpeg", data: media}), http.StatusUnsupportedMediaType, ""},
		{"415 raw text content type", raw("text/plain", media), http.StatusUnsupportedMediaType, ""},
		{"415 raw without content type", raw("", media), http.StatusUnsupportedMediaType, ""},
		{"415 HTML declared video", raw("video/mp4", []byte("<!DOCTYPE html><html><body>hi</body></html>")), http.StatusUnsupportedMediaType, ""},
		// A playlist naming a file on the converter's disk, with one binary byte so that
		// "not text" sniffing took it for media.
		{"415 text with a binary byte", raw("video/mp4", []byte("#EXTM3U\n#EXTINF:3,\n/etc/secret.mp3\n#EXT-X-ENDLIST\n\x01")), http.StatusUnsupportedMediaType, ""},
		{"415 concat list part", multi(formPart{field: "f", filename: "a.mp4", contentType: "video/mp4", data: []byte("ffconcat version 1.0\nfile input\n\x00")}), http.StatusUnsupportedMediaType, ""},
		{"415 unknown binary", raw("application/octet-stream", []byte{0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09}), http.StatusUnsupportedMediaType, ""},
		{"415 zip", raw("application/octet-stream", []byte("PK\x03\x04\x14\x00\x00\x00\x08\x00")), http.StatusUnsupportedMediaType, ""},
		{"400 zero bytes raw", raw("video/mp4", nil), http.StatusBadRequest, ""},
		{"400 zero bytes part", multi(formPart{field: "f", filename: "empty.mp4", contentType: "video/mp4"}), http.StatusBadRequest, ""},
		{"400 empty filename part", multi(formPart{field: "f", file: true, contentType: "application/octet-stream"}), http.StatusBadRequest, ""},
		{"400 two file parts", multi(
			formPart{field: "a", filename: "a.mp4", contentType: "video/mp4", data: media},
			formPart{field: "x", data: []byte("a field between")},
			formPart{field: "b", filename: "b.mp4", contentType: "video/mp4", data: media},
		), http.StatusBadRequest, ""},
		{"400 no file part", multi(formPart{field: "title", data: []byte("no file here")}), http.StatusBadRequest, ""},
		{"400 multipart without boundary", raw("multipart/form-data", media), http.StatusBadRequest, ""},
		{"400 truncated multipart", func() *http.Request {
			body, ct := multipartBody(t, formPart{field: "f", filename: "a.mp4", data: media})
			return e.request(t, "", ct, bytes.NewReader(body[:len(body)-20]))
		}, http.StatusBadRequest, ""},
		{"405 GET", func() *http.Request {
			req := e.request(t, "", "", nil)
			req.Method = http.MethodGet
			return req
		}, http.StatusMethodNotAllowed, ""},
		{"401 no token", func() *http.Request {
			req := e.request(t, "", "video/mp4", bytes.NewReader(media))
			req.Header.Del("Authorization")
			return req
		}, http.StatusUnauthorized, "Bearer"},
		{"401 refused token", func() *http.Request {
			req := e.request(t, "", "video/mp4", bytes.NewReader(media))
			req.Header.Set("Authorization", "Bearer forged")
			return req
		}, http.StatusUnauthorized, `Bearer error="invalid_token"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, out := do(t, c.req())
			if resp.StatusCode != c.status || out["error"] == "" {
				t.Errorf("got %d %v, want %d with an error message", resp.StatusCode, out, c.status)
			}
			if got := resp.Header.Get("WWW-Authenticate"); got != c.wwwAuth {
				t.Errorf("WWW-Authenticate = %q, want %q", got, c.wwwAuth)
			}
			e.assertNothingLeft(t)
		})
	}
	if attempts, _ := e.broker.snapshot(); attempts != 0 {
		t.Errorf("broker called %d times for rejected uploads", attempts)
	}
}

// smallBuffers keeps loopback sockets from holding megabytes of a request body, so that what
// the client has written bounds from below what the server has read.
type smallBuffers struct{ net.Listener }

const socketBuffer = 64 << 10

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(socketBuffer) // fixes the size: no autotuning up to tcp_rmem's max
	}
	return c, err
}

func TestUploadClientAbortMidBody(t *testing.T) {
	e := newEnv(t, nil)
	srv := httptest.NewUnstartedServer(e.srv.Config.Handler)
	srv.Listener = smallBuffers{srv.Listener}
	srv.Start()
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetWriteBuffer(socketBuffer)
		}
		return c, err
	}}}

	pr, pw := io.Pipe()
	defer pw.CloseWithError(errors.New("test ended")) // so that a failing test does not hang the server
	req := e.request(t, "?filename=big.mp4", "video/mp4", pr)
	req.URL.Host = srv.Listener.Addr().String()
	req.ContentLength = -1
	clientDone := make(chan error, 1)
	go func() {
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("got a response: %s", resp.Status)
		}
		clientDone <- err
	}()

	// 20 MiB: with at most a few hundred KiB held in buffers on the way, the handler has read
	// past the driver's first 16 MiB batch, and so has written those chunks, once the pipe
	// has accepted everything.
	if _, err := io.Copy(pw, mediaReader(20*mib, 5)); err != nil {
		t.Fatal("writing the body:", err)
	}
	if _, chunks, _ := e.counts(t); chunks == 0 {
		t.Fatal("no chunks written yet: the abort below would prove nothing")
	}
	pw.CloseWithError(errors.New("client gave up"))
	if err := <-clientDone; err == nil || !strings.Contains(err.Error(), "client gave up") {
		t.Errorf("client error = %v", err)
	}
	select {
	case <-e.handled:
	case <-time.After(2 * time.Minute):
		t.Fatal("handler did not return")
	}
	e.assertNothingLeft(t)
	if attempts, _ := e.broker.snapshot(); attempts != 0 {
		t.Errorf("broker called %d times for an aborted upload", attempts)
	}
}

func TestUploadTruncatedSmallBody(t *testing.T) {
	e := newEnv(t, nil)
	// The client promises 4096 bytes, sends 100 and half-closes: the body ends within the first
	// read, and 100 bytes must not be stored as a complete file.
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	head := "POST /upload?filename=short.mp4 HTTP/1.1\r\nHost: upload\r\nAuthorization: Bearer " + aliceToken +
		"\r\nContent-Type: video/mp4\r\nContent-Length: 4096\r\n\r\n"
	if _, err := conn.Write(append([]byte(head), mediaBytes(t, 100, 12)...)); err != nil {
		t.Fatal(err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("status %d, want 400", resp.StatusCode)
	}
	e.assertNothingLeft(t)
}

func closedPort(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestUploadMongoDown(t *testing.T) {
	e := newEnv(t, map[string]string{"MONGODB_URI": "mongodb://" + closedPort(t) + "/?serverSelectionTimeoutMS=1000&connectTimeoutMS=1000"})
	resp, out := do(t, e.request(t, "", "video/mp4", bytes.NewReader(mediaBytes(t, 4096, 6))))
	if resp.StatusCode != http.StatusServiceUnavailable || out["error"] != "storage unavailable, try again" {
		t.Errorf("got %d %v, want 503 storage unavailable", resp.StatusCode, out)
	}
	if attempts, _ := e.broker.snapshot(); attempts != 0 {
		t.Errorf("broker called %d times", attempts)
	}
}

func TestUploadValidateDown(t *testing.T) {
	e := newEnv(t, map[string]string{"VALIDATE_URL": "http://" + closedPort(t) + "/validate"})
	resp, out := do(t, e.request(t, "", "video/mp4", bytes.NewReader(mediaBytes(t, 4096, 7))))
	if resp.StatusCode != http.StatusServiceUnavailable || out["error"] == "" {
		t.Errorf("got %d %v, want 503", resp.StatusCode, out)
	}
	e.assertNothingLeft(t)
}

func TestUploadBrokerRefusesAfterRetries(t *testing.T) {
	e := newEnv(t, nil)
	e.broker.set(-1, http.StatusInternalServerError)
	resp, out := do(t, e.request(t, "", "video/mp4", bytes.NewReader(mediaBytes(t, 3*mib, 8))))
	if resp.StatusCode != http.StatusServiceUnavailable || out["error"] == "" {
		t.Errorf("got %d %v, want 503", resp.StatusCode, out)
	}
	if attempts, _ := e.broker.snapshot(); attempts != 3 {
		t.Errorf("broker saw %d attempts, want 3", attempts)
	}
	e.assertNothingLeft(t)
}

func TestUploadBrokerRejectsWithoutRetry(t *testing.T) {
	e := newEnv(t, nil)
	e.broker.set(-1, http.StatusBadRequest)
	resp, _ := do(t, e.request(t, "", "video/mp4", bytes.NewReader(mediaBytes(t, 4096, 9))))
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503", resp.StatusCode)
	}
	if attempts, _ := e.broker.snapshot(); attempts != 1 {
		t.Errorf("broker saw %d attempts, want 1 (a 4xx is not retried)", attempts)
	}
	e.assertNothingLeft(t)
}

func TestUploadBrokerFailsOnceThenAccepts(t *testing.T) {
	e := newEnv(t, nil)
	e.broker.set(1, http.StatusServiceUnavailable)
	data := mediaBytes(t, 4096, 10)
	resp, out := do(t, e.request(t, "?filename=x.mp4", "video/mp4", bytes.NewReader(data)))
	fid := accepted(t, resp, out)
	attempts, events := e.broker.snapshot()
	if attempts != 2 || len(events) != 1 || events[0].ID() != fid.Hex() {
		t.Errorf("broker saw %d attempts, %d events", attempts, len(events))
	}
	if files, chunks, jobs := e.counts(t); files != 1 || chunks != 1 || jobs != 1 {
		t.Errorf("stored %d files, %d chunks, %d jobs; want 1 each", files, chunks, jobs)
	}
}

func TestStartAndReadiness(t *testing.T) {
	f := New()
	rec := httptest.NewRecorder()
	f.Handle(rec, httptest.NewRequest(http.MethodPost, "/upload", nil))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Content-Type") != "application/json" {
		t.Errorf("before Start: %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	if ok, _ := f.Ready(context.Background()); ok {
		t.Error("ready before Start")
	}
	good := map[string]string{"MONGODB_URI": "mongodb://127.0.0.1:1/", "VALIDATE_URL": "http://127.0.0.1:1/validate", "K_SINK": "http://127.0.0.1:1/"}
	for _, c := range []struct{ key, value, wantErr string }{
		{"K_SINK", "", "K_SINK is not set"},
		{"K_SINK", "not a url", "K_SINK"},
		{"VALIDATE_URL", "", "VALIDATE_URL"},
		{"MONGODB_URI", "", "MONGODB_URI"},
		{"MONGODB_URI", "http://nope", "MONGODB_URI"},
		{"MAX_UPLOAD_BYTES", "lots", "MAX_UPLOAD_BYTES"},
		{"UPLOAD_TIMEOUT", "forever", "UPLOAD_TIMEOUT"},
	} {
		cfg := map[string]string{}
		for k, v := range good {
			cfg[k] = v
		}
		cfg[c.key] = c.value
		if err := New().Start(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("%s=%q: Start error %v, want one mentioning %s", c.key, c.value, err, c.wantErr)
		}
	}
	// MongoDB, validate and the broker all down: Start still succeeds.
	if err := f.Start(context.Background(), good); err != nil {
		t.Fatal(err)
	}
	defer f.Stop(context.Background())
	if ok, _ := f.Ready(context.Background()); !ok {
		t.Error("not ready after Start")
	}
}

func TestCleanName(t *testing.T) {
	long := strings.Repeat("é", 200) + ".mp4" // 404 bytes
	for in, want := range map[string]string{
		"clip.mp4":                      "clip.mp4",
		"/a/b/c.mkv":                    "c.mkv",
		`C:\Users\me\film.avi`:          "film.avi",
		"..":                            "",
		"  \t ":                         "",
		"a\x00b\x1fc\x7f.mp4":           "abc.mp4",
		"evil\u202egnp.mp4":             "evilgnp.mp4",
		"bad\xffutf8.mp4":               "badutf8.mp4",
		"Überraschung 🎬.webm":           "Überraschung 🎬.webm",
		long:                            strings.Repeat("é", 125) + ".mp4",
		"x/" + strings.Repeat("a", 300): strings.Repeat("a", 255),
	} {
		got := cleanName(in)
		if got != want {
			t.Errorf("cleanName(%q) = %q, want %q", in, got, want)
		}
		if len(got) > 255 {
			t.Errorf("cleanName(%q) is %d bytes", in, len(got))
		}
	}
}

// FuzzUploadBody throws arbitrary bodies, content types and names at the parser: the answer
// is never a 5xx (storage and broker are up), and a 4xx leaves nothing behind.
func FuzzUploadBody(f *testing.F) {
	e := newEnv(f, map[string]string{"MAX_UPLOAD_BYTES": "65536"})
	media := mediaBytes(f, 2000, 11)
	one, oneCT := multipartBody(f, formPart{field: "f", filename: "a.mp4", contentType: "video/mp4", data: media})
	two, twoCT := multipartBody(f,
		formPart{field: "f", filename: "a.mp4", data: media[:600]},
		formPart{field: "g", filename: "b.mp4", data: media[:600]})
	none, noneCT := multipartBody(f, formPart{field: "title", data: []byte("hello")})
	text, textCT := multipartBody(f, formPart{field: "f", filename: "t.txt", contentType: "text/plain", data: []byte("hello world")})
	f.Add(oneCT, "", one)
	f.Add(twoCT, "", two)
	f.Add(noneCT, "", none)
	f.Add(textCT, "", text)
	f.Add(oneCT, "", one[:len(one)/2])
	f.Add("multipart/form-data; boundary=x", "", []byte("--x\r\nContent-Disposition: form-data; name=\"f\"; filename=\"../a\x01.mp4\"\r\n\r\n\x00\x00\x00\x18ftypmp42\r\n--x--\r\n"))
	f.Add("multipart/form-data", "", media)
	f.Add("video/mp4", "clip.mp4", media)
	f.Add("audio/mpeg", "", []byte("ID3\x03\x00\x00\x00\x00\x00\x00"))
	f.Add("application/octet-stream", "../x", []byte{0, 1, 2, 3})
	f.Add("video/mp4", "", []byte{})
	f.Add("text/plain", "a.txt", []byte("hello"))
	f.Add("video/mp4; charset=\"", "", media)
	f.Add("video/webm", strings.Repeat("\u00e9", 300), media[:100])

	f.Fuzz(func(t *testing.T, contentType, filename string, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/upload?filename="+url.QueryEscape(filename), bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+aliceToken)
		req.Header.Set("Content-Type", contentType)
		rec := httptest.NewRecorder()
		e.fn.Handle(rec, req)
		var out map[string]string
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("status %d, body %q is not JSON", rec.Code, rec.Body.String())
		}
		switch {
		case rec.Code == http.StatusAccepted:
			fid, err := bson.ObjectIDFromHex(out["video_fid"])
			if err != nil {
				t.Fatalf("202 with video_fid %q", out["video_fid"])
			}
			j := e.job(t, fid)
			if j.Filename == "" || len(j.Filename) > 255 || strings.ContainsAny(j.Filename, "/\\\x00") || j.Size < 1 || j.Size > int64(len(body)) {
				t.Errorf("job = %+v", j)
			}
			ctx := context.Background()
			_, _ = e.db.Collection("jobs").DeleteOne(ctx, bson.D{{Key: "_id", Value: fid}})
			if err := e.db.GridFSBucket().Delete(ctx, fid); err != nil {
				t.Fatal(err)
			}
		case rec.Code >= 400 && rec.Code < 500:
			if out["error"] == "" {
				t.Errorf("status %d without an error message", rec.Code)
			}
		default:
			t.Fatalf("status %d %v for Content-Type %q, %d bytes", rec.Code, out, contentType, len(body))
		}
		e.assertNothingLeft(t)
	})
}

// Uploads beyond UPLOAD_CONCURRENCY that wait longer than UPLOAD_SLOT_WAIT (here not at
// all) are refused with 503 and Retry-After, before their body is read, and accepted again
// once a slot frees.
func TestUploadsBeyondTheConcurrencyLimitAreRefused(t *testing.T) {
	e := newEnv(t, map[string]string{"UPLOAD_CONCURRENCY": "1", "UPLOAD_SLOT_WAIT": "0s"})
	data := mediaBytes(t, 300*1024, 3)
	pr, pw := io.Pipe()
	first := make(chan *http.Response, 1)
	go func() {
		resp, err := http.DefaultClient.Do(e.request(t, "?filename=a.mp4", "video/mp4", pr))
		if err != nil {
			t.Error(err)
		}
		first <- resp
	}()
	// Wait until the first upload holds the only slot.
	wrote := make(chan struct{})
	go func() { pw.Write(data[:256*1024]); close(wrote) }()
	for deadline := time.Now().Add(time.Minute); len(e.fn.lc.load().slots.free) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first upload never took its slot")
		}
	}

	resp, out := do(t, e.request(t, "?filename=b.mp4", "video/mp4", bytes.NewReader(data)))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || out["error"] == "" {
		t.Fatalf("second upload = %d %v %v, want 503 with Retry-After", resp.StatusCode, resp.Header, out)
	}

	<-wrote
	pw.Write(data[256*1024:])
	pw.Close()
	if r := <-first; r == nil || r.StatusCode != http.StatusAccepted {
		t.Fatalf("first upload = %v, want 202", r)
	}
	resp, out = do(t, e.request(t, "?filename=c.mp4", "video/mp4", bytes.NewReader(data)))
	accepted(t, resp, out)
}

// Job and file ids cannot be guessed from another upload's id: consecutive ObjectIDs from
// bson.NewObjectID share their timestamp and process bytes and differ by a counter.
func TestUploadIDsAreUnguessable(t *testing.T) {
	e := newEnv(t, nil)
	data := mediaBytes(t, 4096, 4)
	var ids []bson.ObjectID
	for range 3 {
		resp, out := do(t, e.request(t, "?filename=a.mp4", "video/mp4", bytes.NewReader(data)))
		ids = append(ids, accepted(t, resp, out))
	}
	for i := 1; i < len(ids); i++ {
		a, b := ids[i-1], ids[i]
		// The 5 process bytes of bson.NewObjectID, equal by chance: 2^-40.
		if bytes.Equal(a[4:9], b[4:9]) {
			t.Errorf("ids %s and %s share their process bytes: the next one can be guessed", a.Hex(), b.Hex())
		}
	}
}

// containerType knows the audio and video containers by their magic, and nothing else.
func TestContainerType(t *testing.T) {
	media := map[string]string{
		"\x00\x00\x00\x18ftypmp42":                 "video/mp4",
		"\x00\x00\x00\x14ftypqt  ":                 "video/mp4",
		"\x1a\x45\xdf\xa3\x01\x00":                 "video/x-matroska",
		"RIFF\x24\x00\x00\x00AVI LIST":             "video/x-msvideo",
		"RIFF\x24\x00\x00\x00WAVEfmt ":             "audio/wav",
		"\x00\x00\x01\xba\x44\x00":                 "video/mpeg",
		"FLV\x01\x05":                              "video/x-flv",
		"OggS\x00\x02":                             "audio/ogg",
		"fLaC\x00\x00":                             "audio/flac",
		"\x30\x26\xb2\x75\x8e\x66\xcf\x11\xa6\xd9": "video/x-ms-asf",
		"ID3\x04\x00":                              "audio/mpeg",
		"\xff\xfb\x90\x64":                         "audio/mpeg",
		"FORM\x00\x00\x00\x10AIFF":                 "audio/aiff",
		"\x47\x40\x00\x10" + strings.Repeat("\xff", 184) + "\x47\x40\x11\x10": "video/mp2t",
	}
	for in, want := range media {
		if got := containerType([]byte(in)); got != want {
			t.Errorf("containerType(%q) = %q, want %q", in, got, want)
		}
	}
	for _, in := range []string{"", "hello", "#EXTM3U\n\x01", "ffconcat version 1.0\n", "G is for grape\n",
		"\x89PNG\r\n\x1a\n", "%PDF-1.7", "PK\x03\x04", "<?xml version=\"1.0\"?><MPD>", "\x00\x01\x02\x03\x04\x05\x06\x07\x08",
		"RIFF\x24\x00\x00\x00WEBPVP8 ", "\xff\xff\xff\xff"} {
		if got := containerType([]byte(in)); got != "" {
			t.Errorf("containerType(%q) = %q, want none", in, got)
		}
	}
}

// idleUpload opens a raw connection, sends an upload's headers promising 4096 bytes and
// then only sent of them, and returns the answer; the connection's deadline bounds the test.
func idleUpload(t *testing.T, e *testEnv, sent []byte) *http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(time.Minute))
	head := "POST /upload?filename=idle.mp4 HTTP/1.1\r\nHost: upload\r\nAuthorization: Bearer " + aliceToken +
		"\r\nContent-Type: video/mp4\r\nContent-Length: 4096\r\n\r\n"
	if _, err := conn.Write(append([]byte(head), sent...)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal("no answer to an idle upload:", err)
	}
	resp.Body.Close()
	return resp
}

// An upload that sends nothing, or sends a little and stalls, is ended with 408 after
// UPLOAD_IDLE_TIMEOUT (not UPLOAD_TIMEOUT), leaves nothing behind and frees its slot.
func TestIdleUploadIsEnded(t *testing.T) {
	e := newEnv(t, map[string]string{"UPLOAD_IDLE_TIMEOUT": "1s", "UPLOAD_CONCURRENCY": "1"})
	for name, sent := range map[string][]byte{"sends nothing": nil, "trickles then stalls": mediaBytes(t, 1000, 5)} {
		t.Run(name, func(t *testing.T) {
			if resp := idleUpload(t, e, sent); resp.StatusCode != http.StatusRequestTimeout {
				t.Errorf("status %d, want 408", resp.StatusCode)
			}
			e.assertNothingLeft(t)
		})
	}
	<-e.handled
	<-e.handled
	// The one slot is free again.
	resp, out := do(t, e.request(t, "?filename=a.mp4", "video/mp4", bytes.NewReader(mediaBytes(t, 4096, 6))))
	accepted(t, resp, out)
}

// One user holds at most half of the upload slots: with UPLOAD_CONCURRENCY 4, alice's third
// upload while two are in flight waits its turn (UPLOAD_SLOT_WAIT) before its body is read,
// bob's goes through meanwhile, and alice's third is stored once one of hers is done. When
// the wait runs out, the answer is 503 with Retry-After.
func TestOneUserHoldsHalfTheSlots(t *testing.T) {
	for _, c := range []struct {
		wait      string
		thirdWins bool
	}{{"25s", true}, {"0s", false}} {
		t.Run("UPLOAD_SLOT_WAIT="+c.wait, func(t *testing.T) {
			e := newEnv(t, map[string]string{"UPLOAD_CONCURRENCY": "4", "UPLOAD_SLOT_WAIT": c.wait})
			var writers []*io.PipeWriter
			answers := make(chan *http.Response, 2)
			for i := range 2 {
				pr, pw := io.Pipe()
				writers = append(writers, pw)
				go func() {
					resp, err := http.DefaultClient.Do(e.request(t, fmt.Sprintf("?filename=%d.mp4", i), "video/mp4", pr))
					if err != nil {
						t.Error(err)
					}
					answers <- resp
				}()
				if _, err := pw.Write(mediaBytes(t, 1024, byte(i))); err != nil {
					t.Fatal(err)
				}
			}
			for deadline := time.Now().Add(time.Minute); len(e.fn.lc.load().slots.free) < 2; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("alice's two uploads never took their slots")
				}
			}
			third := make(chan *http.Response, 1)
			go func() {
				resp, err := http.DefaultClient.Do(e.request(t, "?filename=third.mp4", "video/mp4", bytes.NewReader(mediaBytes(t, 4096, 7))))
				if err != nil {
					t.Error(err)
				}
				third <- resp
			}()

			req := e.request(t, "?filename=bob.mp4", "video/mp4", bytes.NewReader(mediaBytes(t, 4096, 8)))
			req.Header.Set("Authorization", "Bearer "+bobToken)
			resp, out := do(t, req)
			accepted(t, resp, out)

			if !c.thirdWins {
				r := <-third
				if r == nil || r.StatusCode != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
					t.Errorf("alice's third upload, no wait = %v, want 503 with Retry-After", r)
				}
			} else {
				select {
				case r := <-third:
					t.Fatalf("alice's third upload answered %v while her two held her share", r)
				default:
				}
			}
			writers[0].Close() // one of alice's two is done: her third takes its slot
			if c.thirdWins {
				if r := <-third; r == nil || r.StatusCode != http.StatusAccepted {
					t.Errorf("alice's third upload = %v, want 202 once a slot of hers came free", r)
				}
			}
			writers[1].Close()
			for range writers {
				if r := <-answers; r == nil || r.StatusCode != http.StatusAccepted {
					t.Errorf("alice's upload = %v, want 202", r)
				}
			}
		})
	}
}
