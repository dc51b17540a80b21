//go:build reliability

package reliability

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mp3converter/internal/stacktest"
)

// The process hosting convert is killed (SIGKILL) in the middle of
// conversions, again and again, during a run of 50 uploads, and restarted each
// time; RabbitMQ keeps the events. convert runs alone (`mp3converter function
// convert`, the stack's External option), the rest of the stack in this
// process. Every upload must end done, with one MP3 and one email, and
// nothing may be left behind.
//
// CONVERT_LEASE=3s: a killed attempt's claim ends within 3 s, and the
// broker's retries (linear 1 s, 10 of them: 55 s) outlast it and the restart.
func TestCrashConvertMidConversion(t *testing.T) {
	r := record(t, "crash: SIGKILL of convert's process mid-conversion, restarted (RabbitMQ)")
	if os.Getenv("RABBITMQ_URL") == "" {
		t.Skip("RABBITMQ_URL is not set: only a durable broker survives a crash")
	}
	const uploads = 50
	killAt := []int{5, 15, 25, 35} // emails received before each kill
	// Where each kill lands: right after convert claims a job (it is reading
	// the video or running ffmpeg), or after ffmpeg (it is storing the MP3).
	markers := []string{`"msg":"claimed the job"`, `"msg":"converted"`}

	addr := stacktest.FreeAddr(t)
	s := newSystem(t, sysOptions{rabbit: true, external: map[string]string{"convert": "http://" + addr}})
	tmp := t.TempDir() // convert's TMPDIR: what killed processes leave there
	env := map[string]string{
		"PATH": os.Getenv("PATH"), "TMPDIR": tmp, "LISTEN_ADDRESS": addr, "MP3C_LOG_LEVEL": "info",
		"MONGODB_URI": s.mongoURI, "MONGODB_DB_PREFIX": s.prefix, "CONVERT_LEASE": "3s",
	}
	start := func() *stacktest.Process {
		c := startChild(t, env, "function", "convert")
		c.WaitReady(t, "http://"+addr+"/health/readiness", time.Minute)
		return c
	}
	convert := start()

	b := s.uploadBatch(s.AdminToken, clip(t, 20), "crash", uploads, 4)
	for i, at := range killAt {
		for deadline := time.Now().Add(3 * time.Minute); s.readyCount(b.fidsSoFar()) < at; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("fewer than %d emails within 3 minutes", at)
			}
		}
		convert.Drain() // the kill follows a marker logged from now on
		line := convert.WaitLog(t, markers[i%len(markers)], 2*time.Minute)
		convert.Kill()
		r.Runs++
		r.figure("kill %d after %d emails, at %s", i+1, at, logMessage(line))
		convert = start()
	}
	fids := b.wait(t, 5*time.Minute)
	s.settle(fids, 5*time.Minute)
	r.Runs += len(fids)
	if err := convert.Stop(); err != nil {
		t.Error(err)
	}
	s.Stack.Stack.Close() // what is unacked goes back to its queue, for auditQueues
	s.audit(t, r, fids)
	s.auditQueues(t, r)
	if len(fids) != uploads {
		r.Lost += uploads - len(fids)
		t.Errorf("%d of %d uploads accepted (%s)", len(fids), uploads, b.summary())
	}
	leftDirs, _ := filepath.Glob(filepath.Join(tmp, "convert-*"))
	r.figure("uploads: %s; %d kills; temp dirs left in convert's TMPDIR by killed processes: %d", b.summary(), len(killAt), len(leftDirs))
	r.figure("convert attempts: %s", s.attemptsSummary(t))
}

// logMessage is the "msg" of a JSON log line.
func logMessage(line string) string {
	_, rest, ok := strings.Cut(line, `"msg":"`)
	if !ok {
		return line
	}
	msg, _, _ := strings.Cut(rest, `"`)
	return msg
}
