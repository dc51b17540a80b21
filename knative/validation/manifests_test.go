package validation

import (
	"mp3converter/knative/model"

	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	duckv1 "knative.dev/pkg/apis/duck/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

// The tests read the repository around this module: ../ is knative/.
var repo = RepoFrom("../..")

// load reads the real knative/ afresh: the tests mutate what it returns.
func load(t *testing.T) *Manifests {
	t.Helper()
	m, err := Load(repo.Knative)
	if err != nil {
		t.Fatalf("loading knative/: %v", err)
	}
	return m
}

func rule(t *testing.T, name string) Rule {
	t.Helper()
	for _, r := range Rules {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("no rule %q", name)
	return Rule{}
}

// TestManifestsPassEveryRule is the one that matters: knative/ as committed
// passes every rule. The other tests prove each rule can fail.
func TestManifestsPassEveryRule(t *testing.T) {
	m := load(t)
	for _, r := range Rules {
		t.Run(r.Name, func(t *testing.T) {
			if errs := r.Check(m, repo); errs != nil {
				t.Errorf("%s:\n%v", r.Name, errs)
			}
		})
	}
}

func TestLoadFindsEveryManifest(t *testing.T) {
	m := load(t)
	count := map[string]int{}
	for _, o := range m.Objects {
		count[o.APIVersion+"/"+o.Kind]++
	}
	want := map[string]int{
		"serving.knative.dev/v1/Service":                     8,
		"eventing.knative.dev/v1/Broker":                     1,
		"eventing.knative.dev/v1/Trigger":                    3,
		"sources.knative.dev/v1/SinkBinding":                 3,
		"sources.knative.dev/v1/PingSource":                  1,
		"eventing.knative.dev/v1alpha1/RabbitmqBrokerConfig": 1,
		"rabbitmq.com/v1beta1/RabbitmqCluster":               1,
		"apps/v1/StatefulSet":                                2,
		"networking.k8s.io/v1/NetworkPolicy":                 4,
		"v1/Service":                                         2,
		"v1/ConfigMap":                                       2,
		"v1/Namespace":                                       1,
	}
	for k, n := range want {
		if k == "eventing.knative.dev/v1/Trigger" && count[k] >= n {
			continue // more Triggers may come; at least one per event type
		}
		if count[k] != n {
			t.Errorf("%s: %d objects, want %d", k, count[k], n)
		}
	}
	if len(m.KustomizeConfigs) != 0 {
		t.Errorf("transformer configurations: %d, want none (no Knative Service in the kustomization needs one)", len(m.KustomizeConfigs))
	}
}

// brokenCase mutates a freshly loaded knative/ in memory and expects the
// named rule to reject it with a message matching want.
type brokenCase struct {
	name   string
	mutate func(t *testing.T, m *Manifests)
	want   string // regular expression
}

func runBroken(t *testing.T, ruleName string, cases []brokenCase) {
	t.Helper()
	r := rule(t, ruleName)
	clean := r.Check(load(t), repo)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := load(t)
			c.mutate(t, m)
			errs := r.Check(m, repo)
			if errs == nil {
				t.Fatalf("rule %s accepted the broken manifests", ruleName)
			}
			got := errs.Error()
			if !regexp.MustCompile("(?s)" + c.want).MatchString(got) {
				t.Fatalf("rule %s rejected them, but without %q:\n%s", ruleName, c.want, got)
			}
			if clean != nil && got == clean.Error() {
				t.Fatalf("rule %s reports only what it reports for the real manifests", ruleName)
			}
		})
	}
}

// obj returns the object of a kind and name, failing the test if absent.
func obj(t *testing.T, m *Manifests, kind, name string) *model.Object {
	t.Helper()
	for _, o := range m.Objects {
		if o.Kind == kind && o.Name == name {
			return o
		}
	}
	t.Fatalf("no %s %s in knative/", kind, name)
	return nil
}

func ksvc(t *testing.T, m *Manifests, name string) *servingv1.Service {
	t.Helper()
	s := m.ServiceByName(name)
	if s == nil {
		t.Fatalf("no Knative Service %s", name)
	}
	return s
}

func trigger(t *testing.T, m *Manifests, name string) *model.Trigger {
	t.Helper()
	return obj(t, m, "Trigger", name).Typed.(*model.Trigger)
}

func pingSource(t *testing.T, m *Manifests, name string) *model.PingSource {
	t.Helper()
	return obj(t, m, "PingSource", name).Typed.(*model.PingSource)
}

func container(t *testing.T, m *Manifests, name string) *corev1.Container {
	t.Helper()
	return &ksvc(t, m, name).Spec.Template.Spec.Containers[0]
}

func env(t *testing.T, c *corev1.Container, name string) *corev1.EnvVar {
	t.Helper()
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	t.Fatalf("container has no env %s", name)
	return nil
}

func removeEnv(c *corev1.Container, name string) {
	c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == name })
}

func configMap(t *testing.T, m *Manifests) *corev1.ConfigMap {
	t.Helper()
	return obj(t, m, "ConfigMap", "mp3converter-config").Typed.(*corev1.ConfigMap)
}

func removeObject(m *Manifests, kind, name string) {
	m.Objects = slices.DeleteFunc(m.Objects, func(o *model.Object) bool { return o.Kind == kind && o.Name == name })
}

func sp(s string) *string { return &s }

