package validation

import (
	"mp3converter/knative/model"

	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

// TestKubectlKustomizeRenders renders knative/ with the kustomize built into
// kubectl (what `kubectl apply -k` runs before it sends anything), on a copy
// whose secrets are the committed examples and whose login image is pointed
// at a registry. The output must decode strictly, stay in the namespace,
// carry the hashed Secret names into the Knative Services and apply the image
// override. Skipped when kubectl is not installed: the Go rules above do not
// depend on it.
func TestKubectlKustomizeRenders(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl is not installed; the rendering check needs its built-in kustomize")
	}
	dir := t.TempDir()
	src := repo.Knative
	err = filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			if rel == "validation" {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dir, rel), 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.HasPrefix(rel, "secrets"+string(filepath.Separator)) {
			if !strings.HasSuffix(rel, ".example") {
				return nil // never copy real secrets
			}
			rel = strings.TrimSuffix(rel, ".example")
		}
		return os.WriteFile(filepath.Join(dir, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	k := filepath.Join(dir, "kustomization.yaml")
	kb, err := os.ReadFile(k)
	if err != nil {
		t.Fatal(err)
	}
	override := "- name: mp3converter/login\n  newName: registry.example.com/mp3converter/login\n  newTag: v1\n"
	kb = bytes.Replace(kb, []byte("- name: mp3converter/login\n"), []byte(override), 1)
	if err := os.WriteFile(k, kb, 0o644); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(kubectl, "kustomize", dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v\n%s", err, stderr.String())
	}
	objs, err := (model.Decoder{}).DecodeFile("kubectl-kustomize-output", out)
	if err != nil {
		t.Fatal(err)
	}

	secrets := map[string]string{} // generator name -> generated name
	for _, o := range objs {
		if o.Kind != "Namespace" && o.Namespace != Namespace {
			t.Errorf("%s rendered in namespace %q", o, o.Namespace)
		}
		if s, ok := o.Typed.(*corev1.Secret); ok {
			base := s.Name[:strings.LastIndex(s.Name, "-")]
			secrets[base] = s.Name
		}
	}
	m := load(t)
	for _, g := range m.Kustomization.SecretGenerator {
		if secrets[g.Name] == "" || secrets[g.Name] == g.Name {
			t.Errorf("secret %s was not generated with a content hash: %v", g.Name, secrets)
		}
	}
	services := 0
	for _, o := range objs {
		svc, ok := o.Typed.(*servingv1.Service)
		if !ok {
			continue
		}
		services++
		c := svc.Spec.Template.Spec.Containers[0]
		for _, e := range c.Env {
			if r := e.ValueFrom; r != nil && r.SecretKeyRef != nil {
				found := false
				for _, name := range secrets {
					found = found || name == r.SecretKeyRef.Name
				}
				if !found {
					t.Errorf("%s reads %s from Secret %s, which the output does not contain", svc.Name, e.Name, r.SecretKeyRef.Name)
				}
			}
		}
		want := ImagePrefix + svc.Name
		if svc.Name == "login" {
			want = "registry.example.com/mp3converter/login:v1"
		}
		if c.Image != want {
			t.Errorf("%s's image is %s, want %s", svc.Name, c.Image, want)
		}
	}
	if services != 7 {
		t.Errorf("%d Knative Services rendered, want 7", services)
	}
}
