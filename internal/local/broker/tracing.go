package broker

import (
	"context"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// A delivery is traced as eventing-rabbitmq's dispatcher traces it: a span per event and
// Trigger, a child of the producer's span, and the subscriber's request carries that span as
// its traceparent header, so the subscriber's span is the delivery's child. The reply goes
// back into the broker under the same span. Where eventing-rabbitmq keeps the traceparent
// header of the ingress request in the RabbitMQ message's headers, this broker reads the
// event's own traceparent extension (CloudEvents Distributed Tracing), which our producers
// set to the same span; the extension itself travels untouched, as on the cluster.
var propagator = propagation.TraceContext{}

// startDelivery starts the span of one delivery of e to the dispatcher's Trigger.
func (d *dispatcher) startDelivery(ctx context.Context, e event.Event) (context.Context, trace.Span) {
	carrier := propagation.MapCarrier{}
	for _, key := range propagator.Fields() {
		if v, ok := e.Extensions()[key].(string); ok {
			carrier.Set(key, v)
		}
	}
	ctx = propagator.Extract(ctx, carrier)
	return d.tracer.Start(ctx, "broker "+d.t.name, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("cloudevents.event_id", e.ID()), attribute.String("cloudevents.event_type", e.Type()),
			attribute.String("knative.trigger", d.t.name)))
}
