package broker

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"knative.dev/pkg/apis"
	duckv1 "knative.dev/pkg/apis/duck/v1"
	"sigs.k8s.io/yaml"
)

// The Knative objects the local broker reads, mirroring the CRD schemas of
// eventing.knative.dev/v1 Broker and Trigger (knative-v1.15) and
// eventing-rabbitmq's RabbitmqBrokerConfig. Unknown fields are errors.

// BrokerResource is an eventing.knative.dev/v1 Broker.
type BrokerResource struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              BrokerSpec `json:"spec"`
}

// BrokerSpec is the spec of a Broker.
type BrokerSpec struct {
	Config   *duckv1.KReference `json:"config,omitempty"`
	Delivery *DeliverySpec      `json:"delivery,omitempty"`
}

// TriggerResource is an eventing.knative.dev/v1 Trigger.
type TriggerResource struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              TriggerSpec `json:"spec"`
}

// TriggerSpec is the spec of a Trigger. Filters is decoded only to be refused:
// the RabbitMQ broker ignores it.
type TriggerSpec struct {
	Broker     string             `json:"broker,omitempty"`
	BrokerRef  *duckv1.KReference `json:"brokerRef,omitempty"`
	Filter     *TriggerFilter     `json:"filter,omitempty"`
	Filters    []map[string]any   `json:"filters,omitempty"`
	Subscriber duckv1.Destination `json:"subscriber"`
	Delivery   *DeliverySpec      `json:"delivery,omitempty"`
}

// TriggerFilter is the exact-match attribute filter of a Trigger.
type TriggerFilter struct {
	Attributes map[string]string `json:"attributes,omitempty"`
}

// DeliverySpec mirrors eventing's duck DeliverySpec (without the alpha
// retryAfterMax and format fields). Durations are ISO-8601 ("PT2S").
type DeliverySpec struct {
	DeadLetterSink *duckv1.Destination `json:"deadLetterSink,omitempty"`
	Retry          *int32              `json:"retry,omitempty"`
	Timeout        *string             `json:"timeout,omitempty"`
	BackoffPolicy  *string             `json:"backoffPolicy,omitempty"`
	BackoffDelay   *string             `json:"backoffDelay,omitempty"`
}

// RabbitmqBrokerConfig is an eventing.knative.dev/v1alpha1 RabbitmqBrokerConfig.
type RabbitmqBrokerConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              RabbitmqBrokerConfigSpec `json:"spec"`
}

// RabbitmqBrokerConfigSpec is the spec of a RabbitmqBrokerConfig.
type RabbitmqBrokerConfigSpec struct {
	VHost                    string                   `json:"vhost,omitempty"`
	QueueType                string                   `json:"queueType,omitempty"`
	RabbitmqClusterReference RabbitmqClusterReference `json:"rabbitmqClusterReference"`
}

// RabbitmqClusterReference names the RabbitmqCluster (or a connection Secret).
type RabbitmqClusterReference struct {
	Name             string           `json:"name,omitempty"`
	Namespace        string           `json:"namespace,omitempty"`
	ConnectionSecret *SecretReference `json:"connectionSecret,omitempty"`
}

// SecretReference names a Secret in the config's namespace.
type SecretReference struct {
	Name string `json:"name,omitempty"`
}

// Manifests holds the Brokers, Triggers and RabbitmqBrokerConfigs of a directory.
type Manifests struct {
	Brokers       []BrokerResource
	Triggers      []TriggerResource
	BrokerConfigs []RabbitmqBrokerConfig
}

const (
	eventingGroup         = "eventing.knative.dev"
	brokerClassAnnotation = "eventing.knative.dev/broker.class"
	parallelismAnnotation = "rabbitmq.eventing.knative.dev/parallelism"
	defaultNamespace      = "default"
	backoffLinear         = "linear"
	backoffExponential    = "exponential"
)

// LoadManifests reads every *.yaml and *.yml file of dir (multi-document),
// decodes the Brokers, Triggers and RabbitmqBrokerConfigs strictly, skips every
// other kind, and validates what the local broker relies on. Problems are
// reported as one *apis.FieldError with paths like
// "triggers[convert].spec.delivery.backoffDelay".
func LoadManifests(dir string) (*Manifests, error) {
	m, err := LoadManifestsFS(os.DirFS(dir))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return m, nil
}

