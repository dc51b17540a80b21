package function

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// sink is the broker's ingress as the sweep sees it: it records the events it accepts.
type sink struct {
	mu     sync.Mutex
	events []event.Event
	refuse atomic.Bool
}

func (s *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e, err := cehttp.NewEventFromHTTPRequest(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if s.refuse.Load() {
		http.Error(w, "broker unavailable", http.StatusServiceUnavailable)
		return
	}
	s.mu.Lock()
	s.events = append(s.events, *e)
	s.mu.Unlock()
	w.WriteHeader(http.StatusAccepted)
}

// take returns the events received since the last take.
func (s *sink) take() []event.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.events
	s.events = nil
	return out
}

type fixture struct {
	t    *testing.T
	f    *Function
	rt   *runtime
	sink *sink
	at   time.Time // the sweep's clock
}

var dbSeq atomic.Int64

// start starts a sweep on its own databases with env on top of the defaults; its clock
// stands still until the test moves it.
func start(t *testing.T, env map[string]string) *fixture {
	t.Helper()
	s := &sink{}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	cfg := map[string]string{
		"MONGODB_URI":       mongoURI,
		"MONGODB_DB_PREFIX": fmt.Sprintf("sweep%d_%d_", time.Now().UnixNano()%1e9, dbSeq.Add(1)),
		"K_SINK":            srv.URL,
	}
	for k, v := range env {
		cfg[k] = v
	}
	f := New()
	if err := f.Start(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	fx := &fixture{t: t, f: f, rt: f.lc.load(), sink: s, at: time.Now().UTC()}
	fx.rt.now = func() time.Time { return fx.at }
	t.Cleanup(func() {
		ctx := context.Background()
		_ = fx.rt.videos().Drop(ctx)
		_ = fx.rt.mp3s().Drop(ctx)
		_ = f.Stop(ctx)
	})
	return fx
}

func (fx *fixture) later(d time.Duration) { fx.at = fx.at.Add(d) }

// run does one sweep run and fails the test unless it ran.
func (fx *fixture) run() counts {
	fx.t.Helper()
	c, ran, err := fx.rt.run(context.Background(), fx.f.log)
	if err != nil || !ran {
		fx.t.Fatalf("run: ran %v, err %v", ran, err)
	}
	return c
}

// insertJob stores a job as upload and convert write it, with updated_at and created_at at
// the sweep's clock minus age.
func (fx *fixture) insertJob(user string, state JobState, age time.Duration, extra ...bson.E) bson.ObjectID {
	fx.t.Helper()
	at := fx.at.Add(-age)
	id := bson.NewObjectIDFromTimestamp(at)
	doc := bson.D{{Key: "_id", Value: id}, {Key: "username", Value: user}, {Key: "filename", Value: "clip.mp4"},
		{Key: "content_type", Value: "video/mp4"}, {Key: "size", Value: int64(1234)}, {Key: "state", Value: state},
		{Key: "reason", Value: ""}, {Key: "mp3_fid", Value: ""}, {Key: "attempts", Value: int32(0)},
		{Key: "created_at", Value: at}, {Key: "updated_at", Value: at}}
	for _, e := range extra { // extra fields replace the defaults
		doc = slices.DeleteFunc(doc, func(d bson.E) bool { return d.Key == e.Key })
	}
	if _, err := fx.rt.jobs().InsertOne(context.Background(), append(doc, extra...)); err != nil {
		fx.t.Fatal(err)
	}
	return id
}

// storeFile writes a GridFS file with real chunks, its uploadDate moved to the clock minus age.
func (fx *fixture) storeFile(db *mongo.Database, id bson.ObjectID, age time.Duration) {
	fx.t.Helper()
	ctx := context.Background()
	b := db.GridFSBucket(options.GridFSBucket().SetChunkSizeBytes(1024))
	if err := b.UploadFromStreamWithID(ctx, id, "f", bytes.NewReader(bytes.Repeat([]byte{7}, 3000))); err != nil {
		fx.t.Fatal(err)
	}
	_, err := db.Collection("fs.files").UpdateOne(ctx, bson.D{{Key: "_id", Value: id}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "uploadDate", Value: fx.at.Add(-age)}}}})
	if err != nil {
		fx.t.Fatal(err)
	}
}

