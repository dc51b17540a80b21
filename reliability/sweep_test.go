package reliability

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	sweep "mp3converter/functions/sweep"

	"mp3converter/internal/stacktest"
)

// The sweep (functions/sweep) against the whole stack: what the event path
// dropped is re-driven, what nothing needs is removed, nothing live is
// touched, and nothing comes twice. A run is started by the stack's own
// PingSource (knative/sweep.yaml), fired now instead of on the minute.

// sweepUntil fires the sweep's PingSource every second until done holds or
// within has passed; the caller checks what it waited for.
func (s *system) sweepUntil(t testing.TB, within time.Duration, done func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); time.Now().Before(deadline) && !done(); time.Sleep(time.Second) {
		if err := s.FirePing(context.Background(), "sweep"); err != nil {
			t.Logf("firing the sweep: %v", err)
		}
	}
}

// jobState reads a job's state straight from MongoDB ("" when there is none).
func (s *system) jobState(t testing.TB, fid string) string {
	t.Helper()
	oid, _ := bson.ObjectIDFromHex(fid)
	var j struct{ State string }
	err := s.mongo.Database(s.prefix+"videos").Collection("jobs").FindOne(context.Background(), bson.D{{Key: "_id", Value: oid}}).Decode(&j)
	if err != nil && err != mongo.ErrNoDocuments {
		t.Fatal(err)
	}
	return j.State
}

// storeFile writes data as a GridFS file of db (videos or mp3s) under id, its
// upload date moved age into the past.
func (s *system) storeFile(t testing.TB, db string, id bson.ObjectID, data []byte, meta bson.D, age time.Duration) {
	t.Helper()
	ctx := context.Background()
	d := s.mongo.Database(s.prefix + db)
	err := d.GridFSBucket(options.GridFSBucket().SetChunkSizeBytes(128*1024)).
		UploadFromStreamWithID(ctx, id, "f", bytes.NewReader(data), options.GridFSUpload().SetMetadata(meta))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Collection("fs.files").UpdateOne(ctx, bson.D{{Key: "_id", Value: id}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "uploadDate", Value: time.Now().Add(-age)}}}}); err != nil {
		t.Fatal(err)
	}
}

// strandUpload leaves what an upload that crashed between storing and
// publishing leaves: the video and an uploaded job 10 minutes old, and no event.
func (s *system) strandUpload(t testing.TB, owner, path, name string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(-10 * time.Minute).UTC()
	id := bson.NewObjectIDFromTimestamp(at)
	// The video is as fresh as the sweep sees it (uploadDate now): until its job is
	// inserted just below, a tick of the stack's own sweep must not take it for an orphan.
	s.storeFile(t, "videos", id, data, bson.D{{Key: "username", Value: owner}, {Key: "filename", Value: name},
		{Key: "content_type", Value: "video/mp4"}}, 0)
	_, err = s.mongo.Database(s.prefix+"videos").Collection("jobs").InsertOne(context.Background(), bson.D{
		{Key: "_id", Value: id}, {Key: "username", Value: owner}, {Key: "filename", Value: name},
		{Key: "content_type", Value: "video/mp4"}, {Key: "size", Value: int64(len(data))}, {Key: "state", Value: "uploaded"},
		{Key: "reason", Value: ""}, {Key: "mp3_fid", Value: ""}, {Key: "attempts", Value: int32(0)},
		{Key: "created_at", Value: at}, {Key: "updated_at", Value: at}})
	if err != nil {
		t.Fatal(err)
	}
	return id.Hex()
}

// checkOneMP3AndOneEmail counts what a finished job left: one MP3, one email.
func (s *system) checkOneMP3AndOneEmail(t *testing.T, r *Result, fid string) {
	t.Helper()
	oid, _ := bson.ObjectIDFromHex(fid)
	mp3s, err := s.mongo.Database(s.prefix+"mp3s").Collection("fs.files").CountDocuments(context.Background(), bson.D{{Key: "_id", Value: oid}})
	if err != nil {
		t.Fatal(err)
	}
	mails := mailsAbout(s.mail.All(), fid)
	switch {
	case mp3s == 0 || mails == 0:
		r.Lost++
		t.Errorf("job %s: %d MP3s, %d emails", fid, mp3s, mails)
	case mails > 1:
		r.Duplicates += mails - 1
		t.Errorf("job %s: %d emails", fid, mails)
	}
}

func TestSweepRedrivesAnUploadWhoseEventWasLost(t *testing.T) {
	r := record(t, "sweep: an upload stored but its event never accepted is re-driven")
	s := sharedSystem(t)
	fids := []string{s.strandUpload(t, stacktest.AdminEmail, clip(t, 2), "stranded-"+stacktest.RandomHex(3)+".mp4"),
		s.strandUpload(t, stacktest.AdminEmail, clip(t, 2), "stranded-"+stacktest.RandomHex(3)+".mp4")}
	r.Runs = len(fids)
	s.sweepUntil(t, 3*time.Minute, func() bool { return s.jobState(t, fids[0]) == "done" && s.jobState(t, fids[1]) == "done" })
	for _, fid := range fids {
		s.waitMails(t, fid, 1, time.Minute)
		s.checkOneMP3AndOneEmail(t, r, fid)
		if n := len(shared.convert.answers(fid)); n != 1 {
			r.Duplicates++
			t.Errorf("convert was handed %s %d times, want 1", fid, n)
		}
	}
}

