package validation

import (
	"mp3converter/knative/model"

	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"knative.dev/pkg/apis"
	"knative.dev/serving/pkg/apis/autoscaling"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

// InternalTimeouts names, per Service, the environment variable with which
// the function bounds its own work. It must end a margin before the request
// is cut off from outside, so that the function answers (and cleans up)
// itself.
var InternalTimeouts = map[string]string{
	"convert":  "CONVERT_TIMEOUT",
	"upload":   "UPLOAD_TIMEOUT",
	"download": "DOWNLOAD_TIMEOUT",
	"web":      "TRANSFER_TIMEOUT",
}

// TimeoutMargin is the time a function needs after its own deadline to
// answer: write the failure reply, delete a partial upload.
const TimeoutMargin = 30 * time.Second

// RetryWindow is how long the dispatcher may hold one message: every attempt
// up to its timeout, plus the backoff before each retry (backoffDelay*2^n for
// exponential, backoffDelay*n for linear, n = 1..retry).
func RetryWindow(d *model.DeliverySpec) (time.Duration, error) {
	if d == nil || d.Timeout == nil {
		return 0, fmt.Errorf("no delivery.timeout")
	}
	timeout, err := model.ParseISODuration(*d.Timeout)
	if err != nil {
		return 0, err
	}
	retries := int32(0)
	if d.Retry != nil {
		retries = *d.Retry
	}
	var delay time.Duration
	if d.BackoffDelay != nil {
		if delay, err = model.ParseISODuration(*d.BackoffDelay); err != nil {
			return 0, err
		}
	}
	window := time.Duration(retries+1) * timeout
	for n := int32(1); n <= retries; n++ {
		if d.BackoffPolicy != nil && *d.BackoffPolicy == model.BackoffLinear {
			window += delay * time.Duration(n)
		} else {
			window += delay << n
		}
	}
	return window, nil
}

// CheckTimeouts checks the timeout chain of every Trigger:
// delivery.timeout <= the subscriber's timeoutSeconds (and its response-start
// timeout, after defaulting) <= 600; the function's own deadline ends
// TimeoutMargin before the outer one; RabbitMQ's consumer_timeout exceeds
// the longest retry window; and the subscriber can run as many deliveries at
// once as the Trigger's parallelism sends.
func CheckTimeouts(m *Manifests) *apis.FieldError {
	var errs *apis.FieldError
	var longest, longestWindow time.Duration
	var longestName string
	for _, t := range model.Of[*model.Trigger](&m.Manifests) {
		o := m.ObjectOf(t)
		d := m.EffectiveDelivery(t)
		if d == nil || d.Timeout == nil {
			errs = errs.Also(o.Via(withDetails(apis.ErrMissingField("spec.delivery.timeout"),
				"without a per-attempt timeout (here or on the Broker) the chain delivery.timeout <= timeoutSeconds cannot hold")))
			continue
		}
		timeout, err := model.ParseISODuration(*d.Timeout)
		if err != nil {
			continue // CheckEventingWebhooks reports it
		}
		if w, err := RetryWindow(d); err == nil {
			if h := Unacknowledged(w, parallelism(t)); h > longest {
				longest, longestName, longestWindow = h, t.Name, w
			}
		}
		ref := t.Spec.Subscriber.Ref
		if ref == nil || ref.Kind != "Service" {
			continue
		}
		svc := m.ServiceByName(ref.Name)
		if svc == nil {
			continue // CheckReferences reports it
		}
		spec := Defaulted(svc, m.ServingDefaults).Spec.Template.Spec
		ts := time.Duration(deref0(spec.TimeoutSeconds)) * time.Second
		if timeout > ts {
			errs = errs.Also(o.Via(apis.ErrInvalidValue(*d.Timeout, "spec.delivery.timeout",
				fmt.Sprintf("longer than the subscriber %s's timeoutSeconds (%s): the request would be cut off first", svc.Name, ts))))
		}
		if spec.ResponseStartTimeoutSeconds != nil {
			if rs := time.Duration(*spec.ResponseStartTimeoutSeconds) * time.Second; timeout > rs {
				errs = errs.Also(o.Via(apis.ErrInvalidValue(*d.Timeout, "spec.delivery.timeout",
					fmt.Sprintf("longer than the subscriber %s's responseStartTimeoutSeconds (%s)", svc.Name, rs))))
			}
		}
		if env, ok := InternalTimeouts[svc.Name]; ok {
			if own, err := m.envDuration(svc, env); err == nil && own > timeout-TimeoutMargin {
				errs = errs.Also(m.ObjectOf(svc).Via(apis.ErrInvalidValue(own.String(), "env."+env,
					fmt.Sprintf("must end at least %s before the Trigger %s's delivery.timeout %s", TimeoutMargin, t.Name, *d.Timeout))))
			}
		}
		errs = errs.Also(o.Via(parallelismFits(t, svc)))
	}

	for _, svc := range model.Of[*servingv1.Service](&m.Manifests) {
		env, ok := InternalTimeouts[svc.Name]
		if !ok {
			continue
		}
		ts := time.Duration(deref0(Defaulted(svc, m.ServingDefaults).Spec.Template.Spec.TimeoutSeconds)) * time.Second
		own, err := m.envDuration(svc, env)
		switch {
		case err != nil:
			errs = errs.Also(m.ObjectOf(svc).Via(apis.ErrInvalidValue(env, "env", err.Error())))
		case own > ts-TimeoutMargin:
			errs = errs.Also(m.ObjectOf(svc).Via(apis.ErrInvalidValue(own.String(), "env."+env,
				fmt.Sprintf("must end at least %s before timeoutSeconds (%s)", TimeoutMargin, ts))))
		}
	}

	for _, c := range model.Of[*model.RabbitmqCluster](&m.Manifests) {
		ct, err := ConsumerTimeout(c)
		if err != nil {
			continue // CheckEventingWebhooks reports it
		}
		if ct <= longest {
			errs = errs.Also(m.ObjectOf(c).Via(apis.ErrInvalidValue(ct.Milliseconds(), "spec.rabbitmq.additionalConfig.consumer_timeout",
				fmt.Sprintf("must exceed the longest a message stays unacknowledged, %s for Trigger %s (%d ms: the dispatcher's %d prefetched messages in turns of its parallelism, each up to the retry window %s): RabbitMQ would close the dispatcher's channel and redeliver everything, running deliveries included",
					longest, longestName, longest.Milliseconds(), DispatcherPrefetch, longestWindow))))
		}
	}
	return errs
}

// DispatcherPrefetch is the QoS prefetch of eventing-rabbitmq's dispatcher,
// fixed whatever the Trigger's parallelism (knative-v1.15.0
// pkg/rabbit/connections_handler.go ChannelQoS: Qos(100, 0, false)).
const DispatcherPrefetch = 100

// Unacknowledged is how long a message can stay unacknowledged at a
// dispatcher that holds DispatcherPrefetch messages and works on parallelism
// of them at once, each for up to window: the last one waits for
// ceil(prefetch/parallelism) turns. RabbitMQ's consumer_timeout counts from
// the delivery to the dispatcher, not from the start of the work.
func Unacknowledged(window time.Duration, parallelism int) time.Duration {
	if parallelism < 1 {
		parallelism = 1
	}
	turns := (DispatcherPrefetch + parallelism - 1) / parallelism
	return time.Duration(turns) * window
}

// parallelism is a Trigger's rabbitmq.eventing.knative.dev/parallelism (1
// when unset or invalid; CheckEventingWebhooks reports the latter).
func parallelism(t *model.Trigger) int {
	if n, err := strconv.Atoi(t.Annotations[model.ParallelismAnnotation]); err == nil && n >= 1 {
		return n
	}
	return 1
}

// parallelismFits: a subscriber with containerConcurrency c and max-scale n
// handles at most c*n deliveries at once; more wait in the activator and eat
// their delivery timeout.
func parallelismFits(t *model.Trigger, svc *servingv1.Service) *apis.FieldError {
	p := 1
	if v, ok := t.Annotations[model.ParallelismAnnotation]; ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil // CheckEventingWebhooks reports it
		}
		p = n
	}
	cc := deref0(svc.Spec.Template.Spec.ContainerConcurrency)
	maxScale, err := strconv.Atoi(svc.Spec.Template.Annotations[autoscaling.MaxScaleAnnotationKey])
	if cc == 0 || err != nil {
		return nil
	}
	if int64(maxScale)*cc < int64(p) {
		return apis.ErrInvalidValue(p, "metadata.annotations."+model.ParallelismAnnotation,
			fmt.Sprintf("more than %s can take at once (max-scale %d x containerConcurrency %d)", svc.Name, maxScale, cc))
	}
	return nil
}

