package function

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// mediaInfo is what the conversion needs to know about a file.
type mediaInfo struct {
	audioCodec string        // codec of the first audio stream, "" when there is none
	duration   time.Duration // 0 when unknown
	picture    bool          // a still image (PNG, JPEG, GIF...), not a video
}

// probeError: ffprobe ran and could not read the file (a permanent failure).
type probeError struct{ stderr string }

func (e *probeError) Error() string { return "ffprobe: " + lastLine(e.stderr) }

// ffmpegError: ffmpeg ran and exited non-zero (a permanent failure).
type ffmpegError struct {
	code   int
	stderr string
}

func (e *ffmpegError) Error() string {
	return fmt.Sprintf("ffmpeg exited with status %d: %s", e.code, lastLine(e.stderr))
}

// probe runs ffprobe on a file. Other errors than *probeError are transient
// (ffprobe missing, killed by the deadline).
func (s *state) probe(ctx context.Context, name string) (mediaInfo, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, s.ffprobe, "-v", "error", "-print_format", "json", "-show_format", "-show_streams", name)
	cmd.Stdout = &stdout
	cmd.Stderr = &tail{max: 8 << 10, buf: &stderr}
	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if ctx.Err() == nil && errors.As(err, &exitErr) && exitErr.Exited() {
			return mediaInfo{}, &probeError{stderr: stderr.String()}
		}
		return mediaInfo{}, fmt.Errorf("ffprobe: %w", err)
	}
	var out struct {
		Streams []struct {
			CodecType string `json:"codec_type"`
			CodecName string `json:"codec_name"`
			Duration  string `json:"duration"`
		} `json:"streams"`
		Format struct {
			Duration   string `json:"duration"`
			FormatName string `json:"format_name"`
		} `json:"format"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		return mediaInfo{}, &probeError{stderr: "unreadable ffprobe output: " + err.Error()}
	}
	info := mediaInfo{duration: seconds(out.Format.Duration), picture: isPictureFormat(out.Format.FormatName)}
	for _, s := range out.Streams {
		if s.CodecType != "audio" {
			continue
		}
		if info.audioCodec == "" {
			info.audioCodec = s.CodecName
			if info.audioCodec == "" {
				info.audioCodec = "unknown"
			}
		}
		info.duration = max(info.duration, seconds(s.Duration))
	}
	return info, nil
}

// isPictureFormat tells ffprobe's demuxers of still images (png_pipe,
// jpeg_pipe, webp_pipe, image2, gif, ...) from those of videos.
func isPictureFormat(name string) bool {
	return strings.HasSuffix(name, "_pipe") || name == "image2" || name == "gif"
}

// runFFmpeg extracts the first audio stream of in into the MP3 out: copied when it is
// already MP3, encoded with LAME otherwise. Other errors than *ffmpegError are transient.
// ffmpeg's progress lines go to progress.
func (s *state) runFFmpeg(ctx context.Context, in, out string, copyAudio bool, progress io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	args := []string{"-nostdin", "-hide_banner", "-loglevel", "error", "-nostats", "-progress", "pipe:1", "-y", "-i", in, "-map", "0:a:0", "-vn"}
	if copyAudio {
		args = append(args, "-c:a", "copy")
	} else {
		args = append(args, "-c:a", "libmp3lame", "-q:a", strconv.Itoa(s.quality))
	}
	args = append(args, out)
	if s.onFFmpeg != nil {
		s.onFFmpeg(args)
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, s.ffmpeg, args...)
	cmd.Stderr = &tail{max: 8 << 10, buf: &stderr}
	cmd.Stdout = progress
	err := cmd.Run()
	if err == nil {
		return nil
	}
	var exitErr *exec.ExitError
	if ctx.Err() == nil && errors.As(err, &exitErr) && exitErr.Exited() {
		return &ffmpegError{code: exitErr.ExitCode(), stderr: stderr.String()}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("ffmpeg stopped after %s: %w", s.timeout, ctx.Err())
	}
	return fmt.Errorf("ffmpeg: %w", err)
}

// seconds parses ffprobe's decimal seconds ("N/A" and "" give 0).
func seconds(s string) time.Duration {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v <= 0 || v > 1e9 {
		return 0
	}
	return time.Duration(v * float64(time.Second))
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// tail keeps the last max bytes written to it (ffmpeg can be chatty on a broken file).
type tail struct {
	max int
	buf *bytes.Buffer
}

func (t *tail) Write(p []byte) (int, error) {
	n := len(p)
	t.buf.Write(p)
	if over := t.buf.Len() - t.max; over > 0 {
		t.buf.Next(over)
	}
	return n, nil
}

// findTool resolves a program: the configured path, else PATH, else the usual install places.
func findTool(configured, name string) (string, error) {
	if configured != "" {
		p, err := exec.LookPath(configured)
		if err != nil {
			return configured, fmt.Errorf("%s not found at %q: %w", name, configured, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/bin", "/usr/local/bin", "/bin", "/"} {
		if p, err := exec.LookPath(filepath.Join(dir, name)); err == nil {
			return p, nil
		}
	}
	return name, fmt.Errorf("%s not found in PATH: the image needs ffmpeg (see functions/convert/README.md)", name)
}

// toolMessage tells the caller when ffmpeg or ffprobe is missing from the image.
func toolMessage(err error, def string) string {
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
		return "the converter (ffmpeg) is not available here, try again later"
	}
	return def
}
