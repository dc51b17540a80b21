package kit

import (
	"context"

	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// TracerProvider is the tracer provider a function builds from the OTEL_* variables of env,
// for the parts of the local stack that are not functions (the Broker), so that their spans
// go where the functions' go. shutdown exports the spans still buffered.
func TracerProvider(ctx context.Context, service string, env map[string]string) (tp trace.TracerProvider, shutdown func(context.Context) error, err error) {
	set, err := loadSettings(telemetrySettings, env)
	if err != nil {
		return nil, nil, err
	}
	return newTracerProvider(ctx, resource.NewSchemaless(semconv.ServiceName(service)), set)
}
