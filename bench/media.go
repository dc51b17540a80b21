package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// video is a generated test video: H.264 video and AAC audio in MP4, the
// index first (as most uploads are).
type video struct {
	name     string // e.g. 60s-720p
	label    string // e.g. 60 s 720p
	path     string
	seconds  int
	size     int64
	describe string
}

// The test videos: ffmpeg's testsrc picture and pink noise as sound (noise,
// unlike a pure tone, makes the MP3 encoder work as it does on music).
var mediaSpecs = []struct {
	name, label    string
	seconds        int
	size           string
	rate, vbitrate string
}{
	{"60s-720p", "60 s 720p", 60, "1280x720", "30", "2M"},
	{"600s-480p", "10 min 480p", 600, "854x480", "25", "1M"},
	{"10s-360p", "10 s 360p", 10, "640x360", "25", "800k"},
}

// ensureMedia generates the missing test videos into bench/out/media and
// returns how many it made.
func (b *bench) ensureMedia(ctx context.Context) (int, error) {
	b.media = map[string]*video{}
	made := 0
	for _, spec := range mediaSpecs {
		path := filepath.Join(b.out, "media", spec.name+".mp4")
		if _, err := os.Stat(path); err != nil {
			b.progress("generating %s (cached for later runs)", path)
			tmp := path + ".tmp.mp4"
			d := strconv.Itoa(spec.seconds)
			args := []string{"-nostdin", "-hide_banner", "-loglevel", "error", "-y",
				"-f", "lavfi", "-i", "testsrc=duration=" + d + ":size=" + spec.size + ":rate=" + spec.rate,
				"-f", "lavfi", "-i", "anoisesrc=color=pink:amplitude=0.25:sample_rate=48000:duration=" + d,
				"-c:v", "libx264", "-preset", "ultrafast", "-b:v", spec.vbitrate, "-pix_fmt", "yuv420p",
				"-c:a", "aac", "-b:a", "128k", "-ac", "2", "-shortest", "-movflags", "+faststart", tmp}
			if out, err := exec.CommandContext(ctx, "ffmpeg", args...).CombinedOutput(); err != nil {
				os.Remove(tmp)
				return made, fmt.Errorf("generating %s: %v\n%s", path, err, out)
			}
			if err := os.Rename(tmp, path); err != nil {
				return made, err
			}
			made++
		}
		st, err := os.Stat(path)
		if err != nil {
			return made, err
		}
		b.media[spec.name] = &video{name: spec.name, label: spec.label, path: path, seconds: spec.seconds, size: st.Size(),
			describe: fmt.Sprintf("%d s %s H.264 %s + AAC 128k stereo, %s", spec.seconds, spec.size, spec.vbitrate, mib(st.Size()))}
	}
	return made, nil
}

// ffmpegArgs is the command convert runs for an AAC track (functions/convert
// runFFmpeg with MP3_QUALITY unset: -q:a 2).
func ffmpegArgs(in, out string) []string {
	return []string{"-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", in, "-map", "0:a:0", "-vn",
		"-c:a", "libmp3lame", "-q:a", "2", out}
}

// ffprobeArgs is how convert inspects a file, before and after ffmpeg.
func ffprobeArgs(name string) []string {
	return []string{"-v", "error", "-print_format", "json", "-show_format", "-show_streams", name}
}

// timeCommand runs a program and returns how long it took.
func timeCommand(ctx context.Context, name string, args ...string) (time.Duration, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	t := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(t)
	if err != nil {
		return d, fmt.Errorf("%s: %v\n%s", name, err, out)
	}
	return d, nil
}
