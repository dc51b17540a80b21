// Package model is the one Go model of the manifests in knative/: their
// types, the loader that decodes them strictly, the ISO-8601 durations of
// delivery specs, and the admission rules of Knative Eventing and
// eventing-rabbitmq that the CRD schemas do not express. The local broker
// (internal/local/broker) routes by it, and knative/validation checks the
// folder with it, so the two read the files the same way.
//
// Problems are knative.dev/pkg/apis FieldErrors, the vocabulary the
// cluster's webhooks answer in, with paths like
// "triggers[convert].spec.delivery.timeout".
package model

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"knative.dev/pkg/apis"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	"sigs.k8s.io/yaml"
)

// Kinds maps "apiVersion/kind" to a constructor of the Go type of every
// kind knative/ may hold.
var Kinds = map[string]func() any{
	"v1/Namespace":                                       func() any { return &corev1.Namespace{} },
	"v1/ConfigMap":                                       func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                                          func() any { return &corev1.Secret{} },
	"v1/Service":                                         func() any { return &corev1.Service{} },
	"apps/v1/StatefulSet":                                func() any { return &appsv1.StatefulSet{} },
	"networking.k8s.io/v1/NetworkPolicy":                 func() any { return &networkingv1.NetworkPolicy{} },
	"serving.knative.dev/v1/Service":                     func() any { return &servingv1.Service{} },
	"eventing.knative.dev/v1/Broker":                     func() any { return &Broker{} },
	"eventing.knative.dev/v1/Trigger":                    func() any { return &Trigger{} },
	"sources.knative.dev/v1/SinkBinding":                 func() any { return &SinkBinding{} },
	"eventing.knative.dev/v1alpha1/RabbitmqBrokerConfig": func() any { return &RabbitmqBrokerConfig{} },
	"rabbitmq.com/v1beta1/RabbitmqCluster":               func() any { return &RabbitmqCluster{} },
}

// Object is one YAML document, decoded twice: into its Go type (Typed, a
// pointer the rules read) and into plain JSON values (Map, what kubectl
// sends and the CRD schemas judge).
type Object struct {
	File       string // as given to DecodeFile
	Doc        int    // 1-based document index in File
	APIVersion string
	Kind       string
	Name       string
	Namespace  string
	Typed      any
	Map        map[string]any
}

// String names the object for messages: "Trigger convert (triggers.yaml#2)".
func (o *Object) String() string {
	return fmt.Sprintf("%s %s (%s#%d)", o.Kind, o.Name, o.File, o.Doc)
}

// ListName is the plural used in error paths: "triggers", "ksvc" for
// Knative Services (to tell them from core Services), ...
func (o *Object) ListName() string {
	return listName(o.APIVersion, o.Kind)
}

func listName(apiVersion, kind string) string {
	if strings.HasPrefix(apiVersion, "serving.knative.dev/") {
		return "ksvc"
	}
	return strings.ToLower(kind) + "s"
}

// Via places an object's errors under "<kinds>[<name>]".
func (o *Object) Via(errs *apis.FieldError) *apis.FieldError {
	if errs == nil || o == nil {
		return errs
	}
	return errs.ViaFieldKey(o.ListName(), o.Name)
}

// Manifests is a set of decoded objects, in file and document order.
type Manifests struct {
	Objects []*Object
}

// A Decoder turns YAML files into Objects.
type Decoder struct {
	// SkipUnknown passes over documents whose kind is not in Kinds (the
	// local broker reads only what it routes by); a kind of Kinds under
	// another apiVersion is refused all the same. Without it every
	// document must be of a kind in Kinds.
	SkipUnknown bool
}

// DecodeFile splits a multi-document YAML file and decodes every non-empty
// document strictly into the Go type of its apiVersion and kind: unknown
// fields, duplicate keys and unknown kinds are errors (kubectl's default
// --validate=strict rejects the first two too). Text that is not YAML is a
// plain error naming the file; an object that does not fit its type is an
// *apis.FieldError at "<kinds>[<name>]" whose details name file#document.
func (d Decoder) DecodeFile(name string, b []byte) ([]*Object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var objs []*Object
	var errs *apis.FieldError
	for n := 1; ; n++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if IsEmptyDocument(doc) {
			continue
		}
		o, fe, err := d.decodeDocument(doc)
		if err != nil {
			return nil, fmt.Errorf("%s#%d: %w", name, n, err)
		}
		if fe != nil {
			fe.Details = strings.TrimSpace(fmt.Sprintf("%s#%d: %s", name, n, fe.Details))
			errs = errs.Also(fe)
			continue
		}
		if o != nil {
			o.File, o.Doc = name, n
			objs = append(objs, o)
		}
	}
	if errs != nil {
		return objs, errs
	}
	return objs, nil
}

// IsEmptyDocument reports whether a YAML document holds only comments and separators.
func IsEmptyDocument(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") && line != "---" {
			return false
		}
	}
	return true
}

