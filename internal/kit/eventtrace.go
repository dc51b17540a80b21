package kit

import (
	"context"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// The CloudEvents Distributed Tracing extension: an event carries the trace context of the
// span that made it as its traceparent and tracestate attributes, so the trace goes on
// through the Broker to whoever handles the event, and on through the replies.

// handleEvent handles a CloudEvent with next inside a span that continues the event's
// traceparent extension (the CloudEvents Distributed Tracing extension: func-go's CloudEvents
// runtime does not read the HTTP header), and puts the span's context on the reply.
func (t *telemetry) handleEvent(ctx context.Context, e event.Event, next func(context.Context, event.Event) (*event.Event, error)) (*event.Event, error) {
	st := t.current.Load()
	if st == nil {
		return next(ctx, e)
	}
	ctx = context.WithValue(ctx, instrumentsKey{}, st.metrics)
	if !trace.SpanContextFromContext(ctx).IsValid() {
		ctx = extractEventTrace(ctx, e)
	}
	ctx, span := st.tracerProvider.Tracer("mp3converter").Start(ctx, e.Type(), trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("cloudevents.event_id", e.ID()), attribute.String("cloudevents.event_type", e.Type()),
			attribute.String("cloudevents.event_subject", e.Subject())))
	defer span.End()
	started := time.Now()
	reply, err := next(ctx, e)
	outcome := "ok"
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		outcome = "error"
	}
	st.metrics.events.Record(ctx, time.Since(started).Seconds(), metric.WithAttributes(
		attribute.String("event_type", e.Type()), attribute.String("outcome", outcome)))
	if reply != nil {
		injectEventTrace(ctx, reply)
	}
	return reply, err
}

// injectEventTrace puts the trace context of ctx's span on e as the traceparent and tracestate
// extensions, so whoever handles e continues the trace.
func injectEventTrace(ctx context.Context, e *event.Event) {
	carrier := propagation.MapCarrier{}
	propagator.Inject(ctx, carrier)
	for _, key := range propagator.Fields() {
		if v := carrier.Get(key); v != "" {
			e.SetExtension(key, v)
		}
	}
}

// extractEventTrace returns ctx with the remote span context of e's traceparent extension.
func extractEventTrace(ctx context.Context, e event.Event) context.Context {
	carrier := propagation.MapCarrier{}
	for _, key := range propagator.Fields() {
		if v, ok := e.Extensions()[key].(string); ok {
			carrier.Set(key, v)
		}
	}
	return propagator.Extract(ctx, carrier)
}

// traceParent is the W3C traceparent of ctx's span, "" without one: what a job keeps so
// that a later re-drive by the sweep can link to the trace of its upload.
func traceParent(ctx context.Context) string {
	carrier := propagation.MapCarrier{}
	propagator.Inject(ctx, carrier)
	return carrier.Get("traceparent")
}

// startLinkedSpan starts a span under ctx's with a link to the trace of traceparent (none
// when it is empty or not valid): a re-drive belongs to the sweep run that made it, and
// points at the upload it continues.
func startLinkedSpan(ctx context.Context, name, traceparent string) (context.Context, trace.Span) {
	var opts []trace.SpanStartOption
	origin := trace.SpanContextFromContext(propagator.Extract(context.Background(), propagation.MapCarrier{"traceparent": traceparent}))
	if origin.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: origin}))
	}
	return trace.SpanFromContext(ctx).TracerProvider().Tracer("mp3converter").Start(ctx, name, opts...)
}
