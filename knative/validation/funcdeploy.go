package validation

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"knative.dev/serving/pkg/apis/autoscaling"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"mp3converter/knative/model"
)

// FuncDeployService is the Knative Service `func deploy` creates from a
// func.yaml, mirrored from knative/func knative-v1.23.1:
//
//   - pkg/knative/deployer.go generateNewService: one container with the
//     image, func's security context and health probes, run.envs and
//     run.volumes; labels and annotations on the Service and on its revision
//     template alike; setServiceOptions: deploy.options.scale as revision
//     annotations (min/max "%d", target/utilization "%f"),
//     deploy.options.resources as requests/limits and limits.concurrency as
//     containerConcurrency. Nothing sets timeoutSeconds or
//     responseStartTimeoutSeconds: the cluster's config-defaults apply.
//   - pkg/deployer/common.go GenerateCommonLabels/Annotations: the labels
//     function.knative.dev/name and /runtime, boson.dev/function, then
//     deploy.labels; the annotation function.knative.dev/deployer: knative,
//     then deploy.annotations (and Dapr's when the cluster runs Dapr, which
//     is left out here).
//   - pkg/k8s/deployer.go ProcessEnvs: BUILT (the deploy time) first, then
//     run.envs in order, ADDRESS=0.0.0.0 appended unless set; a
//     {{ secret:name:key }} becomes a secretKeyRef, {{ configMap:name:key }}
//     a configMapKeyRef, {{ secret:name }} / {{ configMap:name }} without a
//     variable name an envFrom; ProcessVolumes: secret-<name>,
//     config-map-<name>, pvc-<claim> and empty-dir-<random> volumes.
//
// {{ env:NAME }} values are refused: they take the deployer's own
// environment, which this repository cannot know. The random suffix of an
// emptyDir volume's name is "0" here.
func FuncDeployService(f *FuncYAML, image string) (*servingv1.Service, error) {
	c := corev1.Container{Image: image}
	nonRoot, escalate := true, false
	c.SecurityContext = &corev1.SecurityContext{
		RunAsNonRoot:             &nonRoot,
		AllowPrivilegeEscalation: &escalate,
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	c.LivenessProbe = funcProbe(f.Deploy.HealthEndpoints.Liveness, LivenessPath)
	c.ReadinessProbe = funcProbe(f.Deploy.HealthEndpoints.Readiness, ReadinessPath)

	env, envFrom, err := funcEnvs(f.Run.Envs)
	if err != nil {
		return nil, err
	}
	c.Env, c.EnvFrom = env, envFrom
	volumes, mounts, err := funcVolumes(f.Run.Volumes)
	if err != nil {
		return nil, err
	}
	c.VolumeMounts = mounts

	labels := map[string]string{
		"function.knative.dev/name":    f.Name,
		"function.knative.dev/runtime": f.Runtime,
	}
	for _, l := range f.Deploy.Labels {
		if l.Key == nil {
			return nil, fmt.Errorf("deploy.labels: a label without key")
		}
		if l.Value != nil && strings.HasPrefix(*l.Value, "{{") {
			return nil, fmt.Errorf("deploy.labels %s: %s takes the deployer's environment", *l.Key, *l.Value)
		}
		labels[*l.Key] = derefString(l.Value)
	}
	labels["boson.dev/function"] = "true"
	labels["function.knative.dev/name"] = f.Name
	labels["function.knative.dev/runtime"] = f.Runtime
	if f.Domain != "" {
		labels["func.domain"] = f.Domain
	}
	annotations := map[string]string{"function.knative.dev/deployer": "knative"}
	for k, v := range f.Deploy.Annotations {
		annotations[k] = v
	}
	revisionAnnotations := map[string]string{}
	for k, v := range annotations {
		revisionAnnotations[k] = v
	}
	revisionLabels := map[string]string{}
	for k, v := range labels {
		revisionLabels[k] = v
	}

	svc := &servingv1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "serving.knative.dev/v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Name: f.Name, Namespace: f.Deploy.Namespace, Labels: labels, Annotations: annotations},
	}
	tmpl := &svc.Spec.Template
	tmpl.Labels, tmpl.Annotations = revisionLabels, revisionAnnotations
	tmpl.Spec.Containers = []corev1.Container{c}
	tmpl.Spec.ServiceAccountName = f.Deploy.ServiceAccountName
	tmpl.Spec.Volumes = volumes
	if err := funcOptions(tmpl, f.Deploy.Options); err != nil {
		return nil, err
	}
	return svc, nil
}

// FuncImage stands for the image a function is deployed with
// (`func deploy --image`); the registry is the operator's.
func FuncImage(name string) string { return "registry.example.com/mp3converter/" + name + ":v1" }

func derefString(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func funcProbe(path, def string) *corev1.Probe {
	if path == "" {
		path = def
	}
	return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
		HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(FunctionPort)},
	}}
}

// BuiltEnv is the variable func deploy sets to the deploy time on every
// deploy, so that each deploy rolls a new revision.
const BuiltEnv = "BUILT"

