package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"mp3converter/internal/client"
)

// runStatus is `mp3converter status` on stdout.
func runStatus(ctx context.Context, args []string) error {
	return (&app{out: os.Stdout}).status(ctx, args)
}

// listLimit is how many recent jobs `status` shows.
const listLimit = 20

// status shows one job, or the caller's recent jobs as a table.
func (a *app) status(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	server := serverFlag(fs)
	if err := fs.Parse(reorder(args)); err != nil {
		return helpIsNoError(err)
	}
	if fs.NArg() > 1 {
		return errors.New("usage: mp3converter status [VIDEO_FID]")
	}
	c, err := a.client(*server)
	if err != nil {
		return err
	}
	if fs.NArg() == 1 {
		return a.showJob(ctx, c, fs.Arg(0))
	}
	return a.listJobs(ctx, c)
}

func (a *app) showJob(ctx context.Context, c *client.Client, fid string) error {
	j, err := c.Job(ctx, fid)
	var apiErr *client.APIError
	if errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound {
		return fmt.Errorf("no job %s (or not yours): `mp3converter status` lists yours", fid)
	}
	if err != nil {
		return explain(err)
	}
	tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "file:\t%s\n", j.Filename)
	fmt.Fprintf(tw, "video:\t%s (%s, %s)\n", j.VideoFID, size(j.Size), j.ContentType)
	fmt.Fprintf(tw, "state:\t%s\n", stateWithProgress(j))
	if j.Reason != "" {
		fmt.Fprintf(tw, "reason:\t%s\n", j.Reason)
	}
	fmt.Fprintf(tw, "uploaded:\t%s\n", when(j.CreatedAt))
	fmt.Fprintf(tw, "updated:\t%s\n", when(j.UpdatedAt))
	if j.State == "done" && j.MP3FID != "" {
		fmt.Fprintf(tw, "mp3:\t%s (%.1f s): mp3converter download %s\n", j.MP3FID, j.DurationSeconds, j.MP3FID)
	}
	return tw.Flush()
}

// stateWithProgress is the job's state, with ffmpeg's percentage while converting.
func stateWithProgress(j client.Job) string {
	if j.State == "converting" && j.Progress != nil {
		return fmt.Sprintf("converting %d%%", *j.Progress)
	}
	return j.State
}

func (a *app) listJobs(ctx context.Context, c *client.Client) error {
	jobs, next, err := c.Jobs(ctx, listLimit, "")
	if err != nil {
		return explain(err)
	}
	if len(jobs) == 0 {
		fmt.Fprintln(a.out, "No jobs yet: `mp3converter convert FILE` converts one.")
		return nil
	}
	tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VIDEO_FID\tFILE\tSTATE\tUPDATED\tREASON")
	for _, j := range jobs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", j.VideoFID, oneLine(j.Filename), stateWithProgress(j), when(j.UpdatedAt), oneLine(j.Reason))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if next != "" {
		fmt.Fprintf(a.out, "(the %d most recent)\n", listLimit)
	}
	return nil
}

// when is a time in the local zone, to the second.
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.DateTime)
}

// oneLine keeps a table row on one line: control characters become spaces.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}
