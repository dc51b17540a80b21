package main

import (
	"flag"
	"io"
	"testing"
)

func TestExternalFlag(t *testing.T) {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	external := externalFlag{}
	fs.Var(external, "external", "")
	if err := fs.Parse([]string{"--external", "convert=http://127.0.0.1:9000", "--external=notify=http://127.0.0.1:9001/"}); err != nil {
		t.Fatal(err)
	}
	if len(external) != 2 || external["convert"] != "http://127.0.0.1:9000" || external["notify"] != "http://127.0.0.1:9001/" {
		t.Fatalf("external = %v", external)
	}
	for _, bad := range []string{"convert", "=http://x", "convert="} {
		if err := fs.Parse([]string{"--external", bad}); err == nil {
			t.Errorf("--external %q accepted", bad)
		}
	}
}