// setPath sets (or with value == deleteValue, deletes) a field of an
// object's JSON form: "spec.template.spec.containers[0].env[0].name".
func setPath(t *testing.T, o *model.Object, path string, value any) {
	t.Helper()
	var cur any = o.Map
	parts := strings.Split(path, ".")
	for i, p := range parts {
		name, idx := p, -1
		if j := strings.Index(p, "["); j >= 0 {
			name = p[:j]
			n, err := strconv.Atoi(strings.TrimSuffix(p[j+1:], "]"))
			if err != nil {
				t.Fatalf("bad path %s", path)
			}
			idx = n
		}
		obj, ok := cur.(map[string]any)
		if !ok {
			t.Fatalf("%s: %s is not an object", path, name)
		}
		last := i == len(parts)-1
		if last && idx < 0 {
			if value == deleteValue {
				delete(obj, name)
			} else {
				obj[name] = value
			}
			return
		}
		next, ok := obj[name]
		if !ok {
			if last {
				t.Fatalf("%s: no %s", path, name)
			}
			next = map[string]any{}
			obj[name] = next
		}
		if idx >= 0 {
			arr, ok := next.([]any)
			if !ok || idx >= len(arr) {
				t.Fatalf("%s: %s[%d] does not exist", path, name, idx)
			}
			if last {
				if value == deleteValue {
					obj[name] = slices.Delete(arr, idx, idx+1)
				} else {
					arr[idx] = value
				}
				return
			}
			next = arr[idx]
		}
		cur = next
	}
}

type deleteMarker struct{}

var deleteValue any = deleteMarker{}

func num(n int64) json.Number { return json.Number(strconv.FormatInt(n, 10)) }

func TestSchemaRuleRejects(t *testing.T) {
	runBroken(t, "crd-schemas", []brokenCase{
		{"pingsource schedule not a string", func(t *testing.T, m *Manifests) {
			setPath(t, obj(t, m, "PingSource", "sweep"), "spec.schedule", 60)
		}, `pingsources\[sweep\]\.spec\.schedule`},
		{"pingsource field misspelt", func(t *testing.T, m *Manifests) {
			setPath(t, obj(t, m, "PingSource", "sweep"), "spec.scedule", "* * * * *")
		}, `must not set the field\(s\): .*spec\.scedule`},
		{"rabbitmq service type outside the enum", func(t *testing.T, m *Manifests) {
			setPath(t, obj(t, m, "RabbitmqCluster", "rabbitmq"), "spec.service", map[string]any{"type": "Internal"})
		}, `spec\.service\.type\s+must be one of ClusterIP, LoadBalancer, NodePort`},
		{"broker config queueType outside the enum", func(t *testing.T, m *Manifests) {
			setPath(t, obj(t, m, "RabbitmqBrokerConfig", "default-broker-config"), "spec.queueType", "mirrored")
		}, `must be one of quorum, classic`},
		{"rabbitmq cluster field misspelt", func(t *testing.T, m *Manifests) {
			setPath(t, obj(t, m, "RabbitmqCluster", "rabbitmq"), "spec.persistance", map[string]any{"storage": "10Gi"})
		}, `must not set the field\(s\): .*spec\.persistance`},
		{"rabbitmq replicas below the minimum", func(t *testing.T, m *Manifests) {
			setPath(t, obj(t, m, "RabbitmqCluster", "rabbitmq"), "spec.replicas", num(-1))
		}, `spec\.replicas\s+must be >= 0`},
		{"rabbitmq additionalConfig over maxLength", func(t *testing.T, m *Manifests) {
			setPath(t, obj(t, m, "RabbitmqCluster", "rabbitmq"), "spec.rabbitmq.additionalConfig", strings.Repeat("x", 2001))
		}, `longer than 2000 characters`},
		{"rabbitmq storage not a quantity", func(t *testing.T, m *Manifests) {
			setPath(t, obj(t, m, "RabbitmqCluster", "rabbitmq"), "spec.persistence.storage", "ten gigs")
		}, `does not match`},
		{"sinkbinding subject field unknown", func(t *testing.T, m *Manifests) {
			setPath(t, obj(t, m, "SinkBinding", "upload-broker"), "spec.subject.service", "upload")
		}, `must not set the field\(s\): .*spec\.subject\.service`},
		{"knative service containerConcurrency a string", func(t *testing.T, m *Manifests) {
			setPath(t, obj(t, m, "Service", "convert"), "spec.template.spec.containerConcurrency", "one")
		}, `must be of type integer`},
		{"knative service without containers (required)", func(t *testing.T, m *Manifests) {
			setPath(t, obj(t, m, "Service", "login"), "spec.template.spec.containers", deleteValue)
		}, `missing field\(s\): .*spec\.template\.spec\.containers`},
		{"knative service env without a name (required)", func(t *testing.T, m *Manifests) {
			setPath(t, obj(t, m, "Service", "login"), "spec.template.spec.containers[0].env[0].name", deleteValue)
		}, `missing field\(s\): .*env\[0\]\.name`},
		{"trigger broker a number", func(t *testing.T, m *Manifests) {
			setPath(t, obj(t, m, "Trigger", "convert"), "spec.broker", num(5))
		}, `spec\.broker\s+must be of type string`},
		{"broker retry beyond int32", func(t *testing.T, m *Manifests) {
			setPath(t, obj(t, m, "Broker", "default"), "spec.delivery.retry", num(1<<40))
		}, `spec\.delivery\.retry`},
	})
}

func TestServingWebhookRuleRejects(t *testing.T) {
	runBroken(t, "knative-serving-webhook", []brokenCase{
		{"timeoutSeconds above max-revision-timeout-seconds", func(t *testing.T, m *Manifests) {
			ksvc(t, m, "convert").Spec.Template.Spec.TimeoutSeconds = ptrInt64(601)
		}, `expected 0 <= 601 <= 600: ksvc\[convert\]\.spec\.template\.spec\.timeoutSeconds`},
		{"containerConcurrency above the limit", func(t *testing.T, m *Manifests) {
			ksvc(t, m, "convert").Spec.Template.Spec.ContainerConcurrency = ptrInt64(1001)
		}, `expected 0 <= 1001 <= 1000: ksvc\[convert\]\.spec\.template\.spec\.containerConcurrency`},
		{"max-scale below min-scale", func(t *testing.T, m *Manifests) {
			a := ksvc(t, m, "login").Spec.Template.Annotations
			a["autoscaling.knative.dev/min-scale"] = "5"
			a["autoscaling.knative.dev/max-scale"] = "2"
		}, `max-scale=2 is less than min-scale=5`},
		{"reserved container port", func(t *testing.T, m *Manifests) {
			container(t, m, "login").Ports = []corev1.ContainerPort{{ContainerPort: 8012}}
		}, `8012 is a reserved port`},
		{"volume mount without a volume", func(t *testing.T, m *Manifests) {
			ksvc(t, m, "convert").Spec.Template.Spec.Volumes = nil
		}, `volumeMount has no matching volume`},
		{"privileged container", func(t *testing.T, m *Manifests) {
			container(t, m, "upload").SecurityContext.Privileged = func() *bool { b := true; return &b }()
		}, `must not set the field\(s\): ksvc\[upload\].*securityContext\.privileged`},
		{"probe port named after no port", func(t *testing.T, m *Manifests) {
			container(t, m, "upload").ReadinessProbe.HTTPGet.Port.Type = 1
			container(t, m, "upload").ReadinessProbe.HTTPGet.Port.StrVal = "admin"
		}, `Probe port must match container port`},
		{"service name too long for a DNS label", func(t *testing.T, m *Manifests) {
			ksvc(t, m, "notify").Name = strings.Repeat("n", 64)
		}, `not a DNS 1035 label.*ksvc\[notify\]\.metadata\.name`},
	})
}

