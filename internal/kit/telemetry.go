package kit

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// telemetrySettings are the variables every function reads for its traces and metrics: the
// OpenTelemetry SDK's standard names, read from Start's map like every other setting.
var telemetrySettings = []Setting{
	{Name: "OTEL_EXPORTER_OTLP_ENDPOINT", Kind: KindURL, Meaning: "OTLP/HTTP collector the traces go to (e.g. http://127.0.0.1:4318, Jaeger's); unset: no trace is exported"},
	{Name: "OTEL_SERVICE_NAME", Kind: KindText, Meaning: "service name of the traces and the metrics' service_name label; unset: the function's name"},
	{Name: "OTEL_TRACES_SAMPLER", Kind: KindText, Meaning: "always_on, always_off, traceidratio, or parentbased_ one of them; unset: parentbased_always_on"},
	{Name: "OTEL_TRACES_SAMPLER_ARG", Kind: KindText, Meaning: "the ratio (0 to 1) of the traceidratio samplers; unset: 1"},
	{Name: "METRICS_ADDRESS", Kind: KindText, Meaning: "where the function serves its own Prometheus /metrics (e.g. :9464 on the cluster); unset: only the host's /metrics (`up` serves all on web's address)"},
}

// withTelemetry returns a function's own settings followed by the telemetry settings.
func withTelemetry(own []Setting) []Setting { return append(own, telemetrySettings...) }

// telemetry is what a function reports about itself: a span per request (continuing the
// caller's trace) and Prometheus metrics. Embed it in the Function: its zero value serves
// requests untraced until startTelemetry, and it gives the Function the MetricsGatherer
// method a host uses to serve every function's metrics on one /metrics.
type telemetry struct {
	current atomic.Pointer[telemetryState]
}

// telemetryState is what startTelemetry built from the settings.
type telemetryState struct {
	tracerProvider trace.TracerProvider
	shutdownTraces func(context.Context) error // flushes the spans not yet exported
	meterProvider  *sdkmetric.MeterProvider
	registry       *prometheus.Registry
	metrics        *instruments
	http           http.Handler // otelhttp around the handler the request carries
	metricsServer  *http.Server // METRICS_ADDRESS, nil when unset
}

// newTracerProvider returns the tracer provider the settings ask for: an OTLP/HTTP exporter
// behind a batch (a request never waits on the collector), or without an endpoint a no-op.
func newTracerProvider(ctx context.Context, res *resource.Resource, set settings) (trace.TracerProvider, func(context.Context) error, error) {
	endpoint := set.text("OTEL_EXPORTER_OTLP_ENDPOINT")
	if endpoint == "" {
		return tracenoop.NewTracerProvider(), func(context.Context) error { return nil }, nil
	}
	sampler, err := parseSampler(set.text("OTEL_TRACES_SAMPLER"), set.text("OTEL_TRACES_SAMPLER_ARG"))
	if err != nil {
		return nil, nil, err
	}
	exporter, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint+"/v1/traces"))
	if err != nil {
		return nil, nil, fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res), sdktrace.WithSampler(sampler))
	return tp, tp.Shutdown, nil
}

// propagator reads and writes W3C trace context: the traceparent and tracestate headers, and
// the CloudEvents extensions of the same names.
var propagator = propagation.TraceContext{}

// startTelemetry builds the tracer and meter providers from the telemetry settings in cfg
// (Start's map) and publishes them; it replaces (and shuts down) those of an earlier Start. Without OTEL_EXPORTER_OTLP_ENDPOINT
// the tracer is a no-op one: spans cost nearly nothing, and a caller's trace context is still
// passed on.
func (t *telemetry) startTelemetry(ctx context.Context, function string, cfg map[string]string) error {
	set, err := loadSettings(telemetrySettings, cfg)
	if err != nil {
		return err
	}
	service := cmp.Or(set.text("OTEL_SERVICE_NAME"), function)
	res := resource.NewSchemaless(semconv.ServiceName(service))
	st := &telemetryState{registry: prometheus.NewRegistry()}
	st.tracerProvider, st.shutdownTraces, err = newTracerProvider(ctx, res, set)
	if err != nil {
		return err
	}
	exporter, err := otelprom.New(
		otelprom.WithRegisterer(st.registry),
		// One label says which function a series is from, so one /metrics can hold them all.
		otelprom.WithResourceAsConstantLabels(attribute.NewAllowKeysFilter(semconv.ServiceNameKey)),
		otelprom.WithoutTargetInfo(), otelprom.WithoutScopeInfo())
	if err != nil {
		return fmt.Errorf("prometheus exporter: %w", err)
	}
	st.meterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter), sdkmetric.WithResource(res))
	if st.metrics, err = newInstruments(st.meterProvider.Meter("mp3converter")); err != nil {
		return err
	}
	st.http = otelhttp.NewHandler(http.HandlerFunc(serveNext), function,
		otelhttp.WithTracerProvider(st.tracerProvider),
		otelhttp.WithMeterProvider(st.meterProvider),
		otelhttp.WithPropagators(propagator),
		otelhttp.WithMetricAttributesFn(func(r *http.Request) []attribute.KeyValue {
			return []attribute.KeyValue{semconv.HTTPRoute(routeOf(r.URL.Path))}
		}))
	if addr := set.text("METRICS_ADDRESS"); addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("METRICS_ADDRESS: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(st.registry, promhttp.HandlerOpts{}))
		st.metricsServer = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go st.metricsServer.Serve(ln)
	}
	if old := t.current.Swap(st); old != nil {
		return old.close(ctx)
	}
	return nil
}

