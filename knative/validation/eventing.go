package validation

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"knative.dev/pkg/apis"

	"mp3converter/knative/model"
)

// CheckEventingWebhooks applies the admission rules of eventing and
// eventing-rabbitmq (model.Manifests.CheckWebhooks, the rules the local
// broker loads with too) and this project's rules for its Broker, Triggers
// and RabbitmqCluster: the Broker is a RabbitMQBroker, a backoffDelay comes
// with its backoffPolicy, the cluster persists its queues and sets
// consumer_timeout.
func CheckEventingWebhooks(m *Manifests) *apis.FieldError {
	errs := m.CheckWebhooks()
	for _, o := range m.Objects {
		switch t := o.Typed.(type) {
		case *model.Broker:
			if c := t.Annotations[model.BrokerClassAnnotation]; c != model.RabbitMQBrokerClass {
				errs = errs.Also(o.Via(apis.ErrInvalidValue(c, "metadata.annotations."+model.BrokerClassAnnotation,
					"must be "+model.RabbitMQBrokerClass+": the Triggers, consumer_timeout and RabbitmqBrokerConfig are for eventing-rabbitmq's broker")))
			}
			errs = errs.Also(o.Via(backoffPolicySaid(t.Spec.Delivery)))
		case *model.Trigger:
			errs = errs.Also(o.Via(backoffPolicySaid(t.Spec.Delivery)))
		case *model.RabbitmqCluster:
			errs = errs.Also(o.Via(validateRabbitmqCluster(t)))
		}
	}
	return errs
}

// backoffPolicySaid: eventing accepts a backoffDelay without a policy, but
// what the dispatcher then does differs between implementations (the local
// broker backs off exponentially); knative/ says which it means.
func backoffPolicySaid(d *model.DeliverySpec) *apis.FieldError {
	if d != nil && d.BackoffDelay != nil && d.BackoffPolicy == nil {
		return apis.ErrGeneric("backoffDelay without backoffPolicy: say linear or exponential", "spec.delivery.backoffPolicy")
	}
	return nil
}

func validateRabbitmqCluster(c *model.RabbitmqCluster) *apis.FieldError {
	var errs *apis.FieldError
	if c.Spec.Persistence == nil || c.Spec.Persistence.Storage == nil || c.Spec.Persistence.Storage.IsZero() {
		errs = errs.Also(apis.ErrMissingField("spec.persistence.storage"))
	}
	if _, err := ConsumerTimeout(c); err != nil {
		errs = errs.Also(apis.ErrInvalidValue(rabbitmqConfig(c), "spec.rabbitmq.additionalConfig", err.Error()))
	}
	return errs
}

func rabbitmqConfig(c *model.RabbitmqCluster) string {
	if c.Spec.Rabbitmq == nil {
		return ""
	}
	return c.Spec.Rabbitmq.AdditionalConfig
}

// ConsumerTimeout reads consumer_timeout (milliseconds) from the cluster's
// additionalConfig (rabbitmq.conf syntax).
func ConsumerTimeout(c *model.RabbitmqCluster) (time.Duration, error) {
	for _, line := range strings.Split(rabbitmqConfig(c), "\n") {
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