func TestServicePolicyRuleRejects(t *testing.T) {
	runBroken(t, "service-policy", []brokenCase{
		{"min-scale not zero", func(t *testing.T, m *Manifests) {
			ksvc(t, m, "login").Spec.Template.Annotations["autoscaling.knative.dev/min-scale"] = "1"
		}, `scales to zero`},
		{"no max-scale", func(t *testing.T, m *Manifests) {
			delete(ksvc(t, m, "upload").Spec.Template.Annotations, "autoscaling.knative.dev/max-scale")
		}, `missing field\(s\): ksvc\[upload\].*max-scale`},
		{"unbounded max-scale", func(t *testing.T, m *Manifests) {
			ksvc(t, m, "upload").Spec.Template.Annotations["autoscaling.knative.dev/max-scale"] = "0"
		}, `must be 1\.\.100`},
		{"convert handles two at once", func(t *testing.T, m *Manifests) {
			ksvc(t, m, "convert").Spec.Template.Spec.ContainerConcurrency = ptrInt64(2)
		}, `ksvc\[convert\]\.spec\.template\.spec\.containerConcurrency`},
		{"convert times out at 5 minutes", func(t *testing.T, m *Manifests) {
			ksvc(t, m, "convert").Spec.Template.Spec.TimeoutSeconds = ptrInt64(300)
		}, `ksvc\[convert\]\.spec\.template\.spec\.timeoutSeconds\s+must be 600`},
		// func deploy sets no timeouts: knative/cluster/config-defaults.yaml does.
		{"config-defaults with a short response-start timeout", func(t *testing.T, m *Manifests) {
			m.ServingDefaults["revision-response-start-timeout-seconds"] = "300"
		}, `300 after defaulting, shorter than timeoutSeconds 600`},
		{"config-defaults with Knative's 300 s timeout", func(t *testing.T, m *Manifests) {
			delete(m.ServingDefaults, "revision-timeout-seconds")
			delete(m.ServingDefaults, "revision-response-start-timeout-seconds")
		}, `invalid value: 300: ksvc\[convert\]\.spec\.template\.spec\.timeoutSeconds.*\s+must be 600 after defaulting`},
		{"readiness on another path", func(t *testing.T, m *Manifests) {
			container(t, m, "login").ReadinessProbe.HTTPGet.Path = "/healthz"
		}, `must be /health/readiness`},
		{"liveness on another port", func(t *testing.T, m *Manifests) {
			container(t, m, "login").LivenessProbe.HTTPGet.Port.IntVal = 9090
		}, `must be the container port 8080`},
		{"no liveness probe", func(t *testing.T, m *Manifests) {
			container(t, m, "validate").LivenessProbe = nil
		}, `livenessProbe`},
		{"runs as root", func(t *testing.T, m *Manifests) {
			f := false
			container(t, m, "notify").SecurityContext.RunAsNonRoot = &f
		}, `runAsNonRoot`},
		{"privilege escalation allowed", func(t *testing.T, m *Manifests) {
			container(t, m, "notify").SecurityContext.AllowPrivilegeEscalation = nil
		}, `allowPrivilegeEscalation`},
		{"a capability added", func(t *testing.T, m *Manifests) {
			container(t, m, "notify").SecurityContext.Capabilities.Add = []corev1.Capability{"NET_ADMIN"}
		}, `must drop ALL capabilities and add none`},
		{"seccomp unconfined", func(t *testing.T, m *Manifests) {
			container(t, m, "notify").SecurityContext.SeccompProfile.Type = corev1.SeccompProfileTypeUnconfined
		}, `RuntimeDefault`},
		{"func-go left listening on loopback", func(t *testing.T, m *Manifests) {
			removeEnv(container(t, m, "download"), "ADDRESS")
		}, `must be 0\.0\.0\.0`},
		{"no cpu request", func(t *testing.T, m *Manifests) {
			delete(container(t, m, "download").Resources.Requests, corev1.ResourceCPU)
		}, `resources\.requests\.cpu`},
		{"no memory limit", func(t *testing.T, m *Manifests) {
			container(t, m, "download").Resources.Limits = nil
		}, `resources\.limits\.memory`},
		{"GOMEMLIMIT above the memory limit", func(t *testing.T, m *Manifests) {
			env(t, container(t, m, "upload"), "GOMEMLIMIT").Value = "600MiB"
		}, `env\.GOMEMLIMIT\s+must be below resources\.limits\.memory \(512Mi\)`},
		{"GOMEMLIMIT not a size", func(t *testing.T, m *Manifests) {
			env(t, container(t, m, "upload"), "GOMEMLIMIT").Value = "400M"
		}, `not a size like 400MiB`},
		{"scale annotations on the Service instead of its template", func(t *testing.T, m *Manifests) {
			ksvc(t, m, "login").Annotations = map[string]string{"autoscaling.knative.dev/max-scale": "3"}
		}, `belong on spec\.template\.metadata`},
	})
}

