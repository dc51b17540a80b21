package reliability

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	convert "mp3converter/functions/convert"
	"mp3converter/internal/local/broker"
	"mp3converter/internal/stacktest"
	"mp3converter/knative"
)

// Fuzzing of event decoding, where untrusted bytes become events: the broker
// ingress (what any producer can post) and convert's Handle (which decodes a
// video.uploaded CloudEvent itself, as an HTTP function). `make reliability`
// runs each for a bounded time (-fuzztime); a crasher lands in
// testdata/fuzz/<FuzzName>/ and stays there as a regression case, run by every
// `go test` from then on. Token parsing and upload bodies are fuzzed in their
// functions (functions/validate FuzzValidate, functions/upload FuzzUploadBody).

// eventSeeds are requests in both CloudEvents modes, good and bad.
func eventSeeds(f *testing.F) {
	fid := "6b0b25c1278eedd9d289fda7"
	good := `{"video_fid":"` + fid + `","username":"a@example.com","filename":"a.mp4","content_type":"video/mp4","size":1}`
	f.Add(true, "dev.mp3converter.video.uploaded", fid, "application/json", []byte(good))
	f.Add(true, "dev.mp3converter.video.uploaded", fid, "application/json", []byte(`{"video_fid":123}`))
	f.Add(true, "dev.mp3converter.video.uploaded", fid, "application/json", []byte(`{"video_fid":"`+strings.ToUpper(fid)+`","username":"a","filename":"","content_type":"v","size":-1}`))
	f.Add(true, "dev.mp3converter.video.uploaded", "", "text/plain", []byte("hello"))
	f.Add(true, "dev.mp3converter.mp3.converted", "mp3-"+fid, "application/json", []byte(`{"video_fid":"`+fid+`"}`))
	f.Add(true, "x", "1", "application/json", []byte(`null`))
	f.Add(true, "dev.mp3converter.video.uploaded", fid, "application/json", []byte(`{"size":1e400}`))
	f.Add(false, "", "", "application/cloudevents+json", []byte(`{"specversion":"1.0","id":"`+fid+`","source":"/s","type":"dev.mp3converter.video.uploaded","datacontenttype":"application/json","data":`+good+`}`))
	f.Add(false, "", "", "application/cloudevents+json", []byte(`{"specversion":"1.0","id":"x","source":"/s","type":"t","data_base64":"!!!"}`))
	f.Add(false, "", "", "application/cloudevents-batch+json", []byte(`[{"specversion":"1.0"}]`))
	f.Add(false, "", "", "application/cloudevents+json", []byte(`{"specversion":"0.3","id":"x","source":"/s","type":"t","time":"yesterday"}`))
}

// eventRequest builds a CloudEvents request: binary mode (ce- headers) or the body as is.
func eventRequest(target string, binary bool, typ, id, contentType string, body []byte) *http.Request {
	req := httptest.NewRequest(http.MethodPost, target, bytes.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	if binary {
		req.Header.Set("Ce-Specversion", "1.0")
		req.Header.Set("Ce-Id", id)
		req.Header.Set("Ce-Type", typ)
		req.Header.Set("Ce-Source", "/fuzz")
	}
	return req
}

// convert answers any request 200 (dropped: no job exists here) or 400 (not a
// CloudEvent), never replies, never writes to storage, never panics.
func FuzzConvertEvent(f *testing.F) {
	s := sharedSystem(f)
	prefix := "fuzz" + stacktest.RandomHex(4) + "_"
	quiet := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil))) // convert takes its logger in New
	fn := convert.New()
	slog.SetDefault(quiet)
	if err := fn.Start(context.Background(), map[string]string{"MONGODB_URI": s.mongoDirect, "MONGODB_DB_PREFIX": prefix,
		"PATH": s.Env["PATH"], "TMPDIR": f.TempDir()}); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		s.mongo.Database(prefix + "videos").Drop(context.Background())
		s.mongo.Database(prefix + "mp3s").Drop(context.Background())
		fn.Stop(context.Background())
	})
	eventSeeds(f)
	f.Fuzz(func(t *testing.T, binary bool, typ, id, contentType string, body []byte) {
		rec := httptest.NewRecorder()
		fn.Handle(rec, eventRequest("/", binary, typ, id, contentType, body))
		if rec.Code != http.StatusOK && rec.Code != http.StatusBadRequest {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		if rec.Code == http.StatusBadRequest && !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("400 without a JSON error: %q", rec.Body)
		}
		if rec.Header().Get("Ce-Type") != "" || rec.Header().Get("Content-Type") == "application/cloudevents+json" {
			t.Fatalf("a reply event for a job that does not exist: %v", rec.Header())
		}
		for _, coll := range []string{"jobs", "convert_claims", "fs.files", "fs.chunks"} {
			n, err := s.mongo.Database(prefix+"videos").Collection(coll).CountDocuments(context.Background(), bson.D{})
			if err != nil || n != 0 {
				t.Fatalf("videos.%s holds %d documents (%v)", coll, n, err)
			}
		}
	})
}

// The broker ingress answers 202 (queued), 400 (malformed) or 413 (too big),
// with a JSON error for the last two, and never panics; an event that no
// Trigger wants is accepted and forgotten. (503, "queue full", is allowed: the
// subscriber here answers at once, so it should not happen.)
func FuzzBrokerIngress(f *testing.F) {
	delivered := make(chan struct{}, 1<<16)
	sub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		select {
		case delivered <- struct{}{}:
		default:
		}
	}))
	f.Cleanup(sub.Close)
	manifests, err := broker.LoadManifestsFS(knative.Manifests)
	if err != nil {
		f.Fatal(err)
	}
	b, err := broker.New(context.Background(), broker.Options{
		Manifests: manifests,
		Resolve:   broker.ResolveServices(map[string]string{"convert": sub.URL + "/", "notify": sub.URL + "/", "sweep": sub.URL + "/"}),
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b.Close(ctx)
	})
	eventSeeds(f)
	f.Fuzz(func(t *testing.T, binary bool, typ, id, contentType string, body []byte) {
		rec := httptest.NewRecorder()
		b.ServeHTTP(rec, eventRequest("/", binary, typ, id, contentType, body))
		switch rec.Code {
		case http.StatusAccepted:
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusServiceUnavailable:
			var e struct{ Error string }
			if json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error == "" {
				t.Fatalf("%d without a JSON error: %q", rec.Code, rec.Body)
			}
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	})
}
