//go:build reliability

package reliability

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"mp3converter/internal/local/stack"
	"mp3converter/internal/stacktest"
)

// The sweep's cases that need a system of their own (see sweep_test.go).

func TestSweepRecoversEventsLostWithTheInMemoryBroker(t *testing.T) {
	r := record(t, "sweep: `up` (in-memory broker) stopped with events queued, then restarted: every job done, one email each")
	// convert is unreachable: the video.uploaded events wait in the broker's
	// memory, retried, and are lost when the stack stops.
	dead := stacktest.FreeAddr(t)
	s := newSystem(t, sysOptions{env: map[string]string{"SWEEP_GRACE": "1s"}, external: map[string]string{"convert": "http://" + dead}})
	const n = 20 // as many as issue 20 asks for
	var fids []string
	for i := range n {
		fids = append(fids, s.Upload(t, s.AdminToken, clip(t, 2), fmt.Sprintf("queued-%d.mp4", i)))
	}
	r.Runs = n
	if err := s.Stack.Stack.Close(); err != nil {
		t.Logf("stopping the first stack: %v", err)
	}
	for _, fid := range fids {
		if st := s.jobState(t, fid); st != "uploaded" {
			t.Fatalf("job %s is %s before the restart, want uploaded", fid, st)
		}
	}
	manifests, err := stacktest.Manifests(stacktest.Retries(retryBackoff, "linear", retries))
	if err != nil {
		t.Fatal(err)
	}
	st, err := stack.Start(context.Background(), stack.Config{Addr: "127.0.0.1:0", DataDir: s.DataDir, Env: s.Env,
		Logger: slog.Default(), Manifests: manifests})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s.Stack.Stack = st
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := st.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	allDone := func() bool {
		for _, fid := range fids {
			if s.jobState(t, fid) != "done" {
				return false
			}
		}
		return true
	}
	s.sweepUntil(t, 4*time.Minute, allDone)
	for _, fid := range fids {
		s.waitMails(t, fid, 1, time.Minute)
		s.checkOneMP3AndOneEmail(t, r, fid)
	}
}

func TestRetentionExpiresMP3s(t *testing.T) {
	r := record(t, "sweep: retention (MP3_RETENTION=1s): MP3 gone, job expired, download 410")
	s := newSystem(t, sysOptions{env: map[string]string{"MP3_RETENTION": "1s"}})
	fid := s.Upload(t, s.AdminToken, clip(t, 2), "kept-briefly.mp4")
	if job := s.WaitJob(t, s.AdminToken, fid, 2*time.Minute); job.State != "done" {
		t.Fatalf("job %v", job)
	}
	if a := s.do("GET", "/download?fid="+fid, s.AdminToken, nil); a.status != http.StatusOK {
		t.Fatalf("download before: %s", a)
	}
	r.Runs = 1
	s.sweepUntil(t, time.Minute, func() bool { return s.jobState(t, fid) == "expired" })
	if st := s.jobState(t, fid); st != "expired" {
		r.Failures++
		t.Fatalf("job %s, want expired", st)
	}
	if c := s.counts(t); c.MP3Files != 0 || c.MP3Chunks != 0 {
		r.Failures++
		t.Errorf("the MP3 is still stored: %+v", c)
	}
	if a := s.do("GET", "/download?fid="+fid, s.AdminToken, nil); a.status != http.StatusGone {
		r.Failures++
		t.Errorf("download after: %s", a)
	}
	if a := s.do("GET", "/jobs/"+fid, s.AdminToken, nil); a.json()["state"] != "expired" {
		r.Failures++
		t.Errorf("/jobs: %s", a)
	}
}