func TestEventingWebhookRuleRejects(t *testing.T) {
	runBroken(t, "eventing-webhooks", []brokenCase{
		{"pingsource schedule that is not cron", func(t *testing.T, m *Manifests) {
			pingSource(t, m, "sweep").Spec.Schedule = "every minute"
		}, `pingsources\[sweep\]\.spec\.schedule`},
		{"pingsource in a timezone that does not exist", func(t *testing.T, m *Manifests) {
			pingSource(t, m, "sweep").Spec.Timezone = "Mars/Olympus"
		}, `pingsources\[sweep\]\.spec\.timezone`},
		{"pingsource data and dataBase64", func(t *testing.T, m *Manifests) {
			pingSource(t, m, "sweep").Spec.DataBase64 = "e30="
		}, `expected exactly one, got both: pingsources\[sweep\]\.spec\.data, pingsources\[sweep\]\.spec\.dataBase64`},
		{"pingsource data not JSON as its content type says", func(t *testing.T, m *Manifests) {
			pingSource(t, m, "sweep").Spec.Data = "{"
		}, `not JSON`},
		{"pingsource without sink", func(t *testing.T, m *Manifests) {
			pingSource(t, m, "sweep").Spec.Sink = duckv1.Destination{}
		}, `pingsources\[sweep\]\.spec\.sink`},
		{"broker of another class", func(t *testing.T, m *Manifests) {
			obj(t, m, "Broker", "default").Typed.(*model.Broker).Annotations[model.BrokerClassAnnotation] = "MTChannelBasedBroker"
		}, `must be RabbitMQBroker`},
		{"broker config a ConfigMap", func(t *testing.T, m *Manifests) {
			c := obj(t, m, "Broker", "default").Typed.(*model.Broker).Spec.Config
			c.APIVersion, c.Kind = "v1", "ConfigMap"
		}, `must be a eventing\.knative\.dev/v1alpha1 RabbitmqBrokerConfig`},
		{"broker without config", func(t *testing.T, m *Manifests) {
			obj(t, m, "Broker", "default").Typed.(*model.Broker).Spec.Config = nil
		}, `missing field\(s\): brokers\[default\]\.spec\.config`},
		{"filter attribute in upper case", func(t *testing.T, m *Manifests) {
			tr := trigger(t, m, "convert")
			tr.Spec.Filter.Attributes["Type"] = tr.Spec.Filter.Attributes["type"]
			delete(tr.Spec.Filter.Attributes, "type")
		}, `invalid key name "Type"`},
		{"filter attribute with a dash", func(t *testing.T, m *Manifests) {
			trigger(t, m, "convert").Spec.Filter.Attributes["video-id"] = "x"
		}, `invalid key name "video-id"`},
		{"the new filters dialect", func(t *testing.T, m *Manifests) {
			trigger(t, m, "notify-converted").Spec.Filters = []model.SubscriptionsAPIFilter{{Prefix: map[string]string{"type": "dev.mp3converter."}}}
		}, `RabbitMQ broker ignores spec\.filters`},
		{"parallelism zero", func(t *testing.T, m *Manifests) {
			trigger(t, m, "convert").Annotations[model.ParallelismAnnotation] = "0"
		}, `from 1 to 1000`},
		{"parallelism too high", func(t *testing.T, m *Manifests) {
			trigger(t, m, "convert").Annotations[model.ParallelismAnnotation] = "1001"
		}, `from 1 to 1000`},
		{"timeout not ISO-8601", func(t *testing.T, m *Manifests) {
			trigger(t, m, "convert").Spec.Delivery.Timeout = sp("10m")
		}, `spec\.delivery\.timeout\s+"10m" is not an ISO-8601 duration`},
		{"backoff delay with hours before T", func(t *testing.T, m *Manifests) {
			trigger(t, m, "convert").Spec.Delivery.BackoffDelay = sp("P1H")
		}, `spec\.delivery\.backoffDelay`},
		{"backoff delay without a policy", func(t *testing.T, m *Manifests) {
			trigger(t, m, "convert").Spec.Delivery.BackoffPolicy = nil
		}, `backoffDelay without backoffPolicy: say linear or exponential: triggers\[convert\]\.spec\.delivery\.backoffPolicy`},
		{"backoff policy unknown", func(t *testing.T, m *Manifests) {
			trigger(t, m, "convert").Spec.Delivery.BackoffPolicy = sp("fibonacci")
		}, `must be linear or exponential`},
		{"negative retry", func(t *testing.T, m *Manifests) {
			r := int32(-1)
			trigger(t, m, "convert").Spec.Delivery.Retry = &r
		}, `must not be negative`},
		{"subscriber with neither ref nor uri", func(t *testing.T, m *Manifests) {
			trigger(t, m, "notify-failed").Spec.Subscriber = duckv1.Destination{}
		}, `expected at least one, got none.*spec\.subscriber`},
		{"subscriber ref without kind", func(t *testing.T, m *Manifests) {
			trigger(t, m, "notify-failed").Spec.Subscriber.Ref.Kind = ""
		}, `missing field\(s\).*spec\.subscriber\.ref\.kind`},
		{"dead-letter sink in another namespace", func(t *testing.T, m *Manifests) {
			trigger(t, m, "convert").Spec.Delivery.DeadLetterSink.Ref.Namespace = "elsewhere"
		}, `deadLetterSink\.ref\.namespace`},
		{"trigger without broker", func(t *testing.T, m *Manifests) {
			trigger(t, m, "convert").Spec.Broker = ""
		}, `missing field\(s\): triggers\[convert\]\.spec\.broker`},
		{"sinkbinding subject by name and selector", func(t *testing.T, m *Manifests) {
			obj(t, m, "SinkBinding", "upload-broker").Typed.(*model.SinkBinding).Spec.Subject.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"a": "b"}}
		}, `expected exactly one, got both`},
		{"sinkbinding without sink", func(t *testing.T, m *Manifests) {
			obj(t, m, "SinkBinding", "upload-broker").Typed.(*model.SinkBinding).Spec.Sink = duckv1.Destination{}
		}, `spec\.sink`},
		{"broker config without cluster reference", func(t *testing.T, m *Manifests) {
			obj(t, m, "RabbitmqBrokerConfig", "default-broker-config").Typed.(*model.RabbitmqBrokerConfig).Spec.RabbitmqClusterReference = nil
		}, `rabbitmqClusterReference`},
		{"rabbitmq without consumer_timeout", func(t *testing.T, m *Manifests) {
			obj(t, m, "RabbitmqCluster", "rabbitmq").Typed.(*model.RabbitmqCluster).Spec.Rabbitmq.AdditionalConfig = "log.console.level = info\n"
		}, `consumer_timeout is not set`},
		{"rabbitmq without persistence", func(t *testing.T, m *Manifests) {
			obj(t, m, "RabbitmqCluster", "rabbitmq").Typed.(*model.RabbitmqCluster).Spec.Persistence = nil
		}, `spec\.persistence\.storage`},
	})
}

