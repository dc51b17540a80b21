package kit

import (
	"context"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// A re-drive's span belongs to the sweep run that makes it, and links to the trace of the
// upload whose traceparent the job kept.
func TestStartLinkedSpanLinksToTheUploadsTrace(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	ctx, run := tp.Tracer("test").Start(context.Background(), "sweep run")
	const upload = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

	linked, redrive := startLinkedSpan(ctx, "sweep.redrive", upload)
	if got := traceParent(linked); !strings.Contains(got, run.SpanContext().TraceID().String()) || !strings.Contains(got, redrive.SpanContext().SpanID().String()) {
		t.Errorf("traceparent %q: want the re-drive's span in the run's trace", got)
	}
	redrive.End()
	_, unlinked := startLinkedSpan(ctx, "sweep.redrive", "")
	unlinked.End()
	_, bad := startLinkedSpan(ctx, "sweep.redrive", "not a traceparent")
	bad.End()
	run.End()

	spans := rec.Ended()
	if len(spans) != 4 {
		t.Fatalf("%d spans ended", len(spans))
	}
	first := spans[0]
	if first.Parent().SpanID() != run.SpanContext().SpanID() {
		t.Errorf("parent %v, want the run's span", first.Parent().SpanID())
	}
	if l := first.Links(); len(l) != 1 || l[0].SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || l[0].SpanContext.SpanID().String() != "00f067aa0ba902b7" {
		t.Errorf("links %+v: want one, to the upload's span", l)
	}
	for _, s := range spans[1:3] {
		if len(s.Links()) != 0 {
			t.Errorf("links %+v without a valid origin", s.Links())
		}
	}
	if traceParent(context.Background()) != "" {
		t.Error("a traceparent without a span")
	}
}
