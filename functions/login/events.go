package function

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// userDeletedType is the event login publishes when a user is deleted: sweep then removes
// their jobs and files (events/user.deleted.schema.json).
const userDeletedType = "dev.mp3converter.user.deleted"

// publishUserDeleted sends user.deleted to the broker (K_SINK) as a binary-mode CloudEvent,
// three attempts with a short backoff. Without K_SINK it does nothing. The data names the
// user's id, what their jobs and files are owned by (0: unknown, left out), and address.
func (s *state) publishUserDeleted(ctx context.Context, email string, userID int64, at time.Time) error {
	if s.sink == "" {
		return nil
	}
	fields := map[string]string{"username": email}
	if userID != 0 {
		fields["user_id"] = strconv.FormatInt(userID, 10)
	}
	data, _ := json.Marshal(fields)
	var id [16]byte
	_, _ = rand.Read(id[:])
	var err error
	for attempt, wait := 1, 100*time.Millisecond; ; attempt, wait = attempt+1, wait*2 {
		if err = s.post(ctx, hex.EncodeToString(id[:]), email, at, data); err == nil || attempt == 3 {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

func (s *state) post(ctx context.Context, id, email string, at time.Time, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.sink, bytes.NewReader(data))
	if err != nil {
		return err
	}
	for k, v := range map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "user-deleted-" + id, "Ce-Type": userDeletedType,
		"Ce-Source": "/functions/login", "Ce-Subject": email, "Ce-Time": at.UTC().Format(time.RFC3339Nano), "Content-Type": "application/json"} {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("the broker answered %s", resp.Status)
	}
	return nil
}