// LoadManifestsFS is LoadManifests for the top directory of fsys (for
// example the embedded knative.Manifests).
func LoadManifestsFS(fsys fs.FS) (*Manifests, error) {
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
	m := &Manifests{}
	var errs *apis.FieldError
	for _, f := range files {
		fe, err := m.readFile(fsys, f)
		if err != nil {
			return nil, err
		}
		errs = errs.Also(fe)
	}
	if errs = errs.Also(m.validate()); errs != nil {
		return nil, errs
	}
	return m, nil
}

// readFile decodes the documents of one file into m. Unreadable files and
// documents that are not YAML are plain errors; objects that do not match
// their schema are FieldErrors.
func (m *Manifests) readFile(fsys fs.FS, name string) (*apis.FieldError, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var errs *apis.FieldError
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	for n := 1; ; n++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return errs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		fe, err := m.decode(doc)
		if err != nil {
			return nil, fmt.Errorf("%s (document %d): %w", name, n, err)
		}
		if fe != nil {
			fe.Details = strings.TrimSpace(fe.Details + fmt.Sprintf(" (%s, document %d)", name, n))
		}
		errs = errs.Also(fe)
	}
}

func (m *Manifests) decode(doc []byte) (*apis.FieldError, error) {
	var head struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if len(bytes.TrimSpace(doc)) == 0 {
		return nil, nil
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return nil, err
	}
	gv, err := schemaGroupVersion(head.APIVersion)
	if err != nil || gv.group != eventingGroup {
		return nil, nil // not ours (or not even an object): kubectl's business
	}
	key := head.Metadata.Name
	switch head.Kind {
	case "Broker":
		return decodeInto(doc, gv, "v1", "brokers", key, &m.Brokers), nil
	case "Trigger":
		return decodeInto(doc, gv, "v1", "triggers", key, &m.Triggers), nil
	case "RabbitmqBrokerConfig":
		return decodeInto(doc, gv, "v1alpha1", "rabbitmqbrokerconfigs", key, &m.BrokerConfigs), nil
	}
	return nil, nil
}

// decodeInto strictly decodes doc and appends it to list when it matches the schema.
func decodeInto[T any](doc []byte, gv groupVersion, version, listName, key string, list *[]T) *apis.FieldError {
	if gv.version != version {
		return apis.ErrInvalidValue(gv.group+"/"+gv.version, "apiVersion", "expected "+eventingGroup+"/"+version).ViaFieldKey(listName, key)
	}
	var v T
	if err := yaml.UnmarshalStrict(doc, &v); err != nil {
		return (&apis.FieldError{Message: "does not match the schema", Paths: []string{apis.CurrentField}, Details: err.Error()}).ViaFieldKey(listName, key)
	}
	*list = append(*list, v)
	return nil
}

type groupVersion struct{ group, version string }

func schemaGroupVersion(apiVersion string) (groupVersion, error) {
	group, version, ok := strings.Cut(apiVersion, "/")
	if !ok || group == "" || version == "" {
		return groupVersion{}, fmt.Errorf("apiVersion %q has no group", apiVersion)
	}
	return groupVersion{group, version}, nil
}

// validate checks every object of m (also when m was built in code).
func (m *Manifests) validate() *apis.FieldError {
	var errs *apis.FieldError
	seen := map[string]bool{}
	for i := range m.BrokerConfigs {
		c := &m.BrokerConfigs[i]
		errs = errs.Also(unique(seen, "RabbitmqBrokerConfig", &c.ObjectMeta), c.validate().ViaFieldKey("rabbitmqbrokerconfigs", c.Name))
	}
	for i := range m.Brokers {
		b := &m.Brokers[i]
		errs = errs.Also(unique(seen, "Broker", &b.ObjectMeta), m.validateBroker(b).ViaFieldKey("brokers", b.Name))
	}
	for i := range m.Triggers {
		t := &m.Triggers[i]
		errs = errs.Also(unique(seen, "Trigger", &t.ObjectMeta), m.validateTrigger(t).ViaFieldKey("triggers", t.Name))
	}
	return errs
}

func unique(seen map[string]bool, kind string, meta *metav1.ObjectMeta) *apis.FieldError {
	k := kind + "/" + namespaceOf(meta) + "/" + meta.Name
	if meta.Name == "" || !seen[k] {
		seen[k] = true
		return nil
	}
	return apis.ErrGeneric(fmt.Sprintf("duplicate %s %s/%s", kind, namespaceOf(meta), meta.Name), "metadata.name").
		ViaFieldKey(strings.ToLower(kind)+"s", meta.Name)
}

