package function

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

const (
	alice = "alice@example.com"
	bob   = "bob@example.com"
	admin = "admin@example.com"
	mib   = 1 << 20
)

// tokens the validate stub knows: the token is the user's name, and whether they are an
// admin; "name#id" is an account with that name and another id (deleted and made again).
var users = map[string]bool{alice: false, bob: false, admin: true}

// userIDs are the users' ids, validate's sub: what files and jobs are owned by.
var userIDs = map[string]string{alice: "1", bob: "2", admin: "3"}

// testEnv is one started Function on a fresh database prefix, behind a real HTTP server,
// with a stub validate.
type testEnv struct {
	prefix        string
	videos, mp3s  *mongo.Database
	fn            *Function
	srv           *httptest.Server
	validateCalls atomic.Int64
}

// newEnv starts a Function; cfg overrides the defaults, an empty value removes a key.
func newEnv(t testing.TB, cfg map[string]string) *testEnv {
	t.Helper()
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	e := &testEnv{prefix: "t" + hex.EncodeToString(rnd[:]) + "_"}
	client, err := mongo.Connect(options.Client().ApplyURI(mongoURI))
	if err != nil {
		t.Fatal(err)
	}
	e.videos = client.Database(e.prefix + "videos")
	e.mp3s = client.Database(e.prefix + "mp3s")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, db := range []*mongo.Database{e.videos, e.mp3s} {
			if err := db.Drop(ctx); err != nil {
				t.Errorf("drop %s: %v", db.Name(), err)
			}
		}
		_ = client.Disconnect(ctx)
	})

	validate := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.validateCalls.Add(1)
		user, sub, _ := strings.Cut(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "), "#")
		if sub == "" {
			sub = userIDs[user]
		}
		isAdmin, ok := users[user]
		w.Header().Set("Content-Type", "application/json")
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":"invalid token"}`)
			return
		}
		now := time.Now().Unix()
		_ = json.NewEncoder(w).Encode(map[string]any{"username": user, "admin": isAdmin, "sub": sub,
			"iss": "mp3converter", "aud": []string{"mp3converter"}, "iat": now, "nbf": now, "exp": now + 3600, "jti": "x"})
	}))
	t.Cleanup(validate.Close)

	full := map[string]string{
		"MONGODB_URI":       mongoURI,
		"MONGODB_DB_PREFIX": e.prefix,
		"VALIDATE_URL":      validate.URL + "/validate",
		"PUBLIC_URL":        "https://mp3.example.com",
		"LINK_SECRET":       testLinkSecret,
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
	e.srv = httptest.NewServer(http.HandlerFunc(e.fn.Handle))
	t.Cleanup(e.srv.Close)
	return e
}

func randomBytes(n int, seed byte) []byte {
	var key [32]byte
	key[0] = seed
	b := make([]byte, n)
	_, _ = mrand.NewChaCha8(key).Read(b)
	return b
}

