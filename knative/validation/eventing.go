package validation

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"knative.dev/pkg/apis"
	duckv1 "knative.dev/pkg/apis/duck/v1"
)

// Webhook rules of Knative Eventing and eventing-rabbitmq that the CRD
// schemas do not express (the schemas have almost no required fields and no
// enums for these kinds; the admission webhooks enforce them).

const (
	BrokerClassAnnotation = "eventing.knative.dev/broker.class"
	RabbitMQBrokerClass   = "RabbitMQBroker"
	ParallelismAnnotation = "rabbitmq.eventing.knative.dev/parallelism"
	brokerConfigAPI       = "eventing.knative.dev/v1alpha1"
	brokerConfigKind      = "RabbitmqBrokerConfig"
)

// filterAttributeName is eventing's rule for CloudEvents attribute names in
// Trigger filters (trigger_validation.go: lowercase letters and digits).
var filterAttributeName = regexp.MustCompile(`^[a-z0-9]+$`)

// isoDuration matches the ISO-8601 durations eventing accepts for
// delivery timeouts and backoff delays, restricted to units with a fixed
// length (weeks, days, hours, minutes, seconds).
var isoDuration = regexp.MustCompile(`^P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:[.,]\d+)?)S)?)?$`)

// ParseISODuration parses an ISO-8601 duration such as PT10M or P1DT2H.
// Years and months are refused: their length is not fixed, and a delivery
// timeout in months is a mistake.
func ParseISODuration(s string) (time.Duration, error) {
	m := isoDuration.FindStringSubmatch(s)
	if m == nil || s == "P" || strings.HasSuffix(s, "T") {
		return 0, fmt.Errorf("%q is not an ISO-8601 duration like PT30S, PT10M or P1D", s)
	}
	var d time.Duration
	for i, unit := range []time.Duration{7 * 24 * time.Hour, 24 * time.Hour, time.Hour, time.Minute} {
		if m[i+1] != "" {
			n, err := strconv.ParseInt(m[i+1], 10, 32)
			if err != nil {
				return 0, fmt.Errorf("%q: %w", s, err)
			}
			d += time.Duration(n) * unit
		}
	}
	if m[5] != "" {
		f, err := strconv.ParseFloat(strings.ReplaceAll(m[5], ",", "."), 64)
		if err != nil {
			return 0, fmt.Errorf("%q: %w", s, err)
		}
		d += time.Duration(f * float64(time.Second))
	}
	return d, nil
}

// validateDelivery mirrors eventing's DeliverySpec.Validate (duck/v1):
// dead-letter sink a valid Destination, retry >= 0, timeout and backoffDelay
// ISO-8601 and not negative, backoffPolicy linear or exponential.
func validateDelivery(ctx context.Context, d *DeliverySpec) *apis.FieldError {
	if d == nil {
		return nil
	}
	var errs *apis.FieldError
	if d.DeadLetterSink != nil {
		errs = errs.Also(d.DeadLetterSink.Validate(ctx).ViaField("deadLetterSink"))
	}
	if d.Retry != nil && *d.Retry < 0 {
		errs = errs.Also(apis.ErrInvalidValue(*d.Retry, "retry", "must not be negative"))
	}
	for _, f := range []struct {
		name string
		v    *string
	}{{"timeout", d.Timeout}, {"backoffDelay", d.BackoffDelay}, {"retryAfterMax", d.RetryAfterMax}} {
		if f.v == nil {
			continue
		}
		if dur, err := ParseISODuration(*f.v); err != nil {
			errs = errs.Also(apis.ErrInvalidValue(*f.v, f.name, err.Error()))
		} else if f.name == "timeout" && dur <= 0 {
			errs = errs.Also(apis.ErrInvalidValue(*f.v, f.name, "must be positive"))
		}
	}
	if d.BackoffPolicy != nil && *d.BackoffPolicy != "linear" && *d.BackoffPolicy != "exponential" {
		errs = errs.Also(apis.ErrInvalidValue(*d.BackoffPolicy, "backoffPolicy", "must be linear or exponential"))
	}
	if d.BackoffDelay != nil && d.BackoffPolicy == nil {
		errs = errs.Also(apis.ErrGeneric("backoffDelay without backoffPolicy: say linear or exponential", "backoffPolicy"))
	}
	if d.Format != nil && *d.Format != "json" && *d.Format != "binary" {
		errs = errs.Also(apis.ErrInvalidValue(*d.Format, "format", "must be json or binary"))
	}
	return errs
}