func funcEnvs(envs []FuncEnv) ([]corev1.EnvVar, []corev1.EnvFromSource, error) {
	out := []corev1.EnvVar{{Name: BuiltEnv, Value: "<deploy time>"}}
	var from []corev1.EnvFromSource
	hasAddress := false
	for _, e := range envs {
		name, value := derefString(e.Name), derefString(e.Value)
		if name == addressEnvName {
			hasAddress = true
		}
		ref, isRef := strings.CutPrefix(value, "{{")
		if !isRef {
			if e.Name == nil || e.Value == nil {
				return nil, nil, fmt.Errorf("run.envs: unsupported entry %q=%q", name, value)
			}
			out = append(out, corev1.EnvVar{Name: name, Value: value})
			continue
		}
		parts := strings.Split(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(ref), "}}")), ":")
		for i := range parts {
			parts[i] = strings.TrimSpace(parts[i])
		}
		switch {
		case e.Name == nil && len(parts) == 2 && parts[0] == "secret":
			from = append(from, corev1.EnvFromSource{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: parts[1]}}})
		case e.Name == nil && len(parts) == 2 && parts[0] == "configMap":
			from = append(from, corev1.EnvFromSource{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: parts[1]}}})
		case e.Name != nil && len(parts) == 3 && parts[0] == "secret":
			out = append(out, corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: parts[1]}, Key: parts[2]}}})
		case e.Name != nil && len(parts) == 3 && parts[0] == "configMap":
			out = append(out, corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: parts[1]}, Key: parts[2]}}})
		default:
			return nil, nil, fmt.Errorf("run.envs %s: %q is not a {{ secret:name:key }} or {{ configMap:name:key }} reference (an {{ env:NAME }} takes the deployer's own environment)", name, value)
		}
	}
	if !hasAddress {
		out = append(out, corev1.EnvVar{Name: addressEnvName, Value: "0.0.0.0"})
	}
	return out, from, nil
}

func funcVolumes(vols []FuncVolume) ([]corev1.Volume, []corev1.VolumeMount, error) {
	var volumes []corev1.Volume
	var mounts []corev1.VolumeMount
	for _, v := range vols {
		var vol corev1.Volume
		switch {
		case v.Secret != nil:
			vol = corev1.Volume{Name: "secret-" + *v.Secret, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: *v.Secret}}}
		case v.ConfigMap != nil:
			vol = corev1.Volume{Name: "config-map-" + *v.ConfigMap, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: *v.ConfigMap}}}}
		case v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName != nil:
			c := v.PersistentVolumeClaim
			vol = corev1.Volume{Name: "pvc-" + *c.ClaimName, VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{
				ClaimName: *c.ClaimName, ReadOnly: c.ReadOnly}}}
		case v.EmptyDir != nil:
			ed := &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMedium(v.EmptyDir.Medium)}
			if v.EmptyDir.SizeLimit != nil {
				q, err := resource.ParseQuantity(*v.EmptyDir.SizeLimit)
				if err != nil {
					return nil, nil, fmt.Errorf("run.volumes: sizeLimit %q: %w", *v.EmptyDir.SizeLimit, err)
				}
				ed.SizeLimit = &q
			}
			vol = corev1.Volume{Name: fmt.Sprintf("empty-dir-%d", len(volumes)), VolumeSource: corev1.VolumeSource{EmptyDir: ed}}
		default:
			continue
		}
		if v.Path == nil {
			return nil, nil, fmt.Errorf("run.volumes: volume %q has no path", vol.Name)
		}
		volumes = append(volumes, vol)
		mounts = append(mounts, corev1.VolumeMount{Name: vol.Name, MountPath: *v.Path})
	}
	return volumes, mounts, nil
}

func funcOptions(tmpl *servingv1.RevisionTemplateSpec, o FuncOptions) error {
	if s := o.Scale; s != nil {
		set := func(key string, v string, ok bool) {
			if ok {
				tmpl.Annotations[key] = v
			}
		}
		set(autoscaling.MinScaleAnnotationKey, fmt.Sprintf("%d", deref0(s.Min)), s.Min != nil)
		set(autoscaling.MaxScaleAnnotationKey, fmt.Sprintf("%d", deref0(s.Max)), s.Max != nil)
		set(autoscaling.MetricAnnotationKey, derefString(s.Metric), s.Metric != nil)
		if s.Target != nil {
			set(autoscaling.TargetAnnotationKey, fmt.Sprintf("%f", *s.Target), true)
		}
		if s.Utilization != nil {
			set(autoscaling.TargetUtilizationPercentageKey, fmt.Sprintf("%f", *s.Utilization), true)
		}
	}
	r := o.Resources
	if r == nil {
		return nil
	}
	c := &tmpl.Spec.Containers[0]
	quantities := func(l FuncResourceList) (corev1.ResourceList, error) {
		out := corev1.ResourceList{}
		for name, v := range map[corev1.ResourceName]*string{corev1.ResourceCPU: l.CPU, corev1.ResourceMemory: l.Memory} {
			if v == nil {
				continue
			}
			q, err := resource.ParseQuantity(*v)
			if err != nil {
				return nil, fmt.Errorf("deploy.options.resources %s %q: %w", name, *v, err)
			}
			out[name] = q
		}
		return out, nil
	}
	var err error
	if r.Requests != nil {
		if c.Resources.Requests, err = quantities(*r.Requests); err != nil {
			return err
		}
	}
	if r.Limits != nil {
		if c.Resources.Limits, err = quantities(FuncResourceList{CPU: r.Limits.CPU, Memory: r.Limits.Memory}); err != nil {
			return err
		}
		tmpl.Spec.ContainerConcurrency = r.Limits.Concurrency
	}
	return nil
}

// funcServiceObject wraps the Service func deploy would make of
// functions/<name>/func.yaml as an object of the manifests, with Map the
// JSON kubectl would send, so that every rule applies to it.
func funcServiceObject(file string, svc *servingv1.Service) (*model.Object, error) {
	b, err := json.Marshal(svc)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		return nil, err
	}
	delete(m, "status")
	return &model.Object{File: file, Doc: 1, APIVersion: svc.APIVersion, Kind: svc.Kind,
		Name: svc.Name, Namespace: svc.Namespace, Typed: svc, Map: m}, nil
}
