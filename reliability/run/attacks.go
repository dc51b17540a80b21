package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"

	"mp3converter/reliability"
)

// attacks are the classes of attack of issue 17, one row of the table each. Every test named
// performs an attack of its class against a function with its real backing services
// (FerretDB, MariaDB, SMTP on loopback, ffmpeg) and fails without the fix; the attacks that
// need the whole stack are cases of the suite itself (access, bad input, brute force).
// docs/reliability.md says what each class protects against.
var attacks = []struct {
	what  string
	tests []attackTest
}{
	{"attack: forged events (notify mails only the job's owner, a forged dead letter fails nothing, convert answers a forger nothing, ids unguessable)", []attackTest{
		{"./functions/notify", "TestForgedConvertedMailsOnlyTheOwner"},
		{"./functions/notify", "TestEventDisagreeingWithJobIsDropped"},
		{"./functions/notify", "TestForgedDeadLetterCannotFailAWaitingJob"},
		{"./functions/convert", "TestForgedEventGetsNothing"},
		{"./functions/upload", "TestUploadIDsAreUnguessable"},
	}},
	{"attack: hostile media (playlists and lists naming other files, lying durations, endless conversions, one user holding every converter)", []attackTest{
		{"./functions/upload", "TestContainerType"},
		{"./functions/convert", "TestHostileMedia"},
		{"./functions/convert", "TestToolsRunLimited"},
		{"./functions/convert", "TestConvertTimeoutIsPermanent"},
		{"./functions/convert", "TestOneUserCannotHoldAllConverters"},
		{"./functions/download", "TestDownloadFullBodyAndHead"}, // nosniff
	}},
	{"attack: sessions that do not end (password change, reset, demotion, deletion; long lifetimes; the last admin; a new account at an old address)", []attackTest{
		{"./functions/validate", "TestSessionsEnd"},
		{"./functions/validate", "TestValidateAttacks"},
		{"./functions/validate", "TestUserStillExists"},
		{"./functions/login", "TestAdminAPI"},
		{"./functions/download", "TestOwnedByTheUsersIDNotTheAddress"},
		{"./functions/sweep", "TestDeletedUsersDataGoes"},
	}},
	{"attack: lockouts (guessers locking the owner out, right passwords refused under load, one bucket per pod, look-alike addresses)", []attackTest{
		{"./functions/login", "TestOwnerKeepsStandingUnderAttack"},
		{"./functions/login", "TestParallelRightPasswordsAreNeverRefused"},
		{"./functions/login", "TestLimiter"},
		{"./functions/login", "TestLoginLimitsWithTheManifestsValues"},
		{"./functions/login", "TestClientIPBehindTrustedProxies"},
		{"./functions/login", "TestEmailsAreBytes"},
	}},
	{"attack: idle and greedy uploads holding the upload slots", []attackTest{
		{"./functions/upload", "TestIdleUploadIsEnded"},
		{"./functions/upload", "TestOneUserHoldsHalfTheSlots"},
		{"./functions/upload", "TestUploadsBeyondTheConcurrencyLimitAreRefused"},
	}},
	{"attack: the deployment (NetworkPolicies, non-root pods, timeouts: knative/ passes every rule)", []attackTest{
		{"./knative/validation", "TestManifestsPassEveryRule"},
		{"./knative/validation", "TestKustomizeRenders"},
	}},
}

// attackTest is one test of a class: its package directory and name.
type attackTest struct{ dir, name string }

// runAttack runs the tests of one class (`go test -json -run`) and counts them: a test that
// fails, or does not run at all (renamed, say), is a failure.
func runAttack(what string, tests []attackTest, logName string) reliability.Result {
	r := reliability.Result{Case: what, Test: "attack tests of the functions"}
	var names, dirs []string
	for _, t := range tests {
		names = append(names, t.name)
		if !slices.Contains(dirs, t.dir) {
			dirs = append(dirs, t.dir)
		}
	}
	args := append([]string{"test", "-count=1", "-json", "-run", "^(" + strings.Join(names, "|") + ")$"}, dirs...)
	fmt.Printf("reliability: go %s\n", strings.Join(args, " "))
	out, _ := exec.Command("go", args...).Output() // a failing test is counted below, not an error here
	_ = os.WriteFile(logName, out, 0o644)

	status := map[attackTest]string{} // pass, fail, skip
	s := bufio.NewScanner(bytes.NewReader(out))
	s.Buffer(make([]byte, 4<<20), 4<<20)
	for s.Scan() {
		var ev struct{ Action, Package, Test string }
		if json.Unmarshal(s.Bytes(), &ev) != nil || ev.Test == "" || strings.Contains(ev.Test, "/") {
			continue
		}
		if ev.Action == "pass" || ev.Action == "fail" || ev.Action == "skip" {
			status[attackTest{"./" + strings.TrimPrefix(ev.Package, "mp3converter/"), ev.Test}] = ev.Action
		}
	}
	for _, t := range tests {
		r.Runs++
		switch status[t] {
		case "pass":
		case "skip":
			r.Figures = append(r.Figures, fmt.Sprintf("%s (%s) skipped", t.name, t.dir))
		default:
			r.Failures++
			r.Failed = true
			r.Figures = append(r.Figures, fmt.Sprintf("%s (%s): %s; see %s", t.name, t.dir, orNotRun(status[t]), logName))
		}
	}
	r.Figures = append(r.Figures, fmt.Sprintf("%d tests: %s", len(tests), strings.Join(names, ", ")))
	return r
}

func orNotRun(action string) string {
	if action == "" {
		return "did not run"
	}
	return action
}