func TestSweepRemovesOrphansAndNothingLive(t *testing.T) {
	r := record(t, "sweep: orphan videos, MP3s and chunks removed, nothing live touched")
	s := newSystem(t, sysOptions{env: map[string]string{"STUCK_AFTER": "1h", "SWEEP_CHUNK_SCAN_PAUSE": "0s"}}) // a tick before the orphans exist must not rest the scan
	live := s.Upload(t, s.AdminToken, clip(t, 2), "live.mp4")
	if job := s.WaitJob(t, s.AdminToken, live, 2*time.Minute); job.State != "done" {
		t.Fatalf("job %v", job)
	}
	liveOID, _ := bson.ObjectIDFromHex(live)
	ctx := context.Background()
	videos, mp3s := s.mongo.Database(s.prefix+"videos"), s.mongo.Database(s.prefix+"mp3s")
	old := 2 * time.Hour
	orphanVideo := bson.NewObjectIDFromTimestamp(time.Now().Add(-old))
	s.storeFile(t, "videos", orphanVideo, bytes.Repeat([]byte{2}, 300_000), bson.D{}, old)
	orphanMP3 := bson.NewObjectIDFromTimestamp(time.Now().Add(-old))
	s.storeFile(t, "mp3s", orphanMP3, bytes.Repeat([]byte{3}, 300_000), bson.D{}, old)
	deadChunks := bson.NewObjectIDFromTimestamp(time.Now().Add(-old))
	s.storeFile(t, "videos", deadChunks, bytes.Repeat([]byte{4}, 300_000), bson.D{}, old)
	if _, err := videos.Collection("fs.files").DeleteOne(ctx, bson.D{{Key: "_id", Value: deadChunks}}); err != nil {
		t.Fatal(err)
	}
	// An upload in progress: chunks, no files document, no job yet.
	uploading := bson.NewObjectID()
	s.storeFile(t, "videos", uploading, bytes.Repeat([]byte{5}, 300_000), bson.D{}, 0)
	if _, err := videos.Collection("fs.files").DeleteOne(ctx, bson.D{{Key: "_id", Value: uploading}}); err != nil {
		t.Fatal(err)
	}
	r.Runs = 4
	gone := func(db *mongo.Database, id bson.ObjectID) bool {
		f, _ := db.Collection("fs.files").CountDocuments(ctx, bson.D{{Key: "_id", Value: id}})
		c, _ := db.Collection("fs.chunks").CountDocuments(ctx, bson.D{{Key: "files_id", Value: id}})
		return f == 0 && c == 0
	}
	s.sweepUntil(t, time.Minute, func() bool {
		return gone(videos, orphanVideo) && gone(mp3s, orphanMP3) && gone(videos, deadChunks)
	})
	for name, ok := range map[string]bool{"orphan video": gone(videos, orphanVideo), "orphan MP3": gone(mp3s, orphanMP3),
		"chunks without a file": gone(videos, deadChunks)} {
		if !ok {
			r.Lost++ // storage that never comes back
			t.Errorf("%s kept", name)
		}
	}
	if n, _ := videos.Collection("fs.chunks").CountDocuments(ctx, bson.D{{Key: "files_id", Value: uploading}}); n != 3 {
		r.Failures++
		t.Errorf("an upload in progress lost its chunks: %d left", n)
	}
	if gone(mp3s, liveOID) || s.jobState(t, live) != "done" {
		r.Failures++
		t.Error("the live job or its MP3 was touched")
	}
	if a := s.do("GET", "/download?fid="+live, s.AdminToken, nil); a.status != http.StatusOK {
		r.Failures++
		t.Errorf("download of the live MP3: %s", a)
	}
}

// upload is SIGKILLed after it stored the video and the job and before the broker accepted
// the event (issue 20). upload runs alone (`mp3converter function upload`, the stack's
// External option) with a gate as its K_SINK: the gate holds the event's request until the
// test has killed the process, so the crash lands at that point every time, with no timing.
// The event never reaches the broker; the sweep re-drives the job: one MP3, one email.
func TestSweepRedrivesAnUploadKilledBeforeItsEventWasAccepted(t *testing.T) {
	r := record(t, "crash: upload SIGKILLed between storing and the broker accepting its event: the sweep re-drives it")
	addr := stacktest.FreeAddr(t)
	s := newSystem(t, sysOptions{env: map[string]string{"SWEEP_GRACE": "1s"}, external: map[string]string{"upload": "http://" + addr}})

	held := make(chan string, 10) // the ids of the events upload tried to publish
	release := make(chan struct{})
	gate := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		held <- req.Header.Get("Ce-Id")
		<-release
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(gate.Close)
	t.Cleanup(func() { close(release) }) // runs first: the gate's handlers return

	upload := startChild(t, map[string]string{
		"PATH": os.Getenv("PATH"), "LISTEN_ADDRESS": addr, "MP3C_LOG_LEVEL": "info",
		"MONGODB_URI": s.mongoURI, "MONGODB_DB_PREFIX": s.prefix, "VALIDATE_URL": s.URL + "/validate", "K_SINK": gate.URL,
	}, "function", "upload")
	upload.WaitReady(t, "http://"+addr+"/health/readiness", time.Minute)

	answered := make(chan answer, 1)
	go func() { answered <- s.upload(s.AdminToken, clip(t, 2), "killed-upload.mp4") }()
	var fid string
	select {
	case fid = <-held:
	case <-time.After(2 * time.Minute):
		t.Fatal("upload published nothing within 2 minutes")
	}
	upload.Kill()
	r.Runs = 1
	if a := <-answered; a.status == http.StatusAccepted {
		t.Fatalf("the killed upload answered %s", a)
	}
	if st := s.jobState(t, fid); st != "uploaded" {
		t.Fatalf("job %s is %q after the kill, want uploaded: the kill missed its point", fid, st)
	}
	r.figure("killed while its video.uploaded %s was at the broker's door; job stored, state uploaded", fid)

	s.sweepUntil(t, 3*time.Minute, func() bool { return s.jobState(t, fid) == "done" })
	if st := s.jobState(t, fid); st != "done" {
		r.Lost++
		t.Fatalf("job %s is %s after the sweep's re-drives, want done", fid, st)
	}
	s.waitMails(t, fid, 1, time.Minute)
	s.checkOneMP3AndOneEmail(t, r, fid)
}
