package function

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// tusDo sends one tus request as user (a token) and returns the answer, its body read.
func (e *testEnv) tusDo(t testing.TB, method, path, token string, headers map[string]string, body []byte) *http.Response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Tus-Resumable", "1.0.0")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/offset+octet-stream")
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if got := resp.Header.Get("Tus-Resumable"); got != "1.0.0" {
		t.Errorf("%s %s: Tus-Resumable %q", method, path, got)
	}
	return resp
}

// tusCreate creates an upload of length bytes named name and returns its path.
func (e *testEnv) tusCreate(t testing.TB, token string, length int, name string, first []byte) (string, *http.Response) {
	t.Helper()
	meta := "filename " + base64.StdEncoding.EncodeToString([]byte(name))
	resp := e.tusDo(t, http.MethodPost, "/upload/", token, map[string]string{
		"Upload-Length": strconv.Itoa(length), "Upload-Metadata": meta}, first)
	return resp.Header.Get("Location"), resp
}

func (e *testEnv) patch(t testing.TB, path, token string, offset int, data []byte) *http.Response {
	t.Helper()
	return e.tusDo(t, http.MethodPatch, path, token, map[string]string{"Upload-Offset": strconv.Itoa(offset)}, data)
}

func (e *testEnv) headOffset(t testing.TB, path string) int {
	t.Helper()
	resp := e.tusDo(t, http.MethodHead, path, aliceToken, nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HEAD %s: %d", path, resp.StatusCode)
	}
	n, err := strconv.Atoi(resp.Header.Get("Upload-Offset"))
	if err != nil {
		t.Fatalf("HEAD: Upload-Offset %q", resp.Header.Get("Upload-Offset"))
	}
	return n
}

func (e *testEnv) uploadRecords(t testing.TB) int64 {
	t.Helper()
	n, err := e.db.Collection("uploads").CountDocuments(context.Background(), bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// An upload sent in three PATCHes of sizes that split chunks is stored whole; the last answer
// carries the job; one job, one event, and a HEAD afterwards still names the job.
func TestTusUploadInPieces(t *testing.T) {
	e := newEnv(t, nil)
	want := mediaBytes(t, 3*mib+12345, 1)
	path, resp := e.tusCreate(t, aliceToken, len(want), "clip.mp4", nil)
	if resp.StatusCode != http.StatusCreated || !strings.HasPrefix(path, "/upload/") {
		t.Fatalf("create: %d, Location %q", resp.StatusCode, path)
	}
	if resp.Header.Get("Upload-Expires") == "" {
		t.Error("create: no Upload-Expires")
	}
	cuts := []int{0, 300001, 2*mib + 7, len(want)}
	for i := 1; i < len(cuts); i++ {
		if got := e.headOffset(t, path); got != cuts[i-1] {
			t.Fatalf("HEAD before piece %d: offset %d, want %d", i, got, cuts[i-1])
		}
		resp = e.patch(t, path, aliceToken, cuts[i-1], want[cuts[i-1]:cuts[i]])
		if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Upload-Offset") != strconv.Itoa(cuts[i]) {
			t.Fatalf("PATCH %d: %d, Upload-Offset %q", i, resp.StatusCode, resp.Header.Get("Upload-Offset"))
		}
		if i < len(cuts)-1 && resp.Header.Get("Video-Fid") != "" {
			t.Fatalf("PATCH %d: a job before the last byte", i)
		}
	}
	fid, err := bson.ObjectIDFromHex(resp.Header.Get("Video-Fid"))
	if err != nil || path != "/upload/"+fid.Hex() {
		t.Fatalf("last PATCH: Video-Fid %q for %s", resp.Header.Get("Video-Fid"), path)
	}
	if got := resp.Header.Get("Status-Url"); got != "/jobs/"+fid.Hex() {
		t.Errorf("Status-Url %q", got)
	}
	sum, file := e.stored(t, fid)
	if sum != sha256.Sum256(want) || file.Length != int64(len(want)) {
		t.Errorf("stored %d bytes, not the ones sent", file.Length)
	}
	j := e.job(t, fid)
	if j.OwnerID != aliceID || j.Username != alice || j.Filename != "clip.mp4" || j.ContentType != "video/mp4" || j.Size != int64(len(want)) || j.State != "uploaded" {
		t.Errorf("job %+v", j)
	}
	if _, events := e.broker.snapshot(); len(events) != 1 || events[0].ID() != fid.Hex() {
		t.Errorf("%d events", len(events))
	}
	head := e.tusDo(t, http.MethodHead, path, aliceToken, nil, nil)
	if head.Header.Get("Upload-Offset") != strconv.Itoa(len(want)) || head.Header.Get("Video-Fid") != fid.Hex() {
		t.Errorf("HEAD after the end: offset %q, Video-Fid %q", head.Header.Get("Upload-Offset"), head.Header.Get("Video-Fid"))
	}
	if resp := e.patch(t, path, aliceToken, len(want), []byte{1}); resp.StatusCode != http.StatusConflict {
		t.Errorf("PATCH after the end: %d, want 409", resp.StatusCode)
	}
}

// creation-with-upload: the whole file in the POST.
func TestTusCreationWithUpload(t *testing.T) {
	e := newEnv(t, nil)
	want := mediaBytes(t, 200000, 2)
	path, resp := e.tusCreate(t, aliceToken, len(want), "", want)
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Upload-Offset") != strconv.Itoa(len(want)) {
		t.Fatalf("create: %d, offset %q", resp.StatusCode, resp.Header.Get("Upload-Offset"))
	}
	fid, _ := bson.ObjectIDFromHex(resp.Header.Get("Video-Fid"))
	if path != "/upload/"+fid.Hex() {
		t.Fatalf("Location %q, Video-Fid %q", path, resp.Header.Get("Video-Fid"))
	}
	if sum, _ := e.stored(t, fid); sum != sha256.Sum256(want) {
		t.Error("stored bytes differ")
	}
	if j := e.job(t, fid); j.Filename != "upload.mp4" {
		t.Errorf("job filename %q", j.Filename)
	}
}