func namespaceOf(meta *metav1.ObjectMeta) string {
	if meta.Namespace == "" {
		return defaultNamespace
	}
	return meta.Namespace
}

func (c *RabbitmqBrokerConfig) validate() *apis.FieldError {
	var errs *apis.FieldError
	if c.Name == "" {
		errs = errs.Also(apis.ErrMissingField("metadata.name"))
	}
	switch c.Spec.QueueType {
	case "", "quorum", "classic":
	default:
		errs = errs.Also(apis.ErrInvalidValue(c.Spec.QueueType, "spec.queueType", "expected quorum or classic"))
	}
	ref := c.Spec.RabbitmqClusterReference
	switch {
	case ref.Name == "" && ref.ConnectionSecret == nil:
		errs = errs.Also(apis.ErrMissingOneOf("spec.rabbitmqClusterReference.name", "spec.rabbitmqClusterReference.connectionSecret"))
	case ref.Name != "" && ref.ConnectionSecret != nil:
		errs = errs.Also(apis.ErrMultipleOneOf("spec.rabbitmqClusterReference.name", "spec.rabbitmqClusterReference.connectionSecret"))
	}
	return errs
}

func (m *Manifests) validateBroker(b *BrokerResource) *apis.FieldError {
	var errs *apis.FieldError
	if b.Name == "" {
		errs = errs.Also(apis.ErrMissingField("metadata.name"))
	}
	if ref := b.Spec.Config; ref != nil && ref.Kind == "RabbitmqBrokerConfig" {
		ns := ref.Namespace
		if ns == "" {
			ns = namespaceOf(&b.ObjectMeta)
		}
		if m.brokerConfig(ns, ref.Name) == nil {
			errs = errs.Also(apis.ErrInvalidValue(ref.Name, "spec.config.name", "no RabbitmqBrokerConfig "+ns+"/"+ref.Name+" in the manifests"))
		}
	}
	return errs.Also(b.Spec.Delivery.validate().ViaField("spec", "delivery"))
}

var attributeName = regexp.MustCompile(`^[a-z0-9]+$`)

func (m *Manifests) validateTrigger(t *TriggerResource) *apis.FieldError {
	ctx := apis.WithinParent(context.Background(), metav1.ObjectMeta{Namespace: namespaceOf(&t.ObjectMeta)})
	var errs *apis.FieldError
	if t.Name == "" {
		errs = errs.Also(apis.ErrMissingField("metadata.name"))
	}
	if v, ok := t.Annotations[parallelismAnnotation]; ok {
		path := "metadata.annotations[" + parallelismAnnotation + "]"
		if n, err := strconv.Atoi(v); err != nil {
			errs = errs.Also(apis.ErrInvalidValue(v, path, "expected an integer"))
		} else if n < 1 || n > 1000 {
			errs = errs.Also(apis.ErrOutOfBoundsValue(n, 1, 1000, path))
		}
	}
	s := &t.Spec
	switch {
	case s.BrokerRef != nil:
		errs = errs.Also(apis.ErrDisallowedFields("spec.brokerRef"))
	case s.Broker == "":
		errs = errs.Also(apis.ErrMissingField("spec.broker"))
	case m.broker(namespaceOf(&t.ObjectMeta), s.Broker) == nil:
		errs = errs.Also(apis.ErrInvalidValue(s.Broker, "spec.broker", "no Broker "+namespaceOf(&t.ObjectMeta)+"/"+s.Broker+" in the manifests"))
	}
	if s.Filter != nil {
		for _, k := range sortedKeys(s.Filter.Attributes) {
			if !attributeName.MatchString(k) {
				errs = errs.Also(apis.ErrInvalidKeyName(k, "spec.filter.attributes", "attribute names are lowercase alphanumerics"))
			}
		}
	}
	if len(s.Filters) > 0 {
		fe := apis.ErrDisallowedFields("spec.filters")
		fe.Details = "the RabbitMQ broker ignores spec.filters: use spec.filter.attributes"
		errs = errs.Also(fe)
	}
	errs = errs.Also(validateDestination(ctx, &s.Subscriber).ViaField("spec", "subscriber"))
	return errs.Also(s.Delivery.validate().ViaField("spec", "delivery"))
}