// stopTelemetry exports the spans still buffered and stops serving METRICS_ADDRESS.
func (t *telemetry) stopTelemetry(ctx context.Context) error {
	if st := t.current.Swap(nil); st != nil {
		return st.close(ctx)
	}
	return nil
}

func (st *telemetryState) close(ctx context.Context) error {
	var errs []error
	if st.metricsServer != nil {
		errs = append(errs, st.metricsServer.Shutdown(ctx))
	}
	errs = append(errs, st.shutdownTraces(ctx), st.meterProvider.Shutdown(ctx))
	return errors.Join(errs...)
}

// MetricsGatherer returns the function's Prometheus metrics, for a host that serves several
// functions' on one /metrics (each series has the function in its service_name label).
func (t *telemetry) MetricsGatherer() prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		if st := t.current.Load(); st != nil {
			return st.registry.Gather()
		}
		return nil, nil
	})
}

// serveHTTP serves a request with next inside a span continuing the caller's traceparent,
// recording the request's count and duration by route and status.
func (t *telemetry) serveHTTP(w http.ResponseWriter, r *http.Request, next http.HandlerFunc) {
	st := t.current.Load()
	if st == nil {
		next(w, r)
		return
	}
	ctx := context.WithValue(r.Context(), nextHandlerKey{}, next)
	ctx = context.WithValue(ctx, instrumentsKey{}, st.metrics)
	st.http.ServeHTTP(w, r.WithContext(ctx))
}

type nextHandlerKey struct{}

// serveNext is the handler inside otelhttp's: the one serveHTTP was given.
func serveNext(w http.ResponseWriter, r *http.Request) {
	r.Context().Value(nextHandlerKey{}).(http.HandlerFunc)(w, r)
}

// startSpan starts a span of the work named (a GridFS read, ffmpeg, an SMTP send) under the
// span in ctx, with the tracer provider that span came from: nothing to pass around, and
// nearly free when the function does not trace.
func startSpan(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	return trace.SpanFromContext(ctx).TracerProvider().Tracer("mp3converter").Start(ctx, name, trace.WithAttributes(attrs...))
}

// endSpan ends span, marking it failed when err is not nil.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// routeOf is the route label of a path: its first segment ("/jobs/123" is "/jobs"). A label
// value per distinct path would let anyone grow the metrics without bound; the first segments
// a function serves are few, and beyond maxRoutes distinct ones the rest count as "other".
func routeOf(path string) string {
	seg, _, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	route := "/" + seg
	routesMu.Lock()
	defer routesMu.Unlock()
	if routesSeen[route] || len(routesSeen) < maxRoutes {
		routesSeen[route] = true
		return route
	}
	return "other"
}

const maxRoutes = 32

var (
	routesMu   sync.Mutex
	routesSeen = map[string]bool{}
)

// parseSampler reads OTEL_TRACES_SAMPLER and its argument as the SDK's environment does.
func parseSampler(name, arg string) (sdktrace.Sampler, error) {
	ratio := 1.0
	if arg != "" {
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return nil, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG: %q is not a ratio from 0 to 1", arg)
		}
		ratio = r
	}
	base, parentBased := strings.CutPrefix(cmp.Or(name, "parentbased_always_on"), "parentbased_")
	var s sdktrace.Sampler
	switch base {
	case "always_on":
		s = sdktrace.AlwaysSample()
	case "always_off":
		s = sdktrace.NeverSample()
	case "traceidratio":
		s = sdktrace.TraceIDRatioBased(ratio)
	default:
		return nil, fmt.Errorf("OTEL_TRACES_SAMPLER: %q is not always_on, always_off, traceidratio or parentbased_ one of them", name)
	}
	if parentBased {
		s = sdktrace.ParentBased(s)
	}
	return s, nil
}

