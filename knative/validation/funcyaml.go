package validation

import (
	"mp3converter/knative/model"

	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"knative.dev/pkg/apis"
	"knative.dev/serving/pkg/apis/autoscaling"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	"sigs.k8s.io/yaml"
)

// LoadFuncYAML reads a func.yaml strictly: a key func does not know (a typo
// func itself would silently ignore) is an error.
func LoadFuncYAML(path string) (*FuncYAML, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f := &FuncYAML{}
	if err := yaml.UnmarshalStrict(b, f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// Variables a Service may carry although func.yaml does not list them:
// ADDRESS and BUILT are added by func deploy itself.
var deployerEnvs = []string{addressEnvName, BuiltEnv}

// CheckFuncYAML compares a function's func.yaml (and its Handle signature)
// with its Knative Service in m, the way `func deploy` would turn the
// func.yaml into a Service: run.envs become the container's variables
// (a {{ secret:name:key }} a secretKeyRef, a {{ configMap:name:key }} a
// configMapKeyRef), deploy.options.scale the autoscaling annotations,
// deploy.options.resources the container resources and containerConcurrency.
// shape may be nil when the package could not be parsed.
func CheckFuncYAML(m *Manifests, f *FuncYAML, dirName string, shape *Shape) *apis.FieldError {
	var errs *apis.FieldError
	if f.Name != dirName {
		errs = errs.Also(apis.ErrInvalidValue(f.Name, "name", "must be the directory name "+dirName))
	}
	if f.SpecVersion == "" {
		errs = errs.Also(apis.ErrMissingField("specVersion"))
	}
	if f.Runtime != "go" {
		errs = errs.Also(apis.ErrInvalidValue(f.Runtime, "runtime", "must be go"))
	}
	if f.Build.Builder != "host" {
		errs = errs.Also(apis.ErrInvalidValue(f.Build.Builder, "build.builder", "must be host"))
	}
	if !slices.ContainsFunc(f.Build.BuildEnvs, func(e FuncEnv) bool {
		return e.Name != nil && *e.Name == "GOWORK" && e.Value != nil && *e.Value == "off"
	}) {
		errs = errs.Also(apis.ErrGeneric("must set GOWORK=off: func builds the function alone, outside the workspace", "build.buildEnvs"))
	}
	if f.Deploy.Namespace != Namespace {
		errs = errs.Also(apis.ErrInvalidValue(f.Deploy.Namespace, "deploy.namespace", "must be "+Namespace))
	}
	invoke := f.Invoke
	if invoke == "" {
		invoke = "http"
	}
	if invoke != "http" && invoke != "cloudevent" {
		errs = errs.Also(apis.ErrInvalidValue(f.Invoke, "invoke", "must be http or cloudevent"))
	}
	if shape != nil && shape.Invoke != "" && shape.Invoke != invoke {
		errs = errs.Also(apis.ErrInvalidValue(f.Invoke, "invoke", fmt.Sprintf("Handle has the %s signature: func would scaffold the wrong runtime", shape.Invoke)))
	}

	svc := m.ServiceByName(f.Name)
	if svc == nil {
		return errs.Also(apis.ErrGeneric("no Knative Service "+f.Name+" in knative/", "name"))
	}
	if invoke == "cloudevent" && !m.receivesEvents(f.Name) {
		errs = errs.Also(apis.ErrInvalidValue(invoke, "invoke", "a cloudevent function must be a Trigger's subscriber or dead-letter sink; "+f.Name+" is neither"))
	}
	tmpl := svc.Spec.Template
	if len(tmpl.Spec.Containers) != 1 {
		return errs // CheckServicePolicy reports it
	}
	c := &tmpl.Spec.Containers[0]

	errs = errs.Also(m.compareEnvs(f, svc, c).ViaField("run.envs"))
	errs = errs.Also(compareVolumes(f, &tmpl.Spec.PodSpec, c).ViaField("run.volumes"))

	// Scale: func deploy writes min/max (and metric, target, utilization)
	// as revision annotations.
	scale := f.Deploy.Options.Scale
	if scale == nil {
		scale = &FuncScale{}
	}
	ann := tmpl.Annotations
	errs = errs.Also(compareInt(scale.Min, ann[autoscaling.MinScaleAnnotationKey], "deploy.options.scale.min", autoscaling.MinScaleAnnotationKey))
	errs = errs.Also(compareInt(scale.Max, ann[autoscaling.MaxScaleAnnotationKey], "deploy.options.scale.max", autoscaling.MaxScaleAnnotationKey))
	if scale.Metric != nil && *scale.Metric != ann[autoscaling.MetricAnnotationKey] {
		errs = errs.Also(mismatch("deploy.options.scale.metric", *scale.Metric, ann[autoscaling.MetricAnnotationKey], autoscaling.MetricAnnotationKey))
	}
	errs = errs.Also(compareFloat(scale.Target, ann[autoscaling.TargetAnnotationKey], "deploy.options.scale.target", autoscaling.TargetAnnotationKey))
	errs = errs.Also(compareFloat(scale.Utilization, ann[autoscaling.TargetUtilizationPercentageKey], "deploy.options.scale.utilization", autoscaling.TargetUtilizationPercentageKey))

	// Resources and concurrency: func deploy sets exactly these.
	res := f.Deploy.Options.Resources
	if res == nil {
		res = &FuncResources{}
	}
	var req, lim FuncResourceList
	var conc *int64
	if res.Requests != nil {
		req = *res.Requests
	}
	if res.Limits != nil {
		lim = FuncResourceList{CPU: res.Limits.CPU, Memory: res.Limits.Memory}
		conc = res.Limits.Concurrency
	}
	errs = errs.Also(compareResources(req, c.Resources.Requests, "deploy.options.resources.requests"))
	errs = errs.Also(compareResources(lim, c.Resources.Limits, "deploy.options.resources.limits"))
	if deref0(conc) != deref0(tmpl.Spec.ContainerConcurrency) {
		errs = errs.Also(mismatch("deploy.options.resources.limits.concurrency", fmtPtr(conc), fmtPtr(tmpl.Spec.ContainerConcurrency), "containerConcurrency"))
	}

	if p := f.Deploy.HealthEndpoints.Liveness; p != "" && (c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != p) {
		errs = errs.Also(apis.ErrInvalidValue(p, "deploy.healthEndpoints.liveness", "differs from the Service's livenessProbe"))
	}
	if p := f.Deploy.HealthEndpoints.Readiness; p != "" && (c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != p) {
		errs = errs.Also(apis.ErrInvalidValue(p, "deploy.healthEndpoints.readiness", "differs from the Service's readinessProbe"))
	}
	for _, k := range sortedKeys(f.Deploy.Annotations) {
		if tmpl.Annotations[k] != f.Deploy.Annotations[k] {
			errs = errs.Also(mismatch("deploy.annotations."+k, f.Deploy.Annotations[k], tmpl.Annotations[k], k))
		}
	}
	return errs
}

// compareEnvs: every func.yaml variable is set by the Service (func bakes
// run.envs into the image, so a variable the Service does not override keeps
// its local default, or the literal "{{ secret:... }}"), secret and
// ConfigMap references agree, and the Service sets nothing func.yaml does not
// know, besides what func deploy adds and what a SinkBinding injects.
func (m *Manifests) compareEnvs(f *FuncYAML, svc *servingv1.Service, c *corev1.Container) *apis.FieldError {
	var errs *apis.FieldError
	svcEnv := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		svcEnv[e.Name] = e
	}
	injected := m.injectedEnvs(svc.Name)
	listed := map[string]bool{}
	for i, e := range f.Run.Envs {
		if e.Name == nil {
			errs = errs.Also(apis.ErrGeneric("an env without a name (a whole Secret or ConfigMap) cannot be compared: name each variable", fmt.Sprintf("[%d]", i)))
			continue
		}
		name := *e.Name
		listed[name] = true
		se, ok := svcEnv[name]
		if !ok {
			if !slices.Contains(injected, name) {
				errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("%s is not set by the Knative Service %s", name, svc.Name), fmt.Sprintf("[%d]", i)))
			}
			continue
		}
		kind, refName, key, isRef := parseEnvRef(e.Value)
		if !isRef {
			continue // a local default; the Service sets the cluster value
		}
		var gotName, gotKey string
		switch {
		case kind == "secret" && se.ValueFrom != nil && se.ValueFrom.SecretKeyRef != nil:
			gotName, gotKey = se.ValueFrom.SecretKeyRef.Name, se.ValueFrom.SecretKeyRef.Key
		case kind == "configMap" && se.ValueFrom != nil && se.ValueFrom.ConfigMapKeyRef != nil:
			gotName, gotKey = se.ValueFrom.ConfigMapKeyRef.Name, se.ValueFrom.ConfigMapKeyRef.Key
		}
		if gotName != refName || gotKey != key {
			errs = errs.Also(apis.ErrInvalidValue(*e.Value, fmt.Sprintf("[%d].value", i),
				fmt.Sprintf("the Service reads %s from %s", name, describeSource(se))))
		}
	}
	for _, e := range c.Env {
		if !listed[e.Name] && !slices.Contains(deployerEnvs, e.Name) {
			errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("the Service %s sets %s, which func.yaml does not list: func deploy would drop it", svc.Name, e.Name), apis.CurrentField))
		}
	}
	return errs
}

