package validation

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"knative.dev/pkg/apis"
	"knative.dev/serving/pkg/apis/autoscaling"
	"knative.dev/serving/pkg/apis/config"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	asconfig "knative.dev/serving/pkg/autoscaler/config"
)

// MaxRevisionTimeoutSeconds is Knative Serving's default
// max-revision-timeout-seconds (config-defaults): the longest timeoutSeconds
// a cluster with default settings accepts.
const MaxRevisionTimeoutSeconds = 600

// ServingContext is the context Knative Serving's webhook validates a create
// in: config-defaults with the given data (nil: Knative's defaults; the
// max-revision-timeout-seconds of 600 is spelled out unless given),
// config-features and config-autoscaler as installed, as serving's own tests
// build it with config.ToContext, inside apis.WithinCreate.
func ServingContext(defaults map[string]string) context.Context {
	data := map[string]string{"max-revision-timeout-seconds": strconv.Itoa(MaxRevisionTimeoutSeconds)}
	for k, v := range defaults {
		data[k] = v
	}
	dc, err := config.NewDefaultsConfigFromMap(data)
	if err != nil {
		panic(err) // LoadServingDefaults' caller validated it
	}
	features, err := config.NewFeaturesConfigFromMap(map[string]string{})
	if err != nil {
		panic(err)
	}
	autoscaler, err := asconfig.NewConfigFromMap(map[string]string{})
	if err != nil {
		panic(err)
	}
	ctx := config.ToContext(context.Background(), &config.Config{
		Defaults: dc, Features: features, Autoscaler: autoscaler,
	})
	return apis.WithinCreate(ctx)
}

// Defaulted returns a copy of svc after Knative's SetDefaults under the
// cluster's config-defaults, as the webhook stores it.
func Defaulted(svc *servingv1.Service, defaults map[string]string) *servingv1.Service {
	d := svc.DeepCopy()
	d.SetDefaults(ServingContext(defaults))
	return d
}

// CheckKnativeServices runs Knative Serving's own SetDefaults and Validate
// on every Service, as its admission webhooks do on create. Warnings (for
// example insecure defaults) count as problems too: the manifests should
// apply cleanly.
func CheckKnativeServices(m *Manifests) *apis.FieldError {
	var errs *apis.FieldError
	for _, o := range m.Objects {
		svc, ok := o.Typed.(*servingv1.Service)
		if !ok {
			continue
		}
		d := svc.DeepCopy()
		ctx := ServingContext(m.ServingDefaults)
		d.SetDefaults(ctx)
		errs = errs.Also(o.Via(d.Validate(ctx)))
	}
	return errs
}

// Container port, probe paths and the listen address func-go uses.
const (
	FunctionPort   = 8080
	ReadinessPath  = "/health/readiness"
	LivenessPath   = "/health/liveness"
	maxScaleLimit  = 100
	addressEnvName = "ADDRESS"
)

// ServiceExpectation is what the issue asks of particular Services beyond the
// common policy.
type ServiceExpectation struct {
	ContainerConcurrency *int64 // nil: not prescribed
	TimeoutSeconds       int64  // 0: not prescribed
}

// Expectations are per-Service requirements: convert converts one video per
// pod for up to 10 minutes; upload and download (and web, in front of them) move large files.
var Expectations = map[string]ServiceExpectation{
	"convert":  {ContainerConcurrency: ptrInt64(1), TimeoutSeconds: MaxRevisionTimeoutSeconds},
	"upload":   {TimeoutSeconds: MaxRevisionTimeoutSeconds},
	"download": {TimeoutSeconds: MaxRevisionTimeoutSeconds},
	"web":      {TimeoutSeconds: MaxRevisionTimeoutSeconds}, // uploads and downloads pass through it
}

func ptrInt64(v int64) *int64 { return &v }

// CheckServicePolicy checks what every function's Knative Service must have
// to run a func-built image well: scale to zero with a bounded max-scale, one
// container on port 8080 listening on all interfaces (ADDRESS=0.0.0.0, as
// func deploy sets it), probes on func-go's health paths, resources, a
// restricted securityContext, a timeoutSeconds (after defaulting with the
// cluster's config-defaults) within the cluster maximum, and a
// response-start timeout as long as the request timeout, since the
// functions answer only at the end.
func CheckServicePolicy(m *Manifests) *apis.FieldError {
	var errs *apis.FieldError
	for _, o := range m.Objects {
		svc, ok := o.Typed.(*servingv1.Service)
		if !ok {
			continue
		}
		errs = errs.Also(o.Via(servicePolicy(svc, m.ServingDefaults)))
	}
	return errs
}

