package stacktest

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"time"

	"mp3converter/internal/client"
)

// Client is an API client of the stack with token ("" for none).
func (s *Stack) Client(token string) *client.Client {
	return &client.Client{Server: s.URL, Token: token}
}

// AddUser creates a user who is not an admin, with UserPassword, through
// the admin API, and returns a token of theirs.
func (s *Stack) AddUser(t TB, email string) string {
	t.Helper()
	ctx := context.Background()
	if _, err := s.Client(s.AdminToken).AddUser(ctx, email, UserPassword, false); err != nil {
		t.Fatalf("creating %s: %v", email, err)
	}
	tok, err := s.Client("").Login(ctx, email, UserPassword)
	if err != nil {
		t.Fatalf("login of %s: %v", email, err)
	}
	return tok.AccessToken
}

// Upload streams the file at path as the multipart upload of name and
// returns its video_fid; anything but 202 fails t.
func (s *Stack) Upload(t TB, token, path, name string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	defer f.Close()
	up, err := s.Client(token).UploadForm(context.Background(), f, name)
	if err != nil || len(up.VideoFID) != 24 {
		t.Fatalf("upload of %s: %+v %v", name, up, err)
	}
	return up.VideoFID
}

// WaitJob looks at the job every 50 ms until it is done or failed, for at
// most within, and returns it.
func (s *Stack) WaitJob(t TB, token, fid string, within time.Duration) client.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	c := s.Client(token)
	for {
		j, err := c.Job(ctx, fid)
		if err != nil {
			t.Fatalf("job %s: %v", fid, err)
		}
		if j.Finished() {
			return j
		}
		select {
		case <-ctx.Done():
			t.Fatalf("job %s still %s after %s", fid, j.State, within)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// DownloadMP3 saves the MP3 of fid into a temporary file and returns its
// path; anything but a whole audio/mpeg answer fails t.
func (s *Stack) DownloadMP3(t TB, token, fid string) string {
	t.Helper()
	d, err := s.Client(token).OpenDownload(context.Background(), fid, 0, "")
	if err != nil {
		t.Fatalf("download %s: %v", fid, err)
	}
	defer d.Body.Close()
	if d.ContentType != "audio/mpeg" {
		t.Fatalf("download %s: %s, want audio/mpeg", fid, d.ContentType)
	}
	path := filepath.Join(t.TempDir(), fid+".mp3")
	f, err := os.Create(path)
	if err != nil {
		t.Fatalf("download %s: %v", fid, err)
	}
	_, err = io.Copy(f, d.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("download %s: %v", fid, err)
	}
	return path
}
