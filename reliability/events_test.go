package reliability

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"mp3converter/internal/stacktest"
)

// Events posted to the broker ingress, as a misbehaving producer inside the
// cluster could: the ingress refuses what is not a CloudEvent; what is one
// but wrong is dropped by its consumer without effect; a duplicate (a
// redelivery, or a replay) sends no second email and changes nothing.

func TestMalformedEventsAreRefusedAtTheIngress(t *testing.T) {
	r := record(t, "events: malformed CloudEvents at the broker ingress")
	s := sharedSystem(t)
	for _, c := range []struct {
		name    string
		header  map[string]string
		body    string
		status  int
		message string
	}{
		{"not a CloudEvent", map[string]string{"Content-Type": "text/plain"}, "hello", 400, "malformed CloudEvent"},
		{"binary without ce-id", map[string]string{"Ce-Specversion": "1.0", "Ce-Type": "dev.mp3converter.video.uploaded",
			"Ce-Source": "/x", "Content-Type": "application/json"}, "{}", 400, "malformed CloudEvent"},
		{"unknown specversion", map[string]string{"Ce-Specversion": "9.9", "Ce-Id": "x", "Ce-Type": "t", "Ce-Source": "/x"}, "", 400, "malformed CloudEvent"},
		{"structured, not JSON", map[string]string{"Content-Type": "application/cloudevents+json"}, "{", 400, "malformed CloudEvent"},
		{"structured without type", map[string]string{"Content-Type": "application/cloudevents+json"},
			`{"specversion":"1.0","id":"x","source":"/x"}`, 400, "malformed CloudEvent"},
		{"over 4 MiB", map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "big", "Ce-Type": "t", "Ce-Source": "/x",
			"Content-Type": "application/json"}, `"` + strings.Repeat("x", 4<<20) + `"`, 413, "larger than"},
	} {
		r.Runs++
		var kv []string
		for k, v := range c.header {
			kv = append(kv, k, v)
		}
		a := s.do("POST", s.BrokerURL, "", strings.NewReader(c.body), kv...)
		if a.status != c.status || !strings.Contains(a.errorMessage(), c.message) {
			r.Failures++
			t.Errorf("%s: %s", c.name, a)
		}
	}
}

func TestWrongEventsAreDroppedWithoutEffect(t *testing.T) {
	r := record(t, "events: unknown type, data not matching the schema")
	s := sharedSystem(t)
	before := s.quiet(t)
	mailsBefore := len(s.mail.All())
	fid := bson.NewObjectID().Hex()
	events := []struct {
		name, id, typ, data string
		consumer            string // who gets it: "convert", "notify" or "" (no Trigger matches)
	}{
		{"unknown type", "unknown-" + fid, "dev.mp3converter.video.deleted", `{"video_fid":"` + fid + `"}`, ""},
		{"uploaded: video_fid a number", "bad1-" + fid, "dev.mp3converter.video.uploaded", `{"video_fid":123}`, "convert"},
		{"uploaded: extra field", "bad2-" + fid, "dev.mp3converter.video.uploaded",
			`{"video_fid":"` + fid + `","username":"a@example.com","filename":"x.mp4","content_type":"video/mp4","size":1,"admin":true}`, "convert"},
		{"uploaded: size 0", "bad3-" + fid, "dev.mp3converter.video.uploaded",
			`{"video_fid":"` + fid + `","username":"a@example.com","filename":"x.mp4","content_type":"video/mp4","size":0}`, "convert"},
		{"uploaded: data not JSON", "bad4-" + fid, "dev.mp3converter.video.uploaded", `not json`, "convert"},
		{"uploaded: no such job", "bad5-" + fid, "dev.mp3converter.video.uploaded",
			`{"video_fid":"` + fid + `","username":"a@example.com","filename":"x.mp4","content_type":"video/mp4","size":1}`, "convert"},
		{"converted: no mp3_fid", "bad6-" + fid, "dev.mp3converter.mp3.converted",
			`{"video_fid":"` + fid + `","username":"a@example.com","filename":"x.mp3","size":1,"duration_seconds":1}`, "notify"},
		{"converted: no such job", "bad7-" + fid, "dev.mp3converter.mp3.converted",
			`{"video_fid":"` + fid + `","mp3_fid":"` + fid + `","username":"a@example.com","filename":"x.mp3","size":1,"duration_seconds":1}`, "notify"},
		{"failed: reason of 5000 characters", "bad8-" + fid, "dev.mp3converter.conversion.failed",
			`{"video_fid":"` + fid + `","username":"a@example.com","filename":"x.mp4","reason":"` + strings.Repeat("r", 5000) + `"}`, "notify"},
	}
	for _, e := range events {
		r.Runs++
		if a := postEvent(s, e.id, e.typ, e.data); a.status != http.StatusAccepted {
			r.Failures++
			t.Errorf("%s: ingress answered %s", e.name, a)
		}
	}
	// Each consumer takes its event and answers 200 (no retry): dropped.
	for _, e := range events {
		switch e.consumer {
		case "convert":
			waitUntil(func() bool { return len(shared.convert.answers(e.id)) > 0 })
			if got := shared.convert.answers(e.id); len(got) != 1 || got[0] != http.StatusOK {
				r.Failures++
				t.Errorf("%s: convert answered %v, want one 200", e.name, got)
			}
		case "notify":
			waitUntil(func() bool { return shared.notify.deliveries(e.id) > 0 })
			if n, errs := shared.notify.deliveries(e.id), shared.notify.results(e.id); n != 1 || errs[0] != nil {
				r.Failures++
				t.Errorf("%s: notify was handed it %d times (%v), want once without a retry", e.name, n, errs)
			}
		}
	}
	if got := shared.convert.answers(events[0].id); len(got) != 0 || shared.notify.deliveries(events[0].id) != 0 {
		r.Failures++
		t.Errorf("an event of an unknown type was delivered")
	}
	if after := s.counts(t); after != before {
		r.Lost++
		t.Errorf("storage changed: %+v -> %+v", before, after)
	}
	if n := len(s.mail.All()) - mailsBefore; n != 0 {
		r.Duplicates += n
		t.Errorf("%d emails sent for bad events", n)
	}
}