// putMP3 stores data as convert would: in the mp3s bucket under the video's id, plus a done job.
func (e *testEnv) putMP3(t testing.TB, owner, name string, data []byte) bson.ObjectID {
	t.Helper()
	ctx := context.Background()
	fid := bson.NewObjectID()
	up, err := e.mp3s.GridFSBucket().OpenUploadStreamWithID(ctx, fid, name, options.GridFSUpload().
		SetChunkSizeBytes(128*1024).
		SetMetadata(bson.D{{Key: "owner_id", Value: userIDs[owner]}, {Key: "username", Value: owner}, {Key: "video_fid", Value: fid.Hex()}, {Key: "duration_seconds", Value: 61.5}}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := up.Close(); err != nil {
		t.Fatal(err)
	}
	e.putJob(t, fid, owner, "done", fid.Hex())
	return fid
}

func (e *testEnv) putJob(t testing.TB, fid bson.ObjectID, owner, state, mp3FID string) {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Millisecond)
	doc := bson.D{
		{Key: "_id", Value: fid}, {Key: "owner_id", Value: userIDs[owner]}, {Key: "username", Value: owner}, {Key: "filename", Value: "clip " + fid.Hex()[20:] + ".mp4"},
		{Key: "content_type", Value: "video/mp4"}, {Key: "size", Value: int64(1234)}, {Key: "state", Value: state},
		{Key: "reason", Value: ""}, {Key: "mp3_fid", Value: mp3FID}, {Key: "attempts", Value: int32(1)},
		{Key: "created_at", Value: now}, {Key: "updated_at", Value: now},
	}
	if state == "done" {
		doc = append(doc, bson.E{Key: "duration_seconds", Value: 61.5})
	}
	if state == "failed" {
		doc[7].Value = "no audio stream"
	}
	if _, err := e.videos.Collection("jobs").InsertOne(context.Background(), doc); err != nil {
		t.Fatal(err)
	}
}

// get sends a request as user ("" for none) and returns the response with its body read.
func (e *testEnv) get(t testing.TB, method, user, target string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.Header.Set("Authorization", "Bearer "+user)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func TestDownloadFullBodyAndHead(t *testing.T) {
	e := newEnv(t, nil)
	data := randomBytes(5*mib+777, 1)
	name := "Ünïcode – song \"live\".mp3"
	fid := e.putMP3(t, alice, name, data)

	resp, body := e.get(t, http.MethodGet, alice, "/download?fid="+fid.Hex())
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("status %d, %d bytes (want %d, identical)", resp.StatusCode, len(body), len(data))
	}
	h := resp.Header
	if h.Get("Content-Type") != "audio/mpeg" || h.Get("Content-Length") != strconv.Itoa(len(data)) || h.Get("Accept-Ranges") != "bytes" {
		t.Errorf("headers %v", h)
	}
	if etag := h.Get("ETag"); !strings.HasPrefix(etag, `"`) || !strings.Contains(etag, fid.Hex()) {
		t.Errorf("ETag %q is not a strong tag derived from the file", etag)
	}
	if _, err := http.ParseTime(h.Get("Last-Modified")); err != nil {
		t.Errorf("Last-Modified %q: %v", h.Get("Last-Modified"), err)
	}
	disp, params, err := mime.ParseMediaType(h.Get("Content-Disposition"))
	if err != nil || disp != "attachment" || params["filename"] != name {
		t.Errorf("Content-Disposition %q -> %q %v %v", h.Get("Content-Disposition"), disp, params, err)
	}
	if h.Get("Cache-Control") != "private" {
		t.Errorf("Cache-Control %q", h.Get("Cache-Control"))
	}
	if h.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("X-Content-Type-Options %q, want nosniff: a browser must not sniff an MP3 into HTML", h.Get("X-Content-Type-Options"))
	}

	head, body := e.get(t, http.MethodHead, alice, "/download?fid="+fid.Hex())
	if head.StatusCode != http.StatusOK || len(body) != 0 || head.Header.Get("Content-Length") != strconv.Itoa(len(data)) ||
		head.Header.Get("ETag") != h.Get("ETag") || head.Header.Get("Content-Disposition") != h.Get("Content-Disposition") {
		t.Errorf("HEAD: %d, %d bytes, headers %v", head.StatusCode, len(body), head.Header)
	}
}

func TestDownloadRanges(t *testing.T) {
	e := newEnv(t, nil)
	data := randomBytes(3*128*1024+5000, 2)
	n := len(data)
	fid := e.putMP3(t, alice, "r.mp3", data)
	target := "/download?fid=" + fid.Hex()
	resp, _ := e.get(t, http.MethodHead, alice, target)
	etag, lastMod := resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")

	cases := []struct {
		name       string
		header     []string
		status     int
		start, end int // the expected slice for 200/206
	}{
		{"first bytes", []string{"Range", "bytes=0-99"}, 206, 0, 100},
		{"middle across a chunk boundary", []string{"Range", "bytes=131000-262299"}, 206, 131000, 262300},
		{"suffix", []string{"Range", "bytes=-100"}, 206, n - 100, n},
		{"suffix longer than the file", []string{"Range", fmt.Sprintf("bytes=-%d", n+10)}, 206, 0, n},
		{"open-ended", []string{"Range", "bytes=300000-"}, 206, 300000, n},
		{"end past the file", []string{"Range", fmt.Sprintf("bytes=%d-%d", n-10, n+1000)}, 206, n - 10, n},
		{"last byte", []string{"Range", fmt.Sprintf("bytes=%d-%d", n-1, n-1)}, 206, n - 1, n},
		{"unsatisfiable", []string{"Range", fmt.Sprintf("bytes=%d-", n)}, 416, 0, 0},
		{"unsatisfiable empty suffix", []string{"Range", "bytes=-0"}, 416, 0, 0},
		{"several ranges: whole body", []string{"Range", "bytes=0-1,5-6"}, 200, 0, n},
		{"malformed: whole body", []string{"Range", "bytes=9-3"}, 200, 0, n},
		{"other unit: whole body", []string{"Range", "items=0-1"}, 200, 0, n},
		{"If-Range current ETag", []string{"Range", "bytes=10-19", "If-Range", etag}, 206, 10, 20},
		{"If-Range stale ETag", []string{"Range", "bytes=10-19", "If-Range", `"old"`}, 200, 0, n},
		{"If-Range weak ETag", []string{"Range", "bytes=10-19", "If-Range", "W/" + etag}, 200, 0, n},
		{"If-Range current date", []string{"Range", "bytes=10-19", "If-Range", lastMod}, 206, 10, 20},
		{"If-Range older date", []string{"Range", "bytes=10-19", "If-Range", "Mon, 02 Jan 2006 15:04:05 GMT"}, 200, 0, n},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := e.get(t, http.MethodGet, alice, target, c.header...)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, c.status, body)
			}
			switch c.status {
			case 416:
				if cr := resp.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes */%d", n) {
					t.Errorf("Content-Range %q", cr)
				}
			case 206:
				if cr := resp.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes %d-%d/%d", c.start, c.end-1, n) {
					t.Errorf("Content-Range %q", cr)
				}
				fallthrough
			default:
				if !bytes.Equal(body, data[c.start:c.end]) || resp.Header.Get("Content-Length") != strconv.Itoa(c.end-c.start) {
					t.Errorf("got %d bytes (Content-Length %s), want data[%d:%d]", len(body), resp.Header.Get("Content-Length"), c.start, c.end)
				}
			}
		})
	}
}

