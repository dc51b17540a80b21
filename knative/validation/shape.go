package validation

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Shape is what func's scaffolding needs to find in a function's package
// (docs/architecture.md, "Layout"): one package-level New returning a pointer to
// the function's type, whose Handle method has the func-go HTTP or
// CloudEvent signature, and no package-level Handle (func's signature
// detector would see a "static" function too and refuse to build).
type Shape struct {
	Package  string   // package name of the non-test files
	TypeName string   // the type New returns a pointer to
	Invoke   string   // "http" or "cloudevent", from Handle's signature
	Hooks    []string // lifecycle methods present: Start, Stop, Ready, Alive
}

// Signatures func-go expects, spelled with full import paths.
var (
	httpHandle  = "func(net/http.ResponseWriter, *net/http.Request)"
	ceHandle    = "func(context.Context, github.com/cloudevents/sdk-go/v2/event.Event) (*github.com/cloudevents/sdk-go/v2/event.Event, error)"
	hookSignals = map[string]string{
		"Start": "func(context.Context, map[string]string) error",
		"Stop":  "func(context.Context) error",
		"Ready": "func(context.Context) (bool, error)",
		"Alive": "func(context.Context) (bool, error)",
	}
)

// CheckShape parses every .go file directly in dir (test files included, as
// func's detector reads them all) and checks the scaffolding contract.
func CheckShape(dir string) (*Shape, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	fset := token.NewFileSet()
	type parsed struct {
		name string
		file *ast.File
	}
	var files []parsed
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, e.Name()), nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		files = append(files, parsed{e.Name(), f})
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: no Go files", dir)
	}

	s := &Shape{}
	var errs []error
	var news []string
	types := map[string]bool{}
	var newFile parsed
	var newDecl *ast.FuncDecl
	for _, p := range files {
		test := strings.HasSuffix(p.name, "_test.go")
		if !test {
			if s.Package == "" {
				s.Package = p.file.Name.Name
			} else if s.Package != p.file.Name.Name {
				errs = append(errs, fmt.Errorf("%s: package %s, other files are package %s", p.name, p.file.Name.Name, s.Package))
			}
		}
		for _, d := range p.file.Decls {
			switch d := d.(type) {
			case *ast.GenDecl:
				if test {
					continue
				}
				for _, sp := range d.Specs {
					if ts, ok := sp.(*ast.TypeSpec); ok {
						types[ts.Name.Name] = true
					}
				}
			case *ast.FuncDecl:
				if d.Recv != nil {
					continue
				}
				switch d.Name.Name {
				case "New":
					news = append(news, p.name)
					if !test {
						newFile, newDecl = p, d
					}
				case "Handle":
					errs = append(errs, fmt.Errorf("%s: package-level func Handle: func would detect a static function beside the instanced one and refuse to build (use a method)", p.name))
				}
			}
		}
	}
	if s.Package == "main" {
		errs = append(errs, errors.New("package main: a function is a library package (func writes main)"))
	}
	switch {
	case len(news) == 0:
		return nil, errors.Join(append(errs, errors.New("no package-level func New: func's scaffolding calls New()"))...)
	case len(news) > 1:
		errs = append(errs, fmt.Errorf("%d package-level funcs New (%s): exactly one", len(news), strings.Join(news, ", ")))
	case newDecl == nil:
		return nil, errors.Join(append(errs, errors.New("New is declared in a test file only"))...)
	}
	if newDecl.Type.Params.NumFields() != 0 {
		errs = append(errs, fmt.Errorf("%s: New takes parameters; the scaffolding calls New()", newFile.name))
	}
	res := newDecl.Type.Results
	if res.NumFields() != 1 {
		return nil, errors.Join(append(errs, fmt.Errorf("%s: New must return exactly one value, a pointer", newFile.name))...)
	}
	star, ok := res.List[0].Type.(*ast.StarExpr)
	ident, ok2 := ast.Expr(nil), false
	if ok {
		ident, ok2 = star.X, true
	}
	id, isIdent := ident.(*ast.Ident)
	if !ok || !ok2 || !isIdent || !types[id.Name] {
		return nil, errors.Join(append(errs, fmt.Errorf("%s: New must return a pointer to a type of the package, returns %s", newFile.name, exprString(res.List[0].Type, nil)))...)
	}
	s.TypeName = id.Name

	methods := map[string]string{}
	for _, p := range files {
		if strings.HasSuffix(p.name, "_test.go") {
			continue
		}
		imports := importNames(p.file)
		for _, d := range p.file.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Recv == nil || len(fd.Recv.List) != 1 || recvType(fd.Recv.List[0].Type) != s.TypeName {
				continue
			}
			methods[fd.Name.Name] = exprString(fd.Type, imports)
		}
	}
	switch h, ok := methods["Handle"]; {
	case !ok:
		errs = append(errs, fmt.Errorf("type %s has no method Handle", s.TypeName))
	case h == httpHandle:
		s.Invoke = "http"
	case h == ceHandle:
		s.Invoke = "cloudevent"
	default:
		errs = append(errs, fmt.Errorf("(%s).Handle is %s; want %s or %s", s.TypeName, h, httpHandle, ceHandle))
	}
	for _, hook := range []string{"Start", "Stop", "Ready", "Alive"} {
		sig, ok := methods[hook]
		if !ok {
			continue
		}
		if sig != hookSignals[hook] {
			errs = append(errs, fmt.Errorf("(%s).%s is %s; func-go calls only %s (it would silently skip this one)", s.TypeName, hook, sig, hookSignals[hook]))
			continue
		}
		s.Hooks = append(s.Hooks, hook)
	}
	return s, errors.Join(errs...)
}