func TestSweepSendsTheEmailNotifyGaveUpOn(t *testing.T) {
	r := record(t, "sweep: a job done while notify failed past its retries gets its email, once")
	s := sharedSystem(t)
	// What notify leaves when SMTP failed through all its retries: the job done,
	// its MP3 stored, no notified_at.
	at := time.Now().Add(-10 * time.Minute).UTC()
	id := bson.NewObjectIDFromTimestamp(at)
	fid := id.Hex()
	s.storeFile(t, "mp3s", id, bytes.Repeat([]byte{1}, 1000), bson.D{{Key: "username", Value: stacktest.AdminEmail},
		{Key: "video_fid", Value: fid}, {Key: "duration_seconds", Value: 2.0}}, 0) // fresh: no orphan before its job exists
	_, err := s.mongo.Database(s.prefix+"videos").Collection("jobs").InsertOne(context.Background(), bson.D{
		{Key: "_id", Value: id}, {Key: "username", Value: stacktest.AdminEmail}, {Key: "filename", Value: "unsent.mp4"},
		{Key: "content_type", Value: "video/mp4"}, {Key: "size", Value: int64(1000)}, {Key: "state", Value: "done"},
		{Key: "reason", Value: ""}, {Key: "mp3_fid", Value: fid}, {Key: "duration_seconds", Value: 2.0}, {Key: "attempts", Value: int32(1)},
		{Key: "created_at", Value: at}, {Key: "updated_at", Value: at}})
	if err != nil {
		t.Fatal(err)
	}
	r.Runs = 1
	s.sweepUntil(t, time.Minute, func() bool { return mailsAbout(s.mail.All(), fid) > 0 })
	// Later runs find it notified.
	for range 2 {
		if err := s.FirePing(context.Background(), "sweep"); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(func() bool { return shared.notify.deliveries("mp3-"+fid) >= 1 })
	s.checkOneMP3AndOneEmail(t, r, fid)
}

func TestTwoSweepReplicasRedriveEachJobOnce(t *testing.T) {
	r := record(t, "sweep: two replicas at once re-drive each stalled job once")
	s := sharedSystem(t)
	var fids []string
	for range 4 {
		fids = append(fids, s.strandUpload(t, stacktest.AdminEmail, clip(t, 2), "replicas-"+stacktest.RandomHex(3)+".mp4"))
	}
	r.Runs = len(fids)
	cfg := map[string]string{"MONGODB_URI": s.mongoURI, "MONGODB_DB_PREFIX": s.prefix, "K_SINK": s.BrokerURL}
	var replicas []*sweep.Function
	for range 2 {
		f := sweep.New()
		if err := f.Start(context.Background(), cfg); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Stop(context.Background()) })
		replicas = append(replicas, f)
	}
	ping := event.New()
	ping.SetID("replicas-" + stacktest.RandomHex(4))
	ping.SetType("dev.knative.sources.ping")
	ping.SetSource("/apis/v1/namespaces/mp3converter/pingsources/sweep")
	for range 3 { // three periods' worth of ticks at once, on both replicas
		var wg sync.WaitGroup
		for _, f := range replicas {
			wg.Go(func() {
				if _, err := f.Handle(context.Background(), ping); err != nil {
					t.Errorf("sweep: %v", err)
				}
			})
		}
		wg.Wait()
	}
	s.sweepUntil(t, 3*time.Minute, func() bool {
		for _, fid := range fids {
			if s.jobState(t, fid) != "done" {
				return false
			}
		}
		return true
	})
	for _, fid := range fids {
		s.waitMails(t, fid, 1, time.Minute)
		s.checkOneMP3AndOneEmail(t, r, fid)
		if n := len(shared.convert.answers(fid)); n != 1 {
			r.Duplicates++
			t.Errorf("convert was handed %s %d times, want 1", fid, n)
		}
	}
}

func TestDeletedUsersDataGoes(t *testing.T) {
	r := record(t, "sweep: a deleted user's jobs and files go, another user's stay")
	s := sharedSystem(t)
	leaving, staying := "leaving-"+stacktest.RandomHex(3)+"@example.com", "staying-"+stacktest.RandomHex(3)+"@example.com"
	tokens := map[string]string{leaving: s.AddUser(t, leaving), staying: s.AddUser(t, staying)}
	fids := map[string]string{}
	for user, tok := range tokens {
		fids[user] = s.Upload(t, tok, clip(t, 2), "mine.mp4")
	}
	for user, fid := range fids {
		if job := s.WaitJob(t, tokens[user], fid, 2*time.Minute); job.State != "done" {
			t.Fatalf("job %v", job)
		}
	}
	if a := s.do("DELETE", "/users/"+leaving, s.AdminToken, nil); a.status != http.StatusNoContent {
		t.Fatalf("delete: %s", a)
	}
	r.Runs = 2
	ctx := context.Background()
	userJobs := func(user string) int64 {
		n, _ := s.mongo.Database(s.prefix+"videos").Collection("jobs").CountDocuments(ctx, bson.D{{Key: "username", Value: user}})
		return n
	}
	// user.deleted goes from login through the Broker to the sweep: no tick needed.
	waitUntil(func() bool { return userJobs(leaving) == 0 })
	mp3Of := func(user string) int64 {
		n, _ := s.mongo.Database(s.prefix+"mp3s").Collection("fs.files").CountDocuments(ctx, bson.D{{Key: "metadata.username", Value: user}})
		return n
	}
	if userJobs(leaving) != 0 || mp3Of(leaving) != 0 {
		r.Failures++
		t.Errorf("the deleted user keeps %d jobs and %d MP3s", userJobs(leaving), mp3Of(leaving))
	}
	if userJobs(staying) != 1 || mp3Of(staying) != 1 {
		r.Lost++
		t.Errorf("the other user has %d jobs and %d MP3s, want 1 and 1", userJobs(staying), mp3Of(staying))
	}
	if a := s.do("GET", "/download?fid="+fids[staying], tokens[staying], nil); a.status != http.StatusOK {
		r.Lost++
		t.Errorf("the other user's download: %s", a)
	}
}