func TestDownloadConditional(t *testing.T) {
	e := newEnv(t, nil)
	fid := e.putMP3(t, alice, "c.mp3", randomBytes(1000, 3))
	target := "/download?fid=" + fid.Hex()
	resp, _ := e.get(t, http.MethodGet, alice, target)
	etag, lastMod := resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")

	for _, c := range []struct {
		name   string
		header []string
		status int
	}{
		{"If-None-Match current", []string{"If-None-Match", etag}, 304},
		{"If-None-Match in a list", []string{"If-None-Match", `"a", ` + etag}, 304},
		{"If-None-Match weak", []string{"If-None-Match", "W/" + etag}, 304},
		{"If-None-Match star", []string{"If-None-Match", "*"}, 304},
		{"If-None-Match other", []string{"If-None-Match", `"other"`}, 200},
		{"If-Modified-Since now", []string{"If-Modified-Since", lastMod}, 304},
		{"If-Modified-Since long ago", []string{"If-Modified-Since", "Mon, 02 Jan 2006 15:04:05 GMT"}, 200},
		{"If-None-Match wins over If-Modified-Since", []string{"If-None-Match", `"other"`, "If-Modified-Since", lastMod}, 200},
		{"If-Match other", []string{"If-Match", `"other"`}, 412},
		{"If-Match current", []string{"If-Match", etag}, 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := e.get(t, http.MethodGet, alice, target, c.header...)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, c.status)
			}
			if c.status == 304 && (len(body) != 0 || resp.Header.Get("ETag") != etag || resp.Header.Get("Content-Type") != "") {
				t.Errorf("304 with %d bytes, headers %v", len(body), resp.Header)
			}
		})
	}
}

