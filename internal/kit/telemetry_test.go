package kit

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

// A request with a traceparent is served inside a span of that trace, and its logs carry it.
func TestServeHTTPContinuesTheCallersTrace(t *testing.T) {
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) }))
	defer collector.Close()
	var tel telemetry
	if err := tel.startTelemetry(context.Background(), "test", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": collector.URL}); err != nil {
		t.Fatal(err)
	}
	defer tel.stopTelemetry(context.Background())
	var logs bytes.Buffer
	log := withTraceIDs(slog.New(slog.NewJSONHandler(&logs, nil)))
	var seen trace.SpanContext
	req := httptest.NewRequest(http.MethodPost, "/jobs/123", nil)
	req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	tel.serveHTTP(httptest.NewRecorder(), req, func(w http.ResponseWriter, r *http.Request) {
		seen = trace.SpanContextFromContext(r.Context())
		log.InfoContext(r.Context(), "served")
	})
	if seen.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || seen.SpanID().String() == "00f067aa0ba902b7" {
		t.Fatalf("span context %v: want a new span of the caller's trace", seen)
	}
	if !strings.Contains(logs.String(), `"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"`) || !strings.Contains(logs.String(), `"span_id":"`+seen.SpanID().String()+`"`) {
		t.Fatalf("log: %s", logs.String())
	}
}

func TestParseSampler(t *testing.T) {
	for _, ok := range [][2]string{{"", ""}, {"always_on", ""}, {"parentbased_traceidratio", "0.1"}, {"always_off", ""}} {
		if _, err := parseSampler(ok[0], ok[1]); err != nil {
			t.Errorf("%q %q: %v", ok[0], ok[1], err)
		}
	}
	for _, bad := range [][2]string{{"sometimes", ""}, {"traceidratio", "2"}, {"traceidratio", "half"}} {
		if _, err := parseSampler(bad[0], bad[1]); err == nil {
			t.Errorf("%q %q: accepted", bad[0], bad[1])
		}
	}
}

func BenchmarkServeHTTP(b *testing.B) {
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) }))
	defer collector.Close()
	for _, c := range []struct{ name, endpoint string }{{"off", ""}, {"exporting", collector.URL}} {
		b.Run(c.name, func(b *testing.B) {
			var tel telemetry
			if err := tel.startTelemetry(context.Background(), "bench", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": c.endpoint, "OTEL_TRACES_SAMPLER": "always_on"}); err != nil {
				b.Fatal(err)
			}
			defer tel.stopTelemetry(context.Background())
			next := func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }
			b.ReportAllocs()
			for b.Loop() {
				tel.serveHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/validate", nil), next)
			}
		})
	}
}
