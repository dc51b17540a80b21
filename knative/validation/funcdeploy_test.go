package validation

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"mp3converter/knative/model"
)

// TestFuncDeployFitsThePlatform turns every functions/<name>/func.yaml into
// the Knative Service `func deploy` makes of it (FuncDeployService, mirrored
// from knative/func) and holds it against the platform `kubectl apply -k
// knative/` installs (rendered in process):
//   - one owner: the kustomization makes no Service of that name, or the two
//     routes would overwrite each other's labels, annotations and env;
//   - every Secret and ConfigMap it reads exists under exactly that name,
//     with the key (func refuses to deploy otherwise, CheckResourcesArePresent;
//     the kubelet refuses to start the pod without the key);
//   - no variable points at the local stack (127.0.0.1, localhost);
//   - only the public functions have a route from outside the cluster;
//   - every Trigger delivering to it times out before the Service does
//     (func sets no timeoutSeconds: the cluster's config-defaults decide);
//   - Knative Serving's webhook accepts it.
func TestFuncDeployFitsThePlatform(t *testing.T) {
	rendered, err := Render(repo.Knative)
	if err != nil {
		t.Fatalf("rendering knative/: %v", err)
	}
	platform := &model.Manifests{Objects: rendered}
	defaults, err := LoadServingDefaults(repo.Knative)
	if err != nil {
		t.Fatal(err)
	}
	names := functionNames(t)
	for _, tr := range platform.Triggers() {
		for _, d := range triggerDestinations(platform, tr) {
			if !slices.Contains(names, d) {
				t.Errorf("Trigger %s delivers to %s, which is no function of functions/", tr.Name, d)
			}
		}
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			f, err := LoadFuncYAML(filepath.Join(repo.Functions, name, "func.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			svc, err := FuncDeployService(f, FuncImage(name))
			if err != nil {
				t.Fatalf("func deploy would fail: %v", err)
			}
			for _, problem := range funcDeployProblems(svc, platform, defaults) {
				t.Error(problem)
			}
		})
	}
}

// PublicFunctions have a route from outside the cluster (web, the entry point); the others are
// cluster-local (networking.knative.dev/visibility).
var PublicFunctions = []string{"web"}

const visibilityLabel = "networking.knative.dev/visibility"

func funcDeployProblems(svc *servingv1.Service, platform *model.Manifests, defaults map[string]string) []string {
	var problems []string
	if o := platform.Find("serving.knative.dev/v1", "Service", svc.Name); o != nil {
		problems = append(problems, fmt.Sprintf("kubectl apply -k knative/ makes a Knative Service %s too: func deploy replaces its labels, annotations and env, and the next apply reverts them", svc.Name))
	}
	pod := &svc.Spec.Template.Spec
	for _, c := range pod.Containers {
		for _, e := range c.Env {
			if v := e.Value; strings.Contains(v, "127.0.0.1") || strings.Contains(v, "localhost") {
				problems = append(problems, fmt.Sprintf("%s=%s is the local stack's address, deployed to the cluster as is", e.Name, v))
			}
			if r := e.ValueFrom; r != nil && r.SecretKeyRef != nil {
				problems = append(problems, hasKey(platform, "Secret", r.SecretKeyRef.Name, r.SecretKeyRef.Key, e.Name)...)
			}
			if r := e.ValueFrom; r != nil && r.ConfigMapKeyRef != nil {
				problems = append(problems, hasKey(platform, "ConfigMap", r.ConfigMapKeyRef.Name, r.ConfigMapKeyRef.Key, e.Name)...)
			}
		}
		for _, e := range c.EnvFrom {
			if e.SecretRef != nil {
				problems = append(problems, hasKey(platform, "Secret", e.SecretRef.Name, "", "envFrom")...)
			}
			if e.ConfigMapRef != nil {
				problems = append(problems, hasKey(platform, "ConfigMap", e.ConfigMapRef.Name, "", "envFrom")...)
			}
		}
	}
	for _, v := range pod.Volumes {
		if v.Secret != nil {
			problems = append(problems, hasKey(platform, "Secret", v.Secret.SecretName, "", "volume "+v.Name)...)
		}
		if v.ConfigMap != nil {
			problems = append(problems, hasKey(platform, "ConfigMap", v.ConfigMap.Name, "", "volume "+v.Name)...)
		}
	}

	public := slices.Contains(PublicFunctions, svc.Name)
	if got := svc.Spec.Template.Labels[visibilityLabel]; public && got != "" {
		problems = append(problems, fmt.Sprintf("label %s=%s: %s is public", visibilityLabel, got, svc.Name))
	} else if !public && (got != "cluster-local" || svc.Labels[visibilityLabel] != "cluster-local") {
		problems = append(problems, fmt.Sprintf("no label %s=cluster-local (deploy.labels): %s would be public", visibilityLabel, svc.Name))
	}

	d := Defaulted(svc, defaults)
	timeout := time.Duration(deref0(d.Spec.Template.Spec.TimeoutSeconds)) * time.Second
	for _, tr := range platform.Triggers() {
		if !slices.Contains(triggerDestinations(platform, tr), svc.Name) {
			continue
		}
		dl := platform.EffectiveDelivery(tr)
		if dl == nil || dl.Timeout == nil {
			continue // the timeouts rule requires one
		}
		if dt, err := model.ParseISODuration(*dl.Timeout); err == nil && dt > timeout {
			problems = append(problems, fmt.Sprintf("Trigger %s waits up to %s per delivery, but the Service times out after %s (func sets no timeoutSeconds; the cluster's config-defaults give %d s)",
				tr.Name, *dl.Timeout, timeout, deref0(d.Spec.Template.Spec.TimeoutSeconds)))
		}
	}
	if errs := d.Validate(ServingContext(defaults)); errs != nil {
		problems = append(problems, "Knative Serving's webhook refuses it: "+errs.Error())
	}
	return problems
}

// hasKey reports what is missing for a reference to kind/name (and key, when
// given) in the rendered platform.
func hasKey(platform *model.Manifests, kind, name, key, what string) []string {
	o := platform.Find("v1", kind, name)
	if o == nil {
		return []string{fmt.Sprintf("%s reads %s %q, which kubectl apply -k knative/ does not create under that name (func deploy refuses: CheckResourcesArePresent)", what, kind, name)}
	}
	if key == "" {
		return nil
	}
	var ok bool
	switch v := o.Typed.(type) {
	case *corev1.Secret:
		_, ok = v.Data[key]
		if !ok {
			_, ok = v.StringData[key]
		}
	case *corev1.ConfigMap:
		_, ok = v.Data[key]
	}
	if !ok {
		return []string{fmt.Sprintf("%s reads key %s of %s %s, which has no such key", what, key, kind, name)}
	}
	return nil
}

// triggerDestinations names the Knative Services a Trigger delivers to: its
// subscriber and its dead-letter sink.
func triggerDestinations(m *model.Manifests, tr *model.Trigger) []string {
	var out []string
	if r := tr.Spec.Subscriber.Ref; r != nil && r.Kind == "Service" {
		out = append(out, r.Name)
	}
	if d := m.EffectiveDelivery(tr); d != nil && d.DeadLetterSink != nil && d.DeadLetterSink.Ref != nil && d.DeadLetterSink.Ref.Kind == "Service" {
		out = append(out, d.DeadLetterSink.Ref.Name)
	}
	return out
}

func functionNames(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(repo.Functions)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(repo.Functions, e.Name(), "func.yaml")); err == nil {
			names = append(names, e.Name())
		}
	}
	if len(names) < 6 {
		t.Fatalf("functions: %v", names)
	}
	return names
}