func TestOwnerAdminStranger(t *testing.T) {
	e := newEnv(t, nil)
	data := randomBytes(2000, 4)
	aliceFID := e.putMP3(t, alice, "a.mp3", data)
	bobJob := bson.NewObjectID()
	e.putJob(t, bobJob, bob, "converting", "")

	_, missingBody := e.get(t, http.MethodGet, alice, "/download?fid="+bson.NewObjectID().Hex())
	_, missingJobBody := e.get(t, http.MethodGet, alice, "/jobs/"+bson.NewObjectID().Hex())
	if string(missingBody) != string(missingJobBody) {
		t.Errorf("missing file %s and missing job %s answer differently", missingBody, missingJobBody)
	}

	for _, c := range []struct {
		user, target string
		status       int
	}{
		{alice, "/download?fid=" + aliceFID.Hex(), 200},
		{admin, "/download?fid=" + aliceFID.Hex(), 200},
		{bob, "/download?fid=" + aliceFID.Hex(), 404},
		{alice, "/jobs/" + aliceFID.Hex(), 200},
		{admin, "/jobs/" + aliceFID.Hex(), 200},
		{bob, "/jobs/" + aliceFID.Hex(), 404},
		{bob, "/jobs/" + bobJob.Hex(), 200},
		{alice, "/jobs/" + bobJob.Hex(), 404},
		{admin, "/jobs/" + bobJob.Hex(), 200},
	} {
		resp, body := e.get(t, http.MethodGet, c.user, c.target)
		if resp.StatusCode != c.status {
			t.Errorf("%s GET %s: %d, want %d", c.user, c.target, resp.StatusCode, c.status)
		}
		if c.status == 404 && string(body) != string(missingBody) {
			t.Errorf("%s GET %s: 404 body %s differs from a missing one's %s", c.user, c.target, body, missingBody)
		}
		if c.status == 200 && strings.HasPrefix(c.target, "/download") && !bytes.Equal(body, data) {
			t.Errorf("%s GET %s: wrong bytes", c.user, c.target)
		}
	}

	for _, c := range []struct {
		user, query string
		want        []bson.ObjectID
	}{
		{alice, "", []bson.ObjectID{aliceFID}},
		{alice, "?all=true", []bson.ObjectID{aliceFID}}, // not an admin: all is ignored
		{bob, "", []bson.ObjectID{bobJob}},
		{admin, "", nil},
		{admin, "?all=true", []bson.ObjectID{bobJob, aliceFID}},
	} {
		got := e.listJobs(t, c.user, "/jobs"+c.query)
		if fmt.Sprint(ids(got.Jobs)) != fmt.Sprint(c.want) {
			t.Errorf("%s GET /jobs%s: %v, want %v", c.user, c.query, ids(got.Jobs), c.want)
		}
	}
}

// A user deleted and made again under the same address is a new id: the old account's
// job, MP3 and list stay out of its reach (issue 17). Jobs and MP3s stored before owner_id
// existed match by address.
func TestOwnedByTheUsersIDNotTheAddress(t *testing.T) {
	e := newEnv(t, nil)
	data := randomBytes(2000, 5)
	oldFID := e.putMP3(t, alice, "old.mp3", data)
	legacyFID := e.putMP3(t, alice, "legacy.mp3", data)
	e.forgetOwnerID(t, legacyFID)
	reborn := alice + "#77" // alice's address, a new account

	_, missing := e.get(t, http.MethodGet, reborn, "/jobs/"+bson.NewObjectID().Hex())
	for _, c := range []struct {
		user, target string
		status       int
	}{
		{reborn, "/jobs/" + oldFID.Hex(), 404},
		{reborn, "/download?fid=" + oldFID.Hex(), 404},
		{alice, "/jobs/" + oldFID.Hex(), 200},
		{alice, "/download?fid=" + oldFID.Hex(), 200},
		{alice, "/jobs/" + legacyFID.Hex(), 200},
		{alice, "/download?fid=" + legacyFID.Hex(), 200},
		{bob, "/jobs/" + legacyFID.Hex(), 404},
		{bob, "/download?fid=" + legacyFID.Hex(), 404},
	} {
		resp, body := e.get(t, http.MethodGet, c.user, c.target)
		if resp.StatusCode != c.status {
			t.Errorf("%s GET %s: %d, want %d", c.user, c.target, resp.StatusCode, c.status)
		}
		if c.status == 404 && !bytes.Equal(body, missing) {
			t.Errorf("%s GET %s: 404 body %s differs from a missing one's %s", c.user, c.target, body, missing)
		}
	}
	if got := ids(e.listJobs(t, reborn, "/jobs").Jobs); fmt.Sprint(got) != fmt.Sprint([]bson.ObjectID{legacyFID}) {
		t.Errorf("the new account lists %v, want only the job stored before owner_id %v", got, legacyFID)
	}
	if got := ids(e.listJobs(t, alice, "/jobs").Jobs); fmt.Sprint(got) != fmt.Sprint([]bson.ObjectID{legacyFID, oldFID}) {
		t.Errorf("alice lists %v, want %v", got, []bson.ObjectID{legacyFID, oldFID})
	}
}

