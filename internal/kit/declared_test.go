package kit_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	convert "mp3converter/functions/convert"
	download "mp3converter/functions/download"
	login "mp3converter/functions/login"
	notify "mp3converter/functions/notify"
	upload "mp3converter/functions/upload"
	validate "mp3converter/functions/validate"
	web "mp3converter/functions/web"
	"mp3converter/internal/kit"
)

// setting is any function's copy of kit.Setting.
type setting interface {
	~struct {
		Name, Kind, Default string
		Required            bool
		Min, Max, Meaning   string
	}
}

func declared[S setting](ss []S) []kit.Setting {
	out := make([]kit.Setting, len(ss))
	for i, s := range ss {
		out[i] = kit.Setting(s)
	}
	return out
}

// functions are the declarations of every function in kit.Copies.
var functions = map[string][]kit.Setting{
	"convert":  declared(convert.Settings),
	"download": declared(download.Settings),
	"login":    declared(login.Settings),
	"notify":   declared(notify.Settings),
	"upload":   declared(upload.Settings),
	"validate": declared(validate.Settings),
	"web":      declared(web.Settings),
}

// Variables a Service sets for the runtime, not for Start.
var runtimeEnv = []string{"ADDRESS", "GOMEMLIMIT"}

const root = "../.."

func TestEveryFunctionDeclaresItsSettings(t *testing.T) {
	for name := range kit.Copies {
		if len(functions[name]) == 0 {
			t.Errorf("%s: no Settings in the table of this test", name)
		}
	}
	for name, decl := range functions {
		seen := map[string]bool{}
		for _, s := range decl {
			if seen[s.Name] {
				t.Errorf("%s: %s declared twice", name, s.Name)
			}
			seen[s.Name] = true
			if s.Meaning == "" {
				t.Errorf("%s: %s has no meaning", name, s.Name)
			}
			if s.Required && s.Default != "" {
				t.Errorf("%s: %s is required and has a default", name, s.Name)
			}
			if _, err := s.Parse(s.Default); err != nil && !s.Required {
				t.Errorf("%s: %s: its default does not parse: %v", name, s.Name, err)
			}
		}
	}
}

// func.yaml lists every setting that is required or has a default, and nothing undeclared;
// its literal values parse.
func TestFuncYAMLMatchesSettings(t *testing.T) {
	for name, decl := range functions {
		var fy struct {
			Run struct {
				Envs []struct{ Name, Value string }
			}
		}
		readYAML(t, filepath.Join(root, "functions", name, "func.yaml"), &fy)
		listed := map[string]bool{}
		for _, e := range fy.Run.Envs {
			listed[e.Name] = true
			s, ok := find(decl, e.Name)
			if !ok {
				if !slices.Contains(runtimeEnv, e.Name) {
					t.Errorf("functions/%s/func.yaml: %s is not among the function's Settings", name, e.Name)
				}
				continue
			}
			if !strings.HasPrefix(e.Value, "{{") {
				if _, err := s.Parse(e.Value); err != nil {
					t.Errorf("functions/%s/func.yaml: %v", name, err)
				}
			}
		}
		for _, s := range decl {
			if (s.Required || s.Default != "") && !listed[s.Name] && !injectedBySinkBinding(t, name, s.Name) {
				t.Errorf("functions/%s/func.yaml: run.envs lacks %s", name, s.Name)
			}
		}
	}
}

// injectedBySinkBinding: K_SINK of a function that knative/sinkbinding.yaml binds
// comes from the SinkBinding on the cluster (and from `mp3converter up` locally),
// not from func.yaml, which func deploy would deploy and the host builder bake in.
func injectedBySinkBinding(t *testing.T, function, variable string) bool {
	var sb struct {
		Spec struct {
			Subject struct{ Kind, Name string }
		}
	}
	readYAML(t, filepath.Join(root, "knative", "sinkbinding.yaml"), &sb)
	return variable == "K_SINK" && sb.Spec.Subject.Kind == "Service" && sb.Spec.Subject.Name == function
}