// envDuration resolves a container variable (a value or a ConfigMap key of
// the folder) and parses it as a Go duration.
func (m *Manifests) envDuration(svc *servingv1.Service, name string) (time.Duration, error) {
	v, err := m.EnvValue(svc, name)
	if err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s=%q: %w", name, v, err)
	}
	return d, nil
}

// EnvValue resolves the value of a Service container's variable from a
// literal value or a ConfigMap of the folder.
func (m *Manifests) EnvValue(svc *servingv1.Service, name string) (string, error) {
	for _, c := range svc.Spec.Template.Spec.Containers {
		for _, e := range c.Env {
			if e.Name != name {
				continue
			}
			if e.ValueFrom == nil {
				return e.Value, nil
			}
			if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
				if o := m.Find("v1", "ConfigMap", r.Name); o != nil {
					if v, ok := o.Typed.(*corev1.ConfigMap).Data[r.Key]; ok {
						return v, nil
					}
				}
				return "", fmt.Errorf("%s: ConfigMap %s has no key %s", name, r.Name, r.Key)
			}
			return "", fmt.Errorf("%s comes from a Secret", name)
		}
	}
	return "", fmt.Errorf("%s is not set on %s", name, svc.Name)
}

func deref0[T int64 | int32](p *T) int64 {
	if p == nil {
		return 0
	}
	return int64(*p)
}
