package validation

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"mp3converter/knative/model"
)

// TestKubectlKustomizeRenders renders knative/ with the kustomize built into
// kubectl (what `kubectl apply -k` runs before it sends anything) on the same
// inputs as Render, and expects the same objects, field for field: the
// in-process rendering the other tests check is what kubectl makes.
// Skipped when kubectl is not installed (TestKustomizeRenders needs none).
func TestKubectlKustomizeRenders(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl is not installed; TestKustomizeRenders renders in process")
	}
	files, err := RenderInputs(repo.Knative)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for rel, b := range files {
		path := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(kubectl, "kustomize", dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v\n%s", err, stderr.String())
	}
	byKubectl, err := model.Decoder{}.DecodeFile("kubectl-kustomize-output", out)
	if err != nil {
		t.Fatal(err)
	}
	inProcess, err := Render(repo.Knative)
	if err != nil {
		t.Fatal(err)
	}
	key := func(o *model.Object) string { return o.APIVersion + "/" + o.Kind + "/" + o.Name }
	want := map[string]string{}
	for _, o := range inProcess {
		b, _ := json.Marshal(o.Map)
		want[key(o)] = string(b)
	}
	for _, o := range byKubectl {
		b, _ := json.Marshal(o.Map)
		switch w, ok := want[key(o)]; {
		case !ok:
			t.Errorf("kubectl renders %s, Render does not", key(o))
		case w != string(b):
			t.Errorf("%s differs:\nkubectl: %s\nRender:  %s", key(o), b, w)
		}
		delete(want, key(o))
	}
	for k := range want {
		t.Errorf("Render renders %s, kubectl does not", k)
	}
}
