package validation

import (
	"mp3converter/knative/model"

	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"knative.dev/serving/pkg/apis/autoscaling"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

// funcYAMLFor writes the func.yaml from which `func deploy` would produce
// svc: the inverse of what CheckFuncYAML compares. The tests below break one
// side at a time; they do not depend on the func.yaml files in functions/
// (TestManifestsPassEveryRule/func-yaml checks those).
func funcYAMLFor(t *testing.T, m *Manifests, svc *servingv1.Service) *FuncYAML {
	t.Helper()
	c := svc.Spec.Template.Spec.Containers[0]
	f := &FuncYAML{
		SpecVersion: "0.36.0", Name: svc.Name, Runtime: "go", Invoke: "http",
		Build:  FuncBuild{Builder: "host", BuildEnvs: []FuncEnv{{Name: sp("GOWORK"), Value: sp("off")}}},
		Deploy: FuncDeploy{Namespace: Namespace},
	}
	if m.receivesEvents(svc.Name) && svc.Name == "notify" {
		f.Invoke = "cloudevent"
	}
	for _, e := range c.Env {
		if slices.Contains(deployerEnvs, e.Name) {
			continue
		}
		v := e.Value
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			v = "{{ secret:" + e.ValueFrom.SecretKeyRef.Name + ":" + e.ValueFrom.SecretKeyRef.Key + " }}"
		case e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil:
			v = "a local default"
		}
		f.Run.Envs = append(f.Run.Envs, FuncEnv{Name: sp(e.Name), Value: sp(v)})
	}
	for _, name := range m.injectedEnvs(svc.Name) {
		if name == "K_SINK" {
			f.Run.Envs = append(f.Run.Envs, FuncEnv{Name: sp(name), Value: sp("http://127.0.0.1:8080/broker")})
		}
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range svc.Spec.Template.Spec.Volumes {
		volumes[v.Name] = v
	}
	for _, vm := range c.VolumeMounts {
		fv := FuncVolume{Path: sp(vm.MountPath)}
		switch v := volumes[vm.Name]; {
		case v.EmptyDir != nil:
			fv.EmptyDir = &FuncEmptyDir{}
			if v.EmptyDir.SizeLimit != nil {
				fv.EmptyDir.SizeLimit = sp(v.EmptyDir.SizeLimit.String())
			}
		case v.Secret != nil:
			fv.Secret = sp(v.Secret.SecretName)
		case v.ConfigMap != nil:
			fv.ConfigMap = sp(v.ConfigMap.Name)
		}
		f.Run.Volumes = append(f.Run.Volumes, fv)
	}
	ann := svc.Spec.Template.Annotations
	min, _ := strconv.ParseInt(ann[autoscaling.MinScaleAnnotationKey], 10, 64)
	max, _ := strconv.ParseInt(ann[autoscaling.MaxScaleAnnotationKey], 10, 64)
	f.Deploy.Options.Scale = &FuncScale{Min: &min, Max: &max}
	q := func(l corev1.ResourceList, n corev1.ResourceName) *string {
		if v, ok := l[n]; ok {
			return sp(v.String())
		}
		return nil
	}
	f.Deploy.Options.Resources = &FuncResources{
		Requests: &FuncResourceList{CPU: q(c.Resources.Requests, corev1.ResourceCPU), Memory: q(c.Resources.Requests, corev1.ResourceMemory)},
		Limits:   &FuncLimits{CPU: q(c.Resources.Limits, corev1.ResourceCPU), Memory: q(c.Resources.Limits, corev1.ResourceMemory), Concurrency: svc.Spec.Template.Spec.ContainerConcurrency},
	}
	return f
}

func funcEnv(t *testing.T, f *FuncYAML, name string) *FuncEnv {
	t.Helper()
	for i := range f.Run.Envs {
		if *f.Run.Envs[i].Name == name {
			return &f.Run.Envs[i]
		}
	}
	t.Fatalf("func.yaml has no env %s", name)
	return nil
}

func TestFuncYAMLComparison(t *testing.T) {
	// The inverse agrees with the comparison for every Service.
	m := load(t)
	for _, svc := range model.Of[*servingv1.Service](&m.Manifests) {
		if errs := CheckFuncYAML(m, funcYAMLFor(t, m, svc), svc.Name, nil); errs != nil {
			t.Errorf("%s: the func.yaml func deploy would need is rejected:\n%v", svc.Name, errs)
		}
	}

	cases := []struct {
		name    string
		service string
		mutate  func(t *testing.T, m *Manifests, f *FuncYAML, shape **Shape)
		want    string
	}{
		{"max-scale drifted", "login", func(t *testing.T, m *Manifests, f *FuncYAML, _ **Shape) {
			*f.Deploy.Options.Scale.Max = 20
		}, `func.yaml says 20, the Knative Service's autoscaling.knative.dev/max-scale says 10: deploy.options.scale.max`},
		{"min-scale only in the Service", "login", func(t *testing.T, m *Manifests, f *FuncYAML, _ **Shape) {
			f.Deploy.Options.Scale.Min = nil
		}, `func.yaml says unset, the Knative Service's autoscaling.knative.dev/min-scale says 0`},
		{"target differs", "login", func(t *testing.T, m *Manifests, f *FuncYAML, _ **Shape) {
			v := 25.0
			f.Deploy.Options.Scale.Target = &v
		}, `func.yaml says 25, the Knative Service's autoscaling.knative.dev/target says 10`},
		{"memory limit drifted", "login", func(t *testing.T, m *Manifests, f *FuncYAML, _ **Shape) {
			ksvc(t, m, "login").Spec.Template.Spec.Containers[0].Resources.Limits[corev1.ResourceMemory] = resource.MustParse("256Mi")
		}, `func.yaml says 128Mi, the Knative Service's resources says 256Mi: deploy.options.resources.limits.memory`},
		{"cpu request only in the Service", "upload", func(t *testing.T, m *Manifests, f *FuncYAML, _ **Shape) {
			f.Deploy.Options.Resources.Requests.CPU = nil
		}, `func.yaml says unset, the Knative Service's resources says 100m: deploy.options.resources.requests.cpu`},
		{"concurrency only in func.yaml", "login", func(t *testing.T, m *Manifests, f *FuncYAML, _ **Shape) {
			f.Deploy.Options.Resources.Limits.Concurrency = ptrInt64(1)
		}, `func.yaml says 1, the Knative Service's containerConcurrency says unset`},
		{"concurrency only in the Service", "convert", func(t *testing.T, m *Manifests, f *FuncYAML, _ **Shape) {
			f.Deploy.Options.Resources.Limits.Concurrency = nil
		}, `func.yaml says unset, the Knative Service's containerConcurrency says 1`},
		{"a variable func.yaml does not know", "download", func(t *testing.T, m *Manifests, f *FuncYAML, _ **Shape) {
			c := container(t, m, "download")
			c.Env = append(c.Env, corev1.EnvVar{Name: "DEBUG", Value: "1"})
		}, `the Service download sets DEBUG, which func.yaml does not list`},
		{"a variable the Service does not set", "login", func(t *testing.T, m *Manifests, f *FuncYAML, _ **Shape) {
			removeEnv(container(t, m, "login"), "JWT_TTL")
		}, `JWT_TTL is not set by the Knative Service login: run\.envs\[\d+\]`},
		{"another secret", "login", func(t *testing.T, m *Manifests, f *FuncYAML, _ **Shape) {
			funcEnv(t, f, "JWT_PRIVATE_KEY").Value = sp("{{ secret:mp3converter-jwt:JWT_SECRET }}")
		}, `the Service reads JWT_PRIVATE_KEY from \{\{ secret:mp3converter-jwt:JWT_PRIVATE_KEY \}\}`},
		{"a secret where the Service uses a literal", "notify", func(t *testing.T, m *Manifests, f *FuncYAML, _ **Shape) {
			funcEnv(t, f, "MAIL_DIR").Value = sp("{{ configMap:mp3converter-config:MAIL_OUTBOX }}")
		}, `the Service reads MAIL_DIR from \{\{ configMap:mp3converter-config:MAIL_DIR \}\}`},
		{"K_SINK without the SinkBinding that injects it", "upload", func(t *testing.T, m *Manifests, f *FuncYAML, _ **Shape) {
			removeObject(m, "SinkBinding", "upload-broker")
		}, `K_SINK is not set by the Knative Service upload`},
		{"a cloudevent function nothing sends events to", "login", func(t *testing.T, m *Manifests, f *FuncYAML, _ **Shape) {
			f.Invoke = "cloudevent"
		}, `a cloudevent function must be a Trigger's subscriber or dead-letter sink; login is neither`},
		{"invoke against the Handle signature", "notify", func(t *testing.T, m *Manifests, f *FuncYAML, shape **Shape) {
			*shape = &Shape{Invoke: "http"}
		}, `Handle has the http signature: func would scaffold the wrong runtime`},
		{"another builder", "validate", func(t *testing.T, m *Manifests, f *FuncYAML, _ **Shape) {
			f.Build.Builder = "pack"
		}, `invalid value: pack: build\.builder\s+must be host`},
		{"built inside the workspace", "validate", func(t *testing.T, m *Manifests, f *FuncYAML, _ **Shape) {
			f.Build.BuildEnvs = nil
		}, `must set GOWORK=off`},
		{"deployed elsewhere", "validate", func(t *testing.T, m *Manifests, f *FuncYAML, _ **Shape) {
			f.Deploy.Namespace = "default"
		}, `deploy\.namespace\s+must be mp3converter`},
		{"named after nothing", "validate", func(t *testing.T, m *Manifests, f *FuncYAML, _ **Shape) {
			f.Name = "validator"
		}, `must be the directory name validate`},
		{"emptyDir of another size", "convert", func(t *testing.T, m *Manifests, f *FuncYAML, _ **Shape) {
			f.Run.Volumes[0].EmptyDir.SizeLimit = sp("1Gi")
		}, `func.yaml says 1Gi, the Knative Service's emptyDir.sizeLimit says 6Gi: run\.volumes\[0\]\.emptyDir\.sizeLimit`},
		{"a mount func.yaml does not list", "convert", func(t *testing.T, m *Manifests, f *FuncYAML, _ **Shape) {
			f.Run.Volumes = nil
		}, `the Service mounts empty-dir-0 at /tmp, which func.yaml does not list`},
		{"a volume the Service does not mount", "login", func(t *testing.T, m *Manifests, f *FuncYAML, _ **Shape) {
			f.Run.Volumes = append(f.Run.Volumes, FuncVolume{Path: sp("/etc/keys"), Secret: sp("mp3converter-jwt")})
		}, `the Service mounts nothing at /etc/keys`},
		{"health endpoint elsewhere", "validate", func(t *testing.T, m *Manifests, f *FuncYAML, _ **Shape) {
			f.Deploy.HealthEndpoints.Readiness = "/ready"
		}, `deploy\.healthEndpoints\.readiness\s+differs`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := load(t)
			f := funcYAMLFor(t, m, ksvc(t, m, c.service))
			var shape *Shape
			c.mutate(t, m, f, &shape)
			errs := CheckFuncYAML(m, f, c.service, shape)
			if errs == nil {
				t.Fatal("accepted")
			}
			if !regexp.MustCompile("(?s)" + c.want).MatchString(errs.Error()) {
				t.Fatalf("rejected without %q:\n%v", c.want, errs)
			}
		})
	}
}

