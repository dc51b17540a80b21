package stack_test

import (
	"context"
	"testing"

	"mp3converter/internal/local/standins"
	"mp3converter/internal/stacktest"
)

// TestUsersAndFilesSurviveARestart is `make run`, add a user who uploads a
// video, Ctrl-C, `make run` again: the user logs in and sees the upload. On
// the default path (no MYSQL_DSN, no MONGODB_URI) the stack keeps users in a
// private MariaDB under the data dir, and videos and jobs in FerretDB's files
// there.
func TestUsersAndFilesSurviveARestart(t *testing.T) {
	if !standins.MariaDBInstalled() {
		t.Skip("MariaDB is not installed (apt-get install mariadb-server)")
	}
	dir := t.TempDir()
	defaults := stacktest.Options{Env: map[string]string{"MYSQL_DSN": "", "MONGODB_URI": ""}}
	ctx := context.Background()

	s, err := stacktest.New(ctx, dir, defaults)
	if err != nil {
		t.Fatal(err)
	}
	ada := s.AddUser(t, "ada@example.com")
	fid := s.Upload(t, ada, stacktest.Video(t, t.TempDir(), "clip.mp4", 1), "clip.mp4")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = stacktest.New(ctx, dir, defaults)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer s.Close()
	tok, err := s.Client("").Login(ctx, "ada@example.com", stacktest.UserPassword)
	if err != nil {
		t.Fatalf("after the restart ada cannot log in: %v", err)
	}
	jobs, _, err := s.Client(tok.AccessToken).Jobs(ctx, 10, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 1 || jobs[0].VideoFID != fid {
		t.Fatalf("after the restart ada sees %+v, want her upload %s", jobs, fid)
	}
}