// forgetOwnerID makes fid's job and MP3 look as they were stored before owner_id existed.
func (e *testEnv) forgetOwnerID(t testing.TB, fid bson.ObjectID) {
	t.Helper()
	ctx := context.Background()
	unset := func(field string) bson.D { return bson.D{{Key: "$unset", Value: bson.D{{Key: field, Value: ""}}}} }
	if _, err := e.videos.Collection("jobs").UpdateOne(ctx, bson.D{{Key: "_id", Value: fid}}, unset("owner_id")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.mp3s.Collection("fs.files").UpdateOne(ctx, bson.D{{Key: "_id", Value: fid}}, unset("metadata.owner_id")); err != nil {
		t.Fatal(err)
	}
}

type jobList struct {
	Jobs []job   `json:"jobs"`
	Next *string `json:"next"`
}

func (e *testEnv) listJobs(t testing.TB, user, target string) jobList {
	t.Helper()
	resp, body := e.get(t, http.MethodGet, user, target)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", target, resp.StatusCode, body)
	}
	var l jobList
	if err := json.Unmarshal(body, &l); err != nil || l.Jobs == nil || l.Next == nil {
		t.Fatalf("GET %s: %s (%v)", target, body, err)
	}
	return l
}

func ids(jobs []job) []bson.ObjectID {
	var out []bson.ObjectID
	for _, j := range jobs {
		id, _ := bson.ObjectIDFromHex(j.VideoFID)
		out = append(out, id)
	}
	return out
}

func TestJobStatus(t *testing.T) {
	e := newEnv(t, nil)
	done := e.putMP3(t, alice, "d.mp3", randomBytes(10, 5))
	failed := bson.NewObjectID()
	e.putJob(t, failed, alice, "failed", "")

	resp, body := e.get(t, http.MethodGet, alice, "/jobs/"+done.Hex())
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	var raw map[string]any
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"video_fid", "filename", "content_type", "size", "state", "reason", "mp3_fid", "duration_seconds", "attempts", "created_at", "updated_at", "download_url"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("field %s missing from %s", k, body)
		}
	}
	if raw["video_fid"] != done.Hex() || raw["state"] != "done" || raw["mp3_fid"] != done.Hex() || raw["duration_seconds"] != 61.5 ||
		raw["size"] != 1234.0 || raw["attempts"] != 1.0 || !strings.HasPrefix(raw["download_url"].(string), "https://mp3.example.com/download?") {
		t.Errorf("job = %s", body)
	}
	if link, _ := url.Parse(raw["download_url"].(string)); link.Query().Get("fid") != done.Hex() || link.Query().Get("sig") == "" {
		t.Errorf("download_url %s is not a signed link to %s", raw["download_url"], done.Hex())
	}
	if _, err := time.Parse(time.RFC3339, raw["created_at"].(string)); err != nil {
		t.Errorf("created_at: %v", err)
	}

	_, body = e.get(t, http.MethodGet, alice, "/jobs/"+failed.Hex())
	var v map[string]any
	_ = json.Unmarshal(body, &v)
	if v["state"] != "failed" || v["reason"] != "no audio stream" || v["download_url"] != nil {
		t.Errorf("failed job = %s", body)
	}

	rel := newEnv(t, map[string]string{"PUBLIC_URL": ""})
	fid := rel.putMP3(t, alice, "x.mp3", randomBytes(10, 6))
	_, body = rel.get(t, http.MethodGet, alice, "/jobs/"+fid.Hex())
	_ = json.Unmarshal(body, &v)
	if u, _ := v["download_url"].(string); !strings.HasPrefix(u, "/download?") || !strings.Contains(u, "fid="+fid.Hex()) {
		t.Errorf("download_url without PUBLIC_URL: %v", v["download_url"])
	}
}

const testLinkSecret = "a link secret of at least 32 bytes, for tests"

