package validation

import (
	"mp3converter/knative/model"

	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"knative.dev/pkg/apis"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

// Reference paths of a Knative Service that kustomize must rewrite when a
// generated Secret or ConfigMap gets its hashed name.
var knativeRefPaths = map[string]string{
	"Secret/spec/template/spec/containers/env/valueFrom/secretKeyRef/name":       "secretKeyRef",
	"ConfigMap/spec/template/spec/containers/env/valueFrom/configMapKeyRef/name": "configMapKeyRef",
	"Secret/spec/template/spec/volumes/secret/secretName":                        "secret volume",
}

// CheckKustomization checks kustomization.yaml against the folder: it lists
// every manifest exactly once and nothing else; it sets the namespace; every
// generated Secret reads git-ignored files below secrets/ that have committed
// *.example twins; every function image has an images: entry; and the
// transformer configuration makes kustomize rewrite the Secret and ConfigMap
// names the Knative Services use.
func CheckKustomization(m *Manifests) *apis.FieldError {
	k := m.Kustomization
	var errs *apis.FieldError
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		errs = errs.Also(apis.ErrInvalidValue(k.APIVersion+"/"+k.Kind, "apiVersion", "must be kustomize.config.k8s.io/v1beta1 Kustomization"))
	}
	if k.Namespace != Namespace {
		errs = errs.Also(apis.ErrInvalidValue(k.Namespace, "namespace", "must be "+Namespace))
	}

	want := map[string]bool{}
	for _, f := range m.Files {
		if f != "kustomization.yaml" && !slices.Contains(k.Configurations, f) {
			want[f] = true
		}
	}
	seen := map[string]bool{}
	for i, r := range k.Resources {
		switch {
		case seen[r]:
			errs = errs.Also(withDetails(apis.ErrInvalidArrayValue(r, "resources", i), "listed twice"))
		case !want[r]:
			errs = errs.Also(apis.ErrInvalidArrayValue(r, "resources", i))
		}
		seen[r] = true
	}
	for _, f := range sortedKeys(want) {
		if !seen[f] {
			errs = errs.Also(apis.ErrGeneric(f+" is not listed: kubectl apply -k would leave it out", "resources"))
		}
	}
	for i, c := range k.Configurations {
		if _, ok := m.KustomizeConfigs[c]; !ok {
			errs = errs.Also(apis.ErrInvalidArrayValue(c, "configurations", i))
		}
	}

	names := map[string]bool{}
	for i, g := range k.SecretGenerator {
		p := fmt.Sprintf("secretGenerator[%d]", i)
		if names[g.Name] {
			errs = errs.Also(apis.ErrGeneric("duplicate name "+g.Name, p+".name"))
		}
		names[g.Name] = true
		if len(g.Literals) > 0 {
			errs = errs.Also(withDetails(apis.ErrDisallowedFields(p+".literals"), "secrets belong in git-ignored files, not in kustomization.yaml"))
		}
		var sources []string
		sources = append(sources, g.Envs...)
		for _, f := range g.Files {
			_, path, ok := strings.Cut(f, "=")
			if !ok {
				path = f
			}
			sources = append(sources, path)
		}
		for _, s := range sources {
			if !strings.HasPrefix(s, "secrets/") {
				errs = errs.Also(apis.ErrInvalidValue(s, p, "secret sources live in secrets/ (git-ignored)"))
			}
			if _, err := os.Stat(filepath.Join(m.Dir, s+".example")); err != nil {
				errs = errs.Also(apis.ErrInvalidValue(s, p, "has no committed example "+s+".example"))
			}
		}
	}

	images := map[string]bool{}
	for i, im := range k.Images {
		if images[im.Name] {
			errs = errs.Also(apis.ErrGeneric("duplicate image "+im.Name, fmt.Sprintf("images[%d]", i)))
		}
		images[im.Name] = true
	}
	used := map[string]bool{}
	for _, svc := range model.Of[*servingv1.Service](&m.Manifests) {
		for _, c := range svc.Spec.Template.Spec.Containers {
			n := imageName(c.Image)
			used[n] = true
			if !images[n] {
				errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("image %s of %s has no images: entry, so it cannot be pointed at a registry", n, svc.Name), "images"))
			}
		}
	}
	for _, n := range sortedKeys(images) {
		if !used[n] {
			errs = errs.Also(apis.ErrGeneric("images: entry "+n+" matches no container", "images"))
		}
	}
	for _, o := range m.Objects {
		if ns, ok := o.Typed.(*corev1.Namespace); ok && ns.Name != Namespace {
			errs = errs.Also(o.Via(apis.ErrInvalidValue(ns.Name, "metadata.name", "must be "+Namespace)))
		}
	}
	return errs.Also(m.nameReferencesCover())
}

// nameReferencesCover checks that kustomize's nameReference configuration
// covers every way a Knative Service of the folder refers to a Secret or
// ConfigMap; otherwise the generated (hash-suffixed) names would not reach
// the Services and their pods would not start.
func (m *Manifests) nameReferencesCover() *apis.FieldError {
	covered := map[string]bool{}
	for _, c := range m.KustomizeConfigs {
		for _, nr := range c.NameReference {
			for _, fs := range nr.FieldSpecs {
				if fs.Group == "serving.knative.dev" && fs.Kind == "Service" {
					covered[nr.Kind+"/"+fs.Path] = true
				}
			}
		}
	}
	need := map[string]bool{}
	for _, svc := range model.Of[*servingv1.Service](&m.Manifests) {
		spec := svc.Spec.Template.Spec
		for _, c := range spec.Containers {
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					need["Secret/spec/template/spec/containers/env/valueFrom/secretKeyRef/name"] = true
				}
				if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
					need["ConfigMap/spec/template/spec/containers/env/valueFrom/configMapKeyRef/name"] = true
				}
			}
		}
		for _, v := range spec.Volumes {
			if v.Secret != nil {
				need["Secret/spec/template/spec/volumes/secret/secretName"] = true
			}
		}
	}
	var errs *apis.FieldError
	for _, p := range sortedKeys(need) {
		if !covered[p] {
			kind, path, _ := strings.Cut(p, "/")
			errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("no nameReference for %s in serving.knative.dev Service at %s: the Services would keep the unhashed %s name (%s)", kind, path, kind, knativeRefPaths[p]), "configurations"))
		}
	}
	return errs
}
