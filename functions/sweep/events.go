package function

import (
	"context"
	"fmt"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
)

// The events the sweep sends again are the very events of the event path: same type,
// source, id and data (events/README.md), so every consumer recognises them.
const (
	typeUploaded  = "dev.mp3converter.video.uploaded"
	typeConverted = "dev.mp3converter.mp3.converted"
	typeFailed    = "dev.mp3converter.conversion.failed"
)

// sendTimeout bounds one delivery to the broker.
const sendTimeout = 10 * time.Second

// userDeletedData is the data of dev.mp3converter.user.deleted (events/user.deleted.schema.json).
type userDeletedData struct {
	UserID   string `json:"user_id"` // what the user's jobs are owned by; "" when login could not tell
	Username string `json:"username"`
}

// decodeUserDeleted reads a user.deleted event's data and checks it against the schema.
func decodeUserDeleted(e event.Event, d *userDeletedData) error {
	if err := e.DataAs(d); err != nil {
		return err
	}
	if n := len(d.Username); n < 3 || n > 255 {
		return fmt.Errorf("username must have 3 to 255 characters, has %d", n)
	}
	if n := len(d.UserID); n > 20 || strings.Trim(d.UserID, "0123456789") != "" {
		return fmt.Errorf("user_id must be up to 20 digits")
	}
	return nil
}

// storedMP3 is a files document of the mp3s GridFS bucket.
type storedMP3 struct {
	Length   int64  `bson:"length"`
	Filename string `bson:"filename"`
	Metadata struct {
		DurationSeconds float64 `bson:"duration_seconds"`
	} `bson:"metadata"`
}

func uploadedEvent(j job) *event.Event {
	fid := j.ID.Hex()
	return newEvent(typeUploaded, "/functions/upload", fid, fid, map[string]any{
		"video_fid":    fid,
		"username":     j.Username,
		"filename":     j.Filename,
		"content_type": j.ContentType,
		"size":         j.Size,
	})
}

func convertedEvent(j job, mp3 storedMP3) *event.Event {
	fid := j.ID.Hex()
	return newEvent(typeConverted, "/functions/convert", "mp3-"+fid, fid, map[string]any{
		"video_fid":        fid,
		"mp3_fid":          fid,
		"username":         j.Username,
		"filename":         mp3.Filename,
		"size":             mp3.Length,
		"duration_seconds": mp3.Metadata.DurationSeconds,
	})
}

func failedEvent(j job) *event.Event {
	fid := j.ID.Hex()
	reason := j.Reason
	if reason == "" {
		reason = "the conversion failed"
	}
	return newEvent(typeFailed, "/functions/convert", "failed-"+fid, fid, map[string]any{
		"video_fid": fid,
		"username":  j.Username,
		"filename":  j.Filename,
		"reason":    reason,
	})
}

func newEvent(typ, source, id, subject string, data any) *event.Event {
	e := event.New()
	e.SetID(id)
	e.SetType(typ)
	e.SetSource(source)
	e.SetSubject(subject)
	e.SetTime(time.Now().UTC())
	_ = e.SetData(event.ApplicationJSON, data) // plain maps always marshal
	return &e
}

// send delivers e to the broker and waits for its acknowledgement. A refusal is returned: the
// job's bookkeeping makes a later run try again. The re-driven job's work is traced under this
// sweep run, in a span linked to the trace of its upload (origin, the job's traceparent).
func (rt *runtime) send(ctx context.Context, e *event.Event, origin string) error {
	ctx, span := startLinkedSpan(ctx, "sweep.redrive "+e.Type(), origin)
	defer span.End()
	ctx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	injectEventTrace(ctx, e)
	if res := rt.events.Send(ctx, *e); !cloudevents.IsACK(res) {
		return res
	}
	return nil
}
