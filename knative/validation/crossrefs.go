package validation

import (
	"mp3converter/knative/model"

	"bufio"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"knative.dev/pkg/apis"
	duckv1 "knative.dev/pkg/apis/duck/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

// EventTypes reads the event types of the contracts in eventsDir: the title
// of every *.schema.json ("dev.mp3converter.video.uploaded", ...).
func EventTypes(eventsDir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(eventsDir, "*.schema.json"))
	if err != nil {
		return nil, err
	}
	var types []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var s struct {
			Title string `json:"title"`
		}
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		if !strings.HasPrefix(s.Title, "dev.mp3converter.") {
			return nil, fmt.Errorf("%s: title %q is not an event type dev.mp3converter.*", f, s.Title)
		}
		types = append(types, s.Title)
	}
	if len(types) == 0 {
		return nil, fmt.Errorf("no *.schema.json in %s", eventsDir)
	}
	slices.Sort(types)
	return types, nil
}

// CheckReferences checks that everything an object names exists in the
// folder: a Trigger's broker, subscriber and dead-letter sink; the Broker's
// RabbitmqBrokerConfig and its RabbitmqCluster; the SinkBinding's subject
// and sink; every Secret and ConfigMap key a container reads; every
// StatefulSet's headless Service. Every event type of events/ has a Trigger
// and every Trigger filters on a known type. All objects are in Namespace.
func CheckReferences(m *Manifests, eventTypes []string) *apis.FieldError {
	var errs *apis.FieldError
	for _, o := range m.Objects {
		if o.Namespace != "" && o.Namespace != Namespace && o.Kind != "Namespace" {
			errs = errs.Also(o.Via(apis.ErrInvalidValue(o.Namespace, "metadata.namespace", "must be "+Namespace)))
		}
		switch t := o.Typed.(type) {
		case *model.Trigger:
			errs = errs.Also(o.Via(m.triggerRefs(t, eventTypes)))
		case *model.Broker:
			if c := t.Spec.Config; c != nil && m.Find(c.APIVersion, c.Kind, c.Name) == nil {
				errs = errs.Also(o.Via(notFound(c.APIVersion, c.Kind, c.Name, "spec.config")))
			}
			if d := t.Spec.Delivery; d != nil && d.DeadLetterSink != nil {
				errs = errs.Also(o.Via(m.destinationRef(*d.DeadLetterSink, "spec.delivery.deadLetterSink")))
			}
		case *model.RabbitmqBrokerConfig:
			if r := t.Spec.RabbitmqClusterReference; r != nil && r.Name != "" {
				if m.Find("rabbitmq.com/v1beta1", "RabbitmqCluster", r.Name) == nil {
					errs = errs.Also(o.Via(notFound("rabbitmq.com/v1beta1", "RabbitmqCluster", r.Name, "spec.rabbitmqClusterReference.name")))
				}
				if r.Namespace != "" && r.Namespace != Namespace {
					errs = errs.Also(o.Via(apis.ErrInvalidValue(r.Namespace, "spec.rabbitmqClusterReference.namespace", "the RabbitmqCluster lives in "+Namespace)))
				}
			}
		case *model.SinkBinding:
			s := t.Spec.Subject
			if s.Name != "" && m.Find(s.APIVersion, s.Kind, s.Name) == nil {
				errs = errs.Also(o.Via(notFound(s.APIVersion, s.Kind, s.Name, "spec.subject")))
			}
			errs = errs.Also(o.Via(m.destinationRef(t.Spec.Sink, "spec.sink")))
		case *servingv1.Service:
			errs = errs.Also(o.Via(m.podRefs(&t.Spec.Template.Spec.PodSpec, "spec.template.spec")))
		case *appsv1.StatefulSet:
			errs = errs.Also(o.Via(m.podRefs(&t.Spec.Template.Spec, "spec.template.spec")))
			errs = errs.Also(o.Via(m.statefulSetService(t)))
		}
	}

	covered := map[string]bool{}
	for _, t := range model.Of[*model.Trigger](&m.Manifests) {
		if t.Spec.Filter != nil {
			covered[t.Spec.Filter.Attributes["type"]] = true
		}
	}
	for _, typ := range eventTypes {
		if !covered[typ] {
			errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("no Trigger delivers event type %s (events/): its events would be dropped", typ), "triggers"))
		}
	}
	errs = errs.Also(m.configMapKeysUsed())
	errs = errs.Also(m.validateURL())
	return errs
}