func servicePolicy(svc *servingv1.Service, defaults map[string]string) *apis.FieldError {
	var errs *apis.FieldError
	tmpl := svc.Spec.Template
	ann := tmpl.Annotations
	annPath := "spec.template.metadata.annotations"
	if v, ok := ann[autoscaling.MinScaleAnnotationKey]; !ok || v != "0" {
		errs = errs.Also(apis.ErrInvalidValue(v, autoscaling.MinScaleAnnotationKey, "must be \"0\": every function scales to zero").ViaField(annPath))
	}
	if v, ok := ann[autoscaling.MaxScaleAnnotationKey]; !ok {
		errs = errs.Also(apis.ErrMissingField(autoscaling.MaxScaleAnnotationKey).ViaField(annPath))
	} else if n, err := strconv.Atoi(v); err != nil || n < 1 || n > maxScaleLimit {
		errs = errs.Also(apis.ErrInvalidValue(v, autoscaling.MaxScaleAnnotationKey, fmt.Sprintf("must be 1..%d: a bound on the pods of one function", maxScaleLimit)).ViaField(annPath))
	}
	for _, k := range []string{autoscaling.MinScaleAnnotationKey, autoscaling.MaxScaleAnnotationKey, autoscaling.TargetAnnotationKey} {
		if _, ok := svc.Annotations[k]; ok {
			errs = errs.Also(apis.ErrGeneric("autoscaling annotations belong on spec.template.metadata (the Revision), not on the Service", "metadata.annotations."+k))
		}
	}

	spec := tmpl.Spec
	if exp, ok := Expectations[svc.Name]; ok {
		if exp.ContainerConcurrency != nil && (spec.ContainerConcurrency == nil || *spec.ContainerConcurrency != *exp.ContainerConcurrency) {
			errs = errs.Also(apis.ErrInvalidValue(deref(spec.ContainerConcurrency), "spec.template.spec.containerConcurrency", fmt.Sprintf("must be %d", *exp.ContainerConcurrency)))
		}
		if t := Defaulted(svc, defaults).Spec.Template.Spec.TimeoutSeconds; exp.TimeoutSeconds != 0 && deref0(t) != exp.TimeoutSeconds {
			errs = errs.Also(apis.ErrInvalidValue(deref(t), "spec.template.spec.timeoutSeconds",
				fmt.Sprintf("must be %d after defaulting (knative/%s sets revision-timeout-seconds for func deploy's Services)", exp.TimeoutSeconds, ServingDefaultsFile)))
		}
	}
	// func deploy sets no timeoutSeconds: the cluster's config-defaults
	// (knative/cluster) decide, unless a Service sets its own.
	d := Defaulted(svc, defaults).Spec.Template.Spec
	if t := deref0(d.TimeoutSeconds); t < 1 || t > MaxRevisionTimeoutSeconds {
		errs = errs.Also(apis.ErrOutOfBoundsValue(t, 1, MaxRevisionTimeoutSeconds, "spec.template.spec.timeoutSeconds"))
	} else if d.ResponseStartTimeoutSeconds != nil && *d.ResponseStartTimeoutSeconds < t {
		// A request that only answers at its end must be allowed to start
		// its response as late as it may end.
		errs = errs.Also(apis.ErrInvalidValue(*d.ResponseStartTimeoutSeconds, "spec.template.spec.responseStartTimeoutSeconds",
			fmt.Sprintf("is %d after defaulting, shorter than timeoutSeconds %d: set revision-response-start-timeout-seconds to %d in config-defaults (the functions answer only when done)", *d.ResponseStartTimeoutSeconds, t, t)))
	}

	if len(spec.Containers) != 1 {
		return errs.Also(apis.ErrGeneric(fmt.Sprintf("must have exactly one container (the function), has %d", len(spec.Containers)), "spec.template.spec.containers"))
	}
	errs = errs.Also(containerPolicy(svc.Name, &spec.Containers[0]).ViaFieldIndex("spec.template.spec.containers", 0))
	return errs
}

