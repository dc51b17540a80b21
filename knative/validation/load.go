// Package validation checks the manifests in knative/ the way the cluster
// would: strict decoding into typed objects, the CRD schemas, Knative
// Serving's own defaulting and validation, the webhook rules the schemas do
// not express (Eventing, eventing-rabbitmq), cross-references between the
// objects, the timeout chain, the kustomization, and agreement with each
// function's func.yaml. Problems are knative.dev/pkg/apis FieldErrors, the
// vocabulary the cluster's webhooks answer in.
package validation

import (
	"mp3converter/knative/model"

	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"knative.dev/pkg/apis"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	"sigs.k8s.io/yaml"
)

// Namespace is where everything of mp3converter lives.
const Namespace = "mp3converter"

// Manifests is the content of a knative/ directory: its objects (the
// embedded model.Manifests, in file and document order), the kustomization
// and its transformer configurations.
type Manifests struct {
	model.Manifests
	Dir              string
	Kustomization    *Kustomization
	KustomizeConfigs map[string]*KustomizeConfig // by file name
	Files            []string                    // every *.yaml/*.yml considered, relative to Dir
	// ServingDefaults is Knative Serving's config-defaults data the cluster
	// runs with (ServingDefaultsFile; nil: Knative's own defaults).
	ServingDefaults map[string]string
}

// Load reads dir (knative/): kustomization.yaml, the transformer
// configurations it names, every other *.yaml/*.yml file below dir except
// the Go packages, secrets/ and cluster/ (whose config-defaults become
// ServingDefaults), and, beside them, the Knative Service func deploy makes
// of each ../functions/<name>/func.yaml. Every document must decode
// strictly into a known type; the first problems found are returned as one
// error.
func Load(dir string) (*Manifests, error) {
	m := &Manifests{Dir: dir, KustomizeConfigs: map[string]*KustomizeConfig{}}
	files, err := yamlFiles(dir)
	if err != nil {
		return nil, err
	}
	m.Files = files
	if m.ServingDefaults, err = LoadServingDefaults(dir); err != nil {
		return nil, err
	}
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
		objs, err := (model.Decoder{}).DecodeFile(f, b)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		m.Objects = append(m.Objects, objs...)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	services, err := funcDeployServices(RepoFrom(filepath.Dir(filepath.Clean(dir))).Functions)
	if err != nil {
		return nil, err
	}
	m.Objects = append(m.Objects, services...)
	return m, nil
}

// funcDeployServices are the Knative Services `func deploy` makes of every
// functions/<name>/func.yaml (FuncDeployService), which the rules check
// beside the platform: they are what runs on the cluster.
func funcDeployServices(functionsDir string) ([]*model.Object, error) {
	dirs, err := os.ReadDir(functionsDir)
	if err != nil {
		return nil, err
	}
	var objs []*model.Object
	for _, d := range dirs {
		file := filepath.Join(functionsDir, d.Name(), "func.yaml")
		if _, err := os.Stat(file); err != nil {
			continue
		}
		f, err := LoadFuncYAML(file)
		if err != nil {
			return nil, err
		}
		svc, err := FuncDeployService(f, FuncImage(f.Name))
		if err != nil {
			return nil, fmt.Errorf("%s: func deploy would fail: %w", file, err)
		}
		o, err := funcServiceObject("functions/"+d.Name()+"/func.yaml", svc)
		if err != nil {
			return nil, err
		}
		objs = append(objs, o)
	}
	return objs, nil
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
			if rel == "validation" || rel == "model" || rel == "secrets" || rel == ClusterDir || (rel != "." && strings.HasPrefix(d.Name(), ".")) {
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
