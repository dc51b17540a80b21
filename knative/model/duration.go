package model

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ParseISODuration parses the ISO-8601 duration of a delivery timeout,
// backoffDelay or retryAfterMax: "PT2S", "PT0.5S", "P1DT12H", "PT10M", "P1M".
//
// It accepts what Knative Eventing accepts there. Eventing's webhook
// (knative-v1.15 pkg/apis/duck/v1/delivery_types.go) and its dispatcher
// (pkg/kncloudevents/retries.go) read these fields with
// github.com/rickb777/date/period v1.13.0, whose Parse takes years, months,
// weeks and days before T and hours, minutes and seconds after it, and whose
// Duration counts a year as 365.2425 days and a month as a twelfth of that:
// so "P1M" is a valid backoffDelay of 30.436875 days, and it is one here.
//
// Where period is laxer than the standard, this parser refuses what could
// only be a mistake in a manifest, and says so: a sign ("-PT1S", "PT-1S":
// a negative wait), a second decimal point ("PT1.2.3S", which period reads
// as 1.2 s), a dangling T ("P1DT"). Fractions keep their full precision
// where period keeps one decimal ("PT0.01S" is 10 ms, period's 0 s).
func ParseISODuration(s string) (time.Duration, error) {
	bad := func(why string) (time.Duration, error) {
		return 0, fmt.Errorf("%q is not an ISO-8601 duration like PT30S, PT10M or P1D: %s", s, why)
	}
	rest, ok := strings.CutPrefix(s, "P")
	if !ok {
		return bad("it must start with P")
	}
	if rest == "" || rest == "T" {
		return bad("it has no number")
	}
	const day, year = 24 * time.Hour, 31556952 * time.Second // 365.2425 days
	dateUnits := map[byte]time.Duration{'Y': year, 'M': year / 12, 'W': 7 * day, 'D': day}
	timeUnits := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second}
	order := "YMWD"
	units := dateUnits
	var total float64
	inTime := false
	for rest != "" {
		if rest[0] == 'T' {
			if inTime || len(rest) == 1 {
				return bad("misplaced T")
			}
			inTime, units, order, rest = true, timeUnits, "HMS", rest[1:]
			continue
		}
		i := strings.IndexFunc(rest, func(r rune) bool { return (r < '0' || r > '9') && r != '.' && r != ',' })
		if i <= 0 {
			return bad("expected a number at " + strconv.Quote(rest))
		}
		n, err := strconv.ParseFloat(strings.Replace(rest[:i], ",", ".", 1), 64)
		if err != nil {
			return bad("bad number " + strconv.Quote(rest[:i]))
		}
		unit := rest[i]
		pos := strings.IndexByte(order, unit)
		if pos < 0 {
			return bad(fmt.Sprintf("unexpected %q", unit))
		}
		order = order[pos+1:] // each unit at most once, in order
		total += n * float64(units[unit])
		rest = rest[i+1:]
	}
	if total > math.MaxInt64 {
		return bad("too long")
	}
	return time.Duration(math.Round(total)), nil
}
