package kit

import (
	"encoding/json"
	"os"
	"slices"
	"testing"
)

// The JobState constants are the states events/job/schema.json allows, no more, no fewer.
func TestJobStatesMatchTheSchema(t *testing.T) {
	b, err := os.ReadFile("../../events/job/schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Properties struct {
			State struct{ Enum []JobState } `json:"state"`
		}
	}
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatal(err)
	}
	want := []JobState{JobUploaded, JobConverting, JobDone, JobFailed, JobExpired}
	if !slices.Equal(schema.Properties.State.Enum, want) {
		t.Errorf("schema states %v, constants %v", schema.Properties.State.Enum, want)
	}
	for _, s := range want {
		if s.final() != (s == JobDone || s == JobFailed || s == JobExpired) {
			t.Errorf("%s.final() = %v", s, s.final())
		}
	}
}
