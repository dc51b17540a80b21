package broker

import (
	"mp3converter/knative/model"

	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/pkg/apis"
)

func TestLoadRealManifests(t *testing.T) {
	m, err := LoadManifests("../../../knative")
	if err != nil {
		t.Fatalf("knative/: %v", err)
	}
	br, err := selectBroker(m, "mp3converter/default")
	if err != nil {
		t.Fatal(err)
	}
	if br.Annotations[model.BrokerClassAnnotation] != "RabbitMQBroker" || br.Spec.Delivery == nil {
		t.Errorf("broker: %+v", br)
	}
	if c := m.BrokerConfig("mp3converter", br.Spec.Config.Name); c == nil || c.Spec.QueueType != "quorum" || c.Spec.RabbitmqClusterReference.Name != "rabbitmq" {
		t.Errorf("broker config: %+v", c)
	}
	resolve := ResolveServices(map[string]string{"convert": "http://convert/", "notify": "http://notify/", "sweep": "http://sweep/"})
	want := map[string]trigger{
		"convert": {filter: map[string]string{"type": "dev.mp3converter.video.uploaded"}, subscriber: mustURL(t, "http://convert/"),
			deadLetter: mustURL(t, "http://notify/"), retry: 5, delay: 2 * time.Second, timeout: 10 * time.Minute, parallelism: 2},
		"notify-converted": {filter: map[string]string{"type": "dev.mp3converter.mp3.converted"}, subscriber: mustURL(t, "http://notify/"), parallelism: 1},
		"notify-failed":    {filter: map[string]string{"type": "dev.mp3converter.conversion.failed"}, subscriber: mustURL(t, "http://notify/"), parallelism: 1},
		"sweep-tick": {filter: map[string]string{"type": "dev.knative.sources.ping", "source": "/apis/v1/namespaces/mp3converter/pingsources/sweep"},
			subscriber: mustURL(t, "http://sweep/"), parallelism: 1},
		"sweep-user-deleted": {filter: map[string]string{"type": "dev.mp3converter.user.deleted"}, subscriber: mustURL(t, "http://sweep/"), parallelism: 1},
	}
	var names []string
	for _, tr := range m.Triggers() {
		names = append(names, tr.Name)
		if len(tr.Spec.Filters) > 0 {
			t.Errorf("%s uses spec.filters", tr.Name)
		}
		got, err := compileTrigger(m, tr, resolve)
		if err != nil {
			t.Fatal(err)
		}
		w := want[tr.Name]
		if !equalMaps(got.filter, w.filter) || got.subscriber.String() != w.subscriber.String() || got.parallelism != w.parallelism || got.linear {
			t.Errorf("%s: %+v", tr.Name, got)
		}
		if w.deadLetter != nil && (got.deadLetter == nil || got.deadLetter.String() != w.deadLetter.String() ||
			got.retry != w.retry || got.delay != w.delay || got.timeout != w.timeout) {
			t.Errorf("%s delivery: %+v", tr.Name, got)
		}
		if got.timeout <= 0 || got.timeout > 600*time.Second {
			t.Errorf("%s: timeout %s, want 0 < timeout <= 600 s (the Services' timeoutSeconds)", tr.Name, got.timeout)
		}
		if strings.HasPrefix(tr.Name, "notify") && (got.deadLetter != nil || got.retry < 3) {
			t.Errorf("%s: %+v", tr.Name, got)
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"convert", "notify-converted", "notify-failed", "sweep-tick", "sweep-user-deleted"}) {
		t.Errorf("triggers %v", names)
	}
}

const validBroker = `apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: ns}
spec:
  delivery: {retry: 1, backoffPolicy: linear, backoffDelay: PT1S, timeout: PT5S}
`

const validTrigger = `apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: t
  namespace: ns
  annotations: {rabbitmq.eventing.knative.dev/parallelism: "2"}
spec:
  broker: default
  filter: {attributes: {type: x, myext: ""}}
  subscriber: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: s}}
  delivery:
    retry: 2
    backoffPolicy: exponential
    backoffDelay: PT0.5S
    timeout: PT10M
    deadLetterSink: {uri: "http://dls.example/"}
`

