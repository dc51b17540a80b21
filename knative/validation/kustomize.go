package validation

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"knative.dev/pkg/apis"
)

// CheckKustomization checks kustomization.yaml against the folder: it lists
// every manifest exactly once and nothing else; it sets the namespace; every
// generated Secret reads git-ignored files below secrets/ that have committed
// *.example twins under the name they are read by (no hash suffix: the
// func.yaml files name them, and func deploy refuses a missing Secret); and
// no images: (the function images are func deploy's, given with --image).
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

	if len(k.SecretGenerator) > 0 && (k.GeneratorOptions == nil || !k.GeneratorOptions.DisableNameSuffixHash) {
		errs = errs.Also(withDetails(apis.ErrMissingField("generatorOptions.disableNameSuffixHash"),
			"the generated Secrets would get a content hash in their names, but the func.yaml files read them by name and func deploy refuses a missing Secret"))
	}
	for i, im := range k.Images {
		errs = errs.Also(withDetails(apis.ErrInvalidArrayValue(im.Name, "images", i),
			"the kustomization holds no function Service: func deploy sets the function images (--image)"))
	}
	for _, o := range m.Objects {
		if ns, ok := o.Typed.(*corev1.Namespace); ok && ns.Name != Namespace {
			errs = errs.Also(o.Via(apis.ErrInvalidValue(ns.Name, "metadata.name", "must be "+Namespace)))
		}
	}
	return errs
}
