package function

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
)

// convert does the claimed job: reuse a stored MP3, or run ffmpeg and store its output.
func (d *delivery) convert(ctx context.Context) result {
	oid := d.job.ID
	started := time.Now()

	// A complete MP3 from an earlier delivery that crashed before marking the job done.
	mp3, err := d.findMP3(ctx, oid)
	if err == nil {
		d.log.Info("the MP3 was stored by an earlier delivery")
		return d.finish(ctx, mp3)
	}
	if !errors.Is(err, mongo.ErrNoDocuments) {
		return d.retry(ctx, msgStorageDown, fmt.Errorf("read the mp3s bucket: %w", err))
	}
	// Chunks without a files document are the remains of a crashed attempt: we
	// hold the lease. The first attempt has no predecessor, so it skips the
	// delete.
	if d.job.Attempts > 1 {
		if err := d.deleteStrayChunks(ctx); err != nil {
			return d.retry(ctx, msgStorageDown, fmt.Errorf("delete stray chunks: %w", err))
		}
	}

	dir, err := os.MkdirTemp(d.tmpDir, "convert-")
	if err != nil {
		return d.retry(ctx, "no room to convert, try again", err)
	}
	defer os.RemoveAll(dir)
	// ffprobe and ffmpeg read the video over loopback HTTP while it is read from GridFS.
	video, err := d.serveVideo(ctx, oid)
	if errors.Is(err, mongo.ErrFileNotFound) {
		return d.fail(ctx, "the uploaded file is missing", err.Error())
	}
	if err != nil {
		return d.interrupted(ctx, "cannot read the video, try again", err)
	}
	defer video.close()

	info, err := d.probe(ctx, video.url)
	if readErr := video.err(); readErr != nil {
		return d.interrupted(ctx, "cannot read the video, try again", readErr)
	}
	if err != nil {
		var pe *probeError
		if errors.As(err, &pe) {
			reason := "this file is not a video or audio file we can read"
			if strings.Contains(pe.stderr, "moov atom not found") {
				reason = "the file is incomplete or damaged: its MP4 index is missing"
			}
			return d.fail(ctx, reason, pe.Error())
		}
		return d.interrupted(ctx, toolMessage(err, "cannot inspect the video, try again"), err)
	}
	if info.audioCodec == "" && info.picture {
		return d.fail(ctx, "this file is a picture, not a video with sound", "ffprobe read a still image")
	}
	if info.audioCodec == "" {
		return d.fail(ctx, "the video has no audio track", "ffprobe found no audio stream")
	}
	tooLong := "the video is longer than " + d.maxDuration.String()
	if info.duration > d.maxDuration {
		return d.fail(ctx, tooLong, "duration "+info.duration.String())
	}

	out := filepath.Join(dir, "audio.mp3")
	copyAudio := info.audioCodec == "mp3"
	prog := d.trackProgress(ctx, info.duration, d.progressEvery)
	err = d.tracedFFmpeg(ctx, info.duration, mediaInput{name: video.url, format: info.format}, out, copyAudio, prog)
	prog.stop()
	video.close()
	if readErr := video.err(); readErr != nil {
		return d.interrupted(ctx, "cannot read the video, try again", readErr)
	}
	if err != nil {
		var fe *ffmpegError
		if errors.As(err, &fe) {
			return d.fail(ctx, "the audio track could not be converted: the file may be damaged", fe.Error())
		}
		return d.interrupted(ctx, toolMessage(err, "the conversion did not finish, try again"), err)
	}
	// What ffmpeg wrote: its MP3's Xing header says how many frames, no second ffprobe needed.
	var outInfo mediaInfo
	if written, ok := mp3Duration(out); ok {
		outInfo.duration = written
	} else if outInfo, err = d.probe(ctx, out); err != nil {
		var pe *probeError
		if !errors.As(err, &pe) {
			return d.interrupted(ctx, toolMessage(err, "cannot inspect the MP3, try again"), err)
		}
		outInfo = mediaInfo{}
	}
	if outInfo.duration <= 0 {
		return d.fail(ctx, "the file is damaged: no audio could be decoded", "the MP3 has no duration")
	}
	// The container claimed less than it holds: ffmpeg stopped at maxOutput.
	if outInfo.duration > d.maxDuration {
		return d.fail(ctx, tooLong, "the input claimed "+info.duration.String()+" and held more")
	}
	seconds := math.Round(outInfo.duration.Seconds()*1000) / 1000
	d.log.Info("converted", "copied", copyAudio, "input_codec", info.audioCodec, "duration_seconds", seconds)

	if d.beforeUpload != nil {
		d.beforeUpload()
	}
	stored, err := d.storeMP3(ctx, d.job, out, seconds)
	if errors.Is(err, errStoredByOther) {
		return d.retry(ctx, msgStorageDown, err)
	}
	if err != nil {
		return d.retryDroppingPartialMP3(ctx, fmt.Errorf("store the MP3: %w", err))
	}
	metricsOf(ctx).conversionSpeed.Record(ctx, time.Since(started).Seconds()/seconds)
	return d.finish(ctx, stored)
}

// interrupted answers a step that did not finish. When CONVERT_TIMEOUT ran out the failure
// is permanent: a retry would run into it again, holding a converter each time.
func (d *delivery) interrupted(ctx context.Context, message string, err error) result {
	if errors.Is(context.Cause(ctx), errConvertTimeout) {
		return d.fail(ctx, "the conversion took longer than "+d.timeout.String()+": the file is too long or too complex",
			err.Error())
	}
	return d.retry(ctx, message, err)
}

// deleteStrayChunks deletes the MP3 chunks an earlier attempt stored (one pass by files_id).
func (d *delivery) deleteStrayChunks(ctx context.Context) error {
	_, err := DeleteGridFSChunks(ctx, d.mp3sDB(), "fs", d.job.ID)
	return err
}