func (m *Manifests) triggerRefs(t *model.Trigger, eventTypes []string) *apis.FieldError {
	var errs *apis.FieldError
	if t.Spec.Broker != "" && m.Find("eventing.knative.dev/v1", "Broker", t.Spec.Broker) == nil {
		errs = errs.Also(notFound("eventing.knative.dev/v1", "Broker", t.Spec.Broker, "spec.broker"))
	}
	errs = errs.Also(m.destinationRef(t.Spec.Subscriber, "spec.subscriber"))
	if d := t.Spec.Delivery; d != nil && d.DeadLetterSink != nil {
		errs = errs.Also(m.destinationRef(*d.DeadLetterSink, "spec.delivery.deadLetterSink"))
	}
	if t.Spec.Filter == nil || t.Spec.Filter.Attributes["type"] == "" {
		errs = errs.Also(withDetails(apis.ErrMissingField("spec.filter.attributes.type"),
			"a Trigger without a type filter delivers every event, replies included"))
	} else if typ := t.Spec.Filter.Attributes["type"]; !slices.Contains(eventTypes, typ) {
		errs = errs.Also(apis.ErrInvalidValue(typ, "spec.filter.attributes.type", "not an event type of events/: "+strings.Join(eventTypes, ", ")))
	}
	return errs
}

// destinationRef checks that a Destination's ref names an object of the
// folder (a URI is out of the folder's reach and left alone).
func (m *Manifests) destinationRef(d duckv1.Destination, path string) *apis.FieldError {
	r := d.Ref
	if r == nil {
		return nil
	}
	if m.Find(r.APIVersion, r.Kind, r.Name) == nil {
		return notFound(r.APIVersion, r.Kind, r.Name, path+".ref")
	}
	if r.Namespace != "" && r.Namespace != Namespace {
		return apis.ErrInvalidValue(r.Namespace, path+".ref.namespace", "must be "+Namespace)
	}
	return nil
}

func notFound(apiVersion, kind, name, path string) *apis.FieldError {
	return apis.ErrInvalidValue(name, path, fmt.Sprintf("no %s %s named %q in knative/", apiVersion, kind, name))
}

// podRefs checks the Secret and ConfigMap keys a pod's containers read:
// ConfigMaps must be in the folder with the key; Secrets must come from a
// secretGenerator whose example files hold the key.
func (m *Manifests) podRefs(spec *corev1.PodSpec, path string) *apis.FieldError {
	var errs *apis.FieldError
	for ci := range spec.Containers {
		c := &spec.Containers[ci]
		for ei, e := range c.Env {
			if e.ValueFrom == nil {
				continue
			}
			p := fmt.Sprintf("%s.containers[%d].env[%d].valueFrom", path, ci, ei)
			if r := e.ValueFrom.SecretKeyRef; r != nil {
				keys, err := m.SecretKeys(r.Name)
				switch {
				case err != nil:
					errs = errs.Also(apis.ErrInvalidValue(r.Name, p+".secretKeyRef.name", err.Error()))
				case !slices.Contains(keys, r.Key):
					errs = errs.Also(apis.ErrInvalidValue(r.Key, p+".secretKeyRef.key", fmt.Sprintf("Secret %s has no such key (it has %s)", r.Name, strings.Join(keys, ", "))))
				}
			}
			if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
				o := m.Find("v1", "ConfigMap", r.Name)
				if o == nil {
					errs = errs.Also(notFound("v1", "ConfigMap", r.Name, p+".configMapKeyRef.name"))
				} else if _, ok := o.Typed.(*corev1.ConfigMap).Data[r.Key]; !ok {
					errs = errs.Also(apis.ErrInvalidValue(r.Key, p+".configMapKeyRef.key", "ConfigMap "+r.Name+" has no such key"))
				}
			}
		}
		if len(c.EnvFrom) > 0 {
			errs = errs.Also(withDetails(apis.ErrDisallowedFields(fmt.Sprintf("%s.containers[%d].envFrom", path, ci)),
				"name each variable (env with valueFrom) so that every key can be checked"))
		}
	}
	for vi, v := range spec.Volumes {
		if v.Secret != nil {
			if _, err := m.SecretKeys(v.Secret.SecretName); err != nil {
				errs = errs.Also(apis.ErrInvalidValue(v.Secret.SecretName, fmt.Sprintf("%s.volumes[%d].secret.secretName", path, vi), err.Error()))
			}
		}
	}
	return errs
}

// SecretKeys returns the keys of a generated Secret: the variables of its
// env files' committed examples (<file>.example) and the keys of its files.
func (m *Manifests) SecretKeys(name string) ([]string, error) {
	for _, g := range m.Kustomization.SecretGenerator {
		if g.Name != name {
			continue
		}
		var keys []string
		for _, env := range g.Envs {
			k, err := envFileKeys(filepath.Join(m.Dir, env+".example"))
			if err != nil {
				return nil, err
			}
			keys = append(keys, k...)
		}
		for _, f := range g.Files {
			key, _, ok := strings.Cut(f, "=")
			if !ok {
				key = filepath.Base(f)
			}
			keys = append(keys, key)
		}
		for _, l := range g.Literals {
			key, _, _ := strings.Cut(l, "=")
			keys = append(keys, key)
		}
		slices.Sort(keys)
		return keys, nil
	}
	return nil, fmt.Errorf("no secretGenerator named %s in kustomization.yaml", name)
}

