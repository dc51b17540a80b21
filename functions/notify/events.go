package function

import (
	"errors"

	"github.com/cloudevents/sdk-go/v2/event"
)

// Event types notify consumes.
const (
	typeUploaded  = "dev.mp3converter.video.uploaded"
	typeConverted = "dev.mp3converter.mp3.converted"
	typeFailed    = "dev.mp3converter.conversion.failed"
)

// Event data, as events/*.schema.json describe it.
type uploadedData struct {
	VideoFID    string `json:"video_fid"`
	Username    string `json:"username"`
	Filename    string `json:"filename"`
	ContentType string `json:"content_type"`
	Size        int64  `json:"size"`
}

type convertedData struct {
	VideoFID        string  `json:"video_fid"`
	MP3FID          string  `json:"mp3_fid"`
	Username        string  `json:"username"`
	Filename        string  `json:"filename"`
	Size            int64   `json:"size"`
	DurationSeconds float64 `json:"duration_seconds"`
}

type failedData struct {
	VideoFID string `json:"video_fid"`
	Username string `json:"username"`
	Filename string `json:"filename"`
	Reason   string `json:"reason"`
}

// decode reads the event's JSON data and checks what notify relies on against the schema.
// Unknown fields are ignored.
func decode(e event.Event, v any) error {
	if len(e.Data()) == 0 {
		return errors.New("no data")
	}
	if err := e.DataAs(v); err != nil {
		return err
	}
	var fid, user, name string
	switch d := v.(type) {
	case *uploadedData:
		fid, user, name = d.VideoFID, d.Username, d.Filename
		if d.ContentType == "" || d.Size < 1 {
			return errors.New("content_type or size missing")
		}
	case *convertedData:
		fid, user, name = d.VideoFID, d.Username, d.Filename
		if !isHexID(d.MP3FID) || d.Size < 1 || !(d.DurationSeconds > 0) {
			return errors.New("mp3_fid, size or duration_seconds missing or invalid")
		}
	case *failedData:
		fid, user, name = d.VideoFID, d.Username, d.Filename
		if d.Reason == "" || len(d.Reason) > 1000 {
			return errors.New("reason missing or too long")
		}
	}
	switch {
	case !isHexID(fid):
		return errors.New("video_fid is not a 24-digit hex id")
	case len(user) < 3 || len(user) > 255:
		return errors.New("username missing or invalid")
	case name == "" || len(name) > 260:
		return errors.New("filename missing or too long")
	}
	return nil
}

func isHexID(s string) bool {
	if len(s) != 24 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