// A PATCH cut off mid-body keeps what arrived; the next PATCH sends only the rest, on another
// instance of the function sharing the database.
func TestTusCutPatchResumesOnAnotherInstance(t *testing.T) {
	e := newEnv(t, nil)
	want := mediaBytes(t, 4*mib+333, 3)
	path, _ := e.tusCreate(t, aliceToken, len(want), "cut.mkv", nil)
	<-e.handled // the create's

	conn, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	half := len(want) / 2
	fmt.Fprintf(conn, "PATCH %s HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: %d\r\n\r\n", path, aliceToken, len(want))
	if _, err := conn.Write(want[:half]); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	<-e.handled // the cut PATCH has recorded what it got

	// A second Function on the same database prefix: any replica takes the next PATCH.
	other := &testEnv{db: e.db, handled: make(chan struct{}, 16), broker: e.broker}
	other.fn = New()
	if err := other.fn.Start(context.Background(), map[string]string{
		"MONGODB_URI": mongoURI, "MONGODB_DB_PREFIX": e.prefix,
		"VALIDATE_URL": e.validate.srv.URL + "/validate", "K_SINK": e.broker.srv.URL,
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.fn.Stop(context.Background()) })
	other.srv = httptest.NewServer(http.HandlerFunc(other.fn.Handle))
	t.Cleanup(other.srv.Close)

	got := other.headOffset(t, path)
	if got <= 0 || got > half {
		t.Fatalf("after the cut: offset %d, want 1..%d", got, half)
	}
	resp := other.patch(t, path, aliceToken, got, want[got:])
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("resume: %d", resp.StatusCode)
	}
	fid, _ := bson.ObjectIDFromHex(resp.Header.Get("Video-Fid"))
	if sum, _ := e.stored(t, fid); sum != sha256.Sum256(want) {
		t.Error("stored bytes differ from the ones sent")
	}
	if _, _, jobs := e.counts(t); jobs != 1 {
		t.Errorf("%d jobs", jobs)
	}
}

// Another user's upload is as good as missing; a wrong offset is 409; more than the length 413.
func TestTusRefusals(t *testing.T) {
	e := newEnv(t, map[string]string{"MAX_UPLOAD_BYTES": "1000000"})
	want := mediaBytes(t, 500000, 4)
	path, _ := e.tusCreate(t, aliceToken, len(want), "a.mp4", nil)
	if resp := e.patch(t, path, aliceToken, 0, want[:1000]); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("first PATCH: %d", resp.StatusCode)
	}
	cases := []struct {
		name   string
		resp   *http.Response
		status int
	}{
		{"bob's HEAD", e.tusDo(t, http.MethodHead, path, bobToken, nil, nil), http.StatusNotFound},
		{"bob's PATCH", e.patch(t, path, bobToken, 1000, want[1000:2000]), http.StatusNotFound},
		{"bob's DELETE", e.tusDo(t, http.MethodDelete, path, bobToken, nil, nil), http.StatusNotFound},
		{"no token", e.patch(t, path, "", 1000, want[1000:2000]), http.StatusUnauthorized},
		{"wrong offset", e.patch(t, path, aliceToken, 999, want[999:2000]), http.StatusConflict},
		{"past the length", e.patch(t, path, aliceToken, 1000, mediaBytes(t, 500000, 5)), http.StatusRequestEntityTooLarge},
		{"over MAX_UPLOAD_BYTES", func() *http.Response { _, r := e.tusCreate(t, aliceToken, 1000001, "big.mp4", nil); return r }(), http.StatusRequestEntityTooLarge},
		{"no Tus-Resumable", e.tusDo(t, http.MethodHead, path, aliceToken, map[string]string{"Tus-Resumable": "0.2"}, nil), http.StatusPreconditionFailed},
		{"unknown upload", e.tusDo(t, http.MethodHead, "/upload/"+newFID().Hex(), aliceToken, nil, nil), http.StatusNotFound},
		{"bad checksum", e.tusDo(t, http.MethodPatch, path, aliceToken, map[string]string{"Upload-Offset": "1000",
			"Upload-Checksum": "sha1 " + base64.StdEncoding.EncodeToString(sha1.New().Sum(nil))}, want[1000:2000]), 460},
	}
	for _, c := range cases {
		if c.resp.StatusCode != c.status {
			t.Errorf("%s: %d, want %d", c.name, c.resp.StatusCode, c.status)
		}
	}
	// None of the refused requests moved the upload; a good checksum does.
	if got := e.headOffset(t, path); got != 1000 {
		t.Fatalf("offset %d after the refusals, want 1000", got)
	}
	good := sha1.Sum(want[1000:])
	resp := e.tusDo(t, http.MethodPatch, path, aliceToken, map[string]string{
		"Upload-Offset": "1000", "Upload-Checksum": "sha1 " + base64.StdEncoding.EncodeToString(good[:])}, want[1000:])
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Video-Fid") == "" {
		t.Fatalf("PATCH with its checksum: %d", resp.StatusCode)
	}
	fid, _ := bson.ObjectIDFromHex(resp.Header.Get("Video-Fid"))
	if sum, _ := e.stored(t, fid); sum != sha256.Sum256(want) {
		t.Error("stored bytes differ")
	}
}

