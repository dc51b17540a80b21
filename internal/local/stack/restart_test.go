package stack

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"mp3converter/internal/client"
	"mp3converter/internal/local/standins"
)

// TestUsersAndFilesSurviveARestart is `make run`, add a user who uploads a
// video, Ctrl-C, `make run` again: the user logs in and sees the upload. On
// the default path the stack keeps users in a private MariaDB under the data
// dir, and videos and jobs in FerretDB's files there.
func TestUsersAndFilesSurviveARestart(t *testing.T) {
	if !standins.MariaDBInstalled() {
		t.Skip("MariaDB is not installed (apt-get install mariadb-server)")
	}
	dataDir := t.TempDir()
	env := map[string]string{"PATH": os.Getenv("PATH"), "TMPDIR": t.TempDir(),
		"MP3C_ADMIN_EMAIL": "admin@example.com", "MP3C_ADMIN_PASSWORD": "the admin's long password", "BCRYPT_COST": "4"}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := func() *Stack {
		s, err := Start(ctx, Config{Addr: "127.0.0.1:0", DataDir: dataDir, Env: env, ShutdownGrace: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.WaitReady(ctx); err != nil {
			s.Close()
			t.Fatal(err)
		}
		return s
	}
	login := func(s *Stack, email, password string) *client.Client {
		c := &client.Client{Server: s.URL}
		tok, err := c.Login(ctx, email, password)
		if err != nil {
			t.Fatalf("%s cannot log in: %v", email, err)
		}
		c.Token = tok.AccessToken
		return c
	}

	s := start()
	admin := login(s, "admin@example.com", "the admin's long password")
	if _, err := admin.AddUser(ctx, "ada@example.com", "correct horse battery", false); err != nil {
		s.Close()
		t.Fatal(err)
	}
	video := filepath.Join(t.TempDir(), "clip.mp4")
	if out, err := exec.Command("ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "sine=duration=1",
		"-c:a", "aac", video).CombinedOutput(); err != nil {
		s.Close()
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	f, err := os.Open(video)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := f.Stat()
	up, err := login(s, "ada@example.com", "correct horse battery").Upload(ctx, f, info.Size(), "clip.mp4", "video/mp4")
	f.Close()
	if err != nil {
		s.Close()
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = start()
	defer s.Close()
	jobs, _, err := login(s, "ada@example.com", "correct horse battery").Jobs(ctx, 10, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 1 || jobs[0].VideoFID != up.VideoFID {
		t.Fatalf("after the restart ada sees %+v, want her upload %s", jobs, up.VideoFID)
	}
}
