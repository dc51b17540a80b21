package function

import (
	"context"
	"fmt"
	"net/http"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"go.mongodb.org/mongo-driver/v2/bson"
)

const (
	eventType    = "dev.mp3converter.video.uploaded"
	eventSource  = "/functions/upload"
	sendAttempts = 3
	sendTimeout  = 10 * time.Second // one delivery attempt to the broker
)

// publish sends the video.uploaded event and waits for the broker's ACK, retrying what may
// be transient (transport errors, 5xx, 429) with a short exponential backoff.
func (s *state) publish(ctx context.Context, fid bson.ObjectID, username string, src *source) error {
	e := cloudevents.NewEvent()
	e.SetID(fid.Hex())
	e.SetType(eventType)
	e.SetSource(eventSource)
	e.SetSubject(fid.Hex())
	e.SetTime(time.Now().UTC())
	if err := e.SetData(cloudevents.ApplicationJSON, map[string]any{
		"video_fid":    fid.Hex(),
		"username":     username,
		"filename":     src.name,
		"content_type": src.contentType,
		"size":         src.size,
	}); err != nil {
		return err
	}
	injectEventTrace(ctx, &e) // convert, and notify after it, continue this request's trace

	backoff := 100 * time.Millisecond
	var res error
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, sendTimeout)
		res = s.events.Send(actx, e)
		cancel()
		if cloudevents.IsACK(res) {
			return nil
		}
		var hr *cehttp.Result
		if cloudevents.ResultAs(res, &hr) && hr.StatusCode < 500 && hr.StatusCode != http.StatusTooManyRequests {
			return res // the broker refuses this event: retrying will not help
		}
		if attempt == sendAttempts {
			return res
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (after: %v)", ctx.Err(), res)
		case <-t.C:
		}
		backoff *= 2
	}
}