// compareVolumes: func deploy mounts every run.volumes entry at its path,
// with the same source; the Service mounts nothing else.
func compareVolumes(f *FuncYAML, pod *corev1.PodSpec, c *corev1.Container) *apis.FieldError {
	var errs *apis.FieldError
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	mounts := map[string]corev1.Volume{}
	for _, vm := range c.VolumeMounts {
		mounts[vm.MountPath] = volumes[vm.Name]
	}
	listed := map[string]bool{}
	for i, v := range f.Run.Volumes {
		p := fmt.Sprintf("[%d]", i)
		if v.Path == nil {
			errs = errs.Also(apis.ErrMissingField(p + ".path"))
			continue
		}
		listed[*v.Path] = true
		got, ok := mounts[*v.Path]
		if !ok {
			errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("the Service mounts nothing at %s", *v.Path), p))
			continue
		}
		switch {
		case v.EmptyDir != nil:
			if got.EmptyDir == nil {
				errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("func.yaml mounts an emptyDir at %s, the Service something else", *v.Path), p))
			} else if v.EmptyDir.SizeLimit != nil {
				want, err := resource.ParseQuantity(*v.EmptyDir.SizeLimit)
				switch {
				case err != nil:
					errs = errs.Also(apis.ErrInvalidValue(*v.EmptyDir.SizeLimit, p+".emptyDir.sizeLimit", err.Error()))
				case got.EmptyDir.SizeLimit == nil:
					errs = errs.Also(mismatch(p+".emptyDir.sizeLimit", want.String(), "unset", "emptyDir.sizeLimit"))
				case want.Cmp(*got.EmptyDir.SizeLimit) != 0:
					errs = errs.Also(mismatch(p+".emptyDir.sizeLimit", want.String(), got.EmptyDir.SizeLimit.String(), "emptyDir.sizeLimit"))
				}
			}
		case v.Secret != nil:
			if got.Secret == nil || got.Secret.SecretName != *v.Secret {
				errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("func.yaml mounts Secret %s at %s, the Service does not", *v.Secret, *v.Path), p))
			}
		case v.ConfigMap != nil:
			if got.ConfigMap == nil || got.ConfigMap.Name != *v.ConfigMap {
				errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("func.yaml mounts ConfigMap %s at %s, the Service does not", *v.ConfigMap, *v.Path), p))
			}
		case v.PersistentVolumeClaim != nil:
			if got.PersistentVolumeClaim == nil {
				errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("func.yaml mounts a claim at %s, the Service does not", *v.Path), p))
			}
		}
	}
	for _, vm := range c.VolumeMounts {
		if !listed[vm.MountPath] {
			errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("the Service mounts %s at %s, which func.yaml does not list: func deploy would drop it", vm.Name, vm.MountPath), apis.CurrentField))
		}
	}
	return errs
}

