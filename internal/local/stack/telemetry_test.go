package stack_test

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mp3converter/internal/stacktest"
)

// One video is one trace, from upload through the Broker, convert and notify to the email,
// exported over OTLP/HTTP to a receiver in the test; and /metrics counts the upload, the
// conversion and the email exactly once, and a failed conversion with its reason class.
func TestOneTracePerVideoAndItsMetrics(t *testing.T) {
	traces := stacktest.StartTraceReceiver(t)
	e := startStack(t, stacktest.Options{Env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": traces.URL}})
	before := e.Metrics(t)

	fid := e.Upload(t, e.AdminToken, stacktest.Video(t, t.TempDir(), "clip.mp4", 2), "clip.mp4")
	if msg := nextMail(t, e.Mail); !strings.Contains(msg.subject, "clip.mp3") {
		t.Fatalf("mail: %q", msg.subject)
	}
	after := waitMetrics(t, e, func(m stacktest.Metrics) bool {
		// notify counts its event once its handler has returned, just after the email.
		handled := []string{"service_name", "notify", "event_type", "dev.mp3converter.mp3.converted"}
		return m.Sum("mp3converter_emails_total", "outcome", "sent") > before.Sum("mp3converter_emails_total", "outcome", "sent") &&
			m.Sum("mp3converter_events_handled_seconds_count", handled...) > before.Sum("mp3converter_events_handled_seconds_count", handled...)
	})
	for _, c := range []struct {
		name   string
		labels []string
	}{
		{"mp3converter_uploads_total", []string{"service_name", "upload"}},
		{"mp3converter_conversions_total", []string{"outcome", "done", "service_name", "convert"}},
		{"mp3converter_emails_total", []string{"kind", "ready", "outcome", "sent", "service_name", "notify"}},
		{"mp3converter_conversion_seconds_per_audio_second_count", nil},
		{"mp3converter_events_handled_seconds_count", []string{"service_name", "notify", "event_type", "dev.mp3converter.mp3.converted", "outcome", "ok"}},
	} {
		if got, was := after.Sum(c.name, c.labels...), before.Sum(c.name, c.labels...); got != was+1 {
			t.Errorf("%s%v: %v after one video, %v before", c.name, c.labels, got, was)
		}
	}
	if got := after.Sum("mp3converter_conversions_total", "outcome", "failed"); got != 0 {
		t.Errorf("failed conversions: %v", got)
	}
	if got := after.Sum("http_server_request_duration_seconds_count", "service_name", "upload", "http_response_status_code", "202"); got != 1 {
		t.Errorf("upload's requests answered 202: %v", got)
	}

	// Bytes that sniff as an MP4 (upload takes them) and are none: convert fails them for good.
	broken := filepath.Join(t.TempDir(), "broken.mp4")
	junk := make([]byte, 64<<10)
	rand.Read(junk)
	if err := os.WriteFile(broken, append([]byte("\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"), junk...), 0o644); err != nil {
		t.Fatal(err)
	}
	brokenFID := e.Upload(t, e.AdminToken, broken, "broken.mp4")
	nextMail(t, e.Mail)
	failed := waitMetrics(t, e, func(m stacktest.Metrics) bool {
		return m.Sum("mp3converter_emails_total", "kind", "failed", "outcome", "sent") > 0
	})
	if job := jobOf(t, e, brokenFID); job.State != "failed" {
		t.Fatalf("broken upload's job: %+v", job)
	}
	if got := failed.Sum("mp3converter_conversions_total", "outcome", "failed", "reason", "damaged"); got != 1 {
		t.Errorf("conversions failed as damaged: %v (%v)", got, failed)
	}
	if got := failed.Sum("mp3converter_conversions_total", "outcome", "done"); got != after.Sum("mp3converter_conversions_total", "outcome", "done") {
		t.Errorf("conversions done moved with a failure: %v", got)
	}

	// The functions export their last spans when they stop.
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	checkVideoTrace(t, traces.Spans(), fid)
}

// checkVideoTrace finds the trace of the video fid and checks each part is in it, under the
// right parent.
func checkVideoTrace(t *testing.T, spans []stacktest.Span, fid string) {
	t.Helper()
	var traceID string
	for _, s := range spans {
		if s.Service == "broker" && s.Attributes["cloudevents.event_id"] == fid {
			traceID = s.TraceID
		}
	}
	if traceID == "" {
		t.Fatalf("no broker span delivering video.uploaded %s among %d spans", fid, len(spans))
	}
	byID := map[string]stacktest.Span{}
	var trace []stacktest.Span
	for _, s := range spans {
		if s.TraceID == traceID {
			byID[s.SpanID] = s
			trace = append(trace, s)
		}
	}
	// find returns the one span of service named name (a prefix) whose parent is parent's.
	find := func(service, name string, parent *stacktest.Span) stacktest.Span {
		t.Helper()
		var found []stacktest.Span
		for _, s := range trace {
			if s.Service == service && strings.HasPrefix(s.Name, name) && (parent == nil || s.ParentID == parent.SpanID) {
				found = append(found, s)
			}
		}
		if len(found) != 1 {
			t.Fatalf("%d spans %s %q under %v in the trace; the trace:\n%s", len(found), service, name, parent, describe(trace, byID))
		}
		return found[0]
	}
	web := find("web", "POST /upload", nil)
	if web.ParentID != "" {
		t.Errorf("web's span has a parent %s: the trace starts at web", web.ParentID)
	}
	upload := find("upload", "POST", &web)
	token := find("upload", "token.check", &upload)
	find("validate", "POST", &token)
	find("upload", "gridfs.write", &upload)
	toConvert := find("broker", "broker convert", &upload)
	convert := find("convert", "POST", &toConvert)
	find("convert", "job.claim", &convert)
	for _, name := range []string{"gridfs.read", "ffprobe", "ffmpeg", "gridfs.write"} {
		found := 0
		for _, s := range trace {
			if s.Service == "convert" && s.Name == name && descends(s, convert, byID) {
				found++
			}
		}
		if found == 0 {
			t.Errorf("no %s span under convert's request; the trace:\n%s", name, describe(trace, byID))
		}
	}
	if ff := find("convert", "ffmpeg", nil); ff.Attributes["audio.duration_seconds"] == "" || ff.Attributes["ffmpeg.realtime_factor"] == "" {
		t.Errorf("ffmpeg's span attributes: %v", ff.Attributes)
	}
	find("broker", "broker notify-converted", &convert)
	notify := find("notify", "dev.mp3converter.mp3.converted", &convert)
	find("notify", "smtp.send", &notify)
}

// descends reports whether s is below ancestor.
func descends(s, ancestor stacktest.Span, byID map[string]stacktest.Span) bool {
	for s.ParentID != "" {
		if s.ParentID == ancestor.SpanID {
			return true
		}
		var ok bool
		if s, ok = byID[s.ParentID]; !ok {
			return false
		}
	}
	return false
}

// describe lists a trace's spans with their parents, for a failure message.
func describe(trace []stacktest.Span, byID map[string]stacktest.Span) string {
	var b bytes.Buffer
	for _, s := range trace {
		parent := byID[s.ParentID]
		b.WriteString("  " + s.Service + " " + s.Name + " <- " + parent.Service + " " + parent.Name + "\n")
	}
	return b.String()
}

// waitMetrics scrapes /metrics until ok holds (bounded): an email is counted once the mail
// server has taken it, a moment after the test sees it.
func waitMetrics(t *testing.T, e *stacktest.Stack, ok func(stacktest.Metrics) bool) stacktest.Metrics {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		m := e.Metrics(t)
		if ok(m) {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics never showed it:\n%v", m)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
