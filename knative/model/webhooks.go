package model

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"knative.dev/pkg/apis"
	duckv1 "knative.dev/pkg/apis/duck/v1"
)

// The admission rules of Knative Eventing (knative-v1.15) and eventing-rabbitmq
// (v1.15) that the CRD schemas do not express: the schemas have almost no
// required fields and no enums for these kinds; the webhooks enforce them.
// A few rules are this project's, stricter than the webhooks; their comments
// say so.

const (
	BrokerClassAnnotation = "eventing.knative.dev/broker.class"
	RabbitMQBrokerClass   = "RabbitMQBroker"
	ParallelismAnnotation = "rabbitmq.eventing.knative.dev/parallelism"
	BrokerConfigAPI       = "eventing.knative.dev/v1alpha1"
	BrokerConfigKind      = "RabbitmqBrokerConfig"
	BackoffLinear         = "linear"
	BackoffExponential    = "exponential"
)

// CheckWebhooks applies the admission rules to every Broker, Trigger,
// SinkBinding, PingSource and RabbitmqBrokerConfig of m, as on create.
func (m *Manifests) CheckWebhooks() *apis.FieldError {
	var errs *apis.FieldError
	for _, o := range m.Objects {
		ctx := apis.WithinCreate(context.Background())
		switch t := o.Typed.(type) {
		case *Broker:
			errs = errs.Also(o.Via(t.Validate(apis.WithinParent(ctx, t.ObjectMeta))))
		case *Trigger:
			errs = errs.Also(o.Via(t.Validate(apis.WithinParent(ctx, t.ObjectMeta))))
		case *SinkBinding:
			errs = errs.Also(o.Via(t.Validate(apis.WithinParent(ctx, t.ObjectMeta))))
		case *PingSource:
			errs = errs.Also(o.Via(t.Validate(apis.WithinParent(ctx, t.ObjectMeta))))
		case *RabbitmqBrokerConfig:
			errs = errs.Also(o.Via(t.Validate()))
		}
	}
	return errs
}

// Validate is eventing's Broker validation, plus eventing-rabbitmq's for a
// Broker of its class: spec.config is a RabbitmqBrokerConfig.
func (b *Broker) Validate(ctx context.Context) *apis.FieldError {
	var errs *apis.FieldError
	c := b.Spec.Config
	if c != nil {
		errs = errs.Also(c.Validate(ctx).ViaField("spec.config"))
	}
	if b.Annotations[BrokerClassAnnotation] == RabbitMQBrokerClass {
		switch {
		case c == nil:
			errs = errs.Also(apis.ErrMissingField("spec.config"))
		case c.Kind != BrokerConfigKind || c.APIVersion != BrokerConfigAPI:
			errs = errs.Also(apis.ErrInvalidValue(c.APIVersion+"/"+c.Kind, "spec.config",
				"a RabbitMQBroker's config must be a "+BrokerConfigAPI+" "+BrokerConfigKind))
		}
	}
	return errs.Also(b.Spec.Delivery.Validate(ctx).ViaField("spec.delivery"))
}

// filterAttributeName is eventing's rule for CloudEvents attribute names in
// Trigger filters (trigger_validation.go: lowercase letters and digits).
var filterAttributeName = regexp.MustCompile(`^[a-z0-9]+$`)

// Validate is eventing's Trigger validation with the features of a default
// install (cross-namespace-event-links off, so no brokerRef), and
// eventing-rabbitmq's parallelism annotation. spec.filters is refused: the
// RabbitMQ broker ignores it and would deliver every event.
func (t *Trigger) Validate(ctx context.Context) *apis.FieldError {
	var errs *apis.FieldError
	s := &t.Spec
	if s.BrokerRef != nil {
		fe := apis.ErrDisallowedFields("spec.brokerRef")
		fe.Details = "use spec.broker: brokerRef belongs to the experimental cross-namespace-event-links feature, off by default"
		errs = errs.Also(fe)
	} else if s.Broker == "" {
		errs = errs.Also(apis.ErrMissingField("spec.broker"))
	}
	if s.Filter != nil {
		for _, k := range sortedKeys(s.Filter.Attributes) {
			if !filterAttributeName.MatchString(k) {
				errs = errs.Also(apis.ErrInvalidKeyName(k, "spec.filter.attributes", "attribute names are lowercase letters and digits"))
			}
		}
	}
	if len(s.Filters) > 0 {
		fe := apis.ErrDisallowedFields("spec.filters")
		fe.Details = "the RabbitMQ broker ignores spec.filters and would deliver every event: use spec.filter.attributes (exact match)"
		errs = errs.Also(fe)
	}
	errs = errs.Also(ValidateDestination(ctx, &s.Subscriber).ViaField("spec.subscriber"))
	errs = errs.Also(s.Delivery.Validate(ctx).ViaField("spec.delivery"))
	if v, ok := t.Annotations[ParallelismAnnotation]; ok {
		path := "metadata.annotations[" + ParallelismAnnotation + "]"
		const why = "must be an integer from 1 to 1000"
		if n, err := strconv.Atoi(v); err != nil {
			errs = errs.Also(apis.ErrInvalidValue(v, path, why))
		} else if n < 1 || n > 1000 {
			fe := apis.ErrOutOfBoundsValue(n, 1, 1000, path)
			fe.Details = why
			errs = errs.Also(fe)
		}
	}
	return errs
}

