package function

import (
	"context"
	"io"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
)

// The spans and metrics of a conversion; the kit (kit_telemetry.go) starts the request's span
// and holds the instruments.

// tracedFFmpeg runs ffmpeg inside a span that carries the audio's duration and the realtime
// factor (seconds of audio made per second of ffmpeg).
func (d *delivery) tracedFFmpeg(ctx context.Context, audio time.Duration, in mediaInput, out string, copyAudio bool, progress io.Writer) error {
	ctx, span := startSpan(ctx, "ffmpeg", attribute.Float64("audio.duration_seconds", audio.Seconds()), attribute.Bool("audio.copied", copyAudio))
	started := time.Now()
	err := d.runFFmpeg(ctx, in, out, copyAudio, progress)
	if took := time.Since(started).Seconds(); took > 0 {
		span.SetAttributes(attribute.Float64("ffmpeg.realtime_factor", audio.Seconds()/took))
	}
	endSpan(span, err)
	return err
}

// failureClasses sort the reasons a conversion fails for good (the words users read) into the
// few classes the conversions metric counts, first match wins.
var failureClasses = []struct{ words, class string }{
	{"uploaded file is missing", "missing_input"},
	{"not a video or audio file", "not_media"},
	{"picture", "not_media"},
	{"no audio track", "no_audio"},
	{"longer than", "too_long"},
	{"damaged", "damaged"},
}

// failureClass is the class of a failure's reason, "other" when none fits.
func failureClass(reason string) string {
	for _, c := range failureClasses {
		if strings.Contains(reason, c.words) {
			return c.class
		}
	}
	return "other"
}
