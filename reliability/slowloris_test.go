//go:build reliability

package reliability

// Run by `make reliability` only: its nothing-left-behind baseline can
// catch the previous test's upload still being cleaned up by upload's read
// deadline, which makes it unreliable inside the quick suite of `make test`.

import (
	"net/http"
	"testing"
	"time"
)

// A client that trickles its upload (slowloris) is cut off by UPLOAD_TIMEOUT,
// the upload function's read deadline (func-go's 30 s ReadTimeout does not
// apply: upload extends it to UPLOAD_TIMEOUT for an identified caller), is
// told so with a 408, and nothing stays. Sent to the upload function itself;
// through the front door: TestTricklingClientIsAnsweredThroughTheFrontDoor.
func TestSlowlorisUploadIsBounded(t *testing.T) {
	r := record(t, "bad input: slowloris upload (1 byte every 250 ms), bounded by UPLOAD_TIMEOUT")
	s := sharedSystem(t)
	before := s.quiet(t)
	n := shared.upload.count()
	start := time.Now()
	a := trickle(t, s.Functions["upload"], s.AdminToken, clip(t, 2), time.Minute)
	r.Runs++
	if a.status != http.StatusRequestTimeout || a.errorMessage() == "" {
		r.Failures++
		t.Errorf("slowloris upload: %s, want 408 with a message", a)
	}
	r.figure("answered %d after %s (UPLOAD_TIMEOUT=%s): %q", a.status, time.Since(start).Round(100*time.Millisecond),
		sharedUploadLimit, a.errorMessage())
	shared.upload.waitAnswer(t, n, time.Minute)
	s.waitCounts(t, before, time.Minute)
}
