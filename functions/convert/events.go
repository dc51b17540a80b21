package function

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"go.mongodb.org/mongo-driver/v2/bson"
)

const (
	typeUploaded  = "dev.mp3converter.video.uploaded"
	typeConverted = "dev.mp3converter.mp3.converted"
	typeFailed    = "dev.mp3converter.conversion.failed"
	eventSource   = "/functions/convert"
)

// result is what Handle answers: a reply event, a plain 200, or an error status.
type result struct {
	reply      *event.Event
	status     int
	message    string
	retryAfter time.Duration
	after      func(context.Context) // work left once the answer is out, or nil
}

var (
	noReply     = result{status: http.StatusOK}
	unavailable = result{status: http.StatusServiceUnavailable, message: msgStorageDown}
)

// write answers the broker: the reply event in binary mode, a plain 200, or a JSON error.
func (res result) write(ctx context.Context, w http.ResponseWriter, log *slog.Logger) {
	switch {
	case res.reply != nil:
		injectEventTrace(ctx, res.reply) // the next function continues this trace
		ctx := binding.WithForceBinary(ctx)
		// In binary mode the body is the data: its length lets the broker take the reply
		// before Handle returns (result.after).
		w.Header().Set("Content-Length", strconv.Itoa(len(res.reply.Data())))
		if err := cehttp.WriteResponseWriter(ctx, binding.ToMessage(res.reply), http.StatusOK, w); err != nil {
			log.Error("cannot write the reply event", "err", err)
		}
	case res.status == http.StatusOK:
		w.WriteHeader(http.StatusOK)
	default:
		if res.retryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(res.retryAfter.Seconds()))))
		}
		writeError(w, res.status, res.message)
	}
}

func convertedEvent(j job, mp3 storedMP3) *event.Event {
	fid := j.ID.Hex()
	return newEvent(typeConverted, "mp3-"+fid, fid, map[string]any{
		"video_fid":        fid,
		"mp3_fid":          fid,
		"username":         j.Username,
		"filename":         mp3.Filename,
		"size":             mp3.Length,
		"duration_seconds": mp3.Metadata.DurationSeconds,
	})
}

func failedEvent(j job, reason string) *event.Event {
	fid := j.ID.Hex()
	return newEvent(typeFailed, "failed-"+fid, fid, map[string]any{
		"video_fid": fid,
		"username":  j.Username,
		"filename":  j.Filename,
		"reason":    reason,
	})
}

func newEvent(typ, id, subject string, data any) *event.Event {
	e := event.New()
	e.SetID(id)
	e.SetType(typ)
	e.SetSource(eventSource)
	e.SetSubject(subject)
	e.SetTime(time.Now().UTC())
	_ = e.SetData(event.ApplicationJSON, data) // plain maps always marshal
	return &e
}

// uploaded is the data of a video.uploaded event (events/video.uploaded.schema.json).
type uploaded struct {
	VideoFID    string
	Username    string
	Filename    string
	ContentType string
	Size        int64
}

// parseUploaded checks data against the shape of events/video.uploaded.schema.json.
func parseUploaded(data []byte) (uploaded, bson.ObjectID, error) {
	var up uploaded
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil || fields == nil {
		return up, bson.ObjectID{}, errors.New("data is not a JSON object")
	}
	for k := range fields {
		switch k {
		case "video_fid", "username", "filename", "content_type", "size":
		default:
			return up, bson.ObjectID{}, fmt.Errorf("unexpected field %q", k)
		}
	}
	str := func(key string, minLen, maxLen int) (string, error) {
		raw, ok := fields[key]
		if !ok {
			return "", fmt.Errorf("missing %s", key)
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil || string(raw) == "null" {
			return "", fmt.Errorf("%s is not a string", key)
		}
		if n := utf8.RuneCountInString(s); n < minLen || n > maxLen {
			return "", fmt.Errorf("%s must have %d to %d characters", key, minLen, maxLen)
		}
		return s, nil
	}
	var err error
	if up.VideoFID, err = str("video_fid", 24, 24); err != nil {
		return up, bson.ObjectID{}, err
	}
	if strings.Trim(up.VideoFID, "0123456789abcdef") != "" {
		return up, bson.ObjectID{}, errors.New("video_fid is not a lowercase hex ObjectID")
	}
	oid, err := bson.ObjectIDFromHex(up.VideoFID)
	if err != nil {
		return up, bson.ObjectID{}, fmt.Errorf("video_fid: %w", err)
	}
	if up.Username, err = str("username", 3, 255); err != nil {
		return up, oid, err
	}
	if up.Filename, err = str("filename", 1, 255); err != nil {
		return up, oid, err
	}
	if up.ContentType, err = str("content_type", 1, 255); err != nil {
		return up, oid, err
	}
	raw, ok := fields["size"]
	if !ok {
		return up, oid, errors.New("missing size")
	}
	if up.Size, err = strconv.ParseInt(string(raw), 10, 64); err != nil || up.Size < 1 {
		return up, oid, errors.New("size must be a positive integer")
	}
	return up, oid, nil
}