// What is not media is refused at its first bytes, at creation or at the first PATCH, and
// nothing is left: no record, no chunk.
func TestTusNotMediaLeavesNothing(t *testing.T) {
	e := newEnv(t, nil)
	text := bytes.Repeat([]byte("just some text, not a video\n"), 10000)
	if _, resp := e.tusCreate(t, aliceToken, len(text), "a.mp4", text); resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("creation with text: %d, want 415", resp.StatusCode)
	}
	path, resp := e.tusCreate(t, aliceToken, len(text), "a.mp4", nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %d", resp.StatusCode)
	}
	if resp := e.patch(t, path, aliceToken, 0, text); resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("first PATCH with text: %d, want 415", resp.StatusCode)
	}
	if resp := e.tusDo(t, http.MethodHead, path, aliceToken, nil, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("HEAD after the 415: %d, want 404", resp.StatusCode)
	}
	e.assertNothingLeft(t)
	if n := e.uploadRecords(t); n != 0 {
		t.Errorf("%d upload records left", n)
	}
}

// DELETE ends an unfinished upload and removes its chunks.
func TestTusTermination(t *testing.T) {
	e := newEnv(t, nil)
	want := mediaBytes(t, 1*mib, 6)
	path, _ := e.tusCreate(t, aliceToken, len(want), "a.mp4", nil)
	e.patch(t, path, aliceToken, 0, want[:300000])
	if resp := e.tusDo(t, http.MethodDelete, path, aliceToken, nil, nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: %d", resp.StatusCode)
	}
	e.assertNothingLeft(t)
	if resp := e.tusDo(t, http.MethodHead, path, aliceToken, nil, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("HEAD after DELETE: %d", resp.StatusCode)
	}
}

// OPTIONS tells a client what the server supports, without a token.
func TestTusOptions(t *testing.T) {
	e := newEnv(t, nil)
	req, _ := http.NewRequest(http.MethodOptions, e.srv.URL+"/upload/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Tus-Version") != "1.0.0" ||
		!strings.Contains(resp.Header.Get("Tus-Extension"), "creation") || resp.Header.Get("Tus-Max-Size") != "2147483648" {
		t.Errorf("OPTIONS: %d %v", resp.StatusCode, resp.Header)
	}
}

// A client that hangs up as soon as it sent the last byte still gets its job: HEAD names it.
func TestTusLastByteWithoutTheClient(t *testing.T) {
	e := newEnv(t, nil)
	want := mediaBytes(t, 300000, 7)
	path, _ := e.tusCreate(t, aliceToken, len(want), "gone.mp4", nil)
	<-e.handled // the create's
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "PATCH %s HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: %d\r\n\r\n", path, aliceToken, len(want))
	if _, err := conn.Write(want); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	<-e.handled
	head := e.tusDo(t, http.MethodHead, path, aliceToken, nil, nil)
	fid, err := bson.ObjectIDFromHex(head.Header.Get("Video-Fid"))
	if err != nil {
		t.Fatalf("HEAD after the hang-up: %d, Video-Fid %q", head.StatusCode, head.Header.Get("Video-Fid"))
	}
	if j := e.job(t, fid); j.Size != int64(len(want)) {
		t.Errorf("job %+v", j)
	}
	if _, events := e.broker.snapshot(); len(events) != 1 {
		t.Errorf("%d events", len(events))
	}
}