// CheckEventingWebhooks applies the admission rules of eventing and
// eventing-rabbitmq to Brokers, Triggers, SinkBindings, RabbitmqBrokerConfigs
// and RabbitmqClusters.
func CheckEventingWebhooks(m *Manifests) *apis.FieldError {
	var errs *apis.FieldError
	for _, o := range m.Objects {
		ctx := apis.WithinCreate(context.Background())
		switch t := o.Typed.(type) {
		case *Broker:
			ctx = apis.WithinParent(ctx, t.ObjectMeta)
			errs = errs.Also(via(o, validateBroker(ctx, t)))
		case *Trigger:
			ctx = apis.WithinParent(ctx, t.ObjectMeta)
			errs = errs.Also(via(o, validateTrigger(ctx, t)))
		case *SinkBinding:
			ctx = apis.WithinParent(ctx, t.ObjectMeta)
			errs = errs.Also(via(o, validateSinkBinding(ctx, t)))
		case *RabbitmqBrokerConfig:
			errs = errs.Also(via(o, validateBrokerConfig(t)))
		case *RabbitmqCluster:
			errs = errs.Also(via(o, validateRabbitmqCluster(t)))
		}
	}
	return errs
}

func validateBroker(ctx context.Context, b *Broker) *apis.FieldError {
	var errs *apis.FieldError
	if c := b.Annotations[BrokerClassAnnotation]; c != RabbitMQBrokerClass {
		errs = errs.Also(apis.ErrInvalidValue(c, "metadata.annotations."+BrokerClassAnnotation,
			"must be "+RabbitMQBrokerClass+": the Triggers, consumer_timeout and RabbitmqBrokerConfig are for eventing-rabbitmq's broker"))
	}
	if c := b.Spec.Config; c == nil {
		errs = errs.Also(apis.ErrMissingField("spec.config"))
	} else {
		errs = errs.Also(c.Validate(ctx).ViaField("spec.config"))
		if c.Kind != brokerConfigKind || c.APIVersion != brokerConfigAPI {
			errs = errs.Also(apis.ErrInvalidValue(c.APIVersion+"/"+c.Kind, "spec.config",
				"a RabbitMQBroker's config must be a "+brokerConfigAPI+" "+brokerConfigKind))
		}
	}
	return errs.Also(validateDelivery(ctx, b.Spec.Delivery).ViaField("spec.delivery"))
}

func validateTrigger(ctx context.Context, t *Trigger) *apis.FieldError {
	var errs *apis.FieldError
	if t.Spec.Broker == "" && t.Spec.BrokerRef == nil {
		errs = errs.Also(apis.ErrMissingField("spec.broker"))
	}
	if t.Spec.BrokerRef != nil {
		errs = errs.Also(&apis.FieldError{Message: "must not be set", Paths: []string{"spec.brokerRef"},
			Details: "use spec.broker: brokerRef belongs to the experimental cross-namespace-event-links feature, off by default"})
	}
	if t.Spec.Filter != nil {
		for _, k := range sortedKeys(t.Spec.Filter.Attributes) {
			if !filterAttributeName.MatchString(k) {
				errs = errs.Also(apis.ErrInvalidKeyName(k, "spec.filter.attributes", "attribute names are lowercase letters and digits"))
			}
		}
	}
	if len(t.Spec.Filters) > 0 {
		errs = errs.Also(&apis.FieldError{
			Message: "must not be set: the RabbitMQ broker ignores spec.filters and would deliver every event",
			Paths:   []string{"spec.filters"},
			Details: "use spec.filter.attributes (exact match)",
		})
	}
	errs = errs.Also(duckv1.ValidateDestination(ctx, t.Spec.Subscriber).ViaField("spec.subscriber"))
	errs = errs.Also(validateDelivery(ctx, t.Spec.Delivery).ViaField("spec.delivery"))
	if v, ok := t.Annotations[ParallelismAnnotation]; ok {
		if n, err := strconv.Atoi(v); err != nil || n < 1 || n > 1000 {
			errs = errs.Also(apis.ErrInvalidValue(v, "metadata.annotations."+ParallelismAnnotation, "must be an integer from 1 to 1000"))
		}
	}
	return errs
}