func (fx *fixture) count(coll *mongo.Collection, filter bson.D) int64 {
	fx.t.Helper()
	n, err := coll.CountDocuments(context.Background(), filter)
	if err != nil {
		fx.t.Fatal(err)
	}
	return n
}

func (fx *fixture) job(id bson.ObjectID) bson.M {
	fx.t.Helper()
	var m bson.M
	if err := fx.rt.jobs().FindOne(context.Background(), bson.D{{Key: "_id", Value: id}}).Decode(&m); err != nil {
		fx.t.Fatal(err)
	}
	return m
}

// checkJobSchema holds the job document against the contract, events/job/schema.json.
func (fx *fixture) checkJobSchema(id bson.ObjectID) {
	fx.t.Helper()
	var raw bson.Raw
	if err := fx.rt.jobs().FindOne(context.Background(), bson.D{{Key: "_id", Value: id}}).Decode(&raw); err != nil {
		fx.t.Fatal(err)
	}
	ext, err := bson.MarshalExtJSON(raw, false, false)
	if err != nil {
		fx.t.Fatal(err)
	}
	s, err := jsonschema.NewCompiler().Compile(filepath.Join("..", "..", "events", "job", "schema.json"))
	if err != nil {
		fx.t.Fatal(err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(ext))
	if err != nil {
		fx.t.Fatal(err)
	}
	if err := s.Validate(v); err != nil {
		fx.t.Errorf("job %s does not match events/job/schema.json: %v\n%s", id.Hex(), err, ext)
	}
}

func ids(es []event.Event) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Type()+" "+e.ID())
	}
	return out
}

func TestStalledUploadIsRedrivenThenFailed(t *testing.T) {
	fx := start(t, map[string]string{"SWEEP_REDRIVES": "2", "STUCK_AFTER": "10m"})
	fresh := fx.insertJob("a@example.com", JobUploaded, time.Second)
	stalled := fx.insertJob("a@example.com", JobUploaded, 5*time.Minute)

	if c := fx.run(); c.Redriven != 1 {
		t.Fatalf("first run: %+v", c)
	}
	got := fx.sink.take()
	if len(got) != 1 || got[0].Type() != typeUploaded || got[0].ID() != stalled.Hex() || got[0].Source() != "/functions/upload" {
		t.Fatalf("events: %v", ids(got))
	}
	var d map[string]any
	if err := got[0].DataAs(&d); err != nil || d["video_fid"] != stalled.Hex() || d["username"] != "a@example.com" ||
		d["content_type"] != "video/mp4" || d["size"] != float64(1234) || d["filename"] != "clip.mp4" {
		t.Fatalf("data %v, err %v", d, err)
	}

	// Within the grace period after a re-drive: not again.
	fx.later(time.Minute)
	if c := fx.run(); c.Redriven != 0 {
		t.Fatalf("re-driven twice in one period: %+v", c)
	}
	// The fresh job is past its grace now too; the stalled one gets its second re-drive
	// after the doubled wait.
	fx.later(4 * time.Minute)
	if c := fx.run(); c.Redriven != 2 {
		t.Fatalf("second run: %+v (%v)", c, ids(fx.sink.take()))
	}
	fx.sink.take()
	if r := fx.job(stalled)["redrives"]; r != int32(2) {
		t.Fatalf("redrives %v", r)
	}
	// SWEEP_REDRIVES reached: failed only once STUCK_AFTER has passed since the last.
	fx.later(5 * time.Minute)
	if c := fx.run(); c.Failed != 0 || c.Redriven != 1 { // the fresh job's second re-drive
		t.Fatalf("third run: %+v", c)
	}
	fx.sink.take()
	fx.later(6 * time.Minute)
	if c := fx.run(); c.Failed != 1 {
		t.Fatalf("fourth run: %+v", c)
	}
	got = fx.sink.take()
	if len(got) != 1 || got[0].Type() != typeFailed || got[0].ID() != "failed-"+stalled.Hex() {
		t.Fatalf("events: %v", ids(got))
	}
	j := fx.job(stalled)
	if j["state"] != string(JobFailed) || j["reason"] != reasonNeverStarted {
		t.Fatalf("job %v", j)
	}
	fx.checkJobSchema(stalled)
	fx.checkJobSchema(fresh)
}