func TestReferencesRuleRejects(t *testing.T) {
	runBroken(t, "references", []brokenCase{
		{"trigger on a broker that does not exist", func(t *testing.T, m *Manifests) {
			trigger(t, m, "convert").Spec.Broker = "rabbit"
		}, `no eventing\.knative\.dev/v1 Broker named "rabbit"`},
		{"subscriber that does not exist", func(t *testing.T, m *Manifests) {
			trigger(t, m, "convert").Spec.Subscriber.Ref.Name = "converter"
		}, `no serving\.knative\.dev/v1 Service named "converter"`},
		{"dead-letter sink that does not exist", func(t *testing.T, m *Manifests) {
			trigger(t, m, "convert").Spec.Delivery.DeadLetterSink.Ref.Name = "notifier"
		}, `deadLetterSink\.ref\s+no serving\.knative\.dev/v1 Service named "notifier"`},
		{"subscriber of another API version", func(t *testing.T, m *Manifests) {
			trigger(t, m, "notify-failed").Spec.Subscriber.Ref.APIVersion = "v1"
		}, `no v1 Service named "notify"`},
		{"an event type nobody receives", func(t *testing.T, m *Manifests) {
			removeObject(m, "Trigger", "notify-failed")
		}, `no Trigger delivers event type dev\.mp3converter\.conversion\.failed`},
		{"a filter on a misspelt type", func(t *testing.T, m *Manifests) {
			trigger(t, m, "convert").Spec.Filter.Attributes["type"] = "dev.mp3converter.video.upload"
		}, `not an event type of events/`},
		{"a trigger that takes every event", func(t *testing.T, m *Manifests) {
			trigger(t, m, "notify-converted").Spec.Filter = nil
		}, `delivers every event`},
		{"pingsource sink that does not exist", func(t *testing.T, m *Manifests) {
			pingSource(t, m, "sweep").Spec.Sink.Ref.Name = "other"
		}, `pingsources\[sweep\]\.spec\.sink\.ref\s+no eventing\.knative\.dev/v1 Broker named "other"`},
		{"tick trigger on the source of no pingsource", func(t *testing.T, m *Manifests) {
			trigger(t, m, "sweep-tick").Spec.Filter.Attributes["source"] = "/apis/v1/namespaces/mp3converter/pingsources/sweeper"
		}, `filters on the source of a PingSource of knative/`},
		{"tick trigger whose pingsource sends elsewhere", func(t *testing.T, m *Manifests) {
			pingSource(t, m, "sweep").Spec.Sink.Ref = &duckv1.KReference{APIVersion: "serving.knative.dev/v1", Kind: "Service", Name: "sweep"}
		}, `PingSource sweep does not send to Broker default: this Trigger never fires`},
		{"user.deleted without a trigger", func(t *testing.T, m *Manifests) {
			removeObject(m, "Trigger", "sweep-user-deleted")
		}, `no Trigger delivers event type dev\.mp3converter\.user\.deleted`},
		{"sinkbinding of login that names no service", func(t *testing.T, m *Manifests) {
			obj(t, m, "SinkBinding", "login-broker").Typed.(*model.SinkBinding).Spec.Subject.Name = "logon"
		}, `spec\.subject\s+no serving\.knative\.dev/v1 Service named "logon"`},
		{"sinkbinding subject that does not exist", func(t *testing.T, m *Manifests) {
			obj(t, m, "SinkBinding", "upload-broker").Typed.(*model.SinkBinding).Spec.Subject.Name = "uploader"
		}, `spec\.subject\s+no serving\.knative\.dev/v1 Service named "uploader"`},
		{"sinkbinding sink that does not exist", func(t *testing.T, m *Manifests) {
			obj(t, m, "SinkBinding", "upload-broker").Typed.(*model.SinkBinding).Spec.Sink.Ref.Name = "other"
		}, `Broker named "other"`},
		{"broker config that does not exist", func(t *testing.T, m *Manifests) {
			obj(t, m, "Broker", "default").Typed.(*model.Broker).Spec.Config.Name = "rabbit-config"
		}, `RabbitmqBrokerConfig named "rabbit-config"`},
		{"rabbitmq cluster that does not exist", func(t *testing.T, m *Manifests) {
			obj(t, m, "RabbitmqBrokerConfig", "default-broker-config").Typed.(*model.RabbitmqBrokerConfig).Spec.RabbitmqClusterReference.Name = "rmq"
		}, `RabbitmqCluster named "rmq"`},
		{"secret key that no example has", func(t *testing.T, m *Manifests) {
			env(t, container(t, m, "login"), "MYSQL_DSN").ValueFrom.SecretKeyRef.Key = "DSN"
		}, `Secret mp3converter-mysql has no such key`},
		{"secret nobody generates", func(t *testing.T, m *Manifests) {
			env(t, container(t, m, "notify"), "SMTP_URL").ValueFrom.SecretKeyRef.Name = "smtp"
		}, `no secretGenerator named smtp`},
		{"statefulset secret key that no example has", func(t *testing.T, m *Manifests) {
			s := obj(t, m, "StatefulSet", "mongodb").Typed.(*appsv1.StatefulSet)
			s.Spec.Template.Spec.Containers[0].Env[0].ValueFrom.SecretKeyRef.Key = "USER"
		}, `statefulsets\[mongodb\]\..*secretKeyRef\.key\s+Secret mp3converter-mongodb has no such key`},
		{"configmap key that does not exist", func(t *testing.T, m *Manifests) {
			env(t, container(t, m, "convert"), "MP3_QUALITY").ValueFrom.ConfigMapKeyRef.Key = "QUALITY"
		}, `ConfigMap mp3converter-config has no such key`},
		{"configmap key nobody reads", func(t *testing.T, m *Manifests) {
			configMap(t, m).Data["UNUSED"] = "1"
		}, `no container reads this key.*data\.UNUSED`},
		{"validate reached through the ingress", func(t *testing.T, m *Manifests) {
			configMap(t, m).Data["VALIDATE_URL"] = "http://validate.mp3converter.example.com/validate"
		}, `must be http://validate\.mp3converter\.svc\.cluster\.local/validate`},
		{"validate exposed outside the cluster", func(t *testing.T, m *Manifests) {
			delete(ksvc(t, m, "validate").Labels, "networking.knative.dev/visibility")
		}, `validate must be cluster-local`},
		{"statefulset without its headless service", func(t *testing.T, m *Manifests) {
			obj(t, m, "StatefulSet", "mysql").Typed.(*appsv1.StatefulSet).Spec.ServiceName = "db"
		}, `no v1 Service named "db"`},
		{"service not headless", func(t *testing.T, m *Manifests) {
			obj(t, m, "Service", "mongodb").Typed.(*corev1.Service).Spec.ClusterIP = ""
		}, `must be headless`},
		{"service selecting other pods", func(t *testing.T, m *Manifests) {
			obj(t, m, "Service", "mysql").Typed.(*corev1.Service).Spec.Selector = map[string]string{"app": "mariadb"}
		}, `selector does not match the pod labels`},
		{"database image not pinned", func(t *testing.T, m *Manifests) {
			obj(t, m, "StatefulSet", "mysql").Typed.(*appsv1.StatefulSet).Spec.Template.Spec.Containers[0].Image = "mysql:latest"
		}, `pin a version tag`},
		{"database without a volume claim", func(t *testing.T, m *Manifests) {
			obj(t, m, "StatefulSet", "mongodb").Typed.(*appsv1.StatefulSet).Spec.VolumeClaimTemplates = nil
		}, `volumeClaimTemplates`},
		{"object in another namespace", func(t *testing.T, m *Manifests) {
			obj(t, m, "Trigger", "convert").Namespace = "default"
		}, `triggers\[convert\]\.metadata\.namespace\s+must be mp3converter`},
	})
}

