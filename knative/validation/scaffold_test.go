package validation

import (
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/modfile"
)

// invokeOf is the function's invoke from its func.yaml, or from its Handle
// signature while the func.yaml is missing.
func invokeOf(t *testing.T, name string, shape *Shape) string {
	t.Helper()
	f, err := LoadFuncYAML(filepath.Join(repo.Functions, name, "func.yaml"))
	if err != nil {
		t.Logf("%s: %v; using the Handle signature (%s)", name, err, shape.Invoke)
		return shape.Invoke
	}
	if f.Invoke == "" {
		return "http"
	}
	return f.Invoke
}

func buildEnvsOf(name string) []FuncEnv {
	f, err := LoadFuncYAML(filepath.Join(repo.Functions, name, "func.yaml"))
	if err != nil {
		return nil
	}
	return f.Build.BuildEnvs
}

func TestFunctionShapes(t *testing.T) {
	names, err := Functions(repo.Functions)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 8 {
		t.Errorf("functions: %v, want the eight", names)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			s, err := CheckShape(filepath.Join(repo.Functions, name))
			if err != nil {
				t.Fatal(err)
			}
			want := "http"
			if name == "notify" || name == "sweep" {
				want = "cloudevent"
			}
			if s.Invoke != want {
				t.Errorf("%s's Handle has the %s signature, want %s", name, s.Invoke, want)
			}
			if s.Package != "function" {
				t.Errorf("package %s, want function", s.Package)
			}
		})
	}
}

func writeFunction(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	if _, ok := files["go.mod"]; !ok {
		files["go.mod"] = "module example.com/fn\n\ngo 1.26\n"
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const goodFunction = `package function

import (
	"context"
	"net/http"
)

type Function struct{}

func New() *Function { return &Function{} }

func (f *Function) Handle(w http.ResponseWriter, r *http.Request) {}

func (f *Function) Start(ctx context.Context, cfg map[string]string) error { return nil }

func (f *Function) Ready(ctx context.Context) (bool, error) { return true, nil }
`

func TestShapeRejects(t *testing.T) {
	if s, err := CheckShape(writeFunction(t, map[string]string{"function.go": goodFunction})); err != nil || s.Invoke != "http" || !slices.Equal(s.Hooks, []string{"Start", "Ready"}) {
		t.Fatalf("a good function: %+v, %v", s, err)
	}
	ce := `package function

import (
	"context"

	cloudevents "github.com/cloudevents/sdk-go/v2"
)

type F struct{}

func New() *F { return &F{} }

func (f F) Handle(ctx context.Context, e cloudevents.Event) (*cloudevents.Event, error) { return nil, nil }
`
	if s, err := CheckShape(writeFunction(t, map[string]string{"f.go": ce})); err != nil || s.Invoke != "cloudevent" {
		t.Fatalf("a CloudEvent function through the root package's alias: %+v, %v", s, err)
	}

	cases := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"package-level Handle beside New", map[string]string{"function.go": goodFunction,
			"static.go": "package function\n\nimport \"net/http\"\n\nfunc Handle(w http.ResponseWriter, r *http.Request) {}\n"},
			"package-level func Handle"},
		{"package-level Handle in a test file", map[string]string{"function.go": goodFunction,
			"x_test.go": "package function\n\nfunc Handle() {}\n"},
			"x_test.go: package-level func Handle"},
		{"two News", map[string]string{"function.go": goodFunction,
			"other.go": "package function\n\nfunc init() {}\n\nfunc New() *Function { return nil }\n"},
			"2 package-level funcs New"},
		{"no New", map[string]string{"function.go": strings.Replace(goodFunction, "func New()", "func Make()", 1)},
			"no package-level func New"},
		{"New returns a value", map[string]string{"function.go": strings.Replace(goodFunction, "func New() *Function { return &Function{} }", "func New() Function { return Function{} }", 1)},
			"New must return a pointer to a type of the package"},
		{"New takes parameters", map[string]string{"function.go": strings.Replace(goodFunction, "func New() *Function { return &Function{} }", "func New(n int) *Function { return &Function{} }", 1)},
			"New takes parameters"},
		{"Handle with a context first (the old func-go shape)", map[string]string{"function.go": strings.Replace(goodFunction,
			"Handle(w http.ResponseWriter, r *http.Request)", "Handle(ctx context.Context, w http.ResponseWriter, r *http.Request)", 1)},
			"Handle is func\\(context.Context, net/http.ResponseWriter"},
		{"no Handle", map[string]string{"function.go": strings.Replace(goodFunction, "func (f *Function) Handle", "func (f *Function) Serve", 1)},
			"has no method Handle"},
		{"a hook func-go would not call", map[string]string{"function.go": strings.Replace(goodFunction,
			"Start(ctx context.Context, cfg map[string]string) error", "Start(cfg map[string]string) error", 1)},
			"func-go calls only func\\(context.Context, map\\[string\\]string\\) error"},
		{"package main", map[string]string{"function.go": strings.Replace(goodFunction, "package function", "package main", 1)},
			"package main"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := CheckShape(writeFunction(t, c.files))
			if err == nil {
				t.Fatal("accepted")
			}
			if !regexpMatch(c.want, err.Error()) {
				t.Fatalf("rejected without %q: %v", c.want, err)
			}
		})
	}
}

func regexpMatch(re, s string) bool {
	ok, err := regexp.MatchString(re, s)
	return err == nil && ok
}