func TestLiveClaimIsLeftAlone(t *testing.T) {
	fx := start(t, map[string]string{"STUCK_AFTER": "10m"})
	id := fx.insertJob("a@example.com", JobConverting, time.Hour, bson.E{Key: "lease_until", Value: fx.at.Add(-time.Hour)})
	_, err := fx.rt.videos().Collection("convert_claims").InsertOne(context.Background(), bson.D{
		{Key: "_id", Value: id.Hex() + "/1"}, {Key: "video_fid", Value: id}, {Key: "lease_until", Value: fx.at.Add(time.Minute)}})
	if err != nil {
		t.Fatal(err)
	}
	if c := fx.run(); c.Redriven != 0 {
		t.Fatalf("a job with a live claim was re-driven: %+v", c)
	}
	// The claim ends: the stuck job is re-driven.
	fx.later(2 * time.Minute)
	if c := fx.run(); c.Redriven != 1 {
		t.Fatalf("%+v", c)
	}
	if got := fx.sink.take(); len(got) != 1 || got[0].ID() != id.Hex() {
		t.Fatalf("events: %v", ids(got))
	}
}

func TestRefusedRedriveIsTriedAgain(t *testing.T) {
	fx := start(t, nil)
	id := fx.insertJob("a@example.com", JobUploaded, 5*time.Minute)
	fx.sink.refuse.Store(true)
	if _, _, err := fx.rt.run(context.Background(), fx.f.log); err == nil {
		t.Fatal("a refused event is not an error")
	}
	fx.sink.refuse.Store(false)
	fx.later(3 * time.Minute)
	if c := fx.run(); c.Redriven != 1 {
		t.Fatalf("%+v", c)
	}
	if got := fx.sink.take(); len(got) != 1 || got[0].ID() != id.Hex() {
		t.Fatalf("events: %v", ids(got))
	}
}