func TestManifestRules(t *testing.T) {
	cases := []struct {
		name    string
		broken  string // replaces the first occurrence of old in validBroker+validTrigger
		old     string
		path    string // a path the FieldError must name
		message string // and a word of its message
	}{
		{"trigger without broker", "  broker: \"\"\n", "  broker: default\n", "triggers[t].spec.broker", "missing"},
		{"unknown broker", "  broker: other\n", "  broker: default\n", "triggers[t].spec.broker", "invalid value"},
		{"brokerRef", "  brokerRef: {name: default}\n", "  broker: default\n", "triggers[t].spec.brokerRef", "must not set"},
		{"no subscriber", "  subscriber: {}\n", "  subscriber: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: s}}\n", "triggers[t].spec.subscriber.ref", "expected at least one"},
		{"relative uri alone", "  subscriber: {uri: /relative}\n", "  subscriber: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: s}}\n", "triggers[t].spec.subscriber.uri", "Relative URI"},
		{"ref without kind", "  subscriber: {ref: {apiVersion: v1, name: s}}\n", "  subscriber: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: s}}\n", "triggers[t].spec.subscriber.ref.kind", "missing"},
		{"ref without kind beside a uri", "  subscriber: {ref: {apiVersion: v1, name: s}, uri: x}\n", "  subscriber: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: s}}\n", "triggers[t].spec.subscriber.ref.kind", "missing"},
		{"uppercase attribute", "{type: x, myExt: a}", "{type: x, myext: \"\"}", "triggers[t].spec.filter.attributes", "invalid key name"},
		{"dash in attribute", "{type: x, my-ext: a}", "{type: x, myext: \"\"}", "triggers[t].spec.filter.attributes", "invalid key name"},
		{"spec.filters", "  filters: [{exact: {type: x}}]\n  broker: default\n", "  broker: default\n", "triggers[t].spec.filters", "must not set"},
		{"backoffDelay not ISO-8601", "backoffDelay: 2s", "backoffDelay: PT0.5S", "triggers[t].spec.delivery.backoffDelay", "invalid value"},
		{"timeout not ISO-8601", "timeout: PT", "timeout: PT10M", "triggers[t].spec.delivery.timeout", "invalid value"},
		{"negative timeout", "timeout: -PT1S", "timeout: PT10M", "triggers[t].spec.delivery.timeout", "invalid value"},
		{"backoffPolicy", "backoffPolicy: random", "backoffPolicy: exponential", "triggers[t].spec.delivery.backoffPolicy", "invalid value"},
		{"negative retry", "retry: -1", "retry: 2", "triggers[t].spec.delivery.retry", "invalid value"},
		{"dead-letter sink without target", "deadLetterSink: {}", "deadLetterSink: {uri: \"http://dls.example/\"}", "triggers[t].spec.delivery.deadLetterSink.ref", "expected at least one"},
		{"parallelism 0", `parallelism: "0"`, `parallelism: "2"`, "triggers[t].metadata.annotations[rabbitmq.eventing.knative.dev/parallelism]", "expected 1 <= 0 <= 1000"},
		{"parallelism 1001", `parallelism: "1001"`, `parallelism: "2"`, "triggers[t].metadata.annotations[rabbitmq.eventing.knative.dev/parallelism]", "1000"},
		{"parallelism not a number", `parallelism: "two"`, `parallelism: "2"`, "triggers[t].metadata.annotations[rabbitmq.eventing.knative.dev/parallelism]", "invalid value"},
		{"unknown field", "  delivry: {}\n  broker: default\n", "  broker: default\n", "triggers[t]", "does not match the schema"},
		{"misspelt delivery field", "retries: 2", "retry: 2", "triggers[t]", "does not match the schema"},
		{"non-string filter value", "{type: x, myext: [1]}", "{type: x, myext: \"\"}", "triggers[t]", "does not match the schema"},
		{"wrong trigger version", "apiVersion: eventing.knative.dev/v1beta1\nkind: Trigger", "apiVersion: eventing.knative.dev/v1\nkind: Trigger", "triggers[t].apiVersion", "invalid value"},
		{"broker backoffDelay", "backoffDelay: PT1X", "backoffDelay: PT1S", "brokers[default].spec.delivery.backoffDelay", "invalid value"},
		{"broker retry", "retry: -2", "retry: 1", "brokers[default].spec.delivery.retry", "invalid value"},
		{"broker config missing", "spec:\n  config: {apiVersion: eventing.knative.dev/v1alpha1, kind: RabbitmqBrokerConfig, name: cfg}\n  delivery", "spec:\n  delivery", "brokers[default].spec.config.name", "invalid value"},
		{"duplicate trigger", "---\n" + validTrigger + "---\napiVersion: eventing.knative.dev/v1\nkind: Trigger", "---\napiVersion: eventing.knative.dev/v1\nkind: Trigger", "triggers[t].metadata.name", "duplicate"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			all := validBroker + "---\n" + validTrigger
			if !strings.Contains(all, tc.old) {
				t.Fatalf("%q not in the valid manifests", tc.old)
			}
			assertFieldError(t, strings.Replace(all, tc.old, tc.broken, 1), tc.path, tc.message)
		})
	}
}

