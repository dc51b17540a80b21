package stack_test

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"

	convert "mp3converter/functions/convert"
	"mp3converter/internal/local/funchost"
	"mp3converter/internal/local/stack"
	"mp3converter/internal/stacktest"
)

// A function named in External runs outside the stack (here: hosted by the
// test on a port of its own, as `mp3converter function convert` would): the
// Broker delivers to it, and the stack does not host a convert of its own.
func TestExternalFunction(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	externalURL := "http://" + ln.Addr().String()
	counted := &flakyConvert{Function: convert.New()} // no failures: it counts deliveries
	e := startStack(t, stacktest.Options{External: map[string]string{"convert": externalURL + "/"}})
	if got := e.Functions["convert"]; got != externalURL {
		t.Fatalf("Functions[convert] = %q, want %q", got, externalURL)
	}

	// The external process gets what the stack would have given it.
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- funchost.Serve(ctx, funchost.Function{Name: "convert", Instance: counted, Listener: ln,
			Config: map[string]string{"MONGODB_URI": e.MongoURI, "MONGODB_DB_PREFIX": e.Env["MONGODB_DB_PREFIX"],
				"PATH": os.Getenv("PATH"), "TMPDIR": t.TempDir()}})
	}()
	defer func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("external convert: %v", err)
		}
	}()

	fid := e.Upload(t, e.AdminToken, stacktest.Video(t, t.TempDir(), "elsewhere.mp4", 2), "elsewhere.mp4")
	if msg := nextMail(t, e.Mail); !strings.Contains(msg.subject, "ready") {
		t.Fatalf("subject %q, want the ready mail", msg.subject)
	}
	if job := jobOf(t, e, fid); job.State != "done" {
		t.Fatalf("job = %+v", job)
	}
	if got := counted.delivered.Load(); got != 1 {
		t.Fatalf("the external convert saw %d deliveries, want 1", got)
	}
}

func TestExternalMustNameAFunctionAndAURL(t *testing.T) {
	for _, external := range []map[string]string{
		{"transcode": "http://127.0.0.1:1"},
		{"convert": "127.0.0.1:1"},
		{"convert": "ftp://127.0.0.1:1"},
	} {
		s, err := stack.Start(context.Background(), stack.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), External: external,
			Env: map[string]string{"JWT_SECRET": strings.Repeat("s", 32)}})
		if err == nil {
			s.Close()
			t.Errorf("External %v: started, want an error", external)
		}
	}
}
