// Package validation checks the manifests in knative/ the way the cluster
// would: strict decoding into typed objects, the CRD schemas, Knative
// Serving's own defaulting and validation, the webhook rules the schemas do
// not express (Eventing, eventing-rabbitmq), cross-references between the
// objects, the timeout chain, the kustomization, and agreement with each
// function's func.yaml. Problems are knative.dev/pkg/apis FieldErrors, the
// vocabulary the cluster's webhooks answer in.
package validation

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"knative.dev/pkg/apis"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	"sigs.k8s.io/yaml"
)

// Namespace is where everything of mp3converter lives.
const Namespace = "mp3converter"

// Object is one YAML document of knative/, decoded twice: into its Go type
// (Typed, a pointer the rules read) and into plain JSON values (Map, what
// kubectl sends and the CRD schemas judge).
type Object struct {
	File       string // relative to the knative/ directory
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

// Manifests is the content of a knative/ directory.
type Manifests struct {
	Dir              string
	Kustomization    *Kustomization
	KustomizeConfigs map[string]*KustomizeConfig // by file name
	Objects          []*Object                   // resources, in file and document order
	Files            []string                    // every *.yaml/*.yml considered, relative to Dir
}

// kindInfo maps apiVersion+kind to a constructor of its Go type.
var kinds = map[string]func() any{
	"v1/Namespace":                       func() any { return &corev1.Namespace{} },
	"v1/ConfigMap":                       func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                          func() any { return &corev1.Secret{} },
	"v1/Service":                         func() any { return &corev1.Service{} },
	"apps/v1/StatefulSet":                func() any { return &appsv1.StatefulSet{} },
	"serving.knative.dev/v1/Service":     func() any { return &servingv1.Service{} },
	"eventing.knative.dev/v1/Broker":     func() any { return &Broker{} },
	"eventing.knative.dev/v1/Trigger":    func() any { return &Trigger{} },
	"sources.knative.dev/v1/SinkBinding": func() any { return &SinkBinding{} },
	"eventing.knative.dev/v1alpha1/RabbitmqBrokerConfig": func() any { return &RabbitmqBrokerConfig{} },
	"rabbitmq.com/v1beta1/RabbitmqCluster":               func() any { return &RabbitmqCluster{} },
}

// Load reads dir (knative/): kustomization.yaml, the transformer
// configurations it names, and every other *.yaml/*.yml file below dir except
// the validation module itself and secrets/. Every document must decode
// strictly into a known type; the first problems found are returned as one
// error.
func Load(dir string) (*Manifests, error) {
	m := &Manifests{Dir: dir, KustomizeConfigs: map[string]*KustomizeConfig{}}
	files, err := yamlFiles(dir)
	if err != nil {
		return nil, err
	}
	m.Files = files
	k, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return nil, err
	}
	if m.Kustomization, err = DecodeKustomization(k); err != nil {
		return nil, err
	}
	var errs []error
	for _, f := range files {
		if f == "kustomization.yaml" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return nil, err
		}
		if slices.Contains(m.Kustomization.Configurations, f) {
			c := &KustomizeConfig{}
			if err := yaml.UnmarshalStrict(b, c); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", f, err))
				continue
			}
			m.KustomizeConfigs[f] = c
			continue
		}
		objs, err := DecodeFile(f, b)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		m.Objects = append(m.Objects, objs...)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}

// DecodeKustomization decodes kustomization.yaml strictly into the subset
// of kustomize's fields the folder may use.
func DecodeKustomization(b []byte) (*Kustomization, error) {
	k := &Kustomization{}
	if err := yaml.UnmarshalStrict(b, k); err != nil {
		return nil, fmt.Errorf("kustomization.yaml: %w", err)
	}
	return k, nil
}

// yamlFiles lists the manifests below dir, relative and sorted.
func yamlFiles(dir string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel == "validation" || rel == "secrets" || (rel != "." && strings.HasPrefix(d.Name(), ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		if ext := filepath.Ext(rel); ext == ".yaml" || ext == ".yml" {
			files = append(files, rel)
		}
		return nil
	})
	slices.Sort(files)
	return files, err
}

// DecodeFile splits a multi-document YAML file and decodes every non-empty
// document with DecodeDocument.
func DecodeFile(name string, b []byte) ([]*Object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var objs []*Object
	var errs []error
	for n := 1; ; n++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if isEmptyDocument(doc) {
			continue
		}
		o, err := DecodeDocument(doc)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s#%d: %w", name, n, err))
			continue
		}
		o.File, o.Doc = name, n
		objs = append(objs, o)
	}
	return objs, errors.Join(errs...)
}

func isEmptyDocument(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") && line != "---" {
			return false
		}
	}
	return true
}

// DecodeDocument decodes one YAML document strictly into the Go type of its
// apiVersion and kind: unknown fields, duplicate keys and unknown kinds are
// errors (kubectl's default --validate=strict rejects the first two too).
func DecodeDocument(doc []byte) (*Object, error) {
	var head struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return nil, err
	}
	newTyped, ok := kinds[head.APIVersion+"/"+head.Kind]
	if !ok {
		return nil, fmt.Errorf("unknown kind %q of apiVersion %q: knative/ holds only %s", head.Kind, head.APIVersion, knownKinds())
	}
	if head.Metadata.Name == "" {
		return nil, fmt.Errorf("%s without metadata.name", head.Kind)
	}
	typed := newTyped()
	if err := yaml.UnmarshalStrict(doc, typed); err != nil {
		return nil, fmt.Errorf("%s %s: %w", head.Kind, head.Metadata.Name, err)
	}
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(j))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		return nil, err
	}
	return &Object{
		APIVersion: head.APIVersion, Kind: head.Kind,
		Name: head.Metadata.Name, Namespace: head.Metadata.Namespace,
		Typed: typed, Map: m,
	}, nil
}

func knownKinds() string {
	var k []string
	for key := range kinds {
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

// objectOf returns the Object holding typed.
func (m *Manifests) objectOf(typed any) *Object {
	for _, o := range m.Objects {
		if o.Typed == typed {
			return o
		}
	}
	return nil
}

// via places an object's errors under "<kinds>[<name>]" with its file named
// in the details, like the local broker's messages.
func via(o *Object, errs *apis.FieldError) *apis.FieldError {
	if errs == nil || o == nil {
		return errs
	}
	return errs.ViaFieldKey(listName(o), o.Name)
}

// listName is the plural used in error paths: "triggers", "ksvc" for
// Knative Services (to tell them from core Services), ...
func listName(o *Object) string {
	if strings.HasPrefix(o.APIVersion, "serving.knative.dev/") {
		return "ksvc"
	}
	return strings.ToLower(o.Kind) + "s"
}

// ServiceByName returns the Knative Service called name, or nil.
func (m *Manifests) ServiceByName(name string) *servingv1.Service {
	if o := m.Find("serving.knative.dev/v1", "Service", name); o != nil {
		return o.Typed.(*servingv1.Service)
	}
	return nil
}

// sortedKeys returns a map's keys in order, for deterministic messages.
func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

// withDetails adds an explanation to a FieldError.
func withDetails(e *apis.FieldError, details string) *apis.FieldError {
	e.Details = details
	return e
}