func TestBrokerConfigRules(t *testing.T) {
	cfg := `---
apiVersion: eventing.knative.dev/v1alpha1
kind: RabbitmqBrokerConfig
metadata: {name: cfg, namespace: ns}
spec:
  rabbitmqClusterReference: {name: rabbitmq}
  queueType: quorum
`
	withConfig := strings.Replace(validBroker, "spec:\n", "spec:\n  config: {apiVersion: eventing.knative.dev/v1alpha1, kind: RabbitmqBrokerConfig, name: cfg}\n", 1) + cfg
	writeManifests(t, withConfig) // valid
	assertFieldError(t, strings.Replace(withConfig, "queueType: quorum", "queueType: stream", 1), "rabbitmqbrokerconfigs[cfg].spec.queueType", "invalid value")
	assertFieldError(t, strings.Replace(withConfig, "{name: rabbitmq}", "{}", 1), "rabbitmqbrokerconfigs[cfg].spec.rabbitmqClusterReference.name", "expected exactly one")
	assertFieldError(t, strings.Replace(withConfig, "{name: rabbitmq}", "{name: rabbitmq, connectionSecret: {name: s}}", 1), "rabbitmqbrokerconfigs[cfg].spec.rabbitmqClusterReference.name", "expected exactly one")
}

// TestManifestsValid: the valid manifests load, skip other kinds, and a
// Trigger without delivery gets the Broker's.
func TestManifestsValid(t *testing.T) {
	m := writeManifests(t, validBroker+"---\n"+validTrigger+`---
# not ours
apiVersion: v1
kind: ConfigMap
metadata: {name: cm, namespace: ns}
data: {whatever: "1"}
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: s, namespace: ns}
spec: {template: {spec: {containers: [{image: x}]}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: plain, namespace: ns}
spec:
  broker: default
  subscriber: {uri: "http://plain.example/"}
`)
	if len(m.Brokers()) != 1 || len(m.Triggers()) != 2 {
		t.Fatalf("%d brokers, %d triggers", len(m.Brokers()), len(m.Triggers()))
	}
	plain, err := compileTrigger(m, m.Triggers()[1], nil)
	if err != nil {
		t.Fatal(err)
	}
	if plain.retry != 1 || !plain.linear || plain.delay != time.Second || plain.timeout != 5*time.Second || plain.filter != nil {
		t.Errorf("trigger without delivery: %+v, want the broker's", plain)
	}
	if _, err := compileTrigger(m, m.Triggers()[0], nil); err == nil {
		t.Error("a ref resolved without a resolver")
	}
}

// TestMonthLongBackoff: a backoffDelay in months is valid, as in eventing,
// and lasts 30.436875 days (knative/model/users_test.go holds the broker
// and the validation to the same reading).
func TestMonthLongBackoff(t *testing.T) {
	m := writeManifests(t, strings.Replace(validBroker, "backoffDelay: PT1S", "backoffDelay: P1M", 1))
	b := m.Brokers()[0]
	tr := &model.Trigger{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: b.Namespace}}
	tr.Spec.Broker = b.Name
	got, err := compileTrigger(m, tr, nil)
	if want := 30*24*time.Hour + 10*time.Hour + 29*time.Minute + 6*time.Second; err != nil || got.delay != want {
		t.Errorf("backoff %s (%v), want %s", got.delay, err, want)
	}
}

func TestLoadManifestsFS(t *testing.T) {
	fsys := fstest.MapFS{
		"broker.yaml":    {Data: []byte(validBroker)},
		"triggers.yml":   {Data: []byte(validTrigger)},
		"README.md":      {Data: []byte("not a manifest")},
		"sub/other.yaml": {Data: []byte("not: [read")},
	}
	m, err := LoadManifestsFS(fsys)
	if err != nil || len(m.Brokers()) != 1 || len(m.Triggers()) != 1 {
		t.Fatalf("%v %+v", err, m)
	}
}

func TestLoadManifestsErrors(t *testing.T) {
	if _, err := LoadManifests(t.TempDir()); err == nil {
		t.Error("an empty directory loaded")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("a: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadManifests(dir); err == nil || !strings.Contains(err.Error(), "bad.yaml") {
		t.Errorf("broken YAML: %v", err)
	}
}

// assertFieldError loads yaml and expects a FieldError naming path with message.
func assertFieldError(t *testing.T, yaml, path, message string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "m.yml"), []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadManifests(dir)
	var fe *apis.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("want a *apis.FieldError, got %v", err)
	}
	for _, e := range fe.WrappedErrors() {
		if slices.Contains(e.Paths, path) && strings.Contains(e.Message, message) {
			return
		}
	}
	t.Errorf("no error at %s with %q in:\n%v", path, message, err)
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
