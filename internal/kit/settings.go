package kit

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Kinds of setting: how a value is read.
const (
	KindText     = "text"
	KindURL      = "url"      // an http(s) URL with a host; a trailing slash is dropped
	KindDuration = "duration" // a Go duration such as 30s, 15m or 1h
	KindInt      = "int"
	KindBool     = "bool" // true or false (also 1, 0, t, f as strconv.ParseBool reads them)
)

// Setting is one environment variable a function reads. Each function declares its settings
// once (var Settings); Start reads them through loadSettings, and a test of the root module
// holds the declaration against func.yaml, the knative/ manifest and the README.
type Setting struct {
	Name     string
	Kind     string
	Default  string // used when the variable is unset or empty; "" for none
	Required bool
	Min, Max string // inclusive bounds of a duration or int, in its own syntax; "" for none
	Meaning  string
}

// Parse reads one value of the setting (the default when v is empty) and checks its bounds.
func (s Setting) Parse(v string) (any, error) {
	if v == "" {
		v = s.Default
	}
	if v == "" {
		if s.Required {
			return nil, fmt.Errorf("%s is not set (%s)", s.Name, s.Meaning)
		}
		return s.zero(), nil
	}
	switch s.Kind {
	case KindText:
		return v, nil
	case KindURL:
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%s: %q is not an http(s) URL", s.Name, v)
		}
		return strings.TrimRight(v, "/"), nil
	case KindDuration:
		d, err := time.ParseDuration(v)
		lo, hi := s.durationBounds()
		if err != nil || d < lo || (hi > 0 && d > hi) {
			return nil, fmt.Errorf("%s: %q is not a duration%s", s.Name, v, s.bounds(" such as 30s or 1h"))
		}
		return d, nil
	case KindInt:
		n, err := strconv.ParseInt(v, 10, 64)
		lo, hi := s.intBounds()
		if err != nil || n < lo || n > hi {
			return nil, fmt.Errorf("%s: %q is not an integer%s", s.Name, v, s.bounds(""))
		}
		return n, nil
	case KindBool:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not true or false", s.Name, v)
		}
		return b, nil
	}
	return nil, fmt.Errorf("%s: unknown kind %q", s.Name, s.Kind)
}

func (s Setting) zero() any {
	switch s.Kind {
	case KindDuration:
		return time.Duration(0)
	case KindInt:
		return int64(0)
	case KindBool:
		return false
	}
	return ""
}

func (s Setting) durationBounds() (lo, hi time.Duration) {
	if s.Min != "" {
		lo, _ = time.ParseDuration(s.Min)
	}
	if s.Max != "" {
		hi, _ = time.ParseDuration(s.Max)
	}
	return lo, hi
}

func (s Setting) intBounds() (lo, hi int64) {
	lo, hi = -1<<63, 1<<63-1
	if s.Min != "" {
		lo, _ = strconv.ParseInt(s.Min, 10, 64)
	}
	if s.Max != "" {
		hi, _ = strconv.ParseInt(s.Max, 10, 64)
	}
	return lo, hi
}

// bounds says which values are allowed, for error messages.
func (s Setting) bounds(example string) string {
	switch {
	case s.Min != "" && s.Max != "":
		return " from " + s.Min + " to " + s.Max
	case s.Min != "":
		return " of at least " + s.Min
	case s.Max != "":
		return " of at most " + s.Max
	}
	return example
}

// settings are the values Start reads: each declared setting parsed, or its default.
type settings map[string]any

// loadSettings parses every declared setting from env and reports every bad one at once.
func loadSettings(declared []Setting, env map[string]string) (settings, error) {
	s := settings{}
	var errs []string
	for _, d := range declared {
		v, err := d.Parse(env[d.Name])
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		s[d.Name] = v
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return s, nil
}

// value returns a declared setting's value; asking for an undeclared one is a bug.
func value[T any](s settings, name string) T {
	v, ok := s[name].(T)
	if !ok {
		panic(fmt.Sprintf("setting %s is not declared as a %T", name, v))
	}
	return v
}

func (s settings) text(name string) string            { return value[string](s, name) }
func (s settings) duration(name string) time.Duration { return value[time.Duration](s, name) }
func (s settings) int(name string) int64              { return value[int64](s, name) }
func (s settings) bool(name string) bool              { return value[bool](s, name) }
