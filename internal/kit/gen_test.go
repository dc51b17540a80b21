package kit

import (
	"path/filepath"
	"testing"
)

// TestCopiesAreFresh fails when a function's kit_*.go differs from what `go generate ./...`
// makes of internal/kit, or when a kit_*.go exists that the table does not produce.
func TestCopiesAreFresh(t *testing.T) {
	stale, err := Stale(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stale {
		t.Errorf("%s is stale: run `go generate ./...` at the repository root (edit internal/kit, never the copies)", s)
	}
}
