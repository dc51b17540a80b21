package model

import (
	"testing"
	"time"
)

// TestParseISODuration holds the parser to eventing's grammar (see
// ParseISODuration for where it is stricter).
func TestParseISODuration(t *testing.T) {
	const month = 30*24*time.Hour + 10*time.Hour + 29*time.Minute + 6*time.Second // 30.436875 days
	for in, want := range map[string]time.Duration{
		"PT2S":    2 * time.Second,
		"PT30S":   30 * time.Second,
		"PT0.01S": 10 * time.Millisecond,
		"PT0,5S":  500 * time.Millisecond,
		"PT1.5S":  1500 * time.Millisecond,
		"PT10M":   10 * time.Minute,
		"PT1H30M": 90 * time.Minute,
		"P1D":     24 * time.Hour,
		"P1DT1S":  24*time.Hour + time.Second,
		"P1DT2H":  26 * time.Hour,
		"P1W":     7 * 24 * time.Hour,
		"PT0S":    0,
		// Years and months, as eventing's period package counts them.
		"P1M":    month,
		"P1Y":    12 * month,
		"P1Y1M":  13 * month,
		"P1MT1S": month + time.Second,
	} {
		if got, err := ParseISODuration(in); err != nil || got != want {
			t.Errorf("%s: %s (%v), want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "P", "PT", "2s", "10m", "PT1", "PTS", "P1H", "PT1D", "PT1S1M", "PT1M1M", "PT1H30",
		"-PT1S", "PT-1S", "+PT1S", "PT1.2.3S", "P1DT", "pt1s", "pt30s", "P1M1Y"} {
		if got, err := ParseISODuration(in); err == nil {
			t.Errorf("%q parsed as %s", in, got)
		}
	}
}
