package validation

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"mp3converter/knative/model"
)

// TestKustomizeRenders builds knative/ in process as kubectl apply -k does
// (Render) and checks what would be sent to the cluster, not the source
// files: everything in the namespace with the part-of label; each generated
// Secret under the stable name the func.yaml files and the StatefulSets
// read, with the keys of its example; every Secret and ConfigMap reference
// of the rendered objects resolves; the database images are pinned; the
// eventing objects refer to what the output (or func deploy) creates; and
// no function Service, which func deploy owns.
func TestKustomizeRenders(t *testing.T) {
	objs, err := Render(repo.Knative)
	if err != nil {
		t.Fatal(err)
	}
	out := &model.Manifests{Objects: objs}
	m := load(t)
	names := functionNames(t)

	for _, o := range objs {
		if o.Kind != "Namespace" && o.Namespace != Namespace {
			t.Errorf("%s rendered in namespace %q", o, o.Namespace)
		}
		labels, _ := o.Map["metadata"].(map[string]any)["labels"].(map[string]any)
		if labels["app.kubernetes.io/part-of"] != "mp3converter" {
			t.Errorf("%s has no label app.kubernetes.io/part-of=mp3converter", o)
		}
		if o.APIVersion == "serving.knative.dev/v1" {
			t.Errorf("%s: the function Services are func deploy's (docs/architecture.md); the kustomization must not make them", o)
		}
	}

	for _, g := range m.Kustomization.SecretGenerator {
		s := out.Find("v1", "Secret", g.Name)
		if s == nil {
			t.Errorf("secretGenerator %s: no Secret of that name rendered (a hash suffix?), but func.yaml and the StatefulSets read it by that name", g.Name)
			continue
		}
		keys, err := m.SecretKeys(g.Name)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if _, ok := s.Typed.(*corev1.Secret).Data[k]; !ok {
				t.Errorf("Secret %s has no key %s", g.Name, k)
			}
		}
	}

	for _, name := range names {
		f, err := LoadFuncYAML(filepath.Join(repo.Functions, name, "func.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range f.Run.Envs {
			kind, ref, key, ok := parseEnvRef(e.Value)
			if !ok {
				continue
			}
			kind = map[string]string{"secret": "Secret", "configMap": "ConfigMap"}[kind]
			for _, p := range hasKey(out, kind, ref, key, name+" "+derefString(e.Name)) {
				t.Error(p)
			}
		}
	}

	for _, s := range model.Of[*appsv1.StatefulSet](out) {
		for _, c := range s.Spec.Template.Spec.Containers {
			if tag := c.Image[strings.LastIndex(c.Image, "/")+1:]; !strings.Contains(tag, ":") && !strings.Contains(tag, "@") || strings.HasSuffix(tag, ":latest") {
				t.Errorf("StatefulSet %s: image %s is not pinned", s.Name, c.Image)
			}
			for _, e := range c.Env {
				if r := e.ValueFrom; r != nil && r.SecretKeyRef != nil {
					for _, p := range hasKey(out, "Secret", r.SecretKeyRef.Name, r.SecretKeyRef.Key, "StatefulSet "+s.Name+" "+e.Name) {
						t.Error(p)
					}
				}
			}
		}
	}

	for _, b := range out.Brokers() {
		if c := b.Spec.Config; c == nil || out.Find(c.APIVersion, c.Kind, c.Name) == nil {
			t.Errorf("Broker %s: config %v not rendered", b.Name, c)
		}
	}
	for _, c := range model.Of[*model.RabbitmqBrokerConfig](out) {
		if r := c.Spec.RabbitmqClusterReference; r == nil || out.Find("rabbitmq.com/v1beta1", "RabbitmqCluster", r.Name) == nil {
			t.Errorf("RabbitmqBrokerConfig %s: cluster %v not rendered", c.Name, r)
		}
	}
	for _, tr := range out.Triggers() {
		if out.Broker(Namespace, tr.Spec.Broker) == nil {
			t.Errorf("Trigger %s: Broker %s not rendered", tr.Name, tr.Spec.Broker)
		}
	}
	for _, sb := range model.Of[*model.SinkBinding](out) {
		if s := sb.Spec.Subject; s.Kind != "Service" || !slices.Contains(names, s.Name) {
			t.Errorf("SinkBinding %s: subject %s %s is no function", sb.Name, s.Kind, s.Name)
		}
	}
}