// validateDestination is duckv1's check, plus the ref's own check when a
// relative uri accompanies it (duckv1 skips it then).
func validateDestination(ctx context.Context, d *duckv1.Destination) *apis.FieldError {
	errs := duckv1.ValidateDestination(ctx, *d)
	if errs == nil && d.Ref != nil && d.URI != nil {
		errs = d.Ref.Validate(ctx).ViaField("ref")
	}
	return errs
}

func (d *DeliverySpec) validate() *apis.FieldError {
	if d == nil {
		return nil
	}
	var errs *apis.FieldError
	if d.Retry != nil && *d.Retry < 0 {
		errs = errs.Also(apis.ErrInvalidValue(*d.Retry, "retry"))
	}
	if d.BackoffPolicy != nil && *d.BackoffPolicy != backoffLinear && *d.BackoffPolicy != backoffExponential {
		errs = errs.Also(apis.ErrInvalidValue(*d.BackoffPolicy, "backoffPolicy", "expected linear or exponential"))
	}
	for field, v := range map[string]*string{"backoffDelay": d.BackoffDelay, "timeout": d.Timeout} {
		if v == nil {
			continue
		}
		if _, err := parseISODuration(*v); err != nil {
			errs = errs.Also(apis.ErrInvalidValue(*v, field, err.Error()))
		}
	}
	if d.DeadLetterSink != nil {
		errs = errs.Also(validateDestination(context.Background(), d.DeadLetterSink).ViaField("deadLetterSink"))
	}
	return errs
}

func (m *Manifests) broker(namespace, name string) *BrokerResource {
	for i := range m.Brokers {
		if b := &m.Brokers[i]; b.Name == name && namespaceOf(&b.ObjectMeta) == namespace {
			return b
		}
	}
	return nil
}

func (m *Manifests) brokerConfig(namespace, name string) *RabbitmqBrokerConfig {
	for i := range m.BrokerConfigs {
		if c := &m.BrokerConfigs[i]; c.Name == name && namespaceOf(&c.ObjectMeta) == namespace {
			return c
		}
	}
	return nil
}

// EffectiveDelivery is the delivery a Trigger gets: its own, else its Broker's
// (the whole spec, not field by field, as Knative does). Nil when neither has one.
func (m *Manifests) EffectiveDelivery(t *TriggerResource) *DeliverySpec {
	if t.Spec.Delivery != nil {
		return t.Spec.Delivery
	}
	if b := m.broker(namespaceOf(&t.ObjectMeta), t.Spec.Broker); b != nil {
		return b.Spec.Delivery
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// parseISODuration parses an ISO-8601 duration such as "PT2S", "PT0.5S",
// "P1DT12H" or "PT10M". Years and months use the average Gregorian lengths,
// as Knative's period package does. Negative durations are refused.
func parseISODuration(s string) (time.Duration, error) {
	rest, ok := strings.CutPrefix(s, "P")
	if !ok || rest == "" || rest == "T" {
		return 0, fmt.Errorf("not an ISO-8601 duration like PT2S")
	}
	const day, year = 24 * time.Hour, 31556952 * time.Second // 365.2425 days
	dateUnits := map[byte]time.Duration{'Y': year, 'M': year / 12, 'W': 7 * day, 'D': day}
	timeUnits := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second}
	order := "YMWD"
	units := dateUnits
	var total float64
	inTime := false
	for rest != "" {
		if rest[0] == 'T' {
			if inTime || len(rest) == 1 {
				return 0, fmt.Errorf("misplaced T in %q", s)
			}
			inTime, units, order, rest = true, timeUnits, "HMS", rest[1:]
			continue
		}
		i := strings.IndexFunc(rest, func(r rune) bool { return (r < '0' || r > '9') && r != '.' && r != ',' })
		if i <= 0 {
			return 0, fmt.Errorf("expected a number in %q", s)
		}
		n, err := strconv.ParseFloat(strings.Replace(rest[:i], ",", ".", 1), 64)
		if err != nil {
			return 0, fmt.Errorf("bad number %q in %q", rest[:i], s)
		}
		unit := rest[i]
		pos := strings.IndexByte(order, unit)
		if pos < 0 {
			return 0, fmt.Errorf("unexpected %q in %q", unit, s)
		}
		order = order[pos+1:] // each unit at most once, in order
		total += n * float64(units[unit])
		rest = rest[i+1:]
	}
	if total > math.MaxInt64 {
		return 0, fmt.Errorf("%q is too long", s)
	}
	return time.Duration(math.Round(total)), nil
}
