package broker

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/pkg/apis"

	"mp3converter/knative/model"
)

// The local broker reads the Brokers, Triggers and RabbitmqBrokerConfigs of
// knative/ through mp3converter/knative/model: the types, loader, durations
// and webhook rules knative/validation checks the folder with.

// LoadManifests reads every *.yaml and *.yml file of dir (multi-document),
// decodes them strictly with the model, skips kinds the model does not
// know, and validates what the local broker relies on. Problems are
// reported as one *apis.FieldError with paths like
// "triggers[convert].spec.delivery.backoffDelay".
func LoadManifests(dir string) (*model.Manifests, error) {
	m, err := LoadManifestsFS(os.DirFS(dir))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return m, nil
}

// LoadManifestsFS is LoadManifests for the top directory of fsys (for
// example the embedded knative.Manifests).
func LoadManifestsFS(fsys fs.FS) (*model.Manifests, error) {
	var files []string
	for _, pattern := range []string{"*.yaml", "*.yml"} {
		m, err := fs.Glob(fsys, pattern)
		if err != nil {
			return nil, err
		}
		files = append(files, m...)
	}
	slices.Sort(files)
	if len(files) == 0 {
		return nil, errors.New("no *.yaml manifests")
	}
	m := &model.Manifests{}
	var errs *apis.FieldError
	for _, f := range files {
		b, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, err
		}
		objs, err := (model.Decoder{SkipUnknown: true}).DecodeFile(f, b)
		var fe *apis.FieldError
		if err != nil && !errors.As(err, &fe) {
			return nil, err
		}
		errs = errs.Also(fe)
		m.Objects = append(m.Objects, objs...)
	}
	if errs = errs.Also(validate(m)); errs != nil {
		return nil, errs
	}
	return m, nil
}

// validate checks what the local broker relies on (also when m was built in
// code): the webhook rules, unique names, each Trigger's Broker and each
// Broker's RabbitmqBrokerConfig present, binary delivery.
func validate(m *model.Manifests) *apis.FieldError {
	errs := m.CheckWebhooks()
	seen := map[string]bool{}
	for _, o := range m.Objects {
		var meta *metav1.ObjectMeta
		switch t := o.Typed.(type) {
		case *model.RabbitmqBrokerConfig:
			meta = &t.ObjectMeta
		case *model.Broker:
			meta = &t.ObjectMeta
			errs = errs.Also(o.Via(brokerRefs(m, t)))
		case *model.Trigger:
			meta = &t.ObjectMeta
			errs = errs.Also(o.Via(triggerRefs(m, t)))
		default:
			continue
		}
		if meta.Name == "" {
			errs = errs.Also(o.Via(apis.ErrMissingField("metadata.name")))
			continue
		}
		k := o.Kind + "/" + model.NamespaceOf(meta) + "/" + meta.Name
		if seen[k] {
			errs = errs.Also(o.Via(apis.ErrGeneric(fmt.Sprintf("duplicate %s %s/%s", o.Kind, model.NamespaceOf(meta), meta.Name), "metadata.name")))
		}
		seen[k] = true
	}
	return errs
}

func brokerRefs(m *model.Manifests, b *model.Broker) *apis.FieldError {
	var errs *apis.FieldError
	if ref := b.Spec.Config; ref != nil && ref.Kind == model.BrokerConfigKind {
		if m.BrokerConfig(configNamespace(b, ref.Namespace), ref.Name) == nil {
			errs = errs.Also(apis.ErrInvalidValue(ref.Name, "spec.config.name",
				"no RabbitmqBrokerConfig "+configNamespace(b, ref.Namespace)+"/"+ref.Name+" in the manifests"))
		}
	}
	return errs.Also(binaryOnly(b.Spec.Delivery).ViaField("spec.delivery"))
}

// configNamespace is where a Broker's config lives: its own namespace unless
// the reference names one.
func configNamespace(b *model.Broker, refNamespace string) string {
	if refNamespace != "" {
		return refNamespace
	}
	return model.NamespaceOf(&b.ObjectMeta)
}

func triggerRefs(m *model.Manifests, t *model.Trigger) *apis.FieldError {
	var errs *apis.FieldError
	ns := model.NamespaceOf(&t.ObjectMeta)
	if t.Spec.Broker != "" && m.Broker(ns, t.Spec.Broker) == nil {
		errs = errs.Also(apis.ErrInvalidValue(t.Spec.Broker, "spec.broker", "no Broker "+ns+"/"+t.Spec.Broker+" in the manifests"))
	}
	return errs.Also(binaryOnly(t.Spec.Delivery).ViaField("spec.delivery"))
}

// binaryOnly: the local dispatcher sends binary-mode events only.
func binaryOnly(d *model.DeliverySpec) *apis.FieldError {
	if d == nil || d.Format == nil || *d.Format == "binary" {
		return nil
	}
	return apis.ErrInvalidValue(*d.Format, "format", "the local broker delivers in binary mode only")
}

// selectBroker returns the Broker called name ("name" or "namespace/name").
func selectBroker(m *model.Manifests, name string) (*model.Broker, error) {
	ns, n, qualified := strings.Cut(name, "/")
	if !qualified {
		n = ns
	}
	var found *model.Broker
	for _, b := range m.Brokers() {
		if b.Name != n || (qualified && model.NamespaceOf(&b.ObjectMeta) != ns) {
			continue
		}
		if found != nil {
			return nil, fmt.Errorf("broker: several Brokers named %q: use namespace/name", n)
		}
		found = b
	}
	if found == nil {
		return nil, fmt.Errorf("broker: no Broker %q in the manifests", name)
	}
	return found, nil
}