func containerPolicy(name string, c *corev1.Container) *apis.FieldError {
	var errs *apis.FieldError
	// func deploy declares no port: Knative's default, 8080, is func-go's.
	if len(c.Ports) > 1 || len(c.Ports) == 1 && c.Ports[0].ContainerPort != FunctionPort {
		errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("may declare only the port %d func-go serves on", FunctionPort), "ports"))
	}
	errs = errs.Also(probePolicy(c.ReadinessProbe, ReadinessPath).ViaField("readinessProbe"))
	errs = errs.Also(probePolicy(c.LivenessProbe, LivenessPath).ViaField("livenessProbe"))

	addr := ""
	for _, e := range c.Env {
		if e.Name == addressEnvName {
			addr = e.Value
		}
	}
	if addr != "0.0.0.0" {
		errs = errs.Also(apis.ErrInvalidValue(addr, "env."+addressEnvName,
			"must be 0.0.0.0 (as func deploy sets it): func-go listens on 127.0.0.1 otherwise and the kubelet's liveness probe cannot reach it"))
	}

	r := c.Resources
	if lim, ok := r.Limits[corev1.ResourceMemory]; ok {
		for _, e := range c.Env {
			if e.Name != "GOMEMLIMIT" || e.ValueFrom != nil {
				continue
			}
			if n, err := parseGoMemLimit(e.Value); err != nil {
				errs = errs.Also(apis.ErrInvalidValue(e.Value, "env.GOMEMLIMIT", err.Error()))
			} else if n >= lim.Value() {
				errs = errs.Also(apis.ErrInvalidValue(e.Value, "env.GOMEMLIMIT", "must be below resources.limits.memory ("+lim.String()+"): it is the soft limit the garbage collector keeps under"))
			}
		}
	}
	for _, k := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := r.Requests[k]; !ok {
			errs = errs.Also(apis.ErrMissingField("resources.requests." + string(k)))
		}
	}
	if _, ok := r.Limits[corev1.ResourceMemory]; !ok {
		errs = errs.Also(apis.ErrMissingField("resources.limits.memory"))
	}

	sc := c.SecurityContext
	if sc == nil {
		return errs.Also(apis.ErrMissingField("securityContext"))
	}
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		errs = errs.Also(apis.ErrInvalidValue(derefBool(sc.RunAsNonRoot), "securityContext.runAsNonRoot", "must be true"))
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		errs = errs.Also(apis.ErrInvalidValue(derefBool(sc.AllowPrivilegeEscalation), "securityContext.allowPrivilegeEscalation", "must be false"))
	}
	if sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) > 0 {
		errs = errs.Also(apis.ErrGeneric("must drop ALL capabilities and add none", "securityContext.capabilities"))
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		errs = errs.Also(apis.ErrGeneric("must be RuntimeDefault", "securityContext.seccompProfile.type"))
	}
	return errs
}

func probePolicy(p *corev1.Probe, path string) *apis.FieldError {
	if p == nil {
		return apis.ErrMissingField(apis.CurrentField)
	}
	h := p.HTTPGet
	if h == nil {
		return apis.ErrMissingField("httpGet")
	}
	var errs *apis.FieldError
	if h.Path != path {
		errs = errs.Also(apis.ErrInvalidValue(h.Path, "httpGet.path", "must be "+path+" (func-go's health endpoint)"))
	}
	if h.Port != intstr.FromInt32(FunctionPort) {
		errs = errs.Also(apis.ErrInvalidValue(h.Port.String(), "httpGet.port", fmt.Sprintf("must be the container port %d", FunctionPort)))
	}
	return errs
}

// parseGoMemLimit parses GOMEMLIMIT as the Go runtime does: an integer with
// an optional B, KiB, MiB, GiB or TiB suffix.
func parseGoMemLimit(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("not a size like 400MiB")
	}
	return n * mult, nil
}

func deref(p *int64) any {
	if p == nil {
		return "unset"
	}
	return *p
}

func derefBool(p *bool) any {
	if p == nil {
		return "unset"
	}
	return *p
}