func validateSinkBinding(ctx context.Context, s *SinkBinding) *apis.FieldError {
	var errs *apis.FieldError
	sub := s.Spec.Subject
	if sub.APIVersion == "" {
		errs = errs.Also(apis.ErrMissingField("spec.subject.apiVersion"))
	}
	if sub.Kind == "" {
		errs = errs.Also(apis.ErrMissingField("spec.subject.kind"))
	}
	switch {
	case sub.Name == "" && sub.Selector == nil:
		errs = errs.Also(apis.ErrMissingOneOf("spec.subject.name", "spec.subject.selector"))
	case sub.Name != "" && sub.Selector != nil:
		errs = errs.Also(apis.ErrMultipleOneOf("spec.subject.name", "spec.subject.selector"))
	}
	if sub.Namespace != "" && sub.Namespace != s.Namespace {
		errs = errs.Also(apis.ErrInvalidValue(sub.Namespace, "spec.subject.namespace", "must be the SinkBinding's namespace"))
	}
	return errs.Also(duckv1.ValidateDestination(ctx, s.Spec.Sink).ViaField("spec.sink"))
}

func validateBrokerConfig(c *RabbitmqBrokerConfig) *apis.FieldError {
	ref := c.Spec.RabbitmqClusterReference
	if ref == nil {
		return apis.ErrMissingField("spec.rabbitmqClusterReference")
	}
	var errs *apis.FieldError
	switch {
	case ref.Name == "" && ref.ConnectionSecret == nil:
		errs = errs.Also(apis.ErrMissingOneOf("spec.rabbitmqClusterReference.name", "spec.rabbitmqClusterReference.connectionSecret"))
	case ref.Name != "" && ref.ConnectionSecret != nil:
		errs = errs.Also(apis.ErrMultipleOneOf("spec.rabbitmqClusterReference.name", "spec.rabbitmqClusterReference.connectionSecret"))
	}
	if q := c.Spec.QueueType; q != "" && q != "quorum" && q != "classic" {
		errs = errs.Also(apis.ErrInvalidValue(q, "spec.queueType", "must be quorum or classic"))
	}
	return errs
}

func validateRabbitmqCluster(c *RabbitmqCluster) *apis.FieldError {
	var errs *apis.FieldError
	if c.Spec.Persistence == nil || c.Spec.Persistence.Storage == nil || c.Spec.Persistence.Storage.IsZero() {
		errs = errs.Also(apis.ErrMissingField("spec.persistence.storage"))
	}
	if _, err := ConsumerTimeout(c); err != nil {
		errs = errs.Also(apis.ErrInvalidValue(c.Spec.rabbitmqConfig(), "spec.rabbitmq.additionalConfig", err.Error()))
	}
	return errs
}

func (s RabbitmqClusterSpec) rabbitmqConfig() string {
	if s.Rabbitmq == nil {
		return ""
	}
	return s.Rabbitmq.AdditionalConfig
}

// ConsumerTimeout reads consumer_timeout (milliseconds) from the cluster's
// additionalConfig (rabbitmq.conf syntax).
func ConsumerTimeout(c *RabbitmqCluster) (time.Duration, error) {
	for _, line := range strings.Split(c.Spec.rabbitmqConfig(), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.TrimSpace(k) != "consumer_timeout" {
			continue
		}
		ms, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || ms <= 0 {
			return 0, fmt.Errorf("consumer_timeout %q is not a positive number of milliseconds", strings.TrimSpace(v))
		}
		return time.Duration(ms) * time.Millisecond, nil
	}
	return 0, fmt.Errorf("consumer_timeout is not set: RabbitMQ's default (30 min) is shorter than a conversion with its retries")
}
