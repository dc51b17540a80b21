package validation

import (
	"path/filepath"

	"knative.dev/pkg/apis"
)

// Repo locates what the rules read besides knative/.
type Repo struct {
	Knative   string // knative/
	Functions string // functions/
	Events    string // events/
}

// RepoFrom returns the paths of a repository checked out at root.
func RepoFrom(root string) Repo {
	return Repo{
		Knative:   filepath.Join(root, "knative"),
		Functions: filepath.Join(root, "functions"),
		Events:    filepath.Join(root, "events"),
	}
}

// Rule is one named check of the manifests.
type Rule struct {
	Name  string
	Check func(m *Manifests, r Repo) *apis.FieldError
}

// Rules are every check, in the order they are reported.
var Rules = []Rule{
	{"crd-schemas", func(m *Manifests, _ Repo) *apis.FieldError { return CheckSchemas(m) }},
	{"knative-serving-webhook", func(m *Manifests, _ Repo) *apis.FieldError { return CheckKnativeServices(m) }},
	{"service-policy", func(m *Manifests, _ Repo) *apis.FieldError { return CheckServicePolicy(m) }},
	{"eventing-webhooks", func(m *Manifests, _ Repo) *apis.FieldError { return CheckEventingWebhooks(m) }},
	{"references", func(m *Manifests, r Repo) *apis.FieldError {
		types, err := EventTypes(r.Events)
		if err != nil {
			return apis.ErrGeneric(err.Error(), "events")
		}
		return CheckReferences(m, types)
	}},
	{"timeouts", func(m *Manifests, _ Repo) *apis.FieldError { return CheckTimeouts(m) }},
	{"kustomization", func(m *Manifests, _ Repo) *apis.FieldError { return CheckKustomization(m) }},
	{"func-yaml", func(m *Manifests, r Repo) *apis.FieldError { return CheckFunctions(m, r.Functions) }},
}

// Validate runs every rule on m.
func Validate(m *Manifests, r Repo) *apis.FieldError {
	var errs *apis.FieldError
	for _, rule := range Rules {
		errs = errs.Also(rule.Check(m, r))
	}
	return errs
}
