package main

import (
	"bytes"
	"io"
	"net/http"
	"testing"
	"time"

	"mp3converter/internal/local/broker"
	"mp3converter/internal/stacktest"
	"mp3converter/knative"
)

// The harness hands convert its events itself only if no Trigger routes
// video.uploaded to convert any more, and every other Trigger is kept.
func TestWithoutConvertTrigger(t *testing.T) {
	orig, err := broker.LoadManifestsFS(knative.Manifests)
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := stacktest.Manifests(withoutConvertTrigger)
	if err != nil {
		t.Fatal(err)
	}
	m, err := broker.LoadManifestsFS(fsys)
	if err != nil {
		t.Fatalf("the changed manifests do not load: %v", err)
	}
	if len(m.Triggers()) != len(orig.Triggers()) {
		t.Fatalf("%d Triggers, want %d", len(m.Triggers()), len(orig.Triggers()))
	}
	for _, tr := range m.Triggers() {
		if tr.Spec.Filter != nil && tr.Spec.Filter.Attributes["type"] == typeUploaded && tr.Spec.Subscriber.Ref != nil && tr.Spec.Subscriber.Ref.Name == "convert" {
			t.Fatalf("Trigger %s still routes %s to convert", tr.Name, typeUploaded)
		}
	}
}

func TestGeneratedBody(t *testing.T) {
	const n = 3<<20 + 17
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, newGenerated(n, ftyp)); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != n {
		t.Fatalf("generated %d bytes, want %d", buf.Len(), n)
	}
	if got := http.DetectContentType(buf.Bytes()[:512]); got != "video/mp4" {
		t.Fatalf("sniffed as %q, want video/mp4 (the upload function rejects what is plainly not media)", got)
	}
	again, _ := io.ReadAll(newGenerated(n, ftyp))
	if !bytes.Equal(again, buf.Bytes()) {
		t.Fatal("two generators of the same size gave different bytes")
	}
}

func TestSamples(t *testing.T) {
	s := samples{5 * time.Second, time.Second, 3 * time.Second, 2 * time.Second}
	if got := s.median(); got != 2500*time.Millisecond {
		t.Fatalf("median = %s", got)
	}
	if got := (samples{time.Second, 4 * time.Second, 2 * time.Second}).median(); got != 2*time.Second {
		t.Fatalf("median = %s", got)
	}
	for in, want := range map[string]int64{"1GiB": 1 << 30, "64MiB": 64 << 20, "1000": 1000} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0", "-1MiB", "lots"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) accepted", bad)
		}
	}
}
