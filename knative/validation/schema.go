package validation

import (
	"mp3converter/knative/model"

	"bufio"
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strings"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"knative.dev/pkg/apis"
	"sigs.k8s.io/yaml"
)

// The upstream CRDs the custom resources of knative/ are checked against
// (testdata/crds/SOURCES.txt says where each comes from).
//
//go:embed testdata/crds/*.yaml
var crdFiles embed.FS

// Schema is the part of an OpenAPI v3 structural schema (apiextensions.k8s.io/v1)
// that the API server enforces on create: types, properties and unknown
// fields, required, enum, pattern, lengths and bounds, int-or-string and
// preserve-unknown-fields. Defaults are not applied.
type Schema struct {
	Type                 string             `json:"type,omitempty"`
	Format               string             `json:"format,omitempty"`
	Properties           map[string]*Schema `json:"properties,omitempty"`
	AdditionalProperties *SchemaOrBool      `json:"additionalProperties,omitempty"`
	Items                *Schema            `json:"items,omitempty"`
	Required             []string           `json:"required,omitempty"`
	Enum                 []any              `json:"enum,omitempty"`
	Pattern              string             `json:"pattern,omitempty"`
	MinLength            *int64             `json:"minLength,omitempty"`
	MaxLength            *int64             `json:"maxLength,omitempty"`
	MinItems             *int64             `json:"minItems,omitempty"`
	MaxItems             *int64             `json:"maxItems,omitempty"`
	Minimum              *float64           `json:"minimum,omitempty"`
	Maximum              *float64           `json:"maximum,omitempty"`
	Nullable             bool               `json:"nullable,omitempty"`
	PreserveUnknown      bool               `json:"x-kubernetes-preserve-unknown-fields,omitempty"`
	IntOrString          bool               `json:"x-kubernetes-int-or-string,omitempty"`
	EmbeddedResource     bool               `json:"x-kubernetes-embedded-resource,omitempty"`
}

// SchemaOrBool is additionalProperties: a schema, or false/true.
type SchemaOrBool struct {
	Allows bool
	Schema *Schema
}

// UnmarshalJSON accepts a boolean or a schema.
func (s *SchemaOrBool) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &s.Allows); err == nil {
		return nil
	}
	s.Allows = true
	s.Schema = &Schema{}
	return json.Unmarshal(b, s.Schema)
}

type crdDoc struct {
	Kind string `json:"kind"`
	Spec struct {
		Group string `json:"group"`
		Names struct {
			Kind string `json:"kind"`
		} `json:"names"`
		Versions []struct {
			Name   string `json:"name"`
			Schema struct {
				OpenAPIV3Schema *Schema `json:"openAPIV3Schema"`
			} `json:"schema"`
		} `json:"versions"`
	} `json:"spec"`
}

// CRDSchemas maps "group/version/Kind" to the schema of that version.
type CRDSchemas map[string]*Schema

// LoadCRDSchemas reads every CustomResourceDefinition in fsys (*.yaml at its
// root or below testdata/crds).
func LoadCRDSchemas(fsys fs.FS) (CRDSchemas, error) {
	out := CRDSchemas{}
	err := fs.WalkDir(fsys, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") {
			return err
		}
		b, err := fs.ReadFile(fsys, path)
		if err != nil {
			return err
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			if model.IsEmptyDocument(doc) {
				continue
			}
			var c crdDoc
			if err := yaml.Unmarshal(doc, &c); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			if c.Kind != "CustomResourceDefinition" {
				continue
			}
			for _, v := range c.Spec.Versions {
				out[c.Spec.Group+"/"+v.Name+"/"+c.Spec.Names.Kind] = v.Schema.OpenAPIV3Schema
			}
		}
	})
	return out, err
}

// EmbeddedCRDSchemas returns the schemas of the vendored CRDs.
func EmbeddedCRDSchemas() (CRDSchemas, error) {
	return LoadCRDSchemas(crdFiles)
}