// TestScaffoldLayout checks the project WriteScaffold writes against func's
// templates: module s, the function replaced by its true module path to the
// ./f symlink, its requires carried over, the same main.go.
func TestScaffoldLayout(t *testing.T) {
	fn := filepath.Join(repo.Functions, "login")
	dir := t.TempDir()
	if err := WriteScaffold(dir, fn, "http"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	mf, err := modfile.Parse("go.mod", b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if mf.Module.Mod.Path != "s" {
		t.Errorf("module %s, want s", mf.Module.Mod.Path)
	}
	replaced := map[string]string{}
	for _, r := range mf.Replace {
		replaced[r.Old.Path] = r.New.Path
	}
	if replaced["mp3converter/functions/login"] != "./f" {
		t.Errorf("replaces %v, want mp3converter/functions/login => ./f", replaced)
	}
	required := map[string]string{}
	for _, r := range mf.Require {
		required[r.Mod.Path] = r.Mod.Version
	}
	if required["mp3converter/functions/login"] != ScaffoldVersion || required["knative.dev/func-go"] != ScaffoldVersion {
		t.Errorf("requires %v", required)
	}
	own, _ := os.ReadFile(filepath.Join(fn, "go.mod"))
	fmf, err := modfile.Parse("go.mod", own, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range fmf.Require {
		if required[r.Mod.Path] != r.Mod.Version {
			t.Errorf("login requires %s %s; the scaffold has %q", r.Mod.Path, r.Mod.Version, required[r.Mod.Path])
		}
	}
	target, err := filepath.EvalSymlinks(filepath.Join(dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(fn)
	if want, _ := filepath.EvalSymlinks(abs); target != want {
		t.Errorf("f links to %s, want %s", target, want)
	}
	if link, _ := os.Readlink(filepath.Join(dir, "f")); filepath.IsAbs(link) {
		t.Errorf("f is an absolute link %s; func writes a relative one", link)
	}
	main, _ := os.ReadFile(filepath.Join(dir, "main.go"))
	for _, want := range []string{`"knative.dev/func-go/http"`, `f "mp3converter/functions/login"`, "http.Start(f.New())", "os.Exit(1)"} {
		if !strings.Contains(string(main), want) {
			t.Errorf("main.go lacks %s:\n%s", want, main)
		}
	}
}

// TestScaffoldRejectsAWrongHandle: the func-go stand-in takes the handler
// interface, so a Handle of the wrong shape is a compile error.
func TestScaffoldRejectsAWrongHandle(t *testing.T) {
	fn := writeFunction(t, map[string]string{"function.go": strings.Replace(goodFunction,
		"Handle(w http.ResponseWriter, r *http.Request)", "Handle(w http.ResponseWriter)", 1)})
	dir := t.TempDir()
	if err := WriteScaffold(dir, fn, "http"); err != nil {
		t.Fatal(err)
	}
	err := BuildScaffold(context.Background(), dir, filepath.Join(dir, "f.bin"), BuildEnv(nil, ""))
	if err == nil || !regexpMatch(`does not implement "knative.dev/func-go/http".Handler \(wrong type for method Handle\)`, err.Error()) {
		t.Fatalf("got %v, want a compile error about Handle", err)
	}
}

// TestFunctionsBuildLikeFunc builds every function the way
// `func build --builder=host` does (see scaffold.go): sequentially, with the
// shared build cache, modules through the configured GOPROXY, without cgo.
// The result must be a static executable, as func puts it alone into a
// scratch image.
//
// MP3C_COLD_MODCACHE=1 builds with an empty module cache of its own, as on
// a fresh machine (.ci/run does this on every run): nothing an earlier run
// left behind can make it pass.
func TestFunctionsBuildLikeFunc(t *testing.T) {
	if testing.Short() {
		t.Skip("builds six programs; not in -short mode")
	}
	names, err := Functions(repo.Functions)
	if err != nil {
		t.Fatal(err)
	}
	modCache := ""
	if os.Getenv("MP3C_COLD_MODCACHE") == "1" {
		modCache = t.TempDir() // -modcacherw lets TempDir's cleanup remove it
		t.Logf("cold module cache: %s", modCache)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			fn := filepath.Join(repo.Functions, name)
			shape, err := CheckShape(fn)
			if err != nil {
				t.Fatalf("func would not scaffold it: %v", err)
			}
			dir := t.TempDir()
			if err := WriteScaffold(dir, fn, invokeOf(t, name, shape)); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, "result", "f."+runtime.GOOS+"."+runtime.GOARCH)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			start := time.Now()
			if err := BuildScaffold(ctx, dir, out, BuildEnv(buildEnvsOf(name), modCache)); err != nil {
				t.Fatal(err)
			}
			t.Logf("built in %s", time.Since(start).Round(time.Millisecond))
			f, err := elf.Open(out)
			if err != nil {
				t.Fatalf("not an executable: %v", err)
			}
			defer f.Close()
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP {
					t.Errorf("%s is dynamically linked: it would not run in func's scratch image", name)
				}
			}
		})
	}
}

// TestRealSecretsAreIgnoredByGit: the files the secretGenerator reads must
// never be committed.
func TestRealSecretsAreIgnoredByGit(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("git", "-C", root, "rev-parse", "--git-dir").Run(); err != nil {
		t.Skip("not a git checkout")
	}
	m := load(t)
	var paths []string
	for _, g := range m.Kustomization.SecretGenerator {
		paths = append(paths, g.Envs...)
		for _, f := range g.Files {
			_, p, _ := strings.Cut(f, "=")
			paths = append(paths, p)
		}
	}
	for _, p := range paths {
		full := filepath.Join("knative", p)
		if err := exec.Command("git", "-C", root, "check-ignore", "-q", full).Run(); err != nil {
			t.Errorf("%s is not ignored by git: a real secret could be committed", full)
		}
		if err := exec.Command("git", "-C", root, "check-ignore", "-q", full+".example").Run(); err == nil {
			t.Errorf("%s.example is ignored by git: the example must be committed", full)
		}
	}
}