func TestTimeoutsRuleRejects(t *testing.T) {
	runBroken(t, "timeouts", []brokenCase{
		{"delivery timeout longer than the subscriber's timeoutSeconds", func(t *testing.T, m *Manifests) {
			trigger(t, m, "convert").Spec.Delivery.Timeout = sp("PT15M")
		}, `longer than the subscriber convert's timeoutSeconds \(10m0s\)`},
		{"subscriber cut off before the delivery timeout", func(t *testing.T, m *Manifests) {
			ksvc(t, m, "notify").Spec.Template.Spec.TimeoutSeconds = ptrInt64(20)
		}, `PT30S: .*triggers\[notify-converted\]\.spec\.delivery\.timeout.*\s+longer than the subscriber notify's timeoutSeconds \(20s\)`},
		{"response must start before the delivery timeout", func(t *testing.T, m *Manifests) {
			ksvc(t, m, "convert").Spec.Template.Spec.ResponseStartTimeoutSeconds = ptrInt64(120)
		}, `responseStartTimeoutSeconds \(2m0s\)`},
		{"backoff delay in months", func(t *testing.T, m *Manifests) {
			// Eventing's webhook accepts P1M (so does eventing-webhooks now);
			// the retry window it makes outlasts consumer_timeout.
			trigger(t, m, "convert").Spec.Delivery.BackoffDelay = sp("P1M")
		}, `must exceed the longest a message stays unacknowledged, \d+h.* for Trigger convert`},
		{"consumer_timeout shorter than the retry window", func(t *testing.T, m *Manifests) {
			obj(t, m, "RabbitmqCluster", "rabbitmq").Typed.(*model.RabbitmqCluster).Spec.Rabbitmq.AdditionalConfig = "consumer_timeout = 3600000\n"
		}, `must exceed the longest a message stays unacknowledged, 51h43m20s for Trigger convert \(186200000 ms: the dispatcher's 100 prefetched messages in turns of its parallelism, each up to the retry window 1h2m4s\)`},
		{"convert's own timeout as long as the delivery timeout", func(t *testing.T, m *Manifests) {
			configMap(t, m).Data["CONVERT_TIMEOUT"] = "10m"
		}, `ksvc\[convert\]\.env\.CONVERT_TIMEOUT\s+must end at least 30s before the Trigger convert's delivery\.timeout PT10M`},
		{"upload's own timeout outlasting its request", func(t *testing.T, m *Manifests) {
			configMap(t, m).Data["UPLOAD_TIMEOUT"] = "1h"
		}, `ksvc\[upload\]\.env\.UPLOAD_TIMEOUT\s+must end at least 30s before timeoutSeconds \(10m0s\)`},
		{"own timeout not a duration", func(t *testing.T, m *Manifests) {
			configMap(t, m).Data["DOWNLOAD_TIMEOUT"] = "ten minutes"
		}, `DOWNLOAD_TIMEOUT="ten minutes"`},
		{"parallelism beyond what convert can take", func(t *testing.T, m *Manifests) {
			trigger(t, m, "convert").Annotations[model.ParallelismAnnotation] = "6"
		}, `more than convert can take at once \(max-scale 5 x containerConcurrency 1\)`},
		{"no per-attempt timeout anywhere", func(t *testing.T, m *Manifests) {
			trigger(t, m, "notify-failed").Spec.Delivery = nil
			obj(t, m, "Broker", "default").Typed.(*model.Broker).Spec.Delivery.Timeout = nil
		}, `missing field\(s\): triggers\[notify-failed\]\.spec\.delivery\.timeout`},
		{"the broker's default delivery applies", func(t *testing.T, m *Manifests) {
			trigger(t, m, "notify-failed").Spec.Delivery = nil
			obj(t, m, "Broker", "default").Typed.(*model.Broker).Spec.Delivery.Timeout = sp("PT11M")
		}, `PT11M: triggers\[notify-failed\]\.spec\.delivery\.timeout\s+longer than the subscriber notify's timeoutSeconds \(10m0s\)`},
	})
}