// On the cluster each function's Service is what func deploy makes of its func.yaml
// (docs/architecture.md): the ConfigMap values its run.envs refer to exist and parse,
// and it sets every required setting (K_SINK comes from the SinkBinding).
func TestKnativeServiceMatchesSettings(t *testing.T) {
	var config struct{ Data map[string]string }
	readYAML(t, filepath.Join(root, "knative", "config.yaml"), &config)
	configRef := regexp.MustCompile(`^\{\{\s*configMap:mp3converter-config:(\w+)\s*\}\}$`)
	for name, decl := range functions {
		var fy struct {
			Run struct {
				Envs []struct{ Name, Value string }
			}
		}
		readYAML(t, filepath.Join(root, "functions", name, "func.yaml"), &fy)
		set := map[string]bool{}
		for _, e := range fy.Run.Envs {
			set[e.Name] = true
			s, ok := find(decl, e.Name)
			if !ok {
				continue // TestFuncYAMLMatchesSettings reports it
			}
			v := e.Value
			if m := configRef.FindStringSubmatch(v); m != nil {
				cv, ok := config.Data[m[1]]
				if !ok {
					t.Errorf("functions/%s/func.yaml: %s reads %s, which knative/config.yaml lacks", name, e.Name, m[1])
					continue
				}
				v = cv
			} else if strings.HasPrefix(v, "{{") {
				continue // a Secret: its example holds placeholders
			}
			if _, err := s.Parse(v); err != nil && v != "" {
				t.Errorf("functions/%s/func.yaml (as deployed): %v", name, err)
			}
		}
		for _, s := range decl {
			if s.Required && !set[s.Name] && !injectedBySinkBinding(t, name, s.Name) {
				t.Errorf("functions/%s/func.yaml: the required %s is not set on the cluster", name, s.Name)
			}
		}
	}
}

// The README's Configuration table documents every setting of every function, with the
// function's own default; every row that names a function names only settings it declares.
func TestREADMEDocumentsSettings(t *testing.T) {
	rows := readmeRows(t)
	for name, decl := range functions {
		documented := map[string]string{} // name -> default cell
		for _, r := range rows {
			if !slices.Contains(r.users, name) {
				continue
			}
			for v, def := range r.vars {
				if _, ok := find(decl, v); !ok {
					t.Errorf("README: %s is documented as read by %s, which does not declare it", v, name)
				}
				documented[v] = def
			}
		}
		for _, s := range decl {
			def, ok := documented[s.Name]
			switch {
			case !ok:
				t.Errorf("README: %s of %s is not in the Configuration table", s.Name, name)
			case s.Default != "" && def != s.Default:
				t.Errorf("README: %s of %s has default %q, the function %q", s.Name, name, def, s.Default)
			}
		}
	}
}

type readmeRow struct {
	vars  map[string]string // variable -> its default, backticks and a (remark) dropped
	users []string
}

var (
	parenthetical = regexp.MustCompile(`\s*\(.*\)$`)
	word          = regexp.MustCompile(`[a-z]+`)
)

func readmeRows(t *testing.T) []readmeRow {
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(b), "\n## Configuration\n")
	if !ok {
		t.Fatal("README.md has no Configuration section")
	}
	table, _, _ = strings.Cut(table, "\n## ")
	var rows []readmeRow
	for _, line := range strings.Split(table, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 5 || !strings.Contains(cells[1], "`") {
			continue
		}
		groups := strings.Split(strings.TrimSpace(cells[1]), ", ")
		defaults := strings.Split(strings.TrimSpace(cells[3]), ", ")
		r := readmeRow{vars: map[string]string{}, users: word.FindAllString(strings.ReplaceAll(cells[2], "`up`", ""), -1)}
		for i, g := range groups {
			def := defaults[0]
			if len(defaults) == len(groups) {
				def = defaults[i]
			} else if len(groups) > 1 && len(defaults) > 1 {
				t.Errorf("README: %d variables but %d defaults in %q", len(groups), len(defaults), line)
			}
			def = strings.ReplaceAll(parenthetical.ReplaceAllString(def, ""), "`", "")
			base, suffix, both := strings.Cut(strings.ReplaceAll(g, "`", ""), " / ")
			r.vars[base] = def
			if both {
				r.vars[base+suffix] = def
			}
		}
		rows = append(rows, r)
	}
	return rows
}

func find(decl []kit.Setting, name string) (kit.Setting, bool) {
	for _, s := range decl {
		if s.Name == name {
			return s, true
		}
	}
	return kit.Setting{}, false
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