// ValidateObject checks a whole custom resource (as JSON values) against the
// schema of its apiVersion and kind. apiVersion, kind and metadata are the
// API server's business (the typed decoding checks metadata).
func (c CRDSchemas) ValidateObject(apiVersion, kind string, obj map[string]any) *apis.FieldError {
	s, ok := c[apiVersion+"/"+kind]
	if !ok {
		return apis.ErrGeneric(fmt.Sprintf("no CustomResourceDefinition serves %s %s", apiVersion, kind), "apiVersion")
	}
	var errs *apis.FieldError
	if s == nil {
		return nil
	}
	errs = errs.Also(checkRequired(s, obj))
	for _, k := range sortedKeys(obj) {
		switch k {
		case "apiVersion", "kind", "metadata":
			continue
		}
		p, ok := s.Properties[k]
		if !ok {
			if !s.PreserveUnknown {
				errs = errs.Also(apis.ErrDisallowedFields(k))
			}
			continue
		}
		errs = errs.Also(p.Validate(obj[k]).ViaField(k))
	}
	return errs
}

// Validate checks v (a JSON value decoded with UseNumber) against s.
func (s *Schema) Validate(v any) *apis.FieldError {
	if s == nil || v == nil {
		// A null is dropped by the API server for non-nullable fields.
		return nil
	}
	if s.IntOrString {
		switch x := v.(type) {
		case string:
			return s.checkString(x)
		case json.Number:
			if _, err := x.Int64(); err != nil {
				return apis.ErrInvalidValue(x.String(), apis.CurrentField, "must be an integer or a string")
			}
			return nil
		default:
			return apis.ErrInvalidValue(fmt.Sprint(v), apis.CurrentField, "must be an integer or a string")
		}
	}
	var errs *apis.FieldError
	switch s.Type {
	case "object":
		obj, ok := v.(map[string]any)
		if !ok {
			return typeError(v, "object")
		}
		errs = errs.Also(checkRequired(s, obj))
		if s.EmbeddedResource {
			return errs // an embedded object: the API server validates it as its own kind
		}
		for _, k := range sortedKeys(obj) {
			switch p, ok := s.Properties[k]; {
			case ok:
				errs = errs.Also(p.Validate(obj[k]).ViaField(k))
			case s.AdditionalProperties != nil && s.AdditionalProperties.Schema != nil:
				errs = errs.Also(s.AdditionalProperties.Schema.Validate(obj[k]).ViaKey(k))
			case s.AdditionalProperties != nil && s.AdditionalProperties.Allows:
			case s.PreserveUnknown:
			default:
				errs = errs.Also(apis.ErrDisallowedFields(k))
			}
		}
	case "array":
		arr, ok := v.([]any)
		if !ok {
			return typeError(v, "array")
		}
		if s.MinItems != nil && int64(len(arr)) < *s.MinItems {
			errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("must have at least %d items", *s.MinItems), apis.CurrentField))
		}
		if s.MaxItems != nil && int64(len(arr)) > *s.MaxItems {
			errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("must have at most %d items", *s.MaxItems), apis.CurrentField))
		}
		for i, item := range arr {
			errs = errs.Also(s.Items.Validate(item).ViaIndex(i))
		}
	case "string":
		str, ok := v.(string)
		if !ok {
			return typeError(v, "string")
		}
		errs = errs.Also(s.checkString(str))
	case "integer":
		n, ok := v.(json.Number)
		if !ok {
			return typeError(v, "integer")
		}
		i, err := n.Int64()
		if err != nil {
			return typeError(v, "integer")
		}
		if s.Format == "int32" && (i < math.MinInt32 || i > math.MaxInt32) {
			errs = errs.Also(apis.ErrOutOfBoundsValue(i, math.MinInt32, math.MaxInt32, apis.CurrentField))
		}
		errs = errs.Also(s.checkBounds(float64(i)))
	case "number":
		n, ok := v.(json.Number)
		if !ok {
			return typeError(v, "number")
		}
		f, err := n.Float64()
		if err != nil {
			return typeError(v, "number")
		}
		errs = errs.Also(s.checkBounds(f))
	case "boolean":
		if _, ok := v.(bool); !ok {
			return typeError(v, "boolean")
		}
	case "":
		// No type: only x-kubernetes-preserve-unknown-fields schemas go here.
	}
	if len(s.Enum) > 0 && !inEnum(s.Enum, v) {
		errs = errs.Also(apis.ErrInvalidValue(fmt.Sprint(v), apis.CurrentField, "must be one of "+enumString(s.Enum)))
	}
	return errs
}