func recvType(e ast.Expr) string {
	if s, ok := e.(*ast.StarExpr); ok {
		e = s.X
	}
	if id, ok := e.(*ast.Ident); ok {
		return id.Name
	}
	return ""
}

// importNames maps a file's import names to import paths.
func importNames(f *ast.File) map[string]string {
	m := map[string]string{}
	for _, im := range f.Imports {
		path, _ := strconv.Unquote(im.Path.Value)
		name := path[strings.LastIndex(path, "/")+1:]
		if n, ok := packageNames[path]; ok {
			name = n
		} else if parts := strings.Split(path, "/"); len(parts) > 1 && isMajorVersion(name) {
			name = parts[len(parts)-2]
		}
		if im.Name != nil {
			name = im.Name.Name
		}
		m[name] = path
	}
	return m
}

// packageNames are package names that differ from their import path's end.
var packageNames = map[string]string{
	"github.com/cloudevents/sdk-go/v2": "cloudevents",
}

func isMajorVersion(s string) bool {
	return len(s) > 1 && s[0] == 'v' && strings.Trim(s[1:], "0123456789") == ""
}

// aliases of event.Event in the root package of the CloudEvents SDK.
var typeAliases = map[string]string{
	"github.com/cloudevents/sdk-go/v2.Event": "github.com/cloudevents/sdk-go/v2/event.Event",
}

// exprString prints a type with package names replaced by import paths.
func exprString(e ast.Expr, imports map[string]string) string {
	switch t := e.(type) {
	case *ast.Ident:
		return t.Name
	case *ast.StarExpr:
		return "*" + exprString(t.X, imports)
	case *ast.SelectorExpr:
		pkg := exprString(t.X, imports)
		if p, ok := imports[pkg]; ok {
			pkg = p
		}
		s := pkg + "." + t.Sel.Name
		if a, ok := typeAliases[s]; ok {
			return a
		}
		return s
	case *ast.MapType:
		return "map[" + exprString(t.Key, imports) + "]" + exprString(t.Value, imports)
	case *ast.ArrayType:
		return "[]" + exprString(t.Elt, imports)
	case *ast.Ellipsis:
		return "..." + exprString(t.Elt, imports)
	case *ast.InterfaceType:
		return "interface{}"
	case *ast.FuncType:
		params := fieldTypes(t.Params, imports)
		results := fieldTypes(t.Results, imports)
		s := "func(" + strings.Join(params, ", ") + ")"
		switch len(results) {
		case 0:
		case 1:
			s += " " + results[0]
		default:
			s += " (" + strings.Join(results, ", ") + ")"
		}
		return s
	}
	return fmt.Sprintf("%T", e)
}

func fieldTypes(fl *ast.FieldList, imports map[string]string) []string {
	if fl == nil {
		return nil
	}
	var out []string
	for _, f := range fl.List {
		n := len(f.Names)
		if n == 0 {
			n = 1
		}
		for range n {
			out = append(out, exprString(f.Type, imports))
		}
	}
	return out
}

// Functions lists the function directories (with a go.mod) below dir.
func Functions(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "go.mod")); err == nil {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return names, nil
}