// TestSignedLinks: the job's download_url downloads the MP3 with no token, as
// in a plain browser tab, under its name; the same link tampered, expired,
// moved to another file or made with another key is 403, and says nothing of
// whether the file exists.
func TestSignedLinks(t *testing.T) {
	e := newEnv(t, nil)
	data := randomBytes(300_000, 9)
	fid := e.putMP3(t, alice, "holiday.mp3", data)
	other := e.putMP3(t, bob, "bob.mp3", randomBytes(10, 10))

	_, body := e.get(t, http.MethodGet, alice, "/jobs/"+fid.Hex())
	var j struct {
		DownloadURL string `json:"download_url"`
	}
	if err := json.Unmarshal(body, &j); err != nil {
		t.Fatal(err)
	}
	link := strings.TrimPrefix(j.DownloadURL, "https://mp3.example.com")
	resp, got := e.get(t, http.MethodGet, "", link)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, data) {
		t.Fatalf("the job's link without a token: %d, %d bytes; want the MP3", resp.StatusCode, len(got))
	}
	if cd := resp.Header.Get("Content-Disposition"); !strings.Contains(cd, "holiday.mp3") {
		t.Errorf("Content-Disposition %q", cd)
	}
	resp, _ = e.get(t, http.MethodGet, "", link, "Range", "bytes=100-199")
	if resp.StatusCode != http.StatusPartialContent {
		t.Errorf("a range of a signed link: %d, want 206", resp.StatusCode)
	}

	q, _ := url.ParseQuery(strings.TrimPrefix(link, "/download?"))
	with := func(key, value string) string {
		c := url.Values{}
		for k, v := range q {
			c[k] = v
		}
		c.Set(key, value)
		return "/download?" + c.Encode()
	}
	sig := []byte(q.Get("sig"))
	sig[5] ^= 2
	signer := newLinkSigner(testLinkSecret, "")
	for name, target := range map[string]string{
		"tampered signature":      with("sig", string(sig)),
		"later expiry":            with("exp", fmt.Sprint(time.Now().Add(365*24*time.Hour).Unix())),
		"another user's file":     with("fid", other.Hex()),
		"a file that is gone":     with("fid", bson.NewObjectID().Hex()),
		"not an id":               with("fid", "nope"),
		"expired":                 "/download?" + signer.query(fid.Hex(), alice, time.Now().Add(-time.Minute)),
		"signed for bob":          "/download?" + signer.query(fid.Hex(), bob, time.Now().Add(time.Hour)),
		"signed with another key": "/download?" + newLinkSigner("another secret of at least 32 bytes", "").query(fid.Hex(), alice, time.Now().Add(time.Hour)),
	} {
		resp, body := e.get(t, http.MethodGet, "", target)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), msgBadLink) {
			t.Errorf("%s: %d %s, want 403 and nothing more", name, resp.StatusCode, body)
		}
	}

	// Rotation: a link made with the previous key still works.
	rotated := newEnv(t, map[string]string{"LINK_SECRET": "the next secret, also 32 bytes or more", "LINK_SECRET_PREVIOUS": testLinkSecret})
	rfid := rotated.putMP3(t, alice, "r.mp3", data)
	if resp, _ := rotated.get(t, http.MethodGet, "", "/download?"+signer.query(rfid.Hex(), alice, time.Now().Add(time.Hour))); resp.StatusCode != http.StatusOK {
		t.Errorf("a link of LINK_SECRET_PREVIOUS: %d, want 200", resp.StatusCode)
	}
}

// TestJobProgress: a converting job shows how far ffmpeg is; once done, the
// percentage is gone (it meant something only while converting).
func TestJobProgress(t *testing.T) {
	e := newEnv(t, nil)
	fid := bson.NewObjectID()
	e.putJob(t, fid, alice, "converting", "")
	set := func(state string) {
		if _, err := e.videos.Collection("jobs").UpdateOne(context.Background(), bson.D{{Key: "_id", Value: fid}},
			bson.D{{Key: "$set", Value: bson.D{{Key: "progress", Value: int32(42)}, {Key: "state", Value: state}}}}); err != nil {
			t.Fatal(err)
		}
	}
	set("converting")
	var v map[string]any
	_, body := e.get(t, http.MethodGet, alice, "/jobs/"+fid.Hex())
	if err := json.Unmarshal(body, &v); err != nil || v["progress"] != 42.0 {
		t.Fatalf("converting job: %s, want progress 42", body)
	}
	set("failed")
	_, body = e.get(t, http.MethodGet, alice, "/jobs/"+fid.Hex())
	v = nil
	if err := json.Unmarshal(body, &v); err != nil || v["progress"] != nil {
		t.Fatalf("failed job: %s, want no progress", body)
	}
}