func (s *Schema) checkString(str string) *apis.FieldError {
	var errs *apis.FieldError
	if s.MaxLength != nil && int64(len(str)) > *s.MaxLength {
		errs = errs.Also(apis.ErrInvalidValue(truncate(str), apis.CurrentField, fmt.Sprintf("longer than %d characters", *s.MaxLength)))
	}
	if s.MinLength != nil && int64(len(str)) < *s.MinLength {
		errs = errs.Also(apis.ErrInvalidValue(str, apis.CurrentField, fmt.Sprintf("shorter than %d characters", *s.MinLength)))
	}
	if s.Pattern != "" {
		re, err := regexp.Compile(s.Pattern)
		if err == nil && !re.MatchString(str) {
			errs = errs.Also(apis.ErrInvalidValue(truncate(str), apis.CurrentField, "does not match "+s.Pattern))
		}
	}
	return errs
}

func (s *Schema) checkBounds(f float64) *apis.FieldError {
	if s.Minimum != nil && f < *s.Minimum {
		return apis.ErrInvalidValue(f, apis.CurrentField, fmt.Sprintf("must be >= %v", *s.Minimum))
	}
	if s.Maximum != nil && f > *s.Maximum {
		return apis.ErrInvalidValue(f, apis.CurrentField, fmt.Sprintf("must be <= %v", *s.Maximum))
	}
	return nil
}

func checkRequired(s *Schema, obj map[string]any) *apis.FieldError {
	var errs *apis.FieldError
	for _, r := range s.Required {
		if obj[r] == nil {
			errs = errs.Also(apis.ErrMissingField(r))
		}
	}
	return errs
}

func typeError(v any, want string) *apis.FieldError {
	return apis.ErrInvalidValue(truncate(fmt.Sprint(v)), apis.CurrentField, "must be of type "+want)
}

func inEnum(enum []any, v any) bool {
	for _, e := range enum {
		if n, ok := v.(json.Number); ok {
			if f, err := n.Float64(); err == nil && reflect.DeepEqual(e, f) {
				return true
			}
		}
		if reflect.DeepEqual(e, v) {
			return true
		}
	}
	return false
}

func enumString(enum []any) string {
	s := make([]string, len(enum))
	for i, e := range enum {
		s[i] = fmt.Sprint(e)
	}
	return strings.Join(s, ", ")
}

func truncate(s string) string {
	if len(s) > 60 {
		return s[:57] + "..."
	}
	return s
}

// customKinds are the kinds whose schema comes from a CRD.
var customKinds = []string{
	"serving.knative.dev/v1/Service",
	"eventing.knative.dev/v1/Broker",
	"eventing.knative.dev/v1/Trigger",
	"sources.knative.dev/v1/SinkBinding",
	"sources.knative.dev/v1/PingSource",
	"eventing.knative.dev/v1alpha1/RabbitmqBrokerConfig",
	"rabbitmq.com/v1beta1/RabbitmqCluster",
}

// CheckSchemas validates every custom resource of m against its CRD.
func CheckSchemas(m *Manifests) *apis.FieldError {
	schemas, err := EmbeddedCRDSchemas()
	if err != nil {
		return apis.ErrGeneric("reading the vendored CRDs: " + err.Error())
	}
	var errs *apis.FieldError
	for _, o := range m.Objects {
		if !slices.Contains(customKinds, o.APIVersion+"/"+o.Kind) {
			continue
		}
		errs = errs.Also(o.Via(schemas.ValidateObject(o.APIVersion, o.Kind, o.Map)))
	}
	return errs
}