// envFileKeys reads the variable names of a kustomize env file.
func envFileKeys(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var keys []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, _, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s: line %q is not KEY=VALUE", path, line)
		}
		keys = append(keys, strings.TrimSpace(k))
	}
	return keys, s.Err()
}

// configMapKeysUsed reports ConfigMap keys no container reads: dead
// configuration misleads whoever edits it.
func (m *Manifests) configMapKeysUsed() *apis.FieldError {
	used := map[string]bool{}
	for _, o := range m.Objects {
		var spec *corev1.PodSpec
		switch t := o.Typed.(type) {
		case *servingv1.Service:
			spec = &t.Spec.Template.Spec.PodSpec
		case *appsv1.StatefulSet:
			spec = &t.Spec.Template.Spec
		default:
			continue
		}
		for _, c := range spec.Containers {
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
					used[e.ValueFrom.ConfigMapKeyRef.Name+"/"+e.ValueFrom.ConfigMapKeyRef.Key] = true
				}
			}
		}
		// A ConfigMap mounted as a volume is read as files: all its keys, or the items named.
		for _, v := range spec.Volumes {
			if v.ConfigMap == nil {
				continue
			}
			if len(v.ConfigMap.Items) == 0 {
				used[v.ConfigMap.Name+"/*"] = true
			}
			for _, it := range v.ConfigMap.Items {
				used[v.ConfigMap.Name+"/"+it.Key] = true
			}
		}
	}
	var errs *apis.FieldError
	for _, o := range m.Objects {
		cm, ok := o.Typed.(*corev1.ConfigMap)
		if !ok {
			continue
		}
		for _, k := range sortedKeys(cm.Data) {
			if !used[cm.Name+"/"+k] && !used[cm.Name+"/*"] {
				errs = errs.Also(o.Via(apis.ErrGeneric("no container reads this key", "data."+k)))
			}
		}
	}
	return errs
}

// validateURL checks that VALIDATE_URL names the validate Service's
// cluster-local address and that validate is cluster-local.
func (m *Manifests) validateURL() *apis.FieldError {
	o := m.Find("v1", "ConfigMap", "mp3converter-config")
	if o == nil {
		return notFound("v1", "ConfigMap", "mp3converter-config", "configmaps")
	}
	raw := o.Typed.(*corev1.ConfigMap).Data["VALIDATE_URL"]
	u, err := url.Parse(raw)
	want := "validate." + Namespace + ".svc.cluster.local"
	if err != nil || u.Scheme != "http" || u.Host != want || u.Path != "/validate" {
		return o.Via(apis.ErrInvalidValue(raw, "data.VALIDATE_URL", "must be http://"+want+"/validate"))
	}
	if v := m.ServiceByName("validate"); v != nil && v.Labels["networking.knative.dev/visibility"] != "cluster-local" {
		return m.ObjectOf(v).Via(apis.ErrGeneric("validate must be cluster-local (label networking.knative.dev/visibility: cluster-local): tokens are checked inside the cluster only", "metadata.labels"))
	}
	return nil
}

// statefulSetService checks that a StatefulSet's serviceName is a headless
// Service of the folder whose selector matches the pods.
func (m *Manifests) statefulSetService(s *appsv1.StatefulSet) *apis.FieldError {
	o := m.Find("v1", "Service", s.Spec.ServiceName)
	if o == nil {
		return notFound("v1", "Service", s.Spec.ServiceName, "spec.serviceName")
	}
	svc := o.Typed.(*corev1.Service)
	var errs *apis.FieldError
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		errs = errs.Also(apis.ErrInvalidValue(svc.Spec.ClusterIP, "spec.serviceName", "Service "+svc.Name+" must be headless (clusterIP: None)"))
	}
	if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(s.Spec.Template.Labels)) {
		errs = errs.Also(apis.ErrGeneric("Service "+svc.Name+"'s selector does not match the pod labels", "spec.serviceName"))
	}
	if len(s.Spec.VolumeClaimTemplates) == 0 {
		errs = errs.Also(apis.ErrMissingField("spec.volumeClaimTemplates"))
	}
	for _, c := range s.Spec.Template.Spec.Containers {
		if i := strings.LastIndex(c.Image, ":"); i < 0 || strings.HasSuffix(c.Image, ":latest") || i < strings.LastIndex(c.Image, "/") {
			errs = errs.Also(apis.ErrInvalidValue(c.Image, "spec.template.spec.containers.image", "pin a version tag"))
		}
	}
	return errs
}
