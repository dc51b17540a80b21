package function

import (
	"math"
	"os/exec"
	"path/filepath"
	"testing"
)

// mp3Duration reads what ffprobe reads from the MP3s ffmpeg writes (MPEG-1 and MPEG-2,
// stereo and mono, encoded and copied), and declines a file without a Xing header.
func TestMP3DurationMatchesFFprobe(t *testing.T) {
	dir := t.TempDir()
	encode := func(name string, args ...string) string {
		t.Helper()
		out := filepath.Join(dir, name)
		cmd := exec.Command("ffmpeg", append(append([]string{"-nostdin", "-loglevel", "error", "-y"}, args...), out)...)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("ffmpeg %s: %v %s", name, err, b)
		}
		return out
	}
	noise := []string{"-f", "lavfi", "-i", "anoisesrc=d=2.5:c=pink:r=44100"}
	stereo := encode("stereo.mp3", append(noise, "-ac", "2", "-c:a", "libmp3lame", "-q:a", "2")...)
	files := []string{
		stereo,
		encode("mono-22k.mp3", append(noise, "-ac", "1", "-ar", "22050", "-c:a", "libmp3lame")...),
		encode("stereo-11k.mp3", append(noise, "-ac", "2", "-ar", "11025", "-c:a", "libmp3lame")...),
		encode("copied.mp3", "-i", stereo, "-map", "0:a:0", "-c:a", "copy", "-map_metadata", "-1"),
	}
	for _, f := range files {
		got, ok := mp3Duration(f)
		_, want := probeFile(t, f)
		if !ok || math.Abs(got.Seconds()-want) > 0.001 {
			t.Errorf("%s: %v (ok %v), ffprobe says %.3f s", filepath.Base(f), got, ok, want)
		}
	}
	plain := encode("no-xing.mp3", append(noise, "-c:a", "libmp3lame", "-write_xing", "0")...)
	if d, ok := mp3Duration(plain); ok {
		t.Errorf("without a Xing header: %v, want not ok (ffprobe then)", d)
	}
	if d, ok := mp3Duration(filepath.Join(dir, "missing.mp3")); ok {
		t.Errorf("missing file: %v", d)
	}
}