func TestJobsPaging(t *testing.T) {
	e := newEnv(t, nil)
	var created []bson.ObjectID
	for range 5 {
		id := bson.NewObjectID()
		e.putJob(t, id, alice, "uploaded", "")
		created = append([]bson.ObjectID{id}, created...) // newest first
	}
	e.putJob(t, bson.NewObjectID(), bob, "uploaded", "")

	var seen []bson.ObjectID
	target := "/jobs?limit=2"
	for page := 0; page < 5; page++ {
		l := e.listJobs(t, alice, target)
		seen = append(seen, ids(l.Jobs)...)
		if *l.Next == "" {
			break
		}
		target = "/jobs?limit=2&before=" + *l.Next
	}
	if fmt.Sprint(seen) != fmt.Sprint(created) {
		t.Errorf("paged %v, want %v", seen, created)
	}
	if l := e.listJobs(t, alice, "/jobs"); len(l.Jobs) != 5 || *l.Next != "" {
		t.Errorf("default page: %d jobs, next %q", len(l.Jobs), *l.Next)
	}
	if l := e.listJobs(t, alice, "/jobs?limit=5"); len(l.Jobs) != 5 || *l.Next != "" {
		t.Errorf("exact page: %d jobs, next %q", len(l.Jobs), *l.Next)
	}
	for _, q := range []string{"limit=0", "limit=101", "limit=x", "before=nope"} {
		if resp, body := e.get(t, http.MethodGet, alice, "/jobs?"+q); resp.StatusCode != 400 || !strings.Contains(string(body), `"error"`) {
			t.Errorf("/jobs?%s: %d %s", q, resp.StatusCode, body)
		}
	}
}

func TestBadRequests(t *testing.T) {
	e := newEnv(t, nil)
	for _, c := range []struct {
		method, user, target string
		status               int
		wwwAuth              string
	}{
		{"GET", alice, "/download?fid=xyz", 400, ""},
		{"GET", alice, "/download", 400, ""},
		{"GET", alice, "/jobs/0123", 400, ""},
		{"POST", alice, "/download?fid=" + bson.NewObjectID().Hex(), 405, ""},
		{"DELETE", alice, "/jobs", 405, ""},
		{"GET", alice, "/elsewhere", 404, ""},
		{"GET", "", "/jobs", 401, "Bearer"},
		{"GET", "mallory", "/jobs", 401, `Bearer error="invalid_token"`},
	} {
		resp, body := e.get(t, c.method, c.user, c.target)
		var out map[string]string
		if resp.StatusCode != c.status || json.Unmarshal(body, &out) != nil || out["error"] == "" {
			t.Errorf("%s %s as %q: %d %s, want %d with a JSON error", c.method, c.target, c.user, resp.StatusCode, body, c.status)
		}
		if got := resp.Header.Get("WWW-Authenticate"); got != c.wwwAuth {
			t.Errorf("%s %s: WWW-Authenticate %q, want %q", c.method, c.target, got, c.wwwAuth)
		}
	}
	// A second request with the same token is answered from the cache.
	before := e.validateCalls.Load()
	e.get(t, "GET", alice, "/jobs")
	e.get(t, "GET", alice, "/jobs")
	if n := e.validateCalls.Load() - before; n != 0 {
		t.Errorf("validate called %d more times for a cached token", n)
	}
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

func TestBackendsDown(t *testing.T) {
	noMongo := newEnv(t, map[string]string{"MONGODB_URI": "mongodb://" + closedPort(t) + "/?serverSelectionTimeoutMS=500&connectTimeoutMS=500"})
	fid := bson.NewObjectID().Hex()
	for _, target := range []string{"/download?fid=" + fid, "/jobs/" + fid, "/jobs"} {
		resp, body := noMongo.get(t, http.MethodGet, alice, target)
		if resp.StatusCode != 503 || !strings.Contains(string(body), "storage unavailable, try again") {
			t.Errorf("MongoDB down, GET %s: %d %s", target, resp.StatusCode, body)
		}
	}
	noValidate := newEnv(t, map[string]string{"VALIDATE_URL": "http://" + closedPort(t) + "/validate"})
	if resp, body := noValidate.get(t, http.MethodGet, alice, "/jobs"); resp.StatusCode != 503 {
		t.Errorf("validate down: %d %s", resp.StatusCode, body)
	}
}

func TestStartAndReadiness(t *testing.T) {
	f := New()
	rec := httptest.NewRecorder()
	f.Handle(rec, httptest.NewRequest(http.MethodGet, "/jobs", nil))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Content-Type") != "application/json" {
		t.Errorf("before Start: %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	if ok, _ := f.Ready(context.Background()); ok {
		t.Error("ready before Start")
	}
	good := map[string]string{"MONGODB_URI": "mongodb://127.0.0.1:1/", "VALIDATE_URL": "http://127.0.0.1:1/validate", "LINK_SECRET": testLinkSecret}
	for _, c := range []struct{ key, value string }{
		{"VALIDATE_URL", ""}, {"MONGODB_URI", ""}, {"MONGODB_URI", "http://x"}, {"PUBLIC_URL", "ftp://x"}, {"DOWNLOAD_TIMEOUT", "soon"},
		{"LINK_SECRET", ""}, {"LINK_SECRET", "too short"}, {"LINK_TTL", "0s"},
	} {
		cfg := map[string]string{}
		for k, v := range good {
			cfg[k] = v
		}
		cfg[c.key] = c.value
		if err := New().Start(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), c.key) {
			t.Errorf("%s=%q: Start error %v", c.key, c.value, err)
		}
	}
	if err := f.Start(context.Background(), good); err != nil { // nothing is reachable: still starts
		t.Fatal(err)
	}
	defer f.Stop(context.Background())
	if ok, _ := f.Ready(context.Background()); !ok {
		t.Error("not ready after Start")
	}
}