func TestKustomizationRuleRejects(t *testing.T) {
	runBroken(t, "kustomization", []brokenCase{
		{"a manifest left out", func(t *testing.T, m *Manifests) {
			k := m.Kustomization
			k.Resources = slices.DeleteFunc(k.Resources, func(r string) bool { return r == "sinkbinding.yaml" })
		}, `sinkbinding\.yaml is not listed`},
		{"a new file not listed", func(t *testing.T, m *Manifests) {
			m.Files = append(m.Files, "hpa.yaml")
		}, `hpa\.yaml is not listed`},
		{"a resource that does not exist", func(t *testing.T, m *Manifests) {
			m.Kustomization.Resources = append(m.Kustomization.Resources, "missing.yaml")
		}, `invalid value: missing\.yaml: resources\[\d+\]`},
		{"a resource listed twice", func(t *testing.T, m *Manifests) {
			m.Kustomization.Resources = append(m.Kustomization.Resources, "broker.yaml")
		}, `listed twice`},
		{"another namespace", func(t *testing.T, m *Manifests) {
			m.Kustomization.Namespace = "default"
		}, `invalid value: default: namespace\s+must be mp3converter`},
		{"secret source outside secrets/", func(t *testing.T, m *Manifests) {
			m.Kustomization.SecretGenerator[0].Envs = []string{"mysql.env"}
		}, `secret sources live in secrets/`},
		{"secret source without example", func(t *testing.T, m *Manifests) {
			m.Kustomization.SecretGenerator[0].Envs = append(m.Kustomization.SecretGenerator[0].Envs, "secrets/extra.env")
		}, `has no committed example secrets/extra\.env\.example`},
		{"secret values in kustomization.yaml", func(t *testing.T, m *Manifests) {
			m.Kustomization.SecretGenerator[0].Literals = []string{"MYSQL_PASSWORD=hunter2"}
		}, `not in kustomization\.yaml`},
		// The function images are func deploy's (--image), so are the Services.
		{"an image of a function", func(t *testing.T, m *Manifests) {
			m.Kustomization.Images = append(m.Kustomization.Images, KustomizeImage{Name: "mp3converter/convert"})
		}, `invalid value: mp3converter/convert: images\[0\]\s+the kustomization holds no function Service`},
		{"an images entry matching nothing", func(t *testing.T, m *Manifests) {
			m.Kustomization.Images = append(m.Kustomization.Images, KustomizeImage{Name: "mp3converter/gateway"})
		}, `invalid value: mp3converter/gateway: images\[0\]`},
		{"Secret names with a content hash", func(t *testing.T, m *Manifests) {
			m.Kustomization.GeneratorOptions = nil
		}, `missing field\(s\): generatorOptions\.disableNameSuffixHash\s+the generated Secrets would get a content hash`},
		{"namespace object of another name", func(t *testing.T, m *Manifests) {
			obj(t, m, "Namespace", "mp3converter").Typed.(*corev1.Namespace).Name = "mp3"
		}, `namespaces\[mp3converter\]\.metadata\.name`},
	})
}

// TestStrictDecoding feeds real documents with one field misspelt or
// duplicated: every kind decodes into its Go type strictly.
func TestStrictDecoding(t *testing.T) {
	cases := []struct {
		file, old, new, want string
	}{
		// (The Knative Services are func deploy's now, made from func.yaml:
		// TestFuncYAMLDecodingIsStrict; these two keep a misspelt spec field
		// and a misspelt container field of a workload.)
		{"mongodb.yaml", "  replicas: 1", "  replica: 1", `unknown field "replica"`},
		{"mongodb.yaml", "        image: mongo:7.0.15", "        image: mongo:7.0.15\n        imagePullPolicyy: Always", `unknown field .*imagePullPolicyy`},
		{"triggers.yaml", "  filter:\n    attributes:\n      type: dev.mp3converter.video.uploaded", "  filter:\n    attribute:\n      type: dev.mp3converter.video.uploaded", `Trigger convert: .*unknown field "attribute"`},
		{"broker.yaml", "    backoffPolicy: exponential", "    backoffPolicy: exponential\n    backofPolicy: linear", `unknown field "backofPolicy"`},
		{"sinkbinding.yaml", "  sink:", "  sinks:", `unknown field "sinks"`},
		{"rabbitmq-cluster.yaml", "  persistence:", "  persistance:", `unknown field "persistance"`},
		{"rabbitmq-broker-config.yaml", "  queueType: quorum", "  queueType: quorum\n  queue: x", `unknown field "queue"`},
		{"mysql.yaml", "  serviceName: mysql", "  serviceName: mysql\n  serviceNames: mysql", `mysql\.yaml#2: StatefulSet mysql: .*unknown field "serviceNames"`},
		{"config.yaml", "\ndata:", "\ndta:", `unknown field "dta"`},
		{"networkpolicies.yaml", "  - from:\n    - podSelector:\n        matchExpressions:\n        - {key: app.kubernetes.io/name, operator: In, values: [upload, login, sweep]}", "  - form:\n    - podSelector: {}", `NetworkPolicy broker-ingress-from-producers: .*unknown field "form"`},
		{"networkpolicies.yaml", "  policyTypes: [Ingress]", "  policyType: [Ingress]", `unknown field "policyType"`},
		{"networkpolicies.yaml", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy", "apiVersion: extensions/v1beta1\nkind: NetworkPolicy", `NetworkPolicy|networking.k8s.io/v1`},
		{"namespace.yaml", "  name: mp3converter", "  name: mp3converter\n  name: mp3", `duplicate|already set`},
		{"mongodb.yaml", "apiVersion: apps/v1\nkind: StatefulSet", "apiVersion: apps/v1\nkind: Deployment", `unknown kind "Deployment"`},
	}
	for _, c := range cases {
		t.Run(c.file+" "+c.want, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(repo.Knative, c.file))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := (model.Decoder{}).DecodeFile(c.file, b); err != nil {
				t.Fatalf("the real %s does not decode: %v", c.file, err)
			}
			broken := strings.Replace(string(b), c.old, c.new, 1)
			if broken == string(b) {
				t.Fatalf("%s does not contain %q", c.file, c.old)
			}
			_, err = (model.Decoder{}).DecodeFile(c.file, []byte(broken))
			if err == nil || !regexp.MustCompile(c.want).MatchString(err.Error()) {
				t.Fatalf("decoding the broken %s: got %v, want an error matching %q", c.file, err, c.want)
			}
		})
	}

	t.Run("kustomization.yaml", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(repo.Knative, "kustomization.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		broken := strings.Replace(string(b), "namespace: mp3converter", "namespace: mp3converter\ncommonLabels: {a: b}", 1)
		if _, err := DecodeKustomization([]byte(broken)); err == nil || !strings.Contains(err.Error(), `unknown field "commonLabels"`) {
			t.Fatalf("got %v, want unknown field commonLabels", err)
		}
	})
}

