package stack

import (
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/yaml"

	"mp3converter/internal/local/funchost"
)

// TestContainerConcurrencyIsFuncYAMLs: the local host queues requests beyond
// the containerConcurrency func deploy gives each Service, from its func.yaml.
func TestContainerConcurrencyIsFuncYAMLs(t *testing.T) {
	for _, name := range funchost.Names {
		b, err := os.ReadFile(filepath.Join("..", "..", "..", "functions", name, "func.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var f struct {
			Deploy struct {
				Options struct {
					Resources struct {
						Limits struct {
							Concurrency *int `json:"concurrency"`
						} `json:"limits"`
					} `json:"resources"`
				} `json:"options"`
			} `json:"deploy"`
		}
		if err := yaml.Unmarshal(b, &f); err != nil {
			t.Fatalf("%s/func.yaml: %v", name, err)
		}
		want := 0
		if c := f.Deploy.Options.Resources.Limits.Concurrency; c != nil {
			want = *c
		}
		if got := containerConcurrency[name]; got != want {
			t.Errorf("%s: the local host admits %d requests at once, func.yaml's limits.concurrency is %d", name, got, want)
		}
	}
}