func TestParseRange(t *testing.T) {
	for _, c := range []struct {
		spec          string
		size          int64
		start, length int64
		res           rangeResult
	}{
		{"bytes=0-0", 10, 0, 1, rangeOK},
		{"bytes=0-", 10, 0, 10, rangeOK},
		{"bytes= 2-4", 10, 2, 3, rangeOK},
		{"BYTES=2-4", 10, 2, 3, rangeOK},
		{"bytes=-3", 10, 7, 3, rangeOK},
		{"bytes=5-99999999999999999999999", 10, 5, 5, rangeOK},
		{"bytes=-99999999999999999999999", 10, 0, 10, rangeOK},
		{"bytes=10-", 10, 0, 0, rangeUnsatisfiable},
		{"bytes=99999999999999999999999-", 10, 0, 0, rangeUnsatisfiable},
		{"bytes=0-", 0, 0, 0, rangeUnsatisfiable},
		{"bytes=-1", 0, 0, 0, rangeUnsatisfiable},
		{"bytes=-0", 10, 0, 0, rangeUnsatisfiable},
		{"bytes=4-2", 10, 0, 0, rangeIgnored},
		{"bytes=a-b", 10, 0, 0, rangeIgnored},
		{"bytes=+1-2", 10, 0, 0, rangeIgnored},
		{"bytes=-", 10, 0, 0, rangeIgnored},
		{"bytes=1-2,4-5", 10, 0, 0, rangeIgnored},
		{"bytes", 10, 0, 0, rangeIgnored},
		{"", 10, 0, 0, rangeIgnored},
	} {
		start, length, res := parseRange(c.spec, c.size)
		if start != c.start || length != c.length || res != c.res {
			t.Errorf("parseRange(%q, %d) = %d, %d, %d; want %d, %d, %d", c.spec, c.size, start, length, res, c.start, c.length, c.res)
		}
	}
}

// An MP3 the sweep deleted after MP3_RETENTION: 410 with the reason for its owner, 404 for
// others; /jobs shows the job expired.
func TestExpiredMP3IsGone(t *testing.T) {
	e := newEnv(t, nil)
	fid := bson.NewObjectID()
	e.putJob(t, fid, alice, "expired", fid.Hex())

	resp, body := e.get(t, http.MethodGet, alice, "/download?fid="+fid.Hex())
	if resp.StatusCode != http.StatusGone || !strings.Contains(string(body), "deleted after the retention period") {
		t.Fatalf("owner: %d %s", resp.StatusCode, body)
	}
	if resp, _ := e.get(t, http.MethodGet, bob, "/download?fid="+fid.Hex()); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("another user: %d", resp.StatusCode)
	}
	// The link of the email: 410 when signed for the owner, 403 like any bad link otherwise.
	signer := newLinkSigner(testLinkSecret, "")
	resp, body = e.get(t, http.MethodGet, "", "/download?"+signer.query(fid.Hex(), alice, time.Now().Add(time.Hour)))
	if resp.StatusCode != http.StatusGone || !strings.Contains(string(body), msgExpired) {
		t.Fatalf("signed link: %d %s", resp.StatusCode, body)
	}
	if resp, _ := e.get(t, http.MethodGet, "", "/download?"+signer.query(fid.Hex(), bob, time.Now().Add(time.Hour))); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a link signed for another user: %d", resp.StatusCode)
	}
	resp, body = e.get(t, http.MethodGet, alice, "/jobs/"+fid.Hex())
	var j map[string]any
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &j) != nil || j["state"] != "expired" || j["download_url"] != nil {
		t.Fatalf("job: %d %s", resp.StatusCode, body)
	}
}