// decodeDocument returns the object, or a FieldError when the document does
// not fit its kind, or an error when it is not YAML at all. A skipped
// document returns nothing.
func (d Decoder) decodeDocument(doc []byte) (*Object, *apis.FieldError, error) {
	var head struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return nil, nil, err
	}
	list, key := listName(head.APIVersion, head.Kind), head.Metadata.Name
	newTyped, ok := Kinds[head.APIVersion+"/"+head.Kind]
	if !ok {
		if want := knownVersion(head.APIVersion, head.Kind); want != "" {
			return nil, apis.ErrInvalidValue(head.APIVersion, "apiVersion", "expected "+want).ViaFieldKey(list, key), nil
		}
		if d.SkipUnknown {
			return nil, nil, nil
		}
		return nil, (&apis.FieldError{
			Message: fmt.Sprintf("unknown kind %q of apiVersion %q", head.Kind, head.APIVersion),
			Paths:   []string{apis.CurrentField},
			Details: "knative/ holds only " + knownKinds(),
		}).ViaFieldKey(list, key), nil
	}
	if key == "" {
		return nil, apis.ErrMissingField("metadata.name").ViaFieldKey(list, key), nil
	}
	typed := newTyped()
	if err := yaml.UnmarshalStrict(doc, typed); err != nil {
		return nil, (&apis.FieldError{
			Message: "does not match the schema", Paths: []string{apis.CurrentField},
			Details: fmt.Sprintf("%s %s: %v", head.Kind, key, err),
		}).ViaFieldKey(list, key), nil
	}
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, nil, err
	}
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return nil, nil, err
	}
	return &Object{
		APIVersion: head.APIVersion, Kind: head.Kind,
		Name: key, Namespace: head.Metadata.Namespace,
		Typed: typed, Map: m,
	}, nil, nil
}

// knownVersion is the apiVersion Kinds knows kind under in the group of
// apiVersion ("" when none).
func knownVersion(apiVersion, kind string) string {
	group, _, _ := strings.Cut(apiVersion, "/")
	if !strings.Contains(apiVersion, "/") {
		group = ""
	}
	for k := range Kinds {
		av, kd, _ := cutLast(k, "/")
		g, _, _ := strings.Cut(av, "/")
		if !strings.Contains(av, "/") {
			g = ""
		}
		if kd == kind && g == group {
			return av
		}
	}
	return ""
}

func cutLast(s, sep string) (string, string, bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

func knownKinds() string {
	k := make([]string, 0, len(Kinds))
	for key := range Kinds {
		k = append(k, key)
	}
	slices.Sort(k)
	return strings.Join(k, ", ")
}

// Of returns the typed objects of type T, in file order.
func Of[T any](m *Manifests) []T {
	var out []T
	for _, o := range m.Objects {
		if t, ok := o.Typed.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

// Find returns the object of the given apiVersion, kind and name, or nil.
// An empty apiVersion matches any version of the kind.
func (m *Manifests) Find(apiVersion, kind, name string) *Object {
	for _, o := range m.Objects {
		if o.Kind == kind && o.Name == name && (apiVersion == "" || o.APIVersion == apiVersion) {
			return o
		}
	}
	return nil
}

// ObjectOf returns the Object holding typed, or nil.
func (m *Manifests) ObjectOf(typed any) *Object {
	for _, o := range m.Objects {
		if o.Typed == typed {
			return o
		}
	}
	return nil
}

// Brokers are the Brokers of m.
func (m *Manifests) Brokers() []*Broker { return Of[*Broker](m) }

// Triggers are the Triggers of m.
func (m *Manifests) Triggers() []*Trigger { return Of[*Trigger](m) }

// Broker returns the Broker namespace/name, or nil.
func (m *Manifests) Broker(namespace, name string) *Broker {
	for _, b := range m.Brokers() {
		if b.Name == name && NamespaceOf(&b.ObjectMeta) == namespace {
			return b
		}
	}
	return nil
}

// BrokerConfig returns the RabbitmqBrokerConfig namespace/name, or nil.
func (m *Manifests) BrokerConfig(namespace, name string) *RabbitmqBrokerConfig {
	for _, c := range Of[*RabbitmqBrokerConfig](m) {
		if c.Name == name && NamespaceOf(&c.ObjectMeta) == namespace {
			return c
		}
	}
	return nil
}

// EffectiveDelivery is the delivery a Trigger gets: its own, else its
// Broker's (the whole spec, not field by field, as Knative does). Nil when
// neither has one.
func (m *Manifests) EffectiveDelivery(t *Trigger) *DeliverySpec {
	if t.Spec.Delivery != nil {
		return t.Spec.Delivery
	}
	if b := m.Broker(NamespaceOf(&t.ObjectMeta), t.Spec.Broker); b != nil {
		return b.Spec.Delivery
	}
	return nil
}

// DefaultNamespace is where an object without metadata.namespace lands
// when applied without -n (kustomize's namespace: sets it for knative/).
const DefaultNamespace = "default"

// NamespaceOf is the namespace of an object's metadata, "default" when unset.
func NamespaceOf(meta *metav1.ObjectMeta) string {
	if meta.Namespace == "" {
		return DefaultNamespace
	}
	return meta.Namespace
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
