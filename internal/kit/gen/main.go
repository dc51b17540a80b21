// Command gen copies the kit into the functions (run by `go generate ./...` from the
// repository root, through the directive in internal/kit/doc.go): each function gets the
// files internal/kit/generate.go lists for it, as functions/<name>/kit_<file>. Copies the
// table no longer produces are removed.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"mp3converter/internal/kit"
)

func main() {
	// go generate runs in internal/kit.
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err == nil {
		err = generate(root)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kit/gen:", err)
		os.Exit(1)
	}
}

func generate(root string) error {
	files, err := kit.Generated(root)
	if err != nil {
		return err
	}
	old, err := filepath.Glob(filepath.Join(root, "functions", "*", "kit_*.go"))
	if err != nil {
		return err
	}
	for _, path := range old {
		rel, _ := filepath.Rel(root, path)
		if _, ok := files[rel]; !ok {
			if err := os.Remove(path); err != nil {
				return err
			}
		}
	}
	for rel, b := range files {
		path := filepath.Join(root, rel)
		if have, err := os.ReadFile(path); err == nil && string(have) == string(b) {
			continue // untouched: no new mtime
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
