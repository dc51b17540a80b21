package model_test

import (
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"mp3converter/internal/local/broker"
	"mp3converter/knative/model"
	"mp3converter/knative/validation"
)

// The delivery below is what knative/ could hold; the local broker and the
// validation must take or refuse it alike. They disagreed once: the broker
// took backoffDelay P1M, the validation refused it. Eventing's webhook takes
// it (model.ParseISODuration says why), so both do now.
const deliveryManifests = `apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: default
  namespace: ns
  annotations: {eventing.knative.dev/broker.class: RabbitMQBroker}
spec:
  config: {apiVersion: eventing.knative.dev/v1alpha1, kind: RabbitmqBrokerConfig, name: cfg}
---
apiVersion: eventing.knative.dev/v1alpha1
kind: RabbitmqBrokerConfig
metadata: {name: cfg, namespace: ns}
spec:
  rabbitmqClusterReference: {name: rabbitmq}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t, namespace: ns}
spec:
  broker: default
  subscriber: {uri: "http://s.example/"}
  delivery: {retry: 1, backoffPolicy: linear, backoffDelay: BACKOFF, timeout: PT10M}
`

func TestBrokerAndValidationReadDeliveryAlike(t *testing.T) {
	for _, c := range []struct {
		backoff string
		valid   bool
	}{
		{"P1M", true}, {"P1Y", true}, {"PT2S", true}, {"P1W", true},
		{"-PT1S", false}, {"PT1.2.3S", false}, {"P1DT", false}, {"P1H", false}, {"2s", false},
	} {
		t.Run(c.backoff, func(t *testing.T) {
			yaml := strings.Replace(deliveryManifests, "BACKOFF", c.backoff, 1)
			_, brokerErr := broker.LoadManifestsFS(fstest.MapFS{"m.yaml": {Data: []byte(yaml)}})

			objs, err := (model.Decoder{}).DecodeFile("m.yaml", []byte(yaml))
			if err != nil {
				t.Fatal(err)
			}
			m := &validation.Manifests{Manifests: model.Manifests{Objects: objs}}
			validationErr := validation.CheckEventingWebhooks(m)

			if (brokerErr == nil) != c.valid || (validationErr == nil) != c.valid {
				t.Fatalf("backoffDelay %s: broker says %v, validation says %v; want valid=%v", c.backoff, brokerErr, validationErr, c.valid)
			}
			if !c.valid {
				return
			}
			d := m.EffectiveDelivery(m.Triggers()[0])
			delay, _ := model.ParseISODuration(c.backoff)
			w, err := validation.RetryWindow(d)
			if want := 2*10*time.Minute + delay; err != nil || w != want {
				t.Errorf("retry window %s (%v), want 2 x 10 min + %s", w, err, delay)
			}
		})
	}
}