// withTraceIDs returns a logger whose records carry trace_id and span_id when they are logged
// with a context that has a span (log.InfoContext(ctx, ...)).
func withTraceIDs(log *slog.Logger) *slog.Logger {
	return slog.New(traceIDHandler{log.Handler()})
}

type traceIDHandler struct{ slog.Handler }

func (h traceIDHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceIDHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return traceIDHandler{h.Handler.WithAttrs(attrs)}
}

func (h traceIDHandler) WithGroup(name string) slog.Handler {
	return traceIDHandler{h.Handler.WithGroup(name)}
}

// instruments are the metrics of the pipeline, the same in every function (each records the
// ones of its work). docs/observability.md shows them as Prometheus reads them.
type instruments struct {
	uploads         metric.Int64Counter     // uploads stored and announced
	uploadedBytes   metric.Int64Counter     // their bytes
	conversions     metric.Int64Counter     // by outcome (done, failed, retried) and reason (of a failure)
	conversionSpeed metric.Float64Histogram // seconds converting per second of audio
	emails          metric.Int64Counter     // by kind (done, failed) and outcome (sent, failed)
	jobsInFlight    metric.Int64UpDownCounter
	events          metric.Float64Histogram // a CloudEvents function's events handled, by type and outcome, in seconds
}

type instrumentsKey struct{}

// metricsOf returns the instruments of the function serving ctx's request; outside a request
// (or before Start) instruments that record nothing.
func metricsOf(ctx context.Context) *instruments {
	if m, ok := ctx.Value(instrumentsKey{}).(*instruments); ok {
		return m
	}
	return noInstruments
}

var noInstruments, _ = newInstruments(metricnoop.NewMeterProvider().Meter(""))

func newInstruments(m metric.Meter) (*instruments, error) {
	var in instruments
	var errs [7]error
	in.uploads, errs[0] = m.Int64Counter("mp3converter.uploads", metric.WithDescription("Uploads stored and announced."))
	in.uploadedBytes, errs[1] = m.Int64Counter("mp3converter.uploaded", metric.WithUnit("By"), metric.WithDescription("Bytes of the uploads stored."))
	in.conversions, errs[2] = m.Int64Counter("mp3converter.conversions", metric.WithDescription("Conversions by outcome (done, failed, retried) and the reason class of a failure."))
	in.conversionSpeed, errs[3] = m.Float64Histogram("mp3converter.conversion.seconds_per_audio_second",
		metric.WithDescription("Seconds a conversion took per second of audio it made (download, ffmpeg and upload)."),
		metric.WithExplicitBucketBoundaries(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2))
	in.emails, errs[4] = m.Int64Counter("mp3converter.emails", metric.WithDescription("Emails by kind (done, failed) and outcome (sent, failed)."))
	in.jobsInFlight, errs[5] = m.Int64UpDownCounter("mp3converter.jobs.in_flight", metric.WithDescription("Conversions running now."))
	// notify's and sweep's requests: func-go hands them events, not HTTP requests.
	in.events, errs[6] = m.Float64Histogram("mp3converter.events.handled", metric.WithUnit("s"),
		metric.WithDescription("Events a CloudEvents function handled, by event type and outcome (ok, error: the Broker retries it), and how long each took."))
	return &in, errors.Join(errs[:]...)
}

// uploaded counts an upload stored and announced, and its bytes.
func (m *instruments) uploaded(ctx context.Context, size int64) {
	m.uploads.Add(ctx, 1)
	m.uploadedBytes.Add(ctx, size)
}

// conversion counts a conversion's outcome: done, failed (with the reason's class) or retried.
func (m *instruments) conversion(ctx context.Context, outcome, reason string) {
	attrs := []attribute.KeyValue{attribute.String("outcome", outcome)}
	if reason != "" {
		attrs = append(attrs, attribute.String("reason", reason))
	}
	m.conversions.Add(ctx, 1, metric.WithAttributes(attrs...))
}

// email counts an email of kind (done, failed) by its outcome (sent, failed).
func (m *instruments) email(ctx context.Context, kind, outcome string) {
	m.emails.Add(ctx, 1, metric.WithAttributes(attribute.String("kind", kind), attribute.String("outcome", outcome)))
}
