package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
)

// runDownload is `mp3converter download` on stdout.
func runDownload(ctx context.Context, args []string) error {
	return (&app{out: os.Stdout}).download(ctx, args)
}

// download saves one MP3, under the name the server gives it or -o's.
func (a *app) download(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("download", flag.ContinueOnError)
	server := serverFlag(fs)
	out := fs.String("o", "", "write the MP3 to this file (default: its name on the server, in the current directory)")
	if err := fs.Parse(reorder(args)); err != nil {
		return helpIsNoError(err)
	}
	if fs.NArg() != 1 {
		return errors.New("usage: mp3converter download MP3_FID [-o FILE]")
	}
	fid := fs.Arg(0)
	c, err := a.client(*server)
	if err != nil {
		return err
	}
	dest := func(suggested string) (string, bool) {
		name := safeName(suggested, fid+".mp3")
		if st, err := os.Stat(*out); *out != "" && err == nil && st.IsDir() {
			return filepath.Join(*out, name), false // -o DIR: its name, in DIR
		}
		if *out != "" {
			return *out, true
		}
		return name, false
	}
	disp := newDisplay(a.out)
	tr := disp.track(fid)
	path, err := a.fetch(ctx, c, fid, dest, tr)
	if err != nil {
		tr.fail(err.Error())
	} else {
		tr.done("saved " + path)
	}
	disp.wait()
	return err
}

// safeName keeps a server-suggested file name to a plain name in the
// current directory: no directories, no control characters, not hidden.
func safeName(name, fallback string) string {
	name = oneLine(filepath.Base(strings.ReplaceAll(name, `\`, "/")))
	name = strings.TrimLeft(strings.TrimSpace(name), ".")
	if name == "" || name == "/" {
		return fallback
	}
	return name
}