func TestSecretExamplesHoldEveryKey(t *testing.T) {
	m := load(t)
	want := map[string][]string{
		"mp3converter-mysql":   {"MYSQL_DSN", "MYSQL_PASSWORD", "MYSQL_ROOT_PASSWORD"},
		"mp3converter-mongodb": {"MONGODB_URI", "MONGO_APP_PASSWORD", "MONGO_APP_USERNAME", "MONGO_INITDB_ROOT_PASSWORD", "MONGO_INITDB_ROOT_USERNAME"},
		"mp3converter-jwt":     {"JWT_PRIVATE_KEY", "JWT_PUBLIC_KEY"},
		"mp3converter-smtp":    {"SMTP_URL"},
		"mp3converter-links":   {"LINK_SECRET", "LINK_SECRET_PREVIOUS"},
	}
	for name, keys := range want {
		got, err := m.SecretKeys(name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !slices.Equal(got, keys) {
			t.Errorf("%s: keys %v, want %v", name, got, keys)
		}
	}
}

func TestRetryWindow(t *testing.T) {
	m := load(t)
	w, err := RetryWindow(m.EffectiveDelivery(trigger(t, m, "convert")))
	if err != nil {
		t.Fatal(err)
	}
	// triggers.yaml: 6 attempts x 10 min + (4+8+16+32+64) s
	if want := "1h2m4s"; w.String() != want {
		t.Errorf("convert's retry window is %s, want %s", w, want)
	}
	linear := &model.DeliverySpec{Timeout: sp("PT10S"), Retry: func() *int32 { r := int32(3); return &r }(), BackoffPolicy: sp("linear"), BackoffDelay: sp("PT1S")}
	if w, err := RetryWindow(linear); err != nil || w.String() != "46s" { // 4x10 + 1+2+3
		t.Errorf("linear window = %v, %v; want 46s", w, err)
	}
}

func TestSchemaValidator(t *testing.T) {
	s := &Schema{Type: "object", Required: []string{"a"}, Properties: map[string]*Schema{
		"a": {Type: "string", Enum: []any{"x", "y"}},
		"q": {IntOrString: true, Pattern: `^\d+Gi$`},
		"m": {Type: "object", AdditionalProperties: &SchemaOrBool{Allows: true, Schema: &Schema{Type: "integer", Format: "int32"}}},
		"p": {Type: "object", PreserveUnknown: true},
		"l": {Type: "array", MaxItems: ptrInt64(1), Items: &Schema{Type: "boolean"}},
	}}
	if errs := s.Validate(map[string]any{"a": "x", "q": num(3), "m": map[string]any{"k": num(1)}, "p": map[string]any{"any": "thing"}, "l": []any{true}}); errs != nil {
		t.Fatalf("valid object rejected: %v", errs)
	}
	if errs := s.Validate(map[string]any{"a": "x", "q": nil}); errs != nil {
		t.Fatalf("a null is dropped, not rejected: %v", errs)
	}
	bad := []struct {
		v    map[string]any
		want string
	}{
		{map[string]any{}, "missing field(s): a"},
		{map[string]any{"a": "z"}, "must be one of x, y"},
		{map[string]any{"a": "x", "q": "3G"}, "does not match"},
		{map[string]any{"a": "x", "q": true}, "integer or a string"},
		{map[string]any{"a": "x", "m": map[string]any{"k": num(1 << 33)}}, "m[k]"},
		{map[string]any{"a": "x", "l": []any{true, false}}, "at most 1 items"},
		{map[string]any{"a": "x", "l": []any{"yes"}}, "invalid value: yes: l[0]\nmust be of type boolean"},
		{map[string]any{"a": "x", "zz": 1}, "must not set the field(s): zz"},
	}
	for _, b := range bad {
		errs := s.Validate(b.v)
		if errs == nil || !strings.Contains(errs.Error(), b.want) {
			t.Errorf("Validate(%v) = %v, want %q", b.v, errs, b.want)
		}
	}
}

func TestEveryRuleIsTested(t *testing.T) {
	tested := map[string]bool{"crd-schemas": true, "knative-serving-webhook": true, "service-policy": true,
		"eventing-webhooks": true, "references": true, "timeouts": true, "kustomization": true, "func-yaml": true}
	for _, r := range Rules {
		if !tested[r.Name] {
			t.Errorf("rule %s has no broken-manifest test", r.Name)
		}
	}
}
