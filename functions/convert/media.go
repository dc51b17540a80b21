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
	"slices"
	"strconv"
	"strings"
	"time"
)

// mediaInfo is what the conversion needs to know about a file.
type mediaInfo struct {
	format     string        // the demuxer ffprobe chose, one of allowedFormats
	audioCodec string        // codec of the first audio stream, "" when there is none
	duration   time.Duration // 0 when unknown; the container's claim, not a bound
	picture    bool          // a still image (PNG, JPEG, GIF...), not a video
}

// allowedFormats are the demuxers ffprobe and ffmpeg may use: containers that hold their
// media in the one file they read. Demuxers that open other files or URLs (hls, dash,
// concat, sdp, rtsp, image2 sequences, mov's drefs are off by default) are not on it, so a
// playlist or list cannot pull the converter's own files into an MP3 or recurse into
// itself. The still-image pipes are on it so that a picture gets its own clear reason.
var allowedFormats = strings.Join([]string{
	"mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi", "mpegts", "mpeg", "flv",
	"ogg", "wav", "w64", "mp3", "flac", "asf", "aac", "ac3", "eac3", "aiff", "caf", "amr", "wv", "ape",
	"png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "gif",
}, ",")

// inputOptions restrict a tool to its one input and the allowed demuxers: the video comes
// over loopback HTTP (videoServer), so a tool reading it may use http and tcp and not the
// local disk; one reading a local file (the MP3 it wrote) may use that file and no network.
func inputOptions(input string) []string {
	protocols := "file"
	if strings.HasPrefix(input, "http://") {
		protocols = "http,tcp"
	}
	return []string{"-protocol_whitelist", protocols, "-format_whitelist", allowedFormats}
}

// toolLimits bound what one ffprobe or ffmpeg process may take (startLimited).
type toolLimits struct {
	memory     uint64 // address space, bytes
	files      uint64 // open file descriptors
	cpuSeconds uint64
}

// limits are the bounds of ffprobe and ffmpeg: the pod has 1 GiB, convert itself a little;
// the tool reads one file and writes one (plus its libraries and a few pipes); CPU time is
// CONVERT_TIMEOUT on every core of a small node, a backstop behind the timeout itself.
func (s *state) limits() toolLimits {
	return toolLimits{memory: 768 << 20, files: 64, cpuSeconds: uint64(4*s.timeout.Seconds()) + 1}
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

// probe runs ffprobe on a file or the videoServer's URL. Other errors than *probeError are transient
// (ffprobe missing, killed by the deadline).
func (s *state) probe(ctx context.Context, name string) (_ mediaInfo, err error) {
	ctx, span := startSpan(ctx, "ffprobe")
	defer func() { endSpan(span, err) }()
	var stdout, stderr bytes.Buffer
	args := append(inputOptions(name), "-v", "error", "-print_format", "json", "-show_format", "-show_streams", name)
	cmd := exec.CommandContext(ctx, s.ffprobe, args...)
	cmd.Stdout = &stdout
	cmd.Stderr = &tail{max: 8 << 10, buf: &stderr}
	err = startLimited(cmd, s.limits())
	if err == nil {
		err = cmd.Wait()
	}
	if err != nil {
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
	// FormatName lists the demuxer's names ("mov,mp4,m4a,..."): the first names it for -f.
	format, _, _ := strings.Cut(out.Format.FormatName, ",")
	if !slices.Contains(strings.Split(allowedFormats, ","), format) {
		return mediaInfo{}, &probeError{stderr: "format " + out.Format.FormatName + " is not allowed"}
	}
	info := mediaInfo{format: format, duration: seconds(out.Format.Duration), picture: isPictureFormat(out.Format.FormatName)}
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

// runFFmpeg extracts the first audio stream of in, read with the demuxer the probe chose,
// into the MP3 out: copied when it is already MP3, encoded with LAME otherwise. Nothing but
// the audio is copied (no metadata, chapters or other streams), and the output stops at
// maxOutput whatever the input claims, and at the bytes that much audio takes.
// Other errors than *ffmpegError are transient. ffmpeg's progress lines go to progress.
func (s *state) runFFmpeg(ctx context.Context, in mediaInput, out string, copyAudio bool, progress io.Writer) error {
	ctx, cancel := context.WithTimeoutCause(ctx, s.timeout, errConvertTimeout)
	defer cancel()
	args := append([]string{"-nostdin", "-hide_banner", "-loglevel", "error", "-nostats", "-progress", "pipe:1", "-y"}, inputOptions(in.name)...)
	args = append(args, "-f", in.format, "-i", in.name, "-map", "0:a:0", "-vn", "-sn", "-dn",
		"-map_metadata", "-1", "-map_chapters", "-1")
	if copyAudio {
		args = append(args, "-c:a", "copy")
	} else {
		args = append(args, "-c:a", "libmp3lame", "-q:a", strconv.Itoa(s.quality))
	}
	limit := s.maxOutput()
	args = append(args, "-t", strconv.FormatFloat(limit.Seconds(), 'f', 3, 64),
		"-fs", strconv.FormatInt(maxMP3Bytes(limit), 10), out)
	if s.onFFmpeg != nil {
		s.onFFmpeg(args)
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, s.ffmpeg, args...)
	cmd.Stderr = &tail{max: 8 << 10, buf: &stderr}
	cmd.Stdout = progress
	err := startLimited(cmd, s.limits())
	if err == nil {
		err = cmd.Wait()
	}
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

// mediaInput is the video (its videoServer URL) and the demuxer its probe chose.
type mediaInput struct{ name, format string }

// errConvertTimeout is the cause of a conversion's end at CONVERT_TIMEOUT.
var errConvertTimeout = errors.New("CONVERT_TIMEOUT reached")

// maxOutput is how much audio ffmpeg writes at most: MAX_DURATION and a second, so that an
// input longer than MAX_DURATION is recognised by its output, whatever its container claims.
func (s *state) maxOutput() time.Duration { return s.maxDuration + time.Second }

// maxMP3Bytes bounds the MP3 of d: 320 kb/s, MP3's highest standard rate, and 1 MiB of headers.
func maxMP3Bytes(d time.Duration) int64 { return int64(d.Seconds()*320_000/8) + 1<<20 }

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