// TestFuncYAMLRuleRejects runs the rule itself (func.yaml files on disk)
// against Services that drift from them, for the functions whose func.yaml
// exists.
func TestFuncYAMLRuleRejects(t *testing.T) {
	var cases []brokenCase
	for _, name := range []string{"login", "validate", "upload", "download", "convert", "notify", "web"} {
		if _, err := os.Stat(filepath.Join(repo.Functions, name, "func.yaml")); err != nil {
			continue
		}
		cases = append(cases,
			brokenCase{name + " max-scale drifted", func(t *testing.T, m *Manifests) {
				ksvc(t, m, name).Spec.Template.Annotations[autoscaling.MaxScaleAnnotationKey] = "77"
			}, `functions\[` + name + `\]\.func\.yaml\.deploy\.options\.scale\.max`},
			brokenCase{name + " variable dropped", func(t *testing.T, m *Manifests) {
				c := container(t, m, name)
				c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name != "ADDRESS" })
			}, `is not set by the Knative Service ` + name},
		)
	}
	if len(cases) == 0 {
		t.Fatal("no functions/*/func.yaml exists yet")
	}
	runBroken(t, "func-yaml", cases)
}

func TestFuncYAMLDecodingIsStrict(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "func.yaml")
	good := "specVersion: 0.36.0\nname: x\nruntime: go\ninvoke: http\ndeploy:\n  options:\n    scale: {min: 0, max: 2}\n"
	if err := os.WriteFile(path, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	if f, err := LoadFuncYAML(path); err != nil || *f.Deploy.Options.Scale.Max != 2 {
		t.Fatalf("LoadFuncYAML = %v, %v", f, err)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(good, "scale:", "scales:", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFuncYAML(path); err == nil || !strings.Contains(err.Error(), `unknown field "scales"`) {
		t.Fatalf("a misspelt key: got %v, want unknown field \"scales\" (func would silently ignore it)", err)
	}
}

func TestMissingFuncYAMLIsReported(t *testing.T) {
	dir := t.TempDir()
	fn := filepath.Join(dir, "login")
	if err := os.MkdirAll(fn, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"go.mod":      "module mp3converter/functions/login\n\ngo 1.26\n",
		"function.go": "package function\n\nimport \"net/http\"\n\ntype F struct{}\n\nfunc New() *F { return &F{} }\n\nfunc (f *F) Handle(w http.ResponseWriter, r *http.Request) {}\n",
	} {
		if err := os.WriteFile(filepath.Join(fn, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	errs := CheckFunctions(load(t), dir)
	if errs == nil || !strings.Contains(errs.Error(), "functions/login/func.yaml is missing") {
		t.Fatalf("got %v, want a clear report of the missing func.yaml", errs)
	}
	if !strings.Contains(errs.Error(), "no function functions/convert") {
		t.Fatalf("got %v, want the Services without a function reported", errs)
	}
}
