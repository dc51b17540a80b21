package stacktest

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strconv"
)

// FFmpeg runs ffmpeg quietly with args, writing (over) out.
func FFmpeg(t TB, out string, args ...string) {
	t.Helper()
	all := append([]string{"-nostdin", "-loglevel", "error", "-y"}, args...)
	if output, err := exec.Command("ffmpeg", append(all, out)...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg %v: %v\n%s", args, err, output)
	}
}

// ClipArgs are ffmpeg's arguments for a small H.264 clip of ffmpeg's test
// picture (160x120, 10 frames a second), seconds long, with a 440 Hz AAC tone
// when withAudio.
func ClipArgs(seconds int, withAudio bool) []string {
	d := strconv.Itoa(seconds)
	args := []string{"-f", "lavfi", "-i", "testsrc=duration=" + d + ":size=160x120:rate=10"}
	if withAudio {
		args = append(args, "-f", "lavfi", "-i", "sine=frequency=440:duration="+d, "-c:a", "aac")
	}
	return append(args, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-shortest")
}

// Video writes the clip of ClipArgs, with sound, to dir/name and returns its path.
func Video(t TB, dir, name string, seconds int) string {
	t.Helper()
	path := filepath.Join(dir, name)
	FFmpeg(t, path, ClipArgs(seconds, true)...)
	return path
}

// SilentVideo is Video without an audio track.
func SilentVideo(t TB, dir, name string, seconds int) string {
	t.Helper()
	path := filepath.Join(dir, name)
	FFmpeg(t, path, ClipArgs(seconds, false)...)
	return path
}

// Probe returns the codec of a file's first audio stream ("" if none) and
// its duration.
func Probe(t TB, path string) (codec string, seconds float64) {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "a:0",
		"-show_entries", "stream=codec_name:format=duration", "-of", "json", path).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", path, err)
	}
	var p struct {
		Streams []struct {
			CodecName string `json:"codec_name"`
		}
		Format struct{ Duration string }
	}
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatalf("ffprobe %s: %v", path, err)
	}
	if len(p.Streams) > 0 {
		codec = p.Streams[0].CodecName
	}
	seconds, _ = strconv.ParseFloat(p.Format.Duration, 64)
	return codec, seconds
}