// ValidateDestination is duckv1's check, plus the ref's own check when a
// relative uri accompanies it (duckv1 skips it then; this project does not
// let a ref without a kind through).
func ValidateDestination(ctx context.Context, d *duckv1.Destination) *apis.FieldError {
	errs := duckv1.ValidateDestination(ctx, *d)
	if errs == nil && d.Ref != nil && d.URI != nil {
		errs = d.Ref.Validate(ctx).ViaField("ref")
	}
	return errs
}

// Validate mirrors eventing's DeliverySpec.Validate (duck/v1, features of
// a default install: delivery-timeout on, delivery-retryafter off): the
// dead-letter sink a valid Destination, retry >= 0, timeout a non-zero
// ISO-8601 duration, backoffDelay ISO-8601, backoffPolicy linear or
// exponential, format json or binary, no retryAfterMax. ParseISODuration
// says where its durations are stricter than eventing's.
func (d *DeliverySpec) Validate(ctx context.Context) *apis.FieldError {
	if d == nil {
		return nil
	}
	var errs *apis.FieldError
	if d.DeadLetterSink != nil {
		errs = errs.Also(ValidateDestination(ctx, d.DeadLetterSink).ViaField("deadLetterSink"))
	}
	if d.Retry != nil && *d.Retry < 0 {
		errs = errs.Also(apis.ErrInvalidValue(*d.Retry, "retry", "must not be negative"))
	}
	if d.Timeout != nil {
		if dur, err := ParseISODuration(*d.Timeout); err != nil {
			errs = errs.Also(apis.ErrInvalidValue(*d.Timeout, "timeout", err.Error()))
		} else if dur <= 0 {
			errs = errs.Also(apis.ErrInvalidValue(*d.Timeout, "timeout", "must be positive"))
		}
	}
	if d.BackoffDelay != nil {
		if _, err := ParseISODuration(*d.BackoffDelay); err != nil {
			errs = errs.Also(apis.ErrInvalidValue(*d.BackoffDelay, "backoffDelay", err.Error()))
		}
	}
	if d.BackoffPolicy != nil && *d.BackoffPolicy != BackoffLinear && *d.BackoffPolicy != BackoffExponential {
		errs = errs.Also(apis.ErrInvalidValue(*d.BackoffPolicy, "backoffPolicy", "must be linear or exponential"))
	}
	if d.RetryAfterMax != nil {
		fe := apis.ErrDisallowedFields("retryAfterMax")
		fe.Details = "retryAfterMax needs eventing's alpha feature delivery-retryafter, off by default"
		errs = errs.Also(fe)
	}
	if d.Format != nil && *d.Format != "json" && *d.Format != "binary" {
		errs = errs.Also(apis.ErrInvalidValue(*d.Format, "format", "must be json or binary"))
	}
	return errs
}

// Validate is the sources webhook's SinkBinding validation: a subject by
// name or selector in the binding's namespace, and a valid sink.
func (s *SinkBinding) Validate(ctx context.Context) *apis.FieldError {
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

// PingSourceEventType is the type of the events a PingSource sends.
const PingSourceEventType = "dev.knative.sources.ping"

// Validate is eventing's PingSource validation (ping_validation.go): the
// schedule parses as a standard cron expression in the timezone, data and
// dataBase64 are exclusive (the latter base64, the former JSON when the
// content type says so), the sink is a valid destination.
func (p *PingSource) Validate(ctx context.Context) *apis.FieldError {
	var errs *apis.FieldError
	if _, err := p.Spec.ParseSchedule(); err != nil {
		path := "spec.schedule"
		if p.Spec.Timezone != "" {
			if _, tzErr := time.LoadLocation(p.Spec.Timezone); tzErr != nil {
				path = "spec.timezone"
			}
		}
		errs = errs.Also(apis.ErrInvalidValue(p.Spec.Schedule, path, err.Error()))
	}
	switch {
	case p.Spec.Data != "" && p.Spec.DataBase64 != "":
		errs = errs.Also(apis.ErrMultipleOneOf("spec.data", "spec.dataBase64"))
	case p.Spec.DataBase64 != "":
		if _, err := base64.StdEncoding.DecodeString(p.Spec.DataBase64); err != nil {
			errs = errs.Also(apis.ErrInvalidValue(p.Spec.DataBase64, "spec.dataBase64", err.Error()))
		}
	case p.Spec.Data != "" && strings.HasPrefix(p.Spec.ContentType, "application/json") && !json.Valid([]byte(p.Spec.Data)):
		errs = errs.Also(apis.ErrInvalidValue(p.Spec.Data, "spec.data", "not JSON, as contentType says"))
	}
	return errs.Also(duckv1.ValidateDestination(ctx, p.Spec.Sink).ViaField("spec.sink"))
}

// EventSource is the CloudEvents source of the PingSource's events, as
// eventing's adapter sets it.
func (p *PingSource) EventSource() string {
	return "/apis/v1/namespaces/" + NamespaceOf(&p.ObjectMeta) + "/pingsources/" + p.Name
}

// ParseSchedule reads the schedule as eventing's receive adapter does: a
// standard five-field cron expression (or a descriptor such as @every 1m),
// in spec.timezone when set.
func (s PingSourceSpec) ParseSchedule() (cron.Schedule, error) {
	schedule := s.Schedule
	if s.Timezone != "" {
		schedule = "CRON_TZ=" + s.Timezone + " " + schedule
	}
	return cron.ParseStandard(schedule)
}

// Validate is eventing-rabbitmq's RabbitmqBrokerConfig validation: a
// cluster by name or a connection Secret, a quorum or classic queue type.
func (c *RabbitmqBrokerConfig) Validate() *apis.FieldError {
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