// injectedEnvs are the variables a SinkBinding of the folder injects into
// the named Knative Service.
func (m *Manifests) injectedEnvs(name string) []string {
	for _, sb := range model.Of[*model.SinkBinding](&m.Manifests) {
		s := sb.Spec.Subject
		if s.Kind == "Service" && strings.HasPrefix(s.APIVersion, "serving.knative.dev/") && s.Name == name {
			return []string{"K_SINK", "K_CE_OVERRIDES"}
		}
	}
	return nil
}

// receivesEvents tells whether a Knative Service is a Trigger's subscriber or
// dead-letter sink.
func (m *Manifests) receivesEvents(name string) bool {
	for _, t := range model.Of[*model.Trigger](&m.Manifests) {
		if r := t.Spec.Subscriber.Ref; r != nil && r.Kind == "Service" && r.Name == name {
			return true
		}
		if d := m.EffectiveDelivery(t); d != nil && d.DeadLetterSink != nil && d.DeadLetterSink.Ref != nil &&
			d.DeadLetterSink.Ref.Kind == "Service" && d.DeadLetterSink.Ref.Name == name {
			return true
		}
	}
	return false
}

// parseEnvRef splits "{{ secret:name:key }}" or "{{ configMap:name:key }}".
func parseEnvRef(v *string) (kind, name, key string, ok bool) {
	if v == nil || !strings.HasPrefix(strings.TrimSpace(*v), "{{") {
		return "", "", "", false
	}
	parts := strings.Split(strings.Trim(*v, "{} "), ":")
	if len(parts) != 3 {
		return "", "", "", false
	}
	kind = strings.TrimSpace(parts[0])
	if kind != "secret" && kind != "configMap" {
		return "", "", "", false
	}
	return kind, strings.TrimSpace(parts[1]), strings.TrimSpace(parts[2]), true
}