func TestFinishedJobsNeverNotifiedAreSentAgain(t *testing.T) {
	fx := start(t, nil)
	done := fx.insertJob("a@example.com", JobDone, 5*time.Minute)
	fx.storeFile(fx.rt.mp3s(), done, 5*time.Minute)
	_, err := fx.rt.mp3s().Collection("fs.files").UpdateOne(context.Background(), bson.D{{Key: "_id", Value: done}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "filename", Value: "clip.mp3"}, {Key: "metadata", Value: bson.D{{Key: "duration_seconds", Value: 2.5}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	failed := fx.insertJob("b@example.com", JobFailed, 5*time.Minute, bson.E{Key: "reason", Value: "the video has no audio track"})
	fx.insertJob("c@example.com", JobDone, 5*time.Minute, bson.E{Key: "notified_at", Value: fx.at})
	fx.insertJob("c@example.com", JobFailed, time.Second)

	if c := fx.run(); c.Renotified != 2 {
		t.Fatalf("%+v", c)
	}
	got := map[string]event.Event{}
	for _, e := range fx.sink.take() {
		got[e.ID()] = e
	}
	conv, ok := got["mp3-"+done.Hex()]
	var d map[string]any
	if !ok || conv.Type() != typeConverted || conv.DataAs(&d) != nil || d["filename"] != "clip.mp3" ||
		d["size"] != float64(3000) || d["duration_seconds"] != 2.5 || d["mp3_fid"] != done.Hex() {
		t.Fatalf("mp3.converted: %v %v", conv, d)
	}
	fail, ok := got["failed-"+failed.Hex()]
	if !ok || fail.Type() != typeFailed || fail.DataAs(&d) != nil || d["reason"] != "the video has no audio track" {
		t.Fatalf("conversion.failed: %v %v", fail, d)
	}
	if len(got) != 2 {
		t.Fatalf("events %v", got)
	}
	fx.checkJobSchema(done)
	fx.checkJobSchema(failed)
	fx.later(time.Minute)
	if c := fx.run(); c.Renotified != 0 {
		t.Fatalf("sent again within the period: %+v", c)
	}
}

func TestRetentionExpiresOldMP3s(t *testing.T) {
	fx := start(t, map[string]string{"MP3_RETENTION": "1h"})
	old := fx.insertJob("a@example.com", JobDone, 2*time.Hour, bson.E{Key: "notified_at", Value: fx.at})
	fx.storeFile(fx.rt.mp3s(), old, 2*time.Hour)
	young := fx.insertJob("a@example.com", JobDone, 30*time.Minute, bson.E{Key: "notified_at", Value: fx.at})
	fx.storeFile(fx.rt.mp3s(), young, 30*time.Minute)

	if c := fx.run(); c.Expired != 1 {
		t.Fatalf("%+v", c)
	}
	if s := fx.job(old)["state"]; s != string(JobExpired) {
		t.Fatalf("old job %v", s)
	}
	fx.checkJobSchema(old)
	if fx.count(fx.rt.mp3s().Collection("fs.files"), bson.D{{Key: "_id", Value: old}}) != 0 ||
		fx.count(fx.rt.mp3s().Collection("fs.chunks"), bson.D{{Key: "files_id", Value: old}}) != 0 {
		t.Fatal("the expired MP3 is still stored")
	}
	if s := fx.job(young)["state"]; s != string(JobDone) ||
		fx.count(fx.rt.mp3s().Collection("fs.chunks"), bson.D{{Key: "files_id", Value: young}}) != 3 {
		t.Fatalf("the young MP3 was touched: %v", s)
	}
}

func TestRetentionZeroKeepsMP3s(t *testing.T) {
	fx := start(t, map[string]string{"MP3_RETENTION": "0"})
	old := fx.insertJob("a@example.com", JobDone, 1000*time.Hour, bson.E{Key: "notified_at", Value: fx.at})
	fx.storeFile(fx.rt.mp3s(), old, 1000*time.Hour)
	if c := fx.run(); c.Expired != 0 || fx.job(old)["state"] != string(JobDone) {
		t.Fatalf("%+v", c)
	}
}

func TestOrphansAreRemovedAndLiveDataIsNot(t *testing.T) {
	fx := start(t, map[string]string{"STUCK_AFTER": "1h"})
	ctx := context.Background()
	v, m := fx.rt.videos(), fx.rt.mp3s()
	age := 2 * time.Hour

	noJob := bson.NewObjectIDFromTimestamp(fx.at.Add(-age))
	fx.storeFile(v, noJob, age)
	doneJob := fx.insertJob("a@example.com", JobDone, age, bson.E{Key: "notified_at", Value: fx.at})
	fx.storeFile(v, doneJob, age)
	fx.storeFile(m, doneJob, age)
	failedJob := fx.insertJob("a@example.com", JobFailed, age, bson.E{Key: "notified_at", Value: fx.at})
	fx.storeFile(v, failedJob, age)
	mp3NoJob := bson.NewObjectIDFromTimestamp(fx.at.Add(-age))
	fx.storeFile(m, mp3NoJob, age)
	// Chunks without files: an upload that died, and an MP3 of a gone job.
	deadUpload := bson.NewObjectIDFromTimestamp(fx.at.Add(-age))
	fx.storeFile(v, deadUpload, age)
	deadMP3 := bson.NewObjectIDFromTimestamp(fx.at.Add(-age))
	fx.storeFile(m, deadMP3, age)
	for _, d := range []struct {
		db *mongo.Database
		id bson.ObjectID
	}{{v, deadUpload}, {m, deadMP3}} {
		if _, err := d.db.Collection("fs.files").DeleteOne(ctx, bson.D{{Key: "_id", Value: d.id}}); err != nil {
			t.Fatal(err)
		}
	}

	// Live: a fresh upload without its job yet, a queued job's video, an MP3 being written for
	// a converting job (chunks, no files document), a recent upload's chunks.
	freshNoJob := bson.NewObjectIDFromTimestamp(fx.at)
	fx.storeFile(v, freshNoJob, 0)
	queued := fx.insertJob("a@example.com", JobUploaded, time.Second)
	fx.storeFile(v, queued, age)
	converting := fx.insertJob("a@example.com", JobConverting, age, bson.E{Key: "lease_until", Value: fx.at.Add(time.Minute)})
	fx.storeFile(v, converting, age)
	fx.storeFile(m, converting, 0)
	if _, err := m.Collection("fs.files").DeleteOne(ctx, bson.D{{Key: "_id", Value: converting}}); err != nil {
		t.Fatal(err)
	}
	uploading := bson.NewObjectIDFromTimestamp(fx.at.Add(-time.Minute))
	fx.storeFile(v, uploading, 0)
	if _, err := v.Collection("fs.files").DeleteOne(ctx, bson.D{{Key: "_id", Value: uploading}}); err != nil {
		t.Fatal(err)
	}

	c := fx.run()
	if c.VideosRemoved != 3 || c.MP3sRemoved != 1 || c.ChunksRemoved != 2 {
		t.Fatalf("%+v", c)
	}
	gone := func(db *mongo.Database, id bson.ObjectID) bool {
		return fx.count(db.Collection("fs.files"), bson.D{{Key: "_id", Value: id}}) == 0 &&
			fx.count(db.Collection("fs.chunks"), bson.D{{Key: "files_id", Value: id}}) == 0
	}
	for name, id := range map[string]bson.ObjectID{"video without job": noJob, "video of a done job": doneJob,
		"video of a failed job": failedJob, "dead upload's chunks": deadUpload} {
		if !gone(v, id) {
			t.Errorf("%s kept", name)
		}
	}
	for name, id := range map[string]bson.ObjectID{"MP3 without job": mp3NoJob, "dead MP3's chunks": deadMP3} {
		if !gone(m, id) {
			t.Errorf("%s kept", name)
		}
	}
	if gone(m, doneJob) {
		t.Error("the done job's MP3 was removed")
	}
	for name, id := range map[string]bson.ObjectID{"fresh upload": freshNoJob, "queued video": queued, "converting video": converting} {
		if fx.count(v.Collection("fs.files"), bson.D{{Key: "_id", Value: id}}) != 1 {
			t.Errorf("%s removed", name)
		}
	}
	if fx.count(m.Collection("fs.chunks"), bson.D{{Key: "files_id", Value: converting}}) != 3 {
		t.Error("the chunks of an MP3 being stored were removed")
	}
	if fx.count(v.Collection("fs.chunks"), bson.D{{Key: "files_id", Value: uploading}}) != 3 {
		t.Error("the chunks of an upload in progress were removed")
	}
	if n := fx.count(fx.rt.jobs(), bson.D{}); n != 4 {
		t.Errorf("%d jobs left, want 4", n)
	}
}

func TestKeepVideosKeepsFinishedJobsVideos(t *testing.T) {
	fx := start(t, map[string]string{"KEEP_VIDEOS": "true"})
	done := fx.insertJob("a@example.com", JobDone, time.Hour, bson.E{Key: "notified_at", Value: fx.at})
	fx.storeFile(fx.rt.videos(), done, time.Hour)
	noJob := bson.NewObjectIDFromTimestamp(fx.at.Add(-time.Hour))
	fx.storeFile(fx.rt.videos(), noJob, time.Hour)
	if c := fx.run(); c.VideosRemoved != 1 {
		t.Fatalf("%+v", c)
	}
	if fx.count(fx.rt.videos().Collection("fs.files"), bson.D{{Key: "_id", Value: done}}) != 1 {
		t.Fatal("KEEP_VIDEOS: the done job's video was removed")
	}
}

// The scan goes on from where the last run stopped: SWEEP_BATCH live files cannot hide the
// orphans behind them.
func TestScanIsBoundedAndResumes(t *testing.T) {
	fx := start(t, map[string]string{"SWEEP_BATCH": "2"})
	for range 3 {
		id := fx.insertJob("a@example.com", JobUploaded, time.Second)
		fx.storeFile(fx.rt.videos(), id, time.Hour)
	}
	orphan := bson.NewObjectIDFromTimestamp(fx.at)
	fx.storeFile(fx.rt.videos(), orphan, time.Hour)
	total := 0
	for range 3 {
		total += fx.run().VideosRemoved
	}
	if total != 1 {
		t.Fatalf("removed %d over three runs", total)
	}
}

func TestOneRunAtATime(t *testing.T) {
	fx := start(t, nil)
	for range 5 {
		fx.insertJob("a@example.com", JobUploaded, time.Hour)
	}
	// Replicas at once: exactly one runs; the others find the lease held.
	const replicas = 4
	var wg sync.WaitGroup
	var ran atomic.Int32
	for range replicas {
		wg.Go(func() {
			_, ok, err := fx.rt.run(context.Background(), fx.f.log)
			if err != nil {
				t.Error(err)
			}
			if ok {
				ran.Add(1)
			}
		})
	}
	wg.Wait()
	seen := map[string]int{}
	for _, e := range fx.sink.take() {
		seen[e.ID()]++
	}
	if len(seen) != 5 {
		t.Fatalf("%d jobs re-driven, want 5", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s re-driven %d times", id, n)
		}
	}
	if ran.Load() < 1 {
		t.Fatal("no run")
	}

	// A lease that is held blocks a run; one left by a dead run ends after leaseFor.
	token, err := fx.rt.takeLease(context.Background())
	if err != nil || token == "" {
		t.Fatal(token, err)
	}
	if _, ok, err := fx.rt.run(context.Background(), fx.f.log); ok || err != nil {
		t.Fatalf("ran beside a held lease: %v %v", ok, err)
	}
	fx.later(leaseFor + time.Second)
	if _, ok, err := fx.rt.run(context.Background(), fx.f.log); !ok || err != nil {
		t.Fatalf("a dead run's lease blocks: %v %v", ok, err)
	}
}

// userDeletedEvent is login's user.deleted; an id "" is left out, as login does when it
// cannot tell.
func userDeletedEvent(user, id string, at time.Time) event.Event {
	e := event.New()
	e.SetID("user-deleted-" + user)
	e.SetType(typeUserDeleted)
	e.SetSource("/functions/login")
	e.SetTime(at)
	data := map[string]string{"username": user}
	if id != "" {
		data["user_id"] = id
	}
	_ = e.SetData(event.ApplicationJSON, data)
	return e
}

func TestDeletedUsersDataGoes(t *testing.T) {
	fx := start(t, map[string]string{"SWEEP_BATCH": "2"})
	v, m := fx.rt.videos(), fx.rt.mp3s()
	var gone []bson.ObjectID
	for i := range 3 {
		fields := []bson.E{{Key: "notified_at", Value: fx.at}}
		if i > 0 { // the first was stored before owner_id existed
			fields = append(fields, bson.E{Key: "owner_id", Value: "5"})
		}
		id := fx.insertJob("leaving@example.com", JobDone, time.Hour, fields...)
		fx.storeFile(v, id, time.Hour)
		fx.storeFile(m, id, time.Hour)
		gone = append(gone, id)
	}
	other := fx.insertJob("staying@example.com", JobDone, time.Hour, bson.E{Key: "notified_at", Value: fx.at}, bson.E{Key: "owner_id", Value: "6"})
	fx.storeFile(m, other, time.Hour)

	if _, err := fx.f.Handle(context.Background(), userDeletedEvent("leaving@example.com", "5", time.Now().UTC())); err != nil {
		t.Fatal(err)
	}
	// A new account under the same email keeps its own jobs; an upload the deleted user's
	// token still got through (upload's cached yes) after the deletion goes.
	reborn := fx.insertJob("leaving@example.com", JobUploaded, -time.Hour, bson.E{Key: "owner_id", Value: "7"})
	gone = append(gone, fx.insertJob("leaving@example.com", JobUploaded, -time.Hour, bson.E{Key: "owner_id", Value: "5"}))
	// The event's delivery removed one batch; the runs remove the rest and forget the user.
	if c := fx.run(); c.UserJobs != 2 {
		t.Fatalf("%+v", c)
	}
	fx.run()
	for _, id := range gone {
		if fx.count(fx.rt.jobs(), bson.D{{Key: "_id", Value: id}}) != 0 || fx.count(m.Collection("fs.chunks"), bson.D{{Key: "files_id", Value: id}}) != 0 ||
			fx.count(v.Collection("fs.chunks"), bson.D{{Key: "files_id", Value: id}}) != 0 {
			t.Errorf("job %s of the deleted user kept", id.Hex())
		}
	}
	if fx.count(fx.rt.jobs(), bson.D{{Key: "_id", Value: other}}) != 1 || fx.count(m.Collection("fs.files"), bson.D{{Key: "_id", Value: other}}) != 1 {
		t.Error("another user's job or MP3 was removed")
	}
	if fx.count(fx.rt.jobs(), bson.D{{Key: "_id", Value: reborn}}) != 1 {
		t.Error("the new account's job was removed")
	}
	if n := fx.count(v.Collection("deleted_users"), bson.D{}); n != 0 {
		t.Errorf("%d deleted users still recorded", n)
	}
}

func TestHandle(t *testing.T) {
	fx := start(t, nil)
	ping := event.New()
	ping.SetID("1")
	ping.SetType(typePing)
	ping.SetSource("/apis/v1/namespaces/mp3converter/pingsources/sweep")
	if out, err := fx.f.Handle(context.Background(), ping); out != nil || err != nil {
		t.Fatalf("ping: %v %v", out, err)
	}
	bad := userDeletedEvent("x", "", time.Now())
	if _, err := fx.f.Handle(context.Background(), bad); err != nil {
		t.Fatalf("a bad user.deleted is dropped, not retried: %v", err)
	}

	stopped := New()
	if _, err := stopped.Handle(context.Background(), ping); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("before Start: %v", err)
	}
	for _, env := range []map[string]string{{"K_SINK": "ftp://x"}, {"SWEEP_GRACE": "soon"}, {"MP3_RETENTION": "-1h"}} {
		cfg := map[string]string{"MONGODB_URI": mongoURI, "K_SINK": "http://127.0.0.1:1/"}
		for k, v := range env {
			cfg[k] = v
		}
		if err := New().Start(context.Background(), cfg); err == nil {
			t.Errorf("Start accepted %v", env)
		}
	}
}

// The events the sweep sends and reads match the contracts in events/.
func TestEventsMatchTheContracts(t *testing.T) {
	c := jsonschema.NewCompiler()
	check := func(name string, data []byte) {
		t.Helper()
		s, err := c.Compile(filepath.Join("..", "..", "events", name+".schema.json"))
		if err != nil {
			t.Fatal(err)
		}
		v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Validate(v); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	j := job{ID: bson.NewObjectID(), Username: "ada@example.com", Filename: "holiday.mp4", ContentType: "video/mp4", Size: 1234}
	check("video.uploaded", uploadedEvent(j).Data())
	var mp3 storedMP3
	mp3.Filename, mp3.Length, mp3.Metadata.DurationSeconds = "holiday.mp3", 4000, 2.5
	check("mp3.converted", convertedEvent(j, mp3).Data())
	j.Reason = reasonNeverStarted
	check("conversion.failed", failedEvent(j).Data())

	example, err := os.ReadFile(filepath.Join("..", "..", "events", "user.deleted.example.json"))
	if err != nil {
		t.Fatal(err)
	}
	check("user.deleted", example)
	e := event.New()
	_ = e.SetData(event.ApplicationJSON, example)
	var d userDeletedData
	if err := decodeUserDeleted(e, &d); err != nil || d.Username != "ada@example.com" {
		t.Fatalf("the example does not decode: %+v %v", d, err)
	}
}

// Resumable uploads past their expiry go: an abandoned one with its chunks, a finished one
// without (they are its job's video). A live upload, its chunks, and other files stay.
func TestExpiredUploadsGoAndNothingElse(t *testing.T) {
	fx := start(t, nil)
	ctx := context.Background()
	v := fx.rt.videos()
	uploads := v.Collection("uploads")
	upload := func(expiresIn time.Duration, done bool) bson.ObjectID {
		id := bson.NewObjectIDFromTimestamp(fx.at.Add(-48 * time.Hour))
		fx.storeFile(v, id, 48*time.Hour)
		if !done { // unfinished: chunks, no files document
			if _, err := v.Collection("fs.files").DeleteOne(ctx, bson.D{{Key: "_id", Value: id}}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := uploads.InsertOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "username", Value: "a@example.com"},
			{Key: "length", Value: int64(10000)}, {Key: "offset", Value: int64(3000)}, {Key: "done", Value: done},
			{Key: "expires_at", Value: fx.at.Add(expiresIn)}}); err != nil {
			t.Fatal(err)
		}
		return id
	}
	abandoned := upload(-time.Minute, false)
	finished := upload(-time.Minute, true)
	fx.insertJob("a@example.com", JobUploaded, time.Second, bson.E{Key: "_id", Value: finished})
	live := upload(time.Hour, false)
	other := bson.NewObjectIDFromTimestamp(fx.at.Add(-48 * time.Hour))
	fx.storeFile(v, other, 48*time.Hour)
	fx.insertJob("a@example.com", JobUploaded, time.Second, bson.E{Key: "_id", Value: other})
	if _, err := v.Collection("upload_locks").InsertOne(ctx, bson.D{{Key: "_id", Value: live}, {Key: "until", Value: fx.at.Add(-time.Second)}}); err != nil {
		t.Fatal(err)
	}

	if c := fx.run(); c.UploadsExpired != 2 || c.ChunksRemoved != 0 {
		t.Fatalf("%+v", c)
	}
	chunks := func(id bson.ObjectID) int64 {
		return fx.count(v.Collection("fs.chunks"), bson.D{{Key: "files_id", Value: id}})
	}
	if chunks(abandoned) != 0 || fx.count(uploads, bson.D{{Key: "_id", Value: abandoned}}) != 0 {
		t.Error("the abandoned upload was kept")
	}
	if chunks(finished) != 3 || fx.count(uploads, bson.D{{Key: "_id", Value: finished}}) != 0 {
		t.Error("the finished upload: its video removed, or its record kept")
	}
	if chunks(live) != 3 || fx.count(uploads, bson.D{{Key: "_id", Value: live}}) != 1 {
		t.Error("the live upload was touched")
	}
	if chunks(other) != 3 || fx.count(v.Collection("fs.files"), bson.D{}) != 2 {
		t.Error("other files were touched")
	}
	if fx.count(v.Collection("upload_locks"), bson.D{}) != 0 {
		t.Error("an abandoned lock was kept")
	}
}

// TestOrphanChunkScanRestsBetweenPasses: the chunk scan reads every chunk on FerretDB's
// SQLite backend, so after a full pass it waits SWEEP_CHUNK_SCAN_PAUSE before the next.
func TestOrphanChunkScanRestsBetweenPasses(t *testing.T) {
	fx := start(t, map[string]string{"SWEEP_CHUNK_SCAN_PAUSE": "1h"})
	if c := fx.run(); c.ChunksRemoved != 0 { // a full pass over nothing
		t.Fatalf("%+v", c)
	}
	v := fx.rt.videos()
	dead := bson.NewObjectIDFromTimestamp(fx.at.Add(-2 * time.Hour))
	fx.storeFile(v, dead, 2*time.Hour)
	if _, err := v.Collection("fs.files").DeleteOne(context.Background(), bson.D{{Key: "_id", Value: dead}}); err != nil {
		t.Fatal(err)
	}
	fx.later(59 * time.Minute)
	if c := fx.run(); c.ChunksRemoved != 0 {
		t.Fatalf("the scan ran again within its pause: %+v", c)
	}
	fx.later(2 * time.Minute)
	if c := fx.run(); c.ChunksRemoved != 1 {
		t.Fatalf("the scan did not run after its pause: %+v", c)
	}
	if n := fx.count(v.Collection("fs.chunks"), bson.D{{Key: "files_id", Value: dead}}); n != 0 {
		t.Errorf("%d chunks of the dead upload kept", n)
	}
}
