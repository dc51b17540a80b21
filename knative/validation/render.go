package validation

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"mp3converter/knative/model"
)

// Render builds the kustomization in knativeDir in process, as
// `kubectl apply -k` builds it before it sends anything (kubectl embeds the
// same kustomize library, sigs.k8s.io/kustomize/api's krusty, with its
// default options: load restrictions to the folder, no plugins), on a copy
// whose secrets are the committed *.example files. The output is decoded
// strictly into the model.
func Render(knativeDir string) ([]*model.Object, error) {
	files, err := RenderInputs(knativeDir)
	if err != nil {
		return nil, err
	}
	fsys := filesys.MakeFsInMemory()
	const root = "/knative"
	for rel, b := range files {
		path := filepath.Join(root, rel)
		if err := fsys.MkdirAll(filepath.Dir(path)); err != nil {
			return nil, err
		}
		if err := fsys.WriteFile(path, b); err != nil {
			return nil, err
		}
	}
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fsys, root)
	if err != nil {
		return nil, err
	}
	out, err := res.AsYaml()
	if err != nil {
		return nil, err
	}
	return model.Decoder{}.DecodeFile("kustomize build knative/", out)
}

// RenderInputs is what a build of knative/ reads: every file but the Go
// packages and the cluster-wide settings, with secrets/*.example in place of
// the real (git-ignored) secret files, which are never read. Keys are paths
// relative to knativeDir.
func RenderInputs(knativeDir string) (map[string][]byte, error) {
	files := map[string][]byte{}
	err := filepath.WalkDir(knativeDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(knativeDir, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel == "validation" || rel == "model" || rel == ClusterDir {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(rel, ".go") {
			return nil
		}
		if strings.HasPrefix(rel, "secrets/") {
			if !strings.HasSuffix(rel, ".example") {
				return nil // never read real secrets
			}
			rel = strings.TrimSuffix(rel, ".example")
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files[rel] = b
		return nil
	})
	return files, err
}