// A video.uploaded redelivered after its job is done, and its mp3.converted
// sent twice more: convert replays its reply, notify sends nothing more, and
// the MP3 is the same file.
func TestDuplicateEventsSendNothingTwice(t *testing.T) {
	r := record(t, "events: duplicate ids (video.uploaded and mp3.converted again after done)")
	s := sharedSystem(t)
	name := "dup-" + stacktest.RandomHex(3) + ".mp4"
	fid := s.Upload(t, s.AdminToken, clip(t, 2), name)
	job := s.WaitJob(t, s.AdminToken, fid, 2*time.Minute)
	if job.State != "done" {
		t.Fatalf("job = %v", job)
	}
	s.waitMails(t, fid, 1, time.Minute)
	mp3Before := s.mp3File(t, fid)

	// The redelivered event is the one upload published (convert ignores an
	// event that does not describe its job).
	uploaded := fmt.Sprintf(`{"video_fid":%q,"username":%q,"filename":%q,"content_type":%q,"size":%d}`, fid, stacktest.AdminEmail, name, job.ContentType, job.Size)
	converted := fmt.Sprintf(`{"video_fid":%q,"mp3_fid":%q,"username":%q,"filename":"x.mp3","size":1000,"duration_seconds":2}`, fid, fid, stacktest.AdminEmail)
	for i := 0; i < 2; i++ {
		r.Runs += 2
		if a := postEvent(s, fid, "dev.mp3converter.video.uploaded", uploaded); a.status != http.StatusAccepted {
			t.Fatalf("ingress: %s", a)
		}
		if a := postEvent(s, "mp3-"+fid, "dev.mp3converter.mp3.converted", converted); a.status != http.StatusAccepted {
			t.Fatalf("ingress: %s", a)
		}
	}
	// convert saw the upload 3 times (the first + 2) and replayed; notify saw
	// mp3-<fid> 5 times (the first, 2 replays, 2 posted).
	waitUntil(func() bool { return shared.notify.deliveries("mp3-"+fid) >= 5 && len(shared.convert.answers(fid)) >= 3 })
	if got := shared.convert.answers(fid); len(got) != 3 {
		r.Failures++
		t.Errorf("convert answered %v to the 3 deliveries of %s", got, fid)
	}
	if n := shared.notify.deliveries("mp3-" + fid); n != 5 {
		r.Failures++
		t.Errorf("notify was handed mp3-%s %d times, want 5", fid, n)
	}
	if n := mailsAbout(s.mail.All(), fid); n != 1 {
		r.Duplicates += n - 1
		t.Errorf("%d emails about %s, want 1", n, fid)
	}
	if after := s.mp3File(t, fid); after != mp3Before {
		r.Failures++
		t.Errorf("the MP3 changed: %+v -> %+v", mp3Before, after)
	}
}

// postEvent sends a CloudEvent in binary mode to the broker ingress.
func postEvent(s *system, id, typ, data string) answer {
	return s.do("POST", s.BrokerURL, "", strings.NewReader(data),
		"Ce-Specversion", "1.0", "Ce-Id", id, "Ce-Type", typ, "Ce-Source", "/reliability", "Ce-Subject", id,
		"Content-Type", "application/json")
}

// waitUntil polls cond until it holds or a minute has passed; the caller checks what it waited for.
func waitUntil(cond func() bool) {
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && !cond(); time.Sleep(50 * time.Millisecond) {
	}
}

// mp3File is what identifies a stored MP3: its length and upload date.
type mp3Info struct {
	Length     int64     `bson:"length"`
	UploadDate time.Time `bson:"uploadDate"`
}

func (s *system) mp3File(t testing.TB, fid string) mp3Info {
	t.Helper()
	oid, _ := bson.ObjectIDFromHex(fid)
	var m mp3Info
	err := s.mongo.Database(s.prefix+"mp3s").Collection("fs.files").FindOne(t.Context(), bson.D{{Key: "_id", Value: oid}}).Decode(&m)
	if err != nil {
		t.Fatalf("MP3 %s: %v", fid, err)
	}
	return m
}
