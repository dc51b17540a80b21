//go:build reliability

package reliability

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"mp3converter/internal/local/stack"
	"mp3converter/internal/local/standins"
	"mp3converter/internal/stacktest"
)

// `make run`, an admin creates a user who uploads a video, Ctrl-C, `make run` again: the
// user logs in and sees the file, and downloads its MP3 (issue 20). `up` runs as a child
// process on its default path (no MYSQL_DSN, no MONGODB_URI: a private MariaDB and FerretDB
// under the data dir) and is stopped by a signal, as Ctrl-C stops it.
func TestUsersAndFilesSurviveARestartOfUp(t *testing.T) {
	r := record(t, "restart: `up` on its defaults stopped as by Ctrl-C and started again: the user logs in, sees and downloads their file")
	if !standins.MariaDBInstalled() {
		t.Skip("MariaDB is not installed: `up` would fall back to go-mysql-server, which keeps no users")
	}
	addr, dataDir := stacktest.FreeAddr(t), filepath.Join(t.TempDir(), "data")
	env := map[string]string{
		"PATH": os.Getenv("PATH"), "TMPDIR": t.TempDir(), "HOME": os.Getenv("HOME"), "MP3C_LOG_LEVEL": "warn",
		"MP3C_ADMIN_EMAIL": stacktest.AdminEmail, "MP3C_ADMIN_PASSWORD": stacktest.AdminPassword,
	}
	up := func() (*stacktest.Process, *stacktest.Stack) {
		p := startChild(t, env, "up", "--addr", addr, "--data-dir", dataDir)
		p.WaitLog(t, "is up at", 3*time.Minute)
		s := &stacktest.Stack{Stack: &stack.Stack{URL: "http://" + addr}}
		tok, err := s.Client("").Login(context.Background(), stacktest.AdminEmail, stacktest.AdminPassword)
		if err != nil {
			t.Fatal("admin login:", err)
		}
		s.AdminToken = tok.AccessToken
		return p, s
	}

	first, s := up()
	email := "survivor-" + stacktest.RandomHex(3) + "@example.com"
	token := s.AddUser(t, email)
	fid := s.Upload(t, token, clip(t, 2), "before-the-restart.mp4")
	if job := s.WaitJob(t, token, fid, 2*time.Minute); job.State != "done" {
		t.Fatalf("job before the restart: %+v", job)
	}
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}

	second, s := up()
	defer func() {
		if err := second.Stop(); err != nil {
			t.Error(err)
		}
	}()
	r.Runs = 1
	tok, err := s.Client("").Login(context.Background(), email, stacktest.UserPassword)
	if err != nil {
		r.Lost++
		t.Fatalf("after the restart %s cannot log in: %v", email, err)
	}
	jobs, _, err := s.Client(tok.AccessToken).Jobs(context.Background(), 10, "")
	if err != nil || len(jobs) != 1 || jobs[0].VideoFID != fid || jobs[0].State != "done" {
		r.Lost++
		t.Fatalf("after the restart %s sees %+v (%v), want their done job %s", email, jobs, err, fid)
	}
	if _, seconds := stacktest.Probe(t, s.DownloadMP3(t, tok.AccessToken, fid)); seconds < 1 {
		r.Lost++
		t.Errorf("the MP3 after the restart lasts %.2f s", seconds)
	}
	r.figure("the user logged in after the restart and downloaded the MP3 of %s", fid)
}