func describeSource(e corev1.EnvVar) string {
	switch {
	case e.ValueFrom == nil:
		return fmt.Sprintf("the literal %q", e.Value)
	case e.ValueFrom.SecretKeyRef != nil:
		return fmt.Sprintf("{{ secret:%s:%s }}", e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
	case e.ValueFrom.ConfigMapKeyRef != nil:
		return fmt.Sprintf("{{ configMap:%s:%s }}", e.ValueFrom.ConfigMapKeyRef.Name, e.ValueFrom.ConfigMapKeyRef.Key)
	}
	return "another source"
}

func compareInt(want *int64, got, path, annotation string) *apis.FieldError {
	if want == nil {
		if got != "" {
			return mismatch(path, "unset", got, annotation)
		}
		return nil
	}
	if n, err := strconv.ParseInt(got, 10, 64); err != nil || n != *want {
		return mismatch(path, strconv.FormatInt(*want, 10), got, annotation)
	}
	return nil
}

// compareFloat: func.yaml's target/utilization, when set, must equal the
// annotation (func writes them with %f). Unset in func.yaml leaves the
// Service free to set them.
func compareFloat(want *float64, got, path, annotation string) *apis.FieldError {
	if want == nil {
		return nil
	}
	if f, err := strconv.ParseFloat(got, 64); err != nil || f != *want {
		return mismatch(path, strconv.FormatFloat(*want, 'f', -1, 64), got, annotation)
	}
	return nil
}

func compareResources(want FuncResourceList, got corev1.ResourceList, path string) *apis.FieldError {
	var errs *apis.FieldError
	for _, r := range []struct {
		name corev1.ResourceName
		want *string
	}{{corev1.ResourceCPU, want.CPU}, {corev1.ResourceMemory, want.Memory}} {
		q, has := got[r.name]
		switch {
		case r.want == nil && has:
			errs = errs.Also(mismatch(path+"."+string(r.name), "unset", q.String(), "resources"))
		case r.want != nil && !has:
			errs = errs.Also(mismatch(path+"."+string(r.name), *r.want, "unset", "resources"))
		case r.want != nil:
			w, err := resource.ParseQuantity(*r.want)
			if err != nil {
				errs = errs.Also(apis.ErrInvalidValue(*r.want, path+"."+string(r.name), err.Error()))
			} else if w.Cmp(q) != 0 {
				errs = errs.Also(mismatch(path+"."+string(r.name), *r.want, q.String(), "resources"))
			}
		}
	}
	for name, q := range got {
		if name != corev1.ResourceCPU && name != corev1.ResourceMemory {
			errs = errs.Also(mismatch(path+"."+string(name), "unset", q.String(), "resources"))
		}
	}
	return errs
}

func mismatch(path, funcValue, svcValue, svcField string) *apis.FieldError {
	return &apis.FieldError{
		Message: fmt.Sprintf("func.yaml says %s, the Knative Service's %s says %s", funcValue, svcField, svcValue),
		Paths:   []string{path},
	}
}

func fmtPtr(p *int64) string {
	if p == nil {
		return "unset"
	}
	return strconv.FormatInt(*p, 10)
}

// CheckFunctions compares every function of functionsDir with knative/:
// each has a func.yaml that matches its Knative Service and a package of the
// right shape, and every Knative Service is a function.
func CheckFunctions(m *Manifests, functionsDir string) *apis.FieldError {
	names, err := Functions(functionsDir)
	if err != nil {
		return apis.ErrGeneric(err.Error(), "functions")
	}
	var errs *apis.FieldError
	for _, name := range names {
		dir := filepath.Join(functionsDir, name)
		shape, serr := CheckShape(dir)
		if serr != nil {
			errs = errs.Also(apis.ErrGeneric("package shape: "+serr.Error(), "go").ViaFieldKey("functions", name))
		}
		f, err := LoadFuncYAML(filepath.Join(dir, "func.yaml"))
		if os.IsNotExist(err) {
			errs = errs.Also(apis.ErrGeneric("functions/"+name+"/func.yaml is missing: func cannot build or deploy this function", "func.yaml").ViaFieldKey("functions", name))
			continue
		}
		if err != nil {
			errs = errs.Also(apis.ErrGeneric(err.Error(), "func.yaml").ViaFieldKey("functions", name))
			continue
		}
		errs = errs.Also(CheckFuncYAML(m, f, name, shape).ViaField("func.yaml").ViaFieldKey("functions", name))
	}
	for _, svc := range model.Of[*servingv1.Service](&m.Manifests) {
		if !slices.Contains(names, svc.Name) {
			errs = errs.Also(m.ObjectOf(svc).Via(apis.ErrGeneric("no function functions/"+svc.Name, "metadata.name")))
		}
	}
	return errs
}
